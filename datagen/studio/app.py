"""The studio's web app: a Starlette app over one :class:`~datagen.studio.session.Studio`.

    GET  /                                  the page (static/index.html, studio.js, studio.css)
    GET  /api/state                         recipe, classes, eraser id, libraries (paint layers), or the load error
    POST /api/reload                        reread the recipe / library from disk
    POST /api/render?index&soft&library     body: the label map (PNG or raw H*W bytes) -> image/png (no mask)
    GET  /api/layout?index&library          the recipe layout's map of sample ``index``: raw H*W bytes
    POST /api/export/{kind}?index&soft&library   layout.png | recipe.yaml | image.png | mask.png | pair.zip
    POST /api/save?name&index&soft&library  the pair, map and recipe into OUT/name/ (name stays inside OUT)
    GET  /api/vectors?library               the library's vectors (label, cluster, tileability, classes)
    GET  /api/vectors/{id}/{full|grid}.png?library   thumbnail (cached)
    POST /api/vectors/label                 {"library", "ids": [...], "label": "name" | null}
    POST /api/vectors/rename                {"library", "old", "new"}

Bad input (a bad recipe, label map, name or path) answers 400 with ``{"error": one line}``,
the message the CLI prints; a path that leaves its folder answers 403. Requests must name
a local host (``Host`` header), and a cross-site page cannot post: a ``POST`` whose
``Origin`` is not this server is refused.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Awaitable, Callable, Sequence
from functools import wraps
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .session import Studio
from .wire import MAX_UPLOAD, USER_ERRORS, PathEscapeError, encode_png, one_line

STATIC = Path(__file__).with_name("static")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")

Handler = Callable[[Request], Awaitable[Response]]


def _api(fn: Handler) -> Handler:
    """User errors as 400 {"error": message} (403 for a path outside its folder)."""

    @wraps(fn)
    async def wrapper(request: Request) -> Response:
        try:
            return await fn(request)
        except PathEscapeError as e:
            return JSONResponse({"error": one_line(e)}, status_code=403)
        except USER_ERRORS as e:
            return JSONResponse({"error": one_line(e)}, status_code=400)

    return wrapper


def _int(request: Request, name: str, default: int | None = None) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        if default is None:
            raise ValueError(f"{name}: required")
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name}: expected a whole number, got {raw[:40]!r}") from None


def _float(request: Request, name: str) -> float | None:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return None
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name}: expected a number, got {raw[:40]!r}") from None


async def _body(request: Request) -> bytes:
    size = request.headers.get("content-length")
    if size is not None and size.isdigit() and int(size) > MAX_UPLOAD:
        raise ValueError(f"request body of {size} bytes is more than the {MAX_UPLOAD} allowed")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > MAX_UPLOAD:
            raise ValueError(f"request body is more than the {MAX_UPLOAD} bytes allowed")
        chunks.append(chunk)
    return b"".join(chunks)


async def _json(request: Request) -> dict[str, Any]:
    try:
        data = json.loads(await _body(request) or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"expected a JSON object: {e}") from None
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    return data


class _SameOrigin:
    """Refuse state-changing requests from other sites (a page elsewhere posting to localhost)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            origin = headers.get("origin")
            if origin and origin != "null" and urlsplit(origin).netloc != headers.get("host", ""):
                await JSONResponse({"error": f"cross-origin request from {origin} refused"}, status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening TCP socket for uvicorn (``Server.run(sockets=[...])``); port 0 picks a free one.

    Made with ``IPPROTO_TCP`` explicitly: asyncio turns Nagle's algorithm off (TCP_NODELAY) only
    on connections of such sockets, and with it on, a keep-alive response whose headers and body
    are written separately waits ~40 ms for the client's delayed ACK (every live render would)."""
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def create_app(recipe_or_library: str | Path | Studio, *, out_dir: str | Path = "studio-out", seed: int = 0,
               device: str | None = None, trust_pickles: bool = False, thumb_size: int | None = None,
               allowed_hosts: Sequence[str] = ()) -> Starlette:
    """The studio app for a recipe YAML or a vector library folder (or a ready :class:`Studio`).

    A source that fails to load still gives a working app: the page shows the error and
    reloads after the file is fixed. ``allowed_hosts``: host names besides the local ones
    that requests may address (the ``--host`` the server binds to)."""
    studio = recipe_or_library if isinstance(recipe_or_library, Studio) else Studio(
        recipe_or_library, out_dir=out_dir, seed=seed, device=device, trust_pickles=trust_pickles,
        thumb_size=thumb_size)

    async def painted(request: Request, then: Callable[[Any], Any]) -> Any:
        """The request's label map and choices, checked, handed to ``then`` on a worker thread (one hop)."""
        body = await _body(request)
        index, soft = _int(request, "index", 0), _float(request, "soft")
        library = request.query_params.get("library") or None
        return await run_in_threadpool(
            lambda: then(studio.paint_request(body, index=index, soft_boundary=soft, library=library)))

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    @_api
    async def state(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(studio.state))

    @_api
    async def reload(request: Request) -> Response:
        await run_in_threadpool(studio.reload)
        return JSONResponse(await run_in_threadpool(studio.state))

    @_api
    async def render(request: Request) -> Response:
        def work(paint: Any) -> tuple[bytes, dict[str, Any]]:
            image, info = studio.render(paint)
            return encode_png(image), info

        png, info = await painted(request, work)
        return Response(png, media_type="image/png", headers={
            "Cache-Control": "no-store", "X-Render-Ms": str(info["render_ms"]), "X-Index": str(info["index"])})

    @_api
    async def layout(request: Request) -> Response:
        labels = await run_in_threadpool(studio.random_layout, _int(request, "index", 0),
                                         request.query_params.get("library") or None)
        return Response(labels.tobytes(), media_type="application/octet-stream",
                        headers={"X-Height": str(labels.shape[0]), "X-Width": str(labels.shape[1])})

    @_api
    async def export(request: Request) -> Response:
        kind = request.path_params["kind"]
        content, media, filename = await painted(request, lambda paint: studio.export(kind, paint))
        return Response(content, media_type=media, headers={
            "Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"})

    @_api
    async def save(request: Request) -> Response:
        name = request.query_params.get("name", "")
        files = await painted(request, lambda paint: studio.save(name, paint))
        return JSONResponse({"files": [str(f) for f in files]})

    @_api
    async def vectors(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(studio.vectors, request.query_params.get("library") or None))

    @_api
    async def thumbnail(request: Request) -> Response:
        png = await run_in_threadpool(studio.thumbnail, request.query_params.get("library") or None,
                                      int(request.path_params["vid"]), request.path_params["mode"])
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    @_api
    async def label(request: Request) -> Response:
        data = await _json(request)
        label = data.get("label")
        if label is not None and not isinstance(label, str):
            raise ValueError(f"label: expected a name or null, got {str(label)[:40]!r}")
        out = await run_in_threadpool(studio.set_label, data.get("library") or None, data.get("ids"),
                                      label if label and label.strip() else None)
        return JSONResponse(out)

    @_api
    async def rename(request: Request) -> Response:
        data = await _json(request)
        old, new = data.get("old"), data.get("new")
        if not isinstance(old, str) or not (new is None or isinstance(new, str)):
            raise ValueError("expected {\"old\": label, \"new\": label or null}")
        return JSONResponse(await run_in_threadpool(studio.rename_label, data.get("library") or None, old, new))

    routes = [
        Route("/", index),
        Route("/api/state", state),
        Route("/api/reload", reload, methods=["POST"]),
        Route("/api/render", render, methods=["POST"]),
        Route("/api/layout", layout),
        Route("/api/export/{kind}", export, methods=["POST"]),
        Route("/api/save", save, methods=["POST"]),
        Route("/api/vectors", vectors),
        Route("/api/vectors/{vid:int}/{mode}.png", thumbnail),
        Route("/api/vectors/label", label, methods=["POST"]),
        Route("/api/vectors/rename", rename, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    hosts = [*LOCAL_HOSTS, *allowed_hosts]
    app = Starlette(routes=routes, middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=hosts),
                                               Middleware(_SameOrigin)])
    app.state.studio = studio
    return app


__all__ = ["bind_socket", "create_app"]
