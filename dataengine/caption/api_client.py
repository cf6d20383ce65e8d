"""The HTTP side of `de caption --api`: one client per run (a pooled session, a deadline per
request, a cap on the answer's size, retries with backoff), and what an answer or an error body
means. dataengine.caption.api drives it."""

from __future__ import annotations

import json
import logging
import random
import re
import threading
import time

from catalog.timeouts import after

log = logging.getLogger("dataengine.caption.api")

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
FATAL_STATUS = {401, 403, 404}


class ApiError(Exception):
    """The endpoint cannot serve this run (bad URL, key, or model name); the message says which."""


MAX_RESPONSE_BYTES = 1 << 20  # a caption answer is a few KB; the body also carries usage and ids
MAX_ERROR_CHARS = 300
_BEARER_RE = re.compile(r"(?i)(bearer|basic|token|api[-_]?key|authorization|x-api-key)([\"':= ]+)([A-Za-z0-9._~+/=-]{6,})")


class _Watch:
    """Where this thread's request in flight keeps its socket, so a watchdog timer can cut it at
    the request's total deadline: requests' `timeout` bounds each read, not the request, and a body
    (or headers) dripping a byte a second never trips it."""

    local = threading.local()

    @classmethod
    def holder(cls) -> list:
        h = cls.local.holder = [None]
        return h

    @classmethod
    def register(cls, sock) -> None:
        h = getattr(cls.local, "holder", None)
        if h is not None:
            h[0] = sock


def _watched_adapter():
    """A requests adapter whose connections report their socket to _Watch on every request."""
    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    def watched(base):
        class Conn(base):
            def request(self, *a, **kw):
                if self.sock is None:
                    self.connect()
                _Watch.register(self.sock)
                return super().request(*a, **kw)
        return Conn

    class Pool(HTTPConnectionPool):
        ConnectionCls = watched(HTTPConnection)

    class SPool(HTTPSConnectionPool):
        ConnectionCls = watched(HTTPSConnection)

    class Adapter(HTTPAdapter):
        def init_poolmanager(self, *a, **kw):
            super().init_poolmanager(*a, **kw)
            self.poolmanager.pool_classes_by_scheme = {"http": Pool, "https": SPool}

    return Adapter()


class _Deadline(Exception):
    pass


class _TooBig(Exception):
    pass


class _Client:
    """One requests.Session per thread; retries with backoff. Every attempt has a total deadline
    (`--request-timeout`) and a size cap on the answer; every error text kept from the endpoint is
    redacted (gateways that echo the request's headers would otherwise store the key)."""

    def __init__(self, settings):  # dataengine.caption.api.ApiSettings
        self.s = settings
        self._local = threading.local()
        self.retried = 0
        self._lock = threading.Lock()
        # vLLM takes `mm_processor_kwargs`; strict OpenAI-compatible servers refuse unknown fields.
        # None until a server refuses it; then every later request goes without.
        self.send_mm_kwargs = True
        self.dropped_mm_kwargs = False

    def redact(self, text: str) -> str:
        text = str(text)
        if self.s.api_key:
            text = text.replace(self.s.api_key, "[redacted]")
        return _BEARER_RE.sub(lambda m: m.group(1) + m.group(2) + "[redacted]", text)

    def _session(self):
        sess = getattr(self._local, "session", None)
        if sess is None:
            import requests

            sess = requests.Session()
            adapter = _watched_adapter()
            sess.mount("http://", adapter)
            sess.mount("https://", adapter)
            if self.s.api_key:
                sess.headers["Authorization"] = f"Bearer {self.s.api_key}"
            self._local.session = sess
        return sess

    def _sleep(self, attempt: int, retry_after: str | None) -> None:
        with self._lock:
            self.retried += 1
        delay = self.s.backoff * (2 ** attempt) * (0.5 + random.random())
        if retry_after:
            try:
                delay = max(delay, min(60.0, float(retry_after)))
            except ValueError:
                pass
        time.sleep(delay)

    def _fetch(self, url: str, body: dict) -> tuple[int, dict, bytes]:
        """(status, headers, body bytes), within the total deadline and the size cap."""
        import socket

        deadline = time.monotonic() + self.s.timeout
        held = _Watch.holder()  # the adapter puts this request's socket here before sending
        fired = threading.Event()

        def cut():
            fired.set()
            if held[0] is not None:
                try:
                    held[0].shutdown(socket.SHUT_RDWR)  # a blocked recv in the worker returns at once
                except OSError:
                    pass

        with after(self.s.timeout, cut):
            try:
                r = self._session().post(url, json=body, timeout=(min(10.0, self.s.timeout), self.s.timeout),
                                         stream=True)
                try:
                    declared = r.headers.get("Content-Length", "")
                    if declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
                        raise _TooBig
                    chunks, got = [], 0
                    while True:
                        if fired.is_set() or time.monotonic() > deadline:
                            raise _Deadline
                        chunk = r.raw.read1(65536, decode_content=True)  # what has arrived, not a full 64 KB
                        if not chunk:
                            break
                        got += len(chunk)
                        if got > MAX_RESPONSE_BYTES:
                            raise _TooBig
                        chunks.append(chunk)
                    if fired.is_set():
                        raise _Deadline
                    return r.status_code, dict(r.headers), b"".join(chunks)
                finally:
                    r.close()
            except (_TooBig, _Deadline):
                raise
            except Exception:
                if fired.is_set():  # the watchdog cut the socket: whatever broke, the deadline passed
                    raise _Deadline from None
                raise
            finally:
                held[0] = None

    def post(self, path: str, body: dict) -> dict:
        import requests

        url = self.s.base_url + path
        last = ""
        attempt = 0
        while attempt <= self.s.retries:
            retry_after = None
            sent = body if self.send_mm_kwargs else {k: v for k, v in body.items() if k != "mm_processor_kwargs"}
            try:
                status, headers, raw = self._fetch(url, sent)
            except _Deadline:
                last = f"no complete answer within {self.s.timeout:g} s (--request-timeout)"
            except _TooBig:
                raise _RequestFailed(f"the answer is larger than {MAX_RESPONSE_BYTES:,} bytes; a caption answer "
                                     "is a few KB (is --api the right server?)") from None
            except requests.Timeout:
                last = f"no answer within {self.s.timeout:g} s"
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as e:
                last = f"connection failed: {self.redact(str(e).splitlines()[0][:200])}"
            except requests.RequestException as e:
                raise _RequestFailed(self.redact(f"request failed: {str(e).splitlines()[0][:200]}")) from None
            else:
                text = self.redact(raw[:4096].decode("utf-8", "replace").strip())
                if status in FATAL_STATUS:
                    raise ApiError(f"{url} answered HTTP {status}: {text[:MAX_ERROR_CHARS]}"
                                   + (" (check --api-key-env)" if status in (401, 403) else
                                      " (check the URL and --model: it must be the served model name)"))
                if status == 200:
                    data = _answer(raw)
                    if data is not None:
                        return data
                    last = f"malformed answer body: {text[:120]!r}"
                elif status in RETRY_STATUS:
                    last = f"HTTP {status}"
                    retry_after = headers.get("Retry-After")
                elif status in (400, 422) and "mm_processor_kwargs" in sent and _refuses_extra_field(text):
                    # a strict OpenAI-compatible server: send the same request without vLLM's field
                    with self._lock:
                        if self.send_mm_kwargs:
                            log.warning("%s refused mm_processor_kwargs (HTTP %d); sending requests without it: "
                                        "the frames still go at the sampled rate, but the server will not be told "
                                        "their fps", self.s.base_url, status)
                        self.send_mm_kwargs, self.dropped_mm_kwargs = False, True
                    continue  # not a retry: the same attempt, corrected
                else:  # a request this server will not take (e.g. too many frames): not worth retrying
                    raise _RequestFailed(f"HTTP {status}: {text[:MAX_ERROR_CHARS]}")
            if attempt < self.s.retries:
                self._sleep(attempt, retry_after)
            attempt += 1
        raise _RequestFailed(self.redact(f"{last} (after {self.s.retries + 1} attempts)"))


def _refuses_extra_field(text: str) -> bool:
    t = text.lower()
    return "mm_processor_kwargs" in t or "extra" in t or "unrecognized" in t or "unknown field" in t \
        or "additional properties" in t or "not permitted" in t


def _answer(raw: bytes) -> dict | None:
    """The decoded body if it is a chat completion with text content; None if malformed, too deep
    (json recurses per level), or the content is not text."""
    try:
        data = json.loads(raw)
        content = data["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError, RecursionError):
        return None
    if content is not None and not isinstance(content, str):
        return None
    return data


class _RequestFailed(Exception):
    pass
