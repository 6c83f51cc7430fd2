"""HTTP plumbing shared by the server's routes: bodies, errors, auth, status counting, log redaction.

Kept apart from the routes so the vLLM proxy and the transformers server can share it without
importing each other.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
from typing import Any, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from kaito_core.runtime.errors import APIError, unauthorized
from kaito_core.runtime.protocol import parse_json

log = logging.getLogger("kaito.runtime.server")
KNOWN_ROUTES = {"/v1/chat/completions", "/v1/completions", "/v1/models", "/chat", "/health", "/healthz",
                "/metrics", "/", "/v1/load_lora_adapter", "/v1/unload_lora_adapter"}
CLIENT_GONE = 499  # nginx's code for "client closed the request": counted, never as a server error


class ClientGone(Exception):
    """The client disconnected before its request was read: nothing to answer, nothing to log."""


def check_content_type(value: str | None) -> None:
    """JSON bodies only, as FastAPI decides for vLLM's routes: no Content-Type is read as JSON,
    ``application/json`` and ``application/*+json`` are JSON, anything else (``text/plain``,
    forms: what a browser may send cross-origin without a preflight, or ``curl -d`` without
    ``-H``) is a 415 saying which header to send."""
    if value is None:
        return
    media = value.split(";", 1)[0].strip().lower()
    if media == "application/json" or (media.startswith("application/") and media.endswith("+json")):
        return
    raise APIError(415, f"Content-Type {value[:100]!r} is not JSON; send the body as JSON with the header "
                        "'Content-Type: application/json'", param="content-type", code="unsupported_media_type")


# Bodies above this size are parsed and checked on a worker thread: 200,000 content parts (6 MB)
# took 0.4 s of pure-Python checks on the event loop, and every running stream stalled meanwhile.
# (The worker holds the GIL too, but hands it over every few milliseconds.)
OFFLOAD_BYTES = 64 * 1024


async def read_json(request: Request, limit: int, timeout: float | None = None,
                    parse: Callable[[dict[str, Any]], Any] | None = None) -> Any:
    """The body as a JSON object (or ``parse`` of it): at most ``limit`` bytes, each chunk within
    ``timeout`` seconds; a large body is parsed off the event loop."""
    check_content_type(request.headers.get("content-type"))
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):  # the body would be read as JSON as it is: "not valid UTF-8"
        raise APIError(415, f"Content-Encoding {encoding[:40]!r} is not supported; send the body uncompressed",
                       param="content-encoding", code="unsupported_media_type")
    raw = await read_body(request, limit, timeout)
    if not raw.strip():
        raise APIError(400, "the request body is empty; send a JSON object", param="body", code="invalid_json")

    def work() -> Any:
        body = parse_json(raw)
        return body if parse is None else parse(body)

    return await asyncio.to_thread(work) if len(raw) > OFFLOAD_BYTES else work()


async def read_body(request: Request, limit: int, timeout: float | None = None) -> bytes:
    """The raw body: at most ``limit`` bytes (413 beyond), each chunk within ``timeout`` seconds
    (408 beyond); a client gone mid-upload is :class:`ClientGone`."""
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise APIError(400, f"Content-Length {length!r} is not a number", param="body", code="invalid_body")
        if int(length) > limit:
            raise APIError(413, f"the request body is {int(length)} bytes; the limit is {limit} bytes "
                                "(--max-body-bytes)", param="body", code="request_too_large")
    chunks, size = [], 0
    stream = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), timeout)
        except StopAsyncIteration:
            break
        except ClientDisconnect:
            raise ClientGone() from None
        except asyncio.TimeoutError:
            raise APIError(408, f"the request body did not arrive within {timeout:g}s (--timeout-body); "
                                f"{size} bytes were received", param="body", code="request_timeout",
                           headers={"Connection": "close"}) from None
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"the request body is over the limit of {limit} bytes (--max-body-bytes)",
                           param="body", code="request_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


class ErrorJSON(JSONResponse):
    """An error answer that can always be encoded: a message quoting what the client sent (a
    path, a value) must never turn a 400 into a 500 (``ensure_ascii`` escapes anything)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def error_response(exc: APIError, request: Request | None = None) -> JSONResponse:
    body = exc.body()
    if request is not None and request.url.path == "/chat":
        # upstream KAITO's /chat answered FastAPI's {"detail": "..."}; its clients read that key
        body["detail"] = exc.message
    return ErrorJSON(body, status_code=exc.status, headers=exc.headers)


def allowed_methods(request: Request) -> str:
    """Every method some route serves at this path (Starlette's own 405 names only the first
    route that matched the path: GET /admin/adapters hid POST)."""
    path = request.scope.get("path", "")
    methods: set[str] = set()
    for route in request.app.router.routes:
        regex, route_methods = getattr(route, "path_regex", None), getattr(route, "methods", None)
        if regex is not None and route_methods and regex.match(path):
            methods |= set(route_methods)
    if methods:
        methods.add("OPTIONS")
    return ", ".join(sorted(methods))


def install_error_handlers(app: FastAPI) -> None:
    """Every answer other than 2xx is an OpenAI error object (plus ``detail`` on ``/chat``)."""

    @app.exception_handler(APIError)
    async def on_api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc, request)

    # Handlers for specific classes run in Starlette's ExceptionMiddleware, which does not
    # re-raise; the catch-all below runs in ServerErrorMiddleware, which re-raises so uvicorn
    # logs an ERROR traceback: a client that hung up mid-upload must never land there.
    @app.exception_handler(ClientGone)
    @app.exception_handler(ClientDisconnect)
    async def on_client_gone(request: Request, exc: Exception) -> JSONResponse:
        log.info("client went away while sending %s", request.url.path)
        return JSONResponse({}, status_code=CLIENT_GONE)  # never delivered; counted as 499

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> Response:
        headers = dict(exc.headers or {})
        if exc.status_code == 404:
            err = APIError(404, f"no route {request.method} {request.url.path}; see the routes in docs/runtime.md",
                           code="not_found")
        elif exc.status_code == 405:
            allowed = allowed_methods(request) or headers.get("Allow", "")
            if request.method == "OPTIONS":
                # RFC 9110 9.3.7: OPTIONS asks what a resource allows; no CORS headers are
                # granted, so a browser's preflight from another origin still fails
                return Response(status_code=204, headers={"Allow": allowed})
            # Starlette's 405 carries the route's methods in Allow (RFC 9110 15.5.6 requires it)
            usable = ", ".join(m for m in allowed.split(", ") if m != "OPTIONS") or "another method"
            err = APIError(405, f"{request.method} is not allowed on {request.url.path}; use {usable}",
                           code="method_not_allowed", headers={"Allow": allowed} if allowed else None)
        else:
            err = APIError(exc.status_code, str(exc.detail), code="http_error", headers=headers)
        return error_response(err, request)

    @app.exception_handler(Exception)
    async def on_crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return error_response(APIError(500, f"internal error: {type(exc).__name__}", type="server_error",
                                       code="internal_error"), request)


class Auth:
    """``Authorization: Bearer KEY`` (or ``api-key`` / ``x-api-key``), compared in constant time."""

    def __init__(self, api_key: str | None):
        self.api_key = api_key

    def check(self, request: Request) -> None:
        if not self.api_key:
            return
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else (
            request.headers.get("api-key") or request.headers.get("x-api-key") or "")
        if not token or not hmac.compare_digest(token.encode(), self.api_key.encode()):
            raise unauthorized()

    def check_admin(self, request: Request) -> None:
        if not self.api_key:
            raise APIError(403, "adapter admin routes are disabled: start the server with an API key "
                                "(--api-key-file or KAITO_API_KEY) to load and unload adapters at run time",
                           type="permission_error", code="admin_disabled")
        self.check(request)


class StatusRecorder:
    """Pure ASGI middleware counting answers by route and status (no BaseHTTPMiddleware: it
    would break streaming and disconnect detection). A client that went away counts as 499,
    neither a client nor a server error."""

    def __init__(self, app: Any, metrics: Any):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = {"code": 500}

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            path = scope.get("path", "")
            route = path if path in KNOWN_ROUTES else ("/admin" if path.startswith("/admin") else "other")
            code = status["code"]
            self.metrics.requests.labels(route, str(code)).inc()
            if code == CLIENT_GONE:
                self.metrics.disconnects.labels(route).inc()
            elif code >= 400:
                self.metrics.errors.labels(str(code), "client" if code < 500 else "server").inc()


_SECRET_QUERY = re.compile(r"(?i)([?&](?:api[_-]?key|key|token|access_token|auth|password|secret)=)[^&\s]*")


def redact(text: str) -> str:
    """``/v1/models?api_key=abc`` -> ``/v1/models?api_key=REDACTED``."""
    return _SECRET_QUERY.sub(r"\1REDACTED", text)


class RedactSecrets(logging.Filter):
    """On uvicorn's access log: keys sent in the query string never reach the log in full."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def install_log_redaction() -> None:
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactSecrets) for f in logger.filters):
        logger.addFilter(RedactSecrets())
