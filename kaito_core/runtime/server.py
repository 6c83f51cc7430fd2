"""The HTTP server: OpenAI routes, upstream KAITO's ``/chat``, health, metrics, adapter admin.

:func:`create_app` builds the FastAPI app (the model loads in the background after start, and
``/health`` answers 503 until it is ready); :func:`serve` runs it with uvicorn, or hands over
to vLLM when ``runtime="vllm"``. Bodies are parsed by hand (:mod:`.protocol`) so that every
refusal is an OpenAI error object naming the parameter, and nothing a client sends can make
the server answer 500.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from kaito_core.runtime import responses as R
from kaito_core.runtime.errors import APIError, bad_param, missing_param, unauthorized
from kaito_core.runtime.metrics import Metrics
from kaito_core.runtime.options import OptionsError, ServeOptions, check_adapter_name, check_strength
from kaito_core.runtime.protocol import parse_chat, parse_completion, parse_json, parse_kaito_chat
from kaito_core.runtime.service import Prepared, TransformersService

log = logging.getLogger("kaito.runtime.server")
OPEN_PATHS = ("/health", "/healthz", "/metrics", "/")


def resolve_preset(name: str | None) -> Any:
    if not name:
        return None
    from kaito_core.plugins import get_registry

    return get_registry().get_preset(name)


# -- plumbing ------------------------------------------------------------------------------


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise APIError(400, f"Content-Length {length!r} is not a number", param="body", code="invalid_body")
        if int(length) > limit:
            raise APIError(413, f"the request body is {int(length)} bytes; the limit is {limit} bytes "
                                "(--max-body-bytes)", param="body", code="request_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"the request body is over the limit of {limit} bytes (--max-body-bytes)",
                           param="body", code="request_too_large")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise APIError(400, "the request body is empty; send a JSON object", param="body", code="invalid_json")
    return parse_json(raw)


def error_response(exc: APIError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


class StatusRecorder:
    """Pure ASGI middleware counting answers by route and status (no BaseHTTPMiddleware: it
    would break streaming and disconnect detection)."""

    def __init__(self, app: Any, metrics: Metrics):
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
            code = str(status["code"])
            self.metrics.requests.labels(route, code).inc()
            if status["code"] >= 400:
                self.metrics.errors.labels(code, "client" if status["code"] < 500 else "server").inc()


KNOWN_ROUTES = {"/v1/chat/completions", "/v1/completions", "/v1/models", "/chat", "/health", "/healthz",
                "/metrics", "/", "/v1/load_lora_adapter", "/v1/unload_lora_adapter"}


# -- the app -------------------------------------------------------------------------------


def create_app(opts: ServeOptions | None = None, *, load_in_background: bool = True, **kwargs: Any) -> FastAPI:
    """The server as an ASGI app: ``opts``, or keyword arguments of :class:`ServeOptions`
    (``preset`` may be a preset name or a :class:`~kaito_core.types.ModelPreset`)."""
    from kaito_core.types import ModelPreset

    preset: Any = None
    if isinstance(kwargs.get("preset"), ModelPreset):
        preset = kwargs["preset"]
        kwargs["preset"] = preset.name
    if opts is None:
        opts = ServeOptions(**kwargs)
    elif kwargs:
        raise TypeError(f"create_app: pass either opts or keyword options, not both ({sorted(kwargs)})")
    if opts.runtime != "transformers":
        from kaito_core.runtime.vllm_proxy import create_proxy_app

        return create_proxy_app(opts, preset=preset)
    preset = preset if preset is not None else resolve_preset(opts.preset)
    metrics = Metrics()
    service = TransformersService(opts, preset=preset, metrics=metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start(asyncio.get_running_loop(), background=load_in_background)
        try:
            yield
        finally:
            await asyncio.to_thread(service.stop)

    app = FastAPI(title="kaito inference", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.service = service
    app.state.metrics = metrics
    app.state.options = opts
    app.add_middleware(StatusRecorder, metrics=metrics)

    @app.exception_handler(APIError)
    async def on_api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            err = APIError(404, f"no route {request.method} {request.url.path}; see the routes in docs/runtime.md",
                           code="not_found")
        elif exc.status_code == 405:
            err = APIError(405, f"{request.method} is not allowed on {request.url.path}", code="method_not_allowed")
        else:
            err = APIError(exc.status_code, str(exc.detail), code="http_error")
        return error_response(err)

    @app.exception_handler(Exception)
    async def on_crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return error_response(APIError(500, f"internal error: {type(exc).__name__}", type="server_error",
                                       code="internal_error"))

    def check_auth(request: Request) -> None:
        if not opts.api_key:
            return
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else (
            request.headers.get("api-key") or request.headers.get("x-api-key") or "")
        if not token or not hmac.compare_digest(token.encode(), opts.api_key.encode()):
            raise unauthorized()

    def check_admin(request: Request) -> None:
        if not opts.api_key:
            raise APIError(403, "adapter admin routes are disabled: start the server with --api-key (or "
                                "KAITO_API_KEY) to load and unload adapters at run time", type="permission_error",
                           code="admin_disabled")
        check_auth(request)

    async def body_of(request: Request) -> dict[str, Any]:
        check_auth(request)
        return await read_json(request, opts.max_body_bytes)

    # -- health & metrics ----------------------------------------------------------------

    def health() -> JSONResponse:
        if service.ready:
            return JSONResponse({"status": "Healthy"})
        status = {"loading": "Loading", "failed": "Failed"}.get(service.state, "Unavailable")
        body = {"status": status}
        if service.error:
            body["error"] = service.error
        return JSONResponse(body, status_code=503)

    app.get("/health")(health)
    app.get("/healthz")(health)

    @app.get("/")
    async def home() -> dict[str, str]:
        return {"message": "Server is running"}

    @app.get("/metrics")
    async def metrics_route() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    # -- OpenAI ----------------------------------------------------------------------------

    @app.get("/v1/models")
    async def list_models(request: Request) -> dict[str, Any]:
        check_auth(request)
        service.require_ready()
        data = [R.model_card(service.model_id, service.created, root=opts.model,
                             max_model_len=service.loaded.context_length)]
        for name, info in sorted(service.adapters.adapters.items()):
            data.append(R.model_card(name, info.created, parent=service.model_id, root=info.source,
                                     max_model_len=service.loaded.context_length))
        return {"object": "list", "data": data}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str, request: Request) -> dict[str, Any]:
        listing = await list_models(request)
        for card in listing["data"]:
            if card["id"] == model_id:
                return card
        from kaito_core.runtime.errors import model_not_found

        raise model_not_found(model_id, [c["id"] for c in listing["data"]])

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        parsed = parse_chat(await body_of(request))
        prep = service.prepare(parsed)
        rid, created = R.new_id("chatcmpl"), int(time.time())
        if parsed.stream:
            return stream(request, prep, rid, created, chat=True)
        text, finish, n = await collect(request, prep)
        return JSONResponse(R.chat_completion(rid, prep.model_id, text, finish, len(prep.prompt_ids), n, created))

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        parsed = parse_completion(await body_of(request))
        prep = service.prepare(parsed)
        rid, created = R.new_id("cmpl"), int(time.time())
        if parsed.stream:
            return stream(request, prep, rid, created, chat=False)
        text, finish, n = await collect(request, prep)
        if parsed.echo:
            text = prep.prompt_text + text
        return JSONResponse(R.completion(rid, prep.model_id, text, finish, created, len(prep.prompt_ids), n))

    @app.post("/chat")
    async def kaito_chat(request: Request) -> dict[str, str]:
        parsed = parse_kaito_chat(await body_of(request))
        prep = service.prepare(parsed)
        text, _, _ = await collect(request, prep)
        if parsed.return_full_text and parsed.prompt is not None:
            text = parsed.prompt + text
        return {"Result": text}

    async def collect(request: Request, prep: Prepared) -> tuple[str, str, int]:
        parts, finish, n = [], "stop", 0
        async for out in service.generate(prep, request.is_disconnected):
            parts.append(out.text)
            n = out.completion_tokens
            if out.finished:
                finish = "length" if out.finish_reason == "length" else "stop"
        return "".join(parts), finish, n

    def stream(request: Request, prep: Prepared, rid: str, created: int, chat: bool) -> StreamingResponse:
        model = prep.model_id
        include_usage = prep.parsed.include_usage

        async def events() -> AsyncIterator[bytes]:
            n = 0
            if chat:
                yield R.sse(R.chat_chunk(rid, model, created, {"role": "assistant", "content": ""}))
            try:
                async for out in service.generate(prep, request.is_disconnected):
                    n = out.completion_tokens
                    finish = None
                    if out.finished:
                        finish = "length" if out.finish_reason == "length" else "stop"
                    if chat:
                        if out.text:
                            yield R.sse(R.chat_chunk(rid, model, created, {"content": out.text}))
                        if finish:
                            yield R.sse(R.chat_chunk(rid, model, created, {}, finish))
                    elif out.text or finish:
                        yield R.sse(R.completion(rid, model, out.text, finish, created))
            except APIError as exc:
                yield R.sse(exc.body())
                yield R.SSE_DONE
                return
            if include_usage:
                make = R.chat_usage_chunk if chat else R.completion_usage_chunk
                yield R.sse(make(rid, model, created, len(prep.prompt_ids), n))
            yield R.SSE_DONE

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # -- adapter admin (vLLM's routes + a REST form) ---------------------------------------

    def admin_args(body: dict[str, Any], name_key: str, source_key: str | None) -> tuple[str, str, float]:
        name = body.get(name_key)
        if name is None:
            raise missing_param(name_key, "the adapter's name (what clients send as 'model')")
        if not isinstance(name, str):
            raise bad_param(name_key, name, "a string", code="invalid_type")
        try:
            check_adapter_name(name)
        except OptionsError:
            raise bad_param(name_key, name, "1-63 letters, digits, '.', '_' or '-'") from None
        if source_key is None:
            return name, "", 1.0
        source = body.get(source_key)
        if source is None:
            raise missing_param(source_key, "an adapter directory or an OCI reference")
        if not isinstance(source, str) or not source:
            raise bad_param(source_key, source, "a directory path or an OCI reference", code="invalid_type")
        try:
            strength = check_strength(body.get("strength", 1.0))
        except OptionsError:
            raise bad_param("strength", body.get("strength"), "a number in [0, 1]") from None
        return name, source, strength

    def adapter_card(info: Any) -> dict[str, Any]:
        card = R.model_card(info.name, info.created, parent=service.model_id, root=info.source)
        card["strength"] = info.strength
        return card

    @app.post("/v1/load_lora_adapter")
    async def load_lora(request: Request) -> dict[str, Any]:
        check_admin(request)
        body = await read_json(request, opts.max_body_bytes)
        name, source, strength = admin_args(body, "lora_name", "lora_path")
        info = await service.load_adapter(name, source, strength)
        return {"status": "loaded", "adapter": adapter_card(info)}

    @app.post("/v1/unload_lora_adapter")
    async def unload_lora(request: Request) -> dict[str, Any]:
        check_admin(request)
        body = await read_json(request, opts.max_body_bytes)
        name, _, _ = admin_args(body, "lora_name", None)
        info = await service.unload_adapter(name)
        return {"status": "unloaded", "adapter": adapter_card(info)}

    @app.get("/admin/adapters")
    async def admin_list(request: Request) -> dict[str, Any]:
        check_admin(request)
        service.require_ready()
        return {"object": "list", "data": [adapter_card(i) for _, i in sorted(service.adapters.adapters.items())]}

    @app.post("/admin/adapters", status_code=201)
    async def admin_load(request: Request) -> dict[str, Any]:
        check_admin(request)
        body = await read_json(request, opts.max_body_bytes)
        name, source, strength = admin_args(body, "name", "source")
        return adapter_card(await service.load_adapter(name, source, strength))

    @app.delete("/admin/adapters/{name}")
    async def admin_unload(name: str, request: Request) -> dict[str, Any]:
        check_admin(request)
        return adapter_card(await service.unload_adapter(name))

    return app


def serve(opts: ServeOptions) -> int:
    """Run the server in this process until interrupted (what ``kaito serve`` calls)."""
    logging.basicConfig(level=opts.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if opts.runtime == "vllm":
        from kaito_core.runtime.vllm import run_vllm

        return run_vllm(opts)
    import sys

    import uvicorn

    app = create_app(opts)
    server = uvicorn.Server(uvicorn.Config(app, host=opts.host, port=opts.port, log_level=opts.log_level,
                                           timeout_graceful_shutdown=10))
    service: TransformersService = app.state.service
    # A model that cannot load ends the process (exit 1): a pod then shows the reason in its
    # log and restarts, instead of running "healthy-looking" forever (upstream issue #931).
    service.on_failed = lambda: setattr(server, "should_exit", True)
    server.run()
    if service.state == "failed":
        print(f"error: {service.error}", file=sys.stderr)
        return 1
    return 0
