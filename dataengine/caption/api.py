"""`de caption --api URL`: label clips through an OpenAI-compatible chat endpoint.

vLLM (`vllm serve`), SGLang, LMDeploy and hosted endpoints all speak `POST /v1/chat/completions`.
Each clip's frames are sampled and sized exactly as in-process (same reader, same sampling rule,
same qwen-vl-utils size), JPEG-encoded and sent as one `video_url` part,
`data:video/jpeg;base64,<frame>,<frame>,...` (the form vLLM's video loader reads frame by frame),
with the prompt as a text part. When the labelling is constrained, the caption schema goes as
`response_format` (`json_schema`; vLLM and SGLang enforce it with their grammar backend).

Up to `concurrency` requests are in flight. 429, 5xx, timeouts, dropped connections and
malformed bodies are retried with exponential backoff (honouring `Retry-After`); 401/403/404
stop the run at once (every request would fail the same way); any other failure is stored as a
`request_error` row for that clip, so the run goes on and `--retry-failed` redoes it.
"""

from __future__ import annotations

import base64
import logging
import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass

import numpy as np

from .models import Generation, prepare_frames
from .prompts import Prompt
from .api_client import ApiError, _Client, _RequestFailed
from .run import Backend, CaptionSummary, Preparer, Prepared, Step, label_clips
from .specs import named_random, served_geometry

log = logging.getLogger(__name__)

ENDPOINT_KIND = "openai-chat/video-jpeg"


@dataclass
class ApiSettings:
    base_url: str
    model: str
    api_key: str | None = None
    concurrency: int = 8
    timeout: float = 120.0
    retries: int = 5
    backoff: float = 1.0  # seconds, doubled per attempt, with jitter
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        from urllib.parse import urlparse

        u = urlparse(self.base_url)
        if u.scheme not in ("http", "https") or not u.netloc:
            raise ApiError(f"--api needs an http(s) URL such as http://127.0.0.1:8000/v1, got {self.base_url!r}")
        self.base_url = self.base_url.rstrip("/")
        if not self.base_url.endswith("/v1"):
            self.base_url += "/v1"
        if self.concurrency < 1:
            raise ApiError("--concurrency must be at least 1")
        if not 1 <= self.jpeg_quality <= 100:
            raise ApiError("--jpeg-quality must be in 1..100")

    @property
    def endpoint(self) -> str:
        """What shapes the answer besides the prompt: part of the prompt version."""
        return f"{ENDPOINT_KIND}/q{self.jpeg_quality}"


def encode_frames(video: np.ndarray, quality: int) -> list[str]:
    """uint8 (N,3,H,W) RGB -> base64 JPEG strings."""
    import cv2

    out = []
    for f in video.transpose(0, 2, 3, 1):
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(f[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise ValueError("JPEG encoding failed")
        out.append(base64.b64encode(buf.tobytes()).decode("ascii"))
    return out


def request_body(settings: ApiSettings, frames_b64: list[str], text: str, prompt: Prompt, fps: float) -> dict:
    s = prompt.sampling
    body = {
        "model": settings.model,
        "messages": [{"role": "user", "content": [
            {"type": "video_url", "video_url": {"url": "data:video/jpeg;base64," + ",".join(frames_b64)}},
            {"type": "text", "text": text}]}],
        "max_tokens": s.max_new_tokens,
        "temperature": s.temperature if s.do_sample else 0.0,
        # vLLM passes these to the HF processor: the frames are already sampled, at this rate
        "mm_processor_kwargs": {"fps": fps, "do_sample_frames": False},
    }
    if not s.do_sample:
        body["seed"] = 0
    if prompt.schema is not None:
        body["response_format"] = {"type": "json_schema",
                                   "json_schema": {"name": "clip_caption", "schema": prompt.schema, "strict": True}}
    return body


def check_endpoint(settings: ApiSettings) -> list[str]:
    """GET /v1/models: the endpoint answers, and serves `settings.model` (when it lists models).
    Fails fast with what to do, before any clip is read."""
    import requests

    headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
    try:
        r = requests.get(settings.base_url + "/models", headers=headers, timeout=min(10.0, settings.timeout))
    except requests.RequestException as e:
        raise ApiError(f"cannot reach {settings.base_url}: {str(e).splitlines()[0][:200]}. Start the server "
                       "(e.g. `vllm serve MODEL`) or fix --api") from e
    if r.status_code in (401, 403):
        raise ApiError(f"{settings.base_url} refused the key (HTTP {r.status_code}); set --api-key-env VAR")
    if r.status_code != 200:
        return []  # some servers do not list models; the first request will tell
    try:
        served = [m["id"] for m in r.json().get("data", [])]
    except (ValueError, KeyError, TypeError, AttributeError):
        return []
    if served and settings.model not in served:
        raise ApiError(f"{settings.base_url} does not serve {settings.model!r}; it serves: {', '.join(served)}")
    return served


class ApiCaptioner:
    """The frame side of a served model: sizes frames for its vision tower; no weights here."""

    def __init__(self, settings: ApiSettings, name: str | None = None):
        self.settings = settings
        self.name = name or settings.model
        self.is_random = named_random(settings.model) or named_random(self.name)
        self.device = "remote"
        self.patch_size, self.merge_size = served_geometry(settings.model)

    def prepare(self, frames: np.ndarray, sampling) -> np.ndarray:
        return prepare_frames(frames, sampling, self.patch_size, self.merge_size)

    def visual_tokens(self, video: np.ndarray) -> int:
        """What the model's processor will make of these frames (same rule as in-process)."""
        n, _, h, w = video.shape
        unit = self.patch_size * self.merge_size
        return (n // 2) * (h // unit) * (w // unit)


class ApiBackend(Backend):
    """Generation by a served endpoint, `settings.concurrency` requests in flight; each clip is
    prepared in the thread that sends it (one `Preparer` per thread, so one open video each)."""

    desc = "caption (api)"

    def __init__(self, settings: ApiSettings, name: str | None = None):
        self.settings = settings
        self.cap = ApiCaptioner(settings, name)
        self.name, self.is_random = self.cap.name, self.cap.is_random
        self.kind = "random" if self.is_random else "real"
        self.client = _Client(settings)
        self._local = threading.local()
        self._ex: ThreadPoolExecutor | None = None

    def run_params(self) -> dict:
        return {"executor": "api", "endpoint": self.settings.base_url, "concurrency": self.settings.concurrency}

    def _one(self, row: dict, text: str, prompt: Prompt) -> tuple[Prepared, Generation | None]:
        prep = getattr(self._local, "prep", None)
        if prep is None:
            prep = self._local.prep = Preparer(self.cap, prompt.sampling)
        p = prep.one(row)
        if p.error:
            return p, None
        t0 = time.perf_counter()
        try:
            frames_b64 = encode_frames(p.video, self.settings.jpeg_quality)
            data = self.client.post("/chat/completions", request_body(self.settings, frames_b64, text, prompt,
                                                                      p.metadata["fps"]))
        except _RequestFailed as e:
            p.error, p.failed_at = f"request: {e}", "request"
            return p, None
        p.seconds += time.perf_counter() - t0
        content = data["choices"][0]["message"]["content"] or ""
        return p, Generation(self.client.redact(content), self.cap.visual_tokens(p.video), int(p.video.shape[0]))

    def steps(self, todo, prompt, s):
        text = prompt.render()
        window = max(2, 2 * self.settings.concurrency)  # bounded: never more than this many clips in memory
        self._ex = ThreadPoolExecutor(max_workers=self.settings.concurrency, thread_name_prefix="caption-api")
        pending: set = set()
        it = iter(todo)
        exhausted = False
        while pending or not exhausted:
            while not exhausted and len(pending) < window:
                row = next(it, None)
                if row is None:
                    exhausted = True
                else:
                    pending.add(self._ex.submit(self._one, row, text, prompt))
            if not pending:
                break
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            yield Step([f.result() for f in done])  # ApiError (fatal) propagates from here

    def close(self, s, failed):
        # on failure do not wait for requests in flight (they may be retrying): their clips have
        # no row yet and a rerun labels them
        if self._ex is not None:
            self._ex.shutdown(wait=not failed, cancel_futures=True)
        s.retries = self.client.retried
        s.notes.append("sent without mm_processor_kwargs (the server refused the field)"
                       if self.client.dropped_mm_kwargs else "sent with mm_processor_kwargs (vLLM's frame-rate hint)")


def caption_via_api(catalog_path, settings: ApiSettings, prompt: Prompt, todo: list[dict], *, name: str | None,
                    **driver) -> CaptionSummary:
    """Label `todo` through the endpoint (the one driver, `run.label_clips`, with `ApiBackend`)."""
    return label_clips(catalog_path, ApiBackend(settings, name), prompt, todo, **driver)


def api_key_from_env(var: str | None) -> str | None:
    if not var:
        return None
    key = os.environ.get(var)
    if not key:
        raise ApiError(f"--api-key-env {var}: that environment variable is not set")
    return key

