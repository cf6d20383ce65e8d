"""A small OpenAI-compatible chat server around a local Qwen-VL captioner.

It stands in for vLLM/SGLang where they cannot run (no GPU, tests, CI): the same request shape
(`video_url` parts as `data:video/jpeg;base64,<frame>,<frame>,...`, a text part,
`response_format` with a JSON schema it enforces through xgrammar, `max_tokens`, `temperature`),
the same `GET /v1/models`. Concurrent requests are batched into one `generate()` call (up to
`max_batch`, waiting at most `batch_wait_s` for company), the way serving engines batch.

    python -m dataengine.caption.local_server --model tiny --port 8000
    de caption --api http://127.0.0.1:8000/v1 --model tiny-random-qwen2-vl

For tests it can misbehave on purpose (`Faults`): HTTP 500s, answers slower than the client's
timeout, and malformed bodies, by request number, so retries are exercised over real HTTP.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

log = logging.getLogger(__name__)

MAX_BODY = 256 * 1024 * 1024


@dataclass
class Faults:
    """Deterministic misbehaviour by request number (1-based, counting chat requests)."""

    fail_every: int = 0       # every k-th request: HTTP 500
    slow_every: int = 0       # every k-th request: sleep `slow_s` before answering
    slow_s: float = 0.0
    malformed_every: int = 0  # every k-th request: HTTP 200 with a body that is not JSON

    def pick(self, n: int) -> str | None:
        for kind, k in (("fail", self.fail_every), ("malformed", self.malformed_every), ("slow", self.slow_every)):
            if k and n % k == 0:
                return kind
        return None


@dataclass
class _Job:
    video: object
    text: str
    sampling: object
    meta: dict
    schema: dict | None
    seed: int
    done: threading.Event = field(default_factory=threading.Event)
    result: object = None
    error: str = ""


class _BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _decode_video(url: str) -> np.ndarray:
    import cv2

    prefix = "data:video/jpeg;base64,"
    if not url.startswith(prefix):
        raise _BadRequest(400, "video_url must be data:video/jpeg;base64,<frame>,<frame>,... (no remote URLs)")
    frames = []
    for part in url[len(prefix):].split(","):
        try:
            buf = np.frombuffer(base64.b64decode(part, validate=True), dtype=np.uint8)
        except (binascii.Error, ValueError) as e:
            raise _BadRequest(400, f"a frame is not valid base64: {e}") from e
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        if img is None:
            raise _BadRequest(400, "a frame is not a decodable JPEG")
        frames.append(img[..., ::-1])
    if not frames or len({f.shape for f in frames}) != 1:
        raise _BadRequest(400, "frames must be non-empty and all of one size")
    arr = np.stack(frames)
    if len(arr) % 2:
        arr = np.concatenate([arr, arr[-1:]])
    return np.ascontiguousarray(arr.transpose(0, 3, 1, 2))


class _Handler(BaseHTTPRequestHandler):
    """One request to a CaptionServer (its `owner`): the chat-completions route and /v1/models."""

    @property
    def owner(self) -> "CaptionServer":
        return self.server.owner
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet; the client reports
        log.debug(fmt, *args)

    def _send(self, status: int, body: bytes, ctype: str = "application/json"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj):
        self._send(status, json.dumps(obj).encode())

    def _authorised(self) -> bool:
        if self.owner.api_key and self.headers.get("Authorization") != f"Bearer {self.owner.api_key}":
            self._json(401, {"error": {"message": "invalid API key"}})
            return False
        return True

    def do_GET(self):
        if not self._authorised():
            return
        if self.path.rstrip("/") == "/v1/models":
            self._json(200, {"object": "list", "data": [{"id": self.owner.name, "object": "model",
                                                         "owned_by": "local"}]})
        else:
            self._json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self):
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            n = -1
        if not 0 < n <= MAX_BODY:
            self.close_connection = True  # the body was not read: the connection cannot be reused
            self._json(413 if n > MAX_BODY else 400, {"error": {"message": "bad Content-Length"}})
            return
        raw = self.rfile.read(n)
        if not self._authorised():
            return
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._json(404, {"error": {"message": f"no route {self.path}"}})
            return
        with self.owner._lock:
            self.owner.requests += 1
            number = self.owner.requests
        fault = self.owner.faults.pick(number)
        if fault == "fail":
            self._json(500, {"error": {"message": "injected failure"}})
            return
        if fault == "malformed":
            self._send(200, b'{"choices": [ {"message": trunc')
            return
        if fault == "slow":
            time.sleep(self.owner.faults.slow_s)
        try:
            answer = self.owner.complete(raw)
        except _BadRequest as e:
            self._json(e.status, {"error": {"message": str(e)}})
            return
        except Exception as e:  # noqa: BLE001 - a server answers 500, it does not die
            log.exception("generation failed")
            self._json(500, {"error": {"message": f"{type(e).__name__}: {e}"}})
            return
        try:
            self._json(200, answer)
        except (BrokenPipeError, ConnectionResetError):
            log.debug("the client left before its answer (timed out)")


class CaptionServer:
    def __init__(self, captioner, served_name: str, *, host: str = "127.0.0.1", port: int = 0, max_batch: int = 8,
                 batch_wait_s: float = 0.02, faults: Faults | None = None, api_key: str | None = None):
        self.cap = captioner
        self.api_key = api_key
        self.name = served_name
        self.max_batch = max_batch
        self.batch_wait_s = batch_wait_s
        self.faults = faults or Faults()
        self.jobs: queue.Queue[_Job] = queue.Queue()
        self.requests = 0
        self.batches: list[int] = []  # size of each generate() call
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.httpd = ThreadingHTTPServer((host, port), _Handler)
        self.httpd.owner = self
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://{host}:{self.port}/v1"
        self._worker = threading.Thread(target=self._generate_loop, name="caption-server-gen", daemon=True)

    # request -> job ---------------------------------------------------------------------------
    def complete(self, raw: bytes) -> dict:
        from .models import video_metadata
        from .prompts import SamplingParams

        try:
            body = json.loads(raw)
        except ValueError as e:
            raise _BadRequest(400, f"body is not JSON: {e}") from e
        if not isinstance(body, dict):
            raise _BadRequest(400, "body must be a JSON object")
        if body.get("model") != self.name:
            raise _BadRequest(404, f"The model `{body.get('model')}` does not exist. Served: {self.name}")
        try:
            content = body["messages"][-1]["content"]
            videos = [p["video_url"]["url"] for p in content if p.get("type") == "video_url"]
            texts = [p["text"] for p in content if p.get("type") == "text"]
        except (KeyError, IndexError, TypeError, AttributeError) as e:
            raise _BadRequest(400, "messages[-1].content must be a list of video_url and text parts") from e
        if len(videos) != 1 or len(texts) != 1:
            raise _BadRequest(400, "give exactly one video_url part and one text part")
        video = _decode_video(videos[0])
        schema = None
        rf = body.get("response_format") or {}
        if rf.get("type") == "json_schema":
            schema = (rf.get("json_schema") or {}).get("schema")
            if not isinstance(schema, dict):
                raise _BadRequest(400, "response_format.json_schema.schema must be an object")
        temperature = float(body.get("temperature") or 0.0)
        try:
            sampling = SamplingParams(max_new_tokens=int(body.get("max_tokens") or 256), do_sample=temperature > 0,
                                      temperature=temperature)
        except ValueError as e:
            raise _BadRequest(400, str(e)) from e
        fps = float((body.get("mm_processor_kwargs") or {}).get("fps") or 2.0)
        import torch

        job = _Job(torch.from_numpy(video).float(), texts[0], sampling,
                   video_metadata(None, int(video.shape[0]), fps), schema, int(body.get("seed") or 0))
        self.jobs.put(job)
        job.done.wait()
        if job.error:
            raise RuntimeError(job.error)
        g = job.result
        return {"id": f"chatcmpl-{uuid.uuid4().hex[:16]}", "object": "chat.completion", "created": int(time.time()),
                "model": self.name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": g.text},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": g.visual_tokens, "completion_tokens": len(g.text)}}

    # the one thread that runs the model -----------------------------------------------------------
    def _generate_loop(self) -> None:
        while not self._stop.is_set():
            try:
                first = self.jobs.get(timeout=0.2)
            except queue.Empty:
                continue
            batch = [first]
            deadline = time.perf_counter() + self.batch_wait_s
            while len(batch) < self.max_batch:
                try:
                    batch.append(self.jobs.get(timeout=max(0.0, deadline - time.perf_counter())))
                except queue.Empty:
                    break
            groups: dict[str, list[_Job]] = {}
            for j in batch:  # one generate() per identical prompt + constraint + sampling
                key = json.dumps([j.text, j.schema, j.sampling.__dict__], sort_keys=True)
                groups.setdefault(key, []).append(j)
            for jobs in groups.values():
                try:
                    gens = self.cap.generate([j.video for j in jobs], jobs[0].text, jobs[0].sampling,
                                             [j.meta for j in jobs], schema=jobs[0].schema, seed=jobs[0].seed)
                    self.batches.append(len(jobs))
                    for j, g in zip(jobs, gens):
                        j.result = g
                except Exception as e:  # noqa: BLE001
                    for j in jobs:
                        j.error = f"{type(e).__name__}: {e}"
                for j in jobs:
                    j.done.set()

    def start(self) -> "CaptionServer":
        self._worker.start()
        threading.Thread(target=self.httpd.serve_forever, name="caption-server-http", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def main(argv=None) -> None:
    import argparse

    from .models import load_captioner

    ap = argparse.ArgumentParser(prog="python -m dataengine.caption.local_server", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny", help="as `de caption --model` (tiny, a hub id, a local folder)")
    ap.add_argument("--served-name", default=None, help="the name clients pass as `model` [default: the label]")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000, help="0 picks a free port (printed)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--api-key-env", default=None, help="require the key in $VAR (Authorization: Bearer)")
    ap.add_argument("--batch-wait", type=float, default=0.02, help="seconds to wait for more requests to batch")
    ap.add_argument("--fail-every", type=int, default=0, help="fault injection: every k-th request answers 500")
    ap.add_argument("--slow-every", type=int, default=0, help="fault injection: every k-th request is slow")
    ap.add_argument("--slow-s", type=float, default=0.0)
    ap.add_argument("--malformed-every", type=int, default=0, help="fault injection: every k-th body is not JSON")
    a = ap.parse_args(argv)
    cap = load_captioner(a.model, device=a.device, name=a.served_name)
    srv = CaptionServer(cap, a.served_name or cap.name, host=a.host, port=a.port, max_batch=a.max_batch,
                        batch_wait_s=a.batch_wait,
                        faults=Faults(a.fail_every, a.slow_every, a.slow_s, a.malformed_every),
                        api_key=os.environ.get(a.api_key_env) if a.api_key_env else None).start()
    print(f"serving {srv.name} on {srv.url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        srv.stop()


if __name__ == "__main__":
    main()
