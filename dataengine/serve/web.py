"""Routes and templates of `de serve` (see app.py for what is read and written).

What the server trusts (the README's "de serve: security" says the same for users):
- **Host.** Only the names it is reached by on this machine: 127.0.0.1, localhost, [::1], any IP
  literal (an address cannot be rebound), the interface it was bound to, and names given with
  --allow-host. Any other Host header is refused (403) before routing: a page on an attacker's
  domain that re-resolves to 127.0.0.1 (DNS rebinding) gets nothing.
- **Writes.** Only POST writes, and only when the request carries the per-launch secret in the
  custom `X-DE-Token` header (a cross-site form cannot set a header, and a cross-site fetch with
  one needs a CORS preflight this server never grants), comes from this origin (`Origin`, when
  sent, equals the request's own; `Sec-Fetch-Site`, when sent, is same-origin or none).
- **Run files** are served with `nosniff` and a `sandbox` CSP: a report's script never runs with
  this origin's rights. The app's own pages load scripts only from /static.
"""

from __future__ import annotations

import ipaddress
import secrets
from pathlib import Path

from .app import Browser

HERE = Path(__file__).parent
LOCAL_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
APP_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
           "media-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'self'")


def new_token() -> str:
    return secrets.token_urlsafe(18)


def host_name(host_header: str) -> str:
    """`example.com:8000` -> `example.com`; `[::1]:8000` -> `::1`; lowercased."""
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[1:h.find("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def host_allowed(host_header: str | None, allowed: set[str]) -> bool:
    if not host_header:
        return False
    name = host_name(host_header)
    if name in LOCAL_NAMES or name in allowed:
        return True
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


class Guard:
    """ASGI middleware: the Host allow-list for every request, the origin checks for writes,
    and the security headers on every response."""

    def __init__(self, app, allowed_hosts: set[str]):
        self.app = app
        self.allowed = {host_name(h) for h in allowed_hosts if h}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host")
        if not host_allowed(host, self.allowed):
            return await _plain(send, 403, f"Host {host_name(host or '')!r} is not allowed: open this server as "
                                           "127.0.0.1 or localhost, or start it with --allow-host NAME")
        if scope["method"] not in ("GET", "HEAD"):
            origin = headers.get("origin")
            own = f"{scope.get('scheme', 'http')}://{host}"
            if origin is not None and origin.lower() != own.lower():
                return await _plain(send, 403, "cross-origin write refused")
            site = headers.get("sec-fetch-site")
            if site is not None and site not in ("same-origin", "none"):
                return await _plain(send, 403, f"cross-site write refused (Sec-Fetch-Site: {site[:20]})")

        async def with_headers(message):
            if message["type"] == "http.response.start":
                h = list(message.get("headers", []))
                names = {k.lower() for k, _ in h}
                extra = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                         (b"x-frame-options", b"SAMEORIGIN"), (b"cross-origin-resource-policy", b"same-origin")]
                if b"content-security-policy" not in names:
                    extra.append((b"content-security-policy", APP_CSP.encode()))
                message = {**message, "headers": h + [x for x in extra if x[0] not in names]}
            await send(message)

        return await self.app(scope, receive, with_headers)


async def _plain(send, status: int, text: str):
    body = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
                            (b"x-content-type-options", b"nosniff")]})
    await send({"type": "http.response.body", "body": body})


def create_app(browser: Browser, allowed_hosts: set[str] | frozenset = frozenset()):
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    from .routes import Pages

    h = Pages(browser)
    routes = [
        Route("/", h.with_token_login(h.grid)),
        Route("/grid/summary", h.grid_summary),
        Route("/clip/{clip_id}", h.with_token_login(h.clip)),
        Route("/clip/{clip_id}/curate", h.curate, methods=["POST"]),
        Route("/media/thumb/{clip_id}", h.thumb),
        Route("/media/clip/{clip_id}", h.media),
        Route("/runs", h.with_token_login(h.runs)),
        Route("/runs/{name}", h.with_token_login(h.run)),
        Route("/runs/{name}/file/{path:path}", h.run_file),
        Route("/healthz", h.health),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]

    @asynccontextmanager
    async def lifespan(app):
        browser.warm()  # the unfiltered grid's count and facets, before the first curator asks
        yield
        browser.close()  # the query worker processes

    app = Starlette(routes=routes, lifespan=lifespan, max_body_size=1 << 20)
    app.state.browser = browser
    return Guard(app, set(allowed_hosts))
