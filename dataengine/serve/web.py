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
from urllib.parse import quote

from .app import PAGE_SIZE, BadRequest, Browser, qs

HERE = Path(__file__).parent
LOCAL_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
APP_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
           "media-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'self'")
RUN_FILE_CSP = ("sandbox; default-src 'none'; img-src 'self' data:; media-src 'self'; style-src 'unsafe-inline'; "
                "frame-ancestors 'self'")
COOKIE = "de_token"


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
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles
    from starlette.templating import Jinja2Templates

    from catalog.db import CatalogError
    from catalog.query import QueryError

    from ..identity import check_source
    from ..video import VideoError

    templates = Jinja2Templates(directory=str(HERE / "templates"))  # autoescape on: captions are untrusted text
    templates.env.globals.update(qs=qs, PAGE_SIZE=PAGE_SIZE, fmt=lambda v, n=2: "" if v is None else f"{v:.{n}f}")
    templates.env.filters["u"] = lambda v: quote(str(v), safe="/")

    def reader_token(request):
        """The secret as a page request carries it (cookie, or the header for scripts)."""
        return request.headers.get("x-de-token") or request.cookies.get(COOKIE)

    def page(request, name, ctx, status=200):
        writable = browser.authorised(reader_token(request))
        return templates.TemplateResponse(request, name, {"writable": writable, "token_required": bool(browser.token),
                                                          "write_token": browser.token if writable else "", **ctx},
                                          status_code=status)

    def failure(request, e, status=400):
        msg = e.args[0] if e.args else str(e)
        return page(request, "error.html", {"message": msg}, status=getattr(e, "status", status))

    def with_token_login(handler):
        """`/?token=SECRET` (the link `de serve` prints) sets the cookie and redirects to the same
        URL without the secret, so it stays out of the history and of Referer headers."""
        async def wrapped(request):
            t = request.query_params.get("token")
            if t is not None:
                rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
                from urllib.parse import urlencode

                resp = RedirectResponse(request.url.path + ("?" + urlencode(rest) if rest else ""), status_code=303)
                if browser.token and browser.authorised(t):
                    resp.set_cookie(COOKIE, t, httponly=True, samesite="strict")
                return resp
            return await handler(request)
        return wrapped

    async def grid(request):
        p = request.query_params
        params = {k: p.get(k) for k in ("q", "tag", "video", "dur", "labelling")}
        try:
            data = await run_in_threadpool(browser.grid, page=_int(p.get("page"), 1), **params)
        except (QueryError, BadRequest, CatalogError) as e:
            msg = e.args[0] if e.args else str(e)
            return page(request, "grid.html", {"error": msg, "q": params["q"] or "", "rows": [], "total": 0,
                                               "tags": [], "videos": [], "durations": [], "labellings": [],
                                               "pin": None, "page": 1, "pages": 1, "filters": params}, status=400)
        return page(request, "grid.html", {**data, "error": None, "filters": params})

    async def clip(request):
        try:
            data = await run_in_threadpool(browser.clip, request.path_params["clip_id"])
        except (BadRequest, QueryError, CatalogError) as e:
            return failure(request, e)
        return page(request, "clip.html", data)

    async def curate(request):
        cid = request.path_params["clip_id"]
        supplied = request.headers.get("x-de-token")
        if supplied is None:
            return JSONResponse({"error": "writes need the X-DE-Token header (the page sends it; scripts: the "
                                          "token de serve printed)"}, status_code=403)
        if not browser.authorised(supplied):
            return JSONResponse({"error": "wrong token: open the link de serve printed"}, status_code=403)
        form = await request.form(max_files=0, max_fields=16)
        action = form.get("action", "save")
        edit = {}
        if action in ("accept", "reject"):
            edit["rejected"] = action == "reject"
        elif action == "save":
            if "tags" in form:
                edit["tags"] = str(form.get("tags", ""))
            if "caption" in form:
                edit["caption"] = str(form.get("caption", ""))
        else:
            return JSONResponse({"error": f"unknown action {str(action)[:40]!r}"}, status_code=400)
        from catalog.curation import CurationError

        try:
            row = await run_in_threadpool(lambda: browser.curate(cid, **edit))
        except LookupError as e:
            return JSONResponse({"error": e.args[0] if e.args else str(e)}, status_code=404)
        except (CurationError, BadRequest) as e:
            return JSONResponse({"error": e.args[0] if e.args else str(e)}, status_code=getattr(e, "status", 400))
        except CatalogError as e:
            return JSONResponse({"error": str(e)}, status_code=503)
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse(row)
        return RedirectResponse(f"/clip/{cid}", status_code=303)

    async def thumb(request):
        try:
            row = await run_in_threadpool(browser.media_row, request.path_params["clip_id"])
        except (BadRequest, CatalogError) as e:
            return Response(str(e), status_code=getattr(e, "status", 404))
        kp = browser.keyframe(row)
        if kp is None:
            return Response("no keyframe", status_code=404)
        return FileResponse(kp, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    async def media(request):
        try:
            row = await run_in_threadpool(browser.media_row, request.path_params["clip_id"])
            if browser_playable(row):
                await run_in_threadpool(check_source, row["video_path"], row["video_id"])
                return FileResponse(row["video_path"], media_type=_mime(row["video_path"]))
            path = await run_in_threadpool(browser.preview, row)
            return FileResponse(path, media_type="video/mp4")
        except (BadRequest, CatalogError) as e:
            return Response(str(e), status_code=getattr(e, "status", 404))
        except VideoError as e:
            return Response(f"{e.kind}: {e}", status_code=409)

    async def runs(request):
        return page(request, "runs.html", {"runs": await run_in_threadpool(browser.runs),
                                           "runs_dir": browser.runs_dir})

    async def run(request):
        try:
            data = await run_in_threadpool(browser.run_page, request.path_params["name"])
        except BadRequest as e:
            return failure(request, e)
        return page(request, "run.html", data)

    async def run_file(request):
        try:
            files = await run_in_threadpool(browser.run_files, request.path_params["name"])
        except BadRequest as e:
            return Response(str(e), status_code=e.status)
        p = files.get(request.path_params["path"])
        if p is None:
            return Response("not a file of this run", status_code=404)
        # whatever a run folder holds is data, never this origin's script
        headers = {"Content-Security-Policy": RUN_FILE_CSP, "X-Content-Type-Options": "nosniff",
                   "Cache-Control": "no-cache"}
        if p.suffix.lower() in (".md", ".csv", ".jsonl"):
            return FileResponse(p, media_type="text/plain; charset=utf-8", headers=headers)
        return FileResponse(p, headers=headers)

    async def health(request):
        return JSONResponse({"ok": True})

    def browser_playable(row):
        from .app import playable

        return playable(row["video_path"], row.get("codec"))

    routes = [
        Route("/", with_token_login(grid)),
        Route("/clip/{clip_id}", with_token_login(clip)),
        Route("/clip/{clip_id}/curate", curate, methods=["POST"]),
        Route("/media/thumb/{clip_id}", thumb),
        Route("/media/clip/{clip_id}", media),
        Route("/runs", with_token_login(runs)),
        Route("/runs/{name}", with_token_login(run)),
        Route("/runs/{name}/file/{path:path}", run_file),
        Route("/healthz", health),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        yield
        browser.close()  # the query worker processes

    app = Starlette(routes=routes, lifespan=lifespan, max_body_size=1 << 20)
    app.state.browser = browser
    return Guard(app, set(allowed_hosts))


def _int(v, default):
    try:
        return max(1, min(int(str(v)[:12]), 10**9))
    except (TypeError, ValueError):
        return default


def _mime(path: str) -> str:
    return {".webm": "video/webm", ".m4v": "video/mp4"}.get(Path(path).suffix.lower(), "video/mp4")
