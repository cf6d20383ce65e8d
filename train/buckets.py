"""Aspect-ratio and frame-count buckets.

Each training window is scaled to cover its bucket and centre-cropped, so what is cropped away is
only the difference between the source's aspect ratio and the bucket's. Every batch holds one
bucket (the transformer needs one latent shape per batch).

- `square` is one bucket, --width x --height (the seed experiment's 224x224 centre crop);
- `auto` is SANA-Video's own 480p aspect-ratio table (diffusers' `ASPECT_RATIO_480_BIN`, the
  bins the pipeline snaps a request to), scaled to the pixel count of --width x --height and
  rounded to multiples of 32 (the pipeline's `check_inputs`: the Wan VAE's 8x spatial
  compression times the transformer's 2x2 patches, and then some);
- `WxH,WxH,...` lists them.

Frame buckets are frame counts (1 + 4k, the Wan VAE's temporal compression); a clip gets the
longest one that fits, tiled as many times as it fits.
"""

from __future__ import annotations

import math

MULTIPLE = 32


class BucketError(ValueError):
    pass


def sana_480_bins() -> list[tuple[int, int]]:
    """(width, height) of the pipeline's 480p bins. The table is keyed by height/width and holds
    [height, width]; importing the pipeline module is what `auto` costs (a few seconds, torch)."""
    from diffusers.pipelines.sana_video.pipeline_sana_video import ASPECT_RATIO_480_BIN

    return [(int(w), int(h)) for h, w in ASPECT_RATIO_480_BIN.values()]


def scale_to_area(sizes: list[tuple[int, int]], area: int, multiple: int = MULTIPLE) -> list[tuple[int, int]]:
    """Each (w, h) scaled to about `area` pixels, keeping its aspect, rounded to `multiple`;
    sizes that collapse onto the same rounded size appear once."""
    out: list[tuple[int, int]] = []
    for w, h in sizes:
        s = math.sqrt(area / (w * h))
        size = (max(multiple, round(w * s / multiple) * multiple), max(multiple, round(h * s / multiple) * multiple))
        if size not in out:
            out.append(size)
    return sorted(out, key=lambda wh: wh[0] / wh[1])


def parse_sizes(spec: str, width: int, height: int) -> list[tuple[int, int]]:
    """--buckets: auto | square | WxH,WxH,... -> [(width, height)]."""
    spec = (spec or "square").strip().lower()
    if spec == "square":
        return [(width, height)]
    if spec == "auto":
        return scale_to_area(sana_480_bins(), width * height)
    out = []
    for part in spec.split(","):
        w, sep, h = part.strip().partition("x")
        if not sep or not w.isdigit() or not h.isdigit():
            raise BucketError(f"--buckets takes auto, square or WIDTHxHEIGHT,... (e.g. 320x224,224x224), got {part!r}")
        w, h = int(w), int(h)
        if w <= 0 or h <= 0 or w % MULTIPLE or h % MULTIPLE:
            raise BucketError(f"--buckets size {w}x{h}: width and height must be positive multiples of {MULTIPLE} "
                              "(SanaVideoPipeline.check_inputs)")
        if (w, h) not in out:
            out.append((w, h))
    return sorted(out, key=lambda wh: wh[0] / wh[1])


def parse_frames(spec: str | None, frames: int) -> list[int]:
    """--frame-buckets: 33,49,81 -> [33, 49, 81]; None -> [--frames]."""
    if spec is None or str(spec).strip() == "":
        return [frames]
    out = []
    for part in str(spec).split(","):
        part = part.strip()
        if not part.isdigit() or (int(part) - 1) % 4 or int(part) < 1:
            raise BucketError(f"--frame-buckets takes frame counts of the form 1 + 4k (e.g. 33,49,81), got {part!r}")
        if int(part) not in out:
            out.append(int(part))
    return sorted(out)


def crop_fraction(src_aspect: float, bucket_aspect: float) -> float:
    """Share of the source frame cut away when it is scaled to cover the bucket and centre-cropped."""
    return 1.0 - min(src_aspect / bucket_aspect, bucket_aspect / src_aspect)


def nearest(sizes: list[tuple[int, int]], src_aspect: float) -> tuple[int, int]:
    """The size whose aspect is nearest in log ratio (so 2:1 and 1:2 are equally far from 1:1)."""
    return min(sizes, key=lambda wh: (abs(math.log(wh[0] / wh[1]) - math.log(src_aspect)), -wh[0] * wh[1]))
