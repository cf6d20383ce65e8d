"""`train --dry-run --preview DIR`: every selected window as the model will see it.

Each window's frames are read by the function the latent cache encodes from (`data.read_window`:
the source range resampled by time to the window's fps, scaled and centre-cropped to its bucket),
so what is written is what training feeds the VAE, frame for frame. Per window a contact sheet
(`NNNN_role.png`: the frames in reading order on a grid, exact pixels, lossless) and an animated
GIF at the window's fps to watch (`NNNN_role.gif`; GIF's palette makes it approximate);
`windows.jsonl` with the window's source, time range, size, crop and the prompt as it is encoded;
and `summary.png`, one contact sheet of the windows (first, middle and last frame of each).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SHEET_WINDOWS = 256  # windows on the summary sheet (the rest are in the folder and windows.jsonl)
THUMB = 96           # the sheet's frame height in pixels


class PreviewError(Exception):
    pass


def preview_run(cfg, manifest, out_dir, echo=print) -> dict:
    """What `train --dry-run --preview DIR` does: the windows read from where their videos live
    now (as training reads them), then written."""
    from .data import resolve_video_paths

    moved = resolve_video_paths(manifest, cfg.catalog)
    if moved:
        echo(f"{moved} window(s) read from their videos' current paths in the catalog (the library moved)")
    return write_preview(cfg, manifest, out_dir, echo=echo)


def write_preview(cfg, manifest, out_dir, *, limit: int | None = None, echo=print, progress: bool = True) -> dict:
    """Write the preview of `manifest`'s windows (the first `limit`) into `out_dir`; returns counts.
    A window whose source cannot be read is listed with its error; the others are still written."""
    from tqdm import tqdm

    from dataengine.atomic import atomic_text

    from .data import read_window

    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PreviewError(f"cannot write the preview to {out}: {e.strerror or e}") from e
    windows = manifest.windows[:limit] if limit else manifest.windows
    rows, thumbs, failed = [], [], 0
    readers: dict = {}
    for i, w in enumerate(tqdm(windows, desc="preview", unit="window", disable=not progress)):
        row = {"index": i, "key": w.key, "role": w.role, "clip_id": w.clip_id, "video": w.video_path,
               "start_s": round(w.start_s, 4), "end_s": round(w.start_s + w.frames / w.fps, 4), "fps": w.fps,
               "frames": w.frames, "size": f"{w.width or cfg.width}x{w.height or cfg.height}",
               "crop_share": round(w.crop, 4), "prompt": w.prompt}
        try:
            frames = read_window(w, cfg.height, cfg.width, readers)
        except Exception as e:  # noqa: BLE001 - a moved or damaged source: listed, the rest go on
            failed += 1
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
            rows.append(row)
            continue
        name = f"{i:04d}_{w.role}"
        save_sheet(frames, out / f"{name}.png")
        _save_gif(frames, out / f"{name}.gif", w.fps)
        row["file"], row["gif"] = f"{name}.png", f"{name}.gif"
        rows.append(row)
        if len(thumbs) < SHEET_WINDOWS:
            thumbs.append((i, w.role, frames[[0, len(frames) // 2, len(frames) - 1]]))
    atomic_text(out / "windows.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    if thumbs:
        contact_sheet(thumbs, out / "summary.png")
    echo(f"preview: {len(rows) - failed} window(s) written to {out} (exact frames as PNG sheets, GIFs; windows.jsonl; "
         f"summary.png{' of the first %d' % SHEET_WINDOWS if len(rows) > SHEET_WINDOWS else ''})"
         + (f"; {failed} could not be read (see windows.jsonl)" if failed else ""))
    return {"written": len(rows) - failed, "failed": failed, "dir": str(out)}


def save_sheet(frames: np.ndarray, path: Path) -> None:
    """The frames on a grid (ceil(sqrt(T)) columns, reading order, no gaps), lossless PNG."""
    from PIL import Image

    from dataengine.atomic import atomic_write

    t, h, w, _ = frames.shape
    cols = int(np.ceil(np.sqrt(t)))
    rows = int(np.ceil(t / cols))
    sheet = np.zeros((rows * h, cols * w, 3), np.uint8)
    for k, f in enumerate(frames):
        r, c = divmod(k, cols)
        sheet[r * h:(r + 1) * h, c * w:(c + 1) * w] = f
    with atomic_write(path) as fh:
        Image.fromarray(sheet).save(fh, format="PNG")


def read_sheet(path: Path, frames: int, size: str) -> np.ndarray:
    """The frames of a `save_sheet` PNG, given their count and WIDTHxHEIGHT."""
    from PIL import Image

    w, h = (int(x) for x in size.split("x"))
    with Image.open(path) as im:
        sheet = np.asarray(im.convert("RGB"))
    cols = int(np.ceil(np.sqrt(frames)))
    return np.stack([sheet[(k // cols) * h:(k // cols + 1) * h, (k % cols) * w:(k % cols + 1) * w]
                     for k in range(frames)])


def _save_gif(frames: np.ndarray, path: Path, fps: float) -> None:
    from dataengine.atomic import atomic_path
    from dataengine.media import save_gif

    with atomic_path(path) as tmp:
        save_gif(frames, tmp, fps)


def contact_sheet(thumbs: list, path: Path) -> None:
    """One row per window (first, middle, last frame), numbered and marked train or holdout;
    the rows flow into columns so the sheet stays roughly square."""
    from PIL import Image, ImageDraw

    tiles = []
    for i, role, fr in thumbs:
        h, w = fr.shape[1:3]
        tw = max(1, int(round(w * THUMB / h)))
        row = Image.new("RGB", (3 * tw + 4 * 2 + 40, THUMB + 4), "white")
        for k, f in enumerate(fr):
            row.paste(Image.fromarray(f).resize((tw, THUMB)), (40 + k * (tw + 2), 2))
        d = ImageDraw.Draw(row)
        d.text((2, 2), f"{i}", fill="black")
        d.text((2, 16), "hold" if role == "holdout" else "train", fill="#a00" if role == "holdout" else "#060")
        tiles.append(row)
    cols = max(1, int(np.ceil(np.sqrt(len(tiles) * THUMB / max(t.width for t in tiles)))))
    rows = int(np.ceil(len(tiles) / cols))
    tw, th = max(t.width for t in tiles), tiles[0].height
    sheet = Image.new("RGB", (cols * tw, rows * th), "white")
    for n, t in enumerate(tiles):
        sheet.paste(t, ((n // rows) * tw, (n % rows) * th))
    from dataengine.atomic import atomic_write

    with atomic_write(path) as fh:
        sheet.save(fh, format="PNG")
