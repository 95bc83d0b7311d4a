"""Who may use the UI: the token, its cookie, CSRF tokens, and read-only mode.

Every request carries the token, one of three ways: ``Authorization: Bearer TOKEN``
(API clients), the ``stateward_token_PORT`` cookie (a browser; a cookie belongs to a
host, not a port, so the name holds the port the request was sent to: two servers on
one host keep a cookie each), or ``?token=TOKEN`` once (the URL printed at start): a
page request with it gets the cookie and is redirected to the same URL without it, so
the token does not stay in the address bar or history.

A state-changing request authenticated by the cookie must also carry the CSRF token
(a form field ``csrf`` or the ``X-CSRF-Token`` header): a bearer token is never sent
by a browser on its own, a cookie is. In read-only mode every write is refused (403).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final
from urllib.parse import urlencode

from starlette.datastructures import URL
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

COOKIE: Final = "stateward_token"
CSRF_FIELD: Final = "csrf"
CSRF_HEADER: Final = "x-csrf-token"
WRITE_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def csrf_token(token: str) -> str:
    """The CSRF token of a session: derived from the secret, never the secret itself."""
    return hmac.new(token.encode(), b"stateward-ui-csrf", hashlib.sha256).hexdigest()


def cookie_name(request: Request) -> str:
    """The token cookie's name for the port the request was sent to (no port in the
    URL: ``stateward_token``)."""
    port = request.url.port
    return COOKIE if port is None else f"{COOKIE}_{port}"


def _same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def error(status: int, detail: str) -> JSONResponse:
    """An error as Airflow's API gives it: ``{"detail": "..."}``."""
    return JSONResponse({"detail": detail}, status_code=status)


class TokenAuth:
    """ASGI middleware: refuse a request without the token (401) or a write when
    read-only (403), and turn ``?token=`` on a page into the cookie."""

    def __init__(self, app: ASGIApp, *, token: str, read_only: bool) -> None:
        self.app = app
        self.token = token
        self.csrf = csrf_token(token)
        self.read_only = read_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        response = self._check(request)
        if response is None:
            await self.app(scope, receive, send)
        else:
            await response(scope, receive, send)

    def _check(self, request: Request) -> Response | None:
        header = request.headers.get("authorization", "")
        scheme, _, credentials = header.partition(" ")
        by_bearer = scheme.lower() == "bearer" and _same(credentials.strip(), self.token)
        cookie = cookie_name(request)
        by_cookie = _same(request.cookies.get(cookie), self.token)
        by_query = _same(request.query_params.get("token"), self.token)
        api = request.url.path.startswith("/api/")
        if not (by_bearer or by_cookie or by_query):
            if api:
                return error(401, "not authenticated: send 'Authorization: Bearer TOKEN'")
            return Response(
                "Not authenticated: open the URL 'stateward ui' printed (it holds the token).",
                status_code=401,
                media_type="text/plain",
            )
        if request.method in WRITE_METHODS:
            if self.read_only:
                return error(403, "this UI is read-only (started with --read-only)")
            # A header is checked here; a form's field is checked by the page handler,
            # which is the one that reads the body.
            if not by_bearer and api and not _same(request.headers.get(CSRF_HEADER), self.csrf):
                return error(403, "missing or wrong CSRF token (header X-CSRF-Token)")
        if by_query and not api and request.method == "GET":
            params = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            target = URL(path=request.url.path, query=urlencode(params))
            redirect = RedirectResponse(str(target), status_code=303)
            redirect.set_cookie(cookie, self.token, httponly=True, samesite="strict")
            return redirect
        return None


def check_form_csrf(form_value: object, token: str) -> Response | None:
    """Refuse a page form whose ``csrf`` field is not the session's (403)."""
    if isinstance(form_value, str) and _same(form_value, csrf_token(token)):
        return None
    return error(403, "missing or wrong CSRF token; reload the page and try again")
