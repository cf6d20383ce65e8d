"""Routes and templates of `de serve` (see app.py for what is read and written)."""

from __future__ import annotations

from pathlib import Path

from .app import PAGE_SIZE, BadRequest, Browser, qs

HERE = Path(__file__).parent


def create_app(browser: Browser):
    from starlette.applications import Starlette
    from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles
    from starlette.templating import Jinja2Templates

    from catalog.db import CatalogError
    from catalog.query import QueryError

    from ..identity import check_source
    from ..video import VideoError

    templates = Jinja2Templates(directory=str(HERE / "templates"))  # autoescape on: captions are untrusted text
    templates.env.globals.update(qs=qs, PAGE_SIZE=PAGE_SIZE, fmt=lambda v, n=2: "" if v is None else f"{v:.{n}f}")

    def page(request, name, ctx, status=200):
        resp = templates.TemplateResponse(request, name, {"writable": browser.authorised(_token(request)),
                                                          "token_required": bool(browser.token), **ctx},
                                          status_code=status)
        t = request.query_params.get("token")
        if t and browser.authorised(t):  # open once with ?token=..., then the cookie carries it
            resp.set_cookie("de_token", t, httponly=True, samesite="strict")
        return resp

    def _token(request):
        return request.headers.get("x-de-token") or request.cookies.get("de_token") or request.query_params.get("token")

    def failure(request, e, status=400):
        msg = e.args[0] if e.args else str(e)
        return page(request, "error.html", {"message": msg}, status=getattr(e, "status", status))

    async def grid(request):
        p = request.query_params
        params = {k: p.get(k) for k in ("q", "tag", "video", "dur", "labelling")}
        try:
            data = browser.grid(page=_int(p.get("page"), 1), **params)
        except (QueryError, BadRequest, CatalogError) as e:
            msg = e.args[0] if e.args else str(e)
            return page(request, "grid.html", {"error": msg, "q": params["q"] or "", "rows": [], "total": 0,
                                               "tags": [], "videos": [], "durations": [], "labellings": [],
                                               "pin": None, "page": 1, "pages": 1, "filters": params}, status=400)
        return page(request, "grid.html", {**data, "error": None, "filters": params})

    async def clip(request):
        try:
            data = browser.clip(request.path_params["clip_id"])
        except (BadRequest, QueryError, CatalogError) as e:
            return failure(request, e)
        return page(request, "clip.html", data)

    async def curate(request):
        cid = request.path_params["clip_id"]
        form = await request.form()
        if not browser.authorised(_token(request) or form.get("token")):
            return JSONResponse({"error": "writes need the server's --token"}, status_code=403)
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
            return JSONResponse({"error": f"unknown action {action!r}"}, status_code=400)
        from catalog.curation import CurationError

        try:
            row = browser.curate(cid, **edit)
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
            row = browser.media_row(request.path_params["clip_id"])
        except (BadRequest, CatalogError) as e:
            return Response(str(e), status_code=getattr(e, "status", 404))
        kp = row.get("keyframe_path")
        if not kp or not Path(kp).is_file():
            return Response("no keyframe", status_code=404)
        return FileResponse(kp, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    async def media(request):
        try:
            row = browser.media_row(request.path_params["clip_id"])
            if browser_playable(row):
                check_source(row["video_path"], row["video_id"])
                return FileResponse(row["video_path"], media_type=_mime(row["video_path"]))
            import anyio

            path = await anyio.to_thread.run_sync(browser.preview, row)
            return FileResponse(path, media_type="video/mp4")
        except (BadRequest, CatalogError) as e:
            return Response(str(e), status_code=getattr(e, "status", 404))
        except VideoError as e:
            return Response(f"{e.kind}: {e}", status_code=409)

    async def runs(request):
        return page(request, "runs.html", {"runs": browser.runs(), "runs_dir": browser.runs_dir})

    async def run(request):
        try:
            data = browser.run_page(request.path_params["name"])
        except BadRequest as e:
            return failure(request, e)
        return page(request, "run.html", data)

    async def run_file(request):
        try:
            files = browser.run_files(request.path_params["name"])
        except BadRequest as e:
            return Response(str(e), status_code=e.status)
        p = files.get(request.path_params["path"])
        if p is None:
            return Response("not a file of this run", status_code=404)
        if p.suffix == ".md":
            return Response(p.read_text(errors="replace"), media_type="text/plain; charset=utf-8")
        return FileResponse(p)

    async def health(request):
        return JSONResponse({"ok": True, "catalog": str(browser.catalog)})

    def browser_playable(row):
        from .app import playable

        return playable(row["video_path"], row.get("codec"))

    routes = [
        Route("/", grid),
        Route("/clip/{clip_id}", clip),
        Route("/clip/{clip_id}/curate", curate, methods=["POST"]),
        Route("/media/thumb/{clip_id}", thumb),
        Route("/media/clip/{clip_id}", media),
        Route("/runs", runs),
        Route("/runs/{name}", run),
        Route("/runs/{name}/file/{path:path}", run_file),
        Route("/healthz", health),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(routes=routes)
    app.state.browser = browser
    del HTMLResponse
    return app


def _int(v, default):
    try:
        return max(1, int(v))
    except (TypeError, ValueError):
        return default


def _mime(path: str) -> str:
    return {".webm": "video/webm", ".m4v": "video/mp4"}.get(Path(path).suffix.lower(), "video/mp4")
