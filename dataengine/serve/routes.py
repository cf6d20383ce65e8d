"""The pages and endpoints of `de serve`, one method each (web.create_app wires them behind the
Guard). Every catalog or disk access runs in the threadpool, so one slow request never blocks the
event loop."""

from __future__ import annotations

import functools
from pathlib import Path
from urllib.parse import quote, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from catalog.db import CatalogError
from catalog.query import QueryError

from ..identity import check_source
from ..video import VideoError
from .app import PAGE_SIZE, BadRequest, Browser, Busy, qs

# Requests that carry user SQL (a WHERE clause or a search) run on their own few threads: a flood
# of them waits there, or is answered "busy", and never takes the threads the clip pages, media
# and index-served grid pages answer on.
SQL_THREADS = 8


def cross_site(request) -> bool:
    """A browser's request made by another site's page (Sec-Fetch-Site): it may not make this
    server run SQL. Requests without the header (scripts, curl) are not browsers' and pass."""
    return request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none")


def user_sql(params: dict) -> bool:
    return bool(params.get("q") or params.get("search"))

HERE = Path(__file__).parent
COOKIE = "de_token"


def cookie_name(request) -> str:
    """The login cookie's name for the port this server listens on: cookies are not port-scoped,
    so two `de serve` on one host would otherwise overwrite each other's (as Jupyter names its
    cookies per port)."""
    server = request.scope.get("server") or (None, None)
    return f"{COOKIE}_{server[1]}" if server[1] else COOKIE
FILTER_KEYS = ("q", "tag", "video", "dur", "labelling", "search")
RUN_FILE_CSP = ("sandbox; default-src 'none'; img-src 'self' data:; media-src 'self'; style-src 'unsafe-inline'; "
                "frame-ancestors 'self'")


class Pages:
    """The routes' handlers; `page` renders a template with what this request may do."""

    def __init__(self, browser: Browser):
        self.browser = browser
        self._sql_limiter = None  # made on the event loop, where anyio wants it
        # autoescape on: captions are untrusted text
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.templates.env.globals.update(qs=qs, PAGE_SIZE=PAGE_SIZE,
                                          fmt=lambda v, n=2: "" if v is None else f"{v:.{n}f}")
        self.templates.env.filters["u"] = lambda v: quote(str(v), safe="/")

    def reader_token(self, request):
        """The secret as a page request carries it (cookie, or the header for scripts)."""
        return request.headers.get("x-de-token") or request.cookies.get(cookie_name(request))

    def page(self, request, name, ctx, status=200):
        writable = self.browser.authorised(self.reader_token(request))
        ctx = {"writable": writable, "token_required": bool(self.browser.token),
               "write_token": self.browser.token if writable else "", **ctx}
        return self.templates.TemplateResponse(request, name, ctx, status_code=status)

    def failure(self, request, e, status=400):
        msg = e.args[0] if e.args else str(e)
        return self.page(request, "error.html", {"message": msg}, status=getattr(e, "status", status))

    def with_token_login(self, handler):
        """`/?token=SECRET` (the link `de serve` prints) sets the cookie and redirects to the same
        URL without the secret, so it stays out of the history and of Referer headers."""
        async def wrapped(request):
            t = request.query_params.get("token")
            if t is not None:
                rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
                resp = RedirectResponse(request.url.path + ("?" + urlencode(rest) if rest else ""), status_code=303)
                if self.browser.token and self.browser.authorised(t):
                    resp.set_cookie(cookie_name(request), t, httponly=True, samesite="strict")
                return resp
            return await handler(request)
        return wrapped

    async def _sql_thread(self, fn, *args):
        import anyio

        if self._sql_limiter is None:
            self._sql_limiter = anyio.CapacityLimiter(SQL_THREADS)
        if self._sql_limiter.borrowed_tokens >= SQL_THREADS:
            raise Busy("the server is busy with other filters; try again in a moment")
        return await anyio.to_thread.run_sync(functools.partial(fn, *args), limiter=self._sql_limiter)

    async def grid(self, request):
        p = request.query_params
        params = {k: p.get(k) for k in FILTER_KEYS}
        try:
            if user_sql(params) and cross_site(request):
                raise BadRequest("another site's page may not run filters on this server", 403)
            call = functools.partial(self.browser.grid, page=_int(p.get("page"), 1), **params)
            data = await (self._sql_thread(call) if user_sql(params) else run_in_threadpool(call))
        except (QueryError, BadRequest, CatalogError, Busy) as e:
            msg = e.args[0] if e.args else str(e)
            return self.page(request, "grid.html", {"error": msg, "q": params["q"] or "", "search": params["search"] or "",
                                               "rows": [], "total": 0,
                                               "tags": [], "videos": [], "durations": [], "labellings": [],
                                               "pin": None, "page": 1, "pages": 1, "summary_error": None,
                                               "filters": params}, status=getattr(e, "status", 400))
        return self.page(request, "grid.html", {**data, "error": None, "filters": params})

    async def grid_summary(self, request):
        """The count and the facets of a filter as HTML fragments (the grid page's script swaps
        them in): 202 while they are being computed, so the script asks again."""
        p = request.query_params
        params = {k: p.get(k) for k in FILTER_KEYS}
        try:
            if user_sql(params) and cross_site(request):
                raise BadRequest("another site's page may not run filters on this server", 403)
            call = functools.partial(self.browser.summary, **params, wait=2.0)
            data = await (self._sql_thread(call) if user_sql(params) else run_in_threadpool(call))
        except (QueryError, BadRequest, CatalogError, Busy) as e:
            return Response(e.args[0] if e.args else str(e), status_code=getattr(e, "status", 400),
                            media_type="text/plain; charset=utf-8")
        if data is None:
            return Response("counting", status_code=202, media_type="text/plain; charset=utf-8")
        page = _int(p.get("page"), 1)
        ctx = {**data, "pages": max(1, -(-data["total"] // PAGE_SIZE)), "page": min(page, 10**9),
               "filters": params, "summary_error": None, "rows": []}
        return self.page(request, "grid_summary.html", ctx)

    async def clip(self, request):
        try:
            data = await run_in_threadpool(self.browser.clip, request.path_params["clip_id"])
        except (BadRequest, QueryError, CatalogError) as e:
            return self.failure(request, e)
        return self.page(request, "clip.html", data)

    async def curate(self, request):
        cid = request.path_params["clip_id"]
        supplied = request.headers.get("x-de-token")
        if supplied is None:
            return JSONResponse({"error": "writes need the X-DE-Token header (the page sends it; scripts: the "
                                          "token de serve printed)"}, status_code=403)
        if not self.browser.authorised(supplied):
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
            row = await run_in_threadpool(lambda: self.browser.curate(cid, **edit))
        except LookupError as e:
            return JSONResponse({"error": e.args[0] if e.args else str(e)}, status_code=404)
        except (CurationError, BadRequest) as e:
            return JSONResponse({"error": e.args[0] if e.args else str(e)}, status_code=getattr(e, "status", 400))
        except CatalogError as e:
            return JSONResponse({"error": str(e)}, status_code=503)
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse(row)
        return RedirectResponse(f"/clip/{cid}", status_code=303)

    async def thumb(self, request):
        try:
            row = await run_in_threadpool(self.browser.media_row, request.path_params["clip_id"])
        except (BadRequest, CatalogError) as e:
            return Response(str(e), status_code=getattr(e, "status", 404))
        kp = self.browser.keyframe(row)
        if kp is None:
            return Response("no keyframe", status_code=404)
        return FileResponse(kp, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    async def media(self, request):
        try:
            row = await run_in_threadpool(self.browser.media_row, request.path_params["clip_id"])
            if self.browser_playable(row):
                await run_in_threadpool(check_source, row["video_path"], row["video_id"])
                return FileResponse(row["video_path"], media_type=_mime(row["video_path"]))
            path = await run_in_threadpool(self.browser.preview, row)
            return FileResponse(path, media_type="video/mp4")
        except (BadRequest, CatalogError) as e:
            return Response(str(e), status_code=getattr(e, "status", 404))
        except VideoError as e:
            return Response(f"{e.kind}: {e}", status_code=409)

    async def runs(self, request):
        return self.page(request, "runs.html", {"runs": await run_in_threadpool(self.browser.runs),
                                           "runs_dir": self.browser.runs_dir})

    async def run(self, request):
        try:
            data = await run_in_threadpool(self.browser.run_page, request.path_params["name"])
        except BadRequest as e:
            return self.failure(request, e)
        return self.page(request, "run.html", data)

    async def run_file(self, request):
        try:
            p = await run_in_threadpool(self.browser.run_file, request.path_params["name"],
                                        request.path_params["path"])
        except BadRequest as e:
            return Response(str(e), status_code=e.status)
        if p is None:
            return Response("not a file of this run", status_code=404)
        # whatever a run folder holds is data, never this origin's script
        headers = {"Content-Security-Policy": RUN_FILE_CSP, "X-Content-Type-Options": "nosniff",
                   "Cache-Control": "no-cache"}
        if p.suffix.lower() in (".md", ".csv", ".jsonl"):
            return FileResponse(p, media_type="text/plain; charset=utf-8", headers=headers)
        return FileResponse(p, headers=headers)

    async def health(self, request):
        return JSONResponse({"ok": True})

    def browser_playable(self, row):
        from .app import playable

        return playable(row["video_path"], row.get("codec"))


def _int(v, default):
    try:
        return max(1, min(int(str(v)[:12]), 10**9))
    except (TypeError, ValueError):
        return default


def _mime(path: str) -> str:
    return {".webm": "video/webm", ".m4v": "video/mp4"}.get(Path(path).suffix.lower(), "video/mp4")
