"""The ASGI application (routing table, error handlers) and the server that runs it."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from importlib import resources

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._runtime.runtime import Runtime
from . import api, pages
from .auth import TokenAuth
from .data import InvalidError, UiData, UiError

_log = logging.getLogger("stateward.ui")


def new_token() -> str:
    """A random token for a server started without ``--token``."""
    return secrets.token_urlsafe(24)


async def _ui_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, UiError)
    if not request.url.path.startswith("/api/"):
        return await pages.error_page(request, exc.status, exc.detail)
    if isinstance(exc, InvalidError):
        # FastAPI's shape, which Airflow's clients read as HTTPValidationError.
        detail = [{"type": "value_error", "loc": list(exc.loc), "msg": exc.detail}]
        return JSONResponse({"detail": detail}, status_code=exc.status)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if not request.url.path.startswith("/api/"):
        return await pages.error_page(request, exc.status_code, exc.detail)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)


class Guard:
    """ASGI middleware, outermost: refuse a NUL in the path or the query (422: no store
    keeps one, PostgreSQL refuses it), answer an unexpected error with a 500 that
    holds no traceback (logged here), and send ``X-Content-Type-Options: nosniff``
    with every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_guarded(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [
                    *message.get("headers", []), (b"x-content-type-options", b"nosniff")
                ]  # fmt: skip
            await send(message)

        api = str(scope["path"]).startswith("/api/")
        query = bytes(scope.get("query_string", b"")).lower()
        if "\0" in scope["path"] or b"%00" in query:
            where = "path" if "\0" in scope["path"] else "query"
            text = "a NUL character (%00) cannot be part of an id, a key or a parameter"
            detail = [{"type": "value_error", "loc": [where], "msg": text}]
            refusal = JSONResponse({"detail": detail}, status_code=422)
            await refusal(scope, receive, send_guarded)
            return
        try:
            await self.app(scope, receive, send_guarded)
        except Exception:
            _log.exception("stateward ui: %s %s failed", scope.get("method"), scope["path"])
            if started:
                raise
            failed: Response = (
                JSONResponse({"detail": "internal error"}, status_code=500)
                if api
                else PlainTextResponse("Internal error: the server's log says what failed.", 500)
            )
            await failed(scope, receive, send_guarded)


def make_app(rt: Runtime, *, token: str, read_only: bool = False) -> Starlette:
    """The UI's ASGI application over an open runtime.

    Args:
        rt: The open runtime whose out-of-band admin the application uses.
        token: The secret every request must carry.
        read_only: Refuse every write (403).
    """
    static = StaticFiles(directory=str(resources.files("stateward._ui") / "static"))
    routes: list[BaseRoute] = [
        *api.routes(),
        *pages.routes(),
        Mount("/static", app=static, name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(Guard),
            Middleware(TokenAuth, token=token, read_only=read_only),
        ],
        exception_handlers={UiError: _ui_error, HTTPException: _http_error},
    )
    app.state.data = UiData(rt)
    app.state.token = token
    app.state.read_only = read_only
    app.state.templates = pages.environment()
    return app


async def serve(
    app: Starlette,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    on_ready: Callable[[list[str]], None] | None = None,
    shutdown: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Serve ``app`` with Hypercorn's trio worker in the current trio loop.

    Args:
        app: From :func:`make_app`.
        host: The address to bind (127.0.0.1 unless told otherwise).
        port: The port (0: any free one).
        on_ready: Called with the bound URLs once the server listens.
        shutdown: Returns when the server should stop (default: never).
    """
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    # No access log: a first request's URL holds the token.
    config.accesslog = None
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(
            lambda task_status: hypercorn_serve(
                app,  # type: ignore[arg-type]
                config,
                shutdown_trigger=shutdown,
                task_status=task_status,
            )
        )
        if on_ready is not None:
            on_ready(binds)
