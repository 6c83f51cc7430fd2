"""The HTTP server: OpenAI routes, upstream KAITO's ``/chat``, health, metrics, adapter admin.

:func:`create_app` builds the FastAPI app (the model loads in the background after start, and
``/health`` answers 503 until it is ready) from the route modules (:mod:`.routes_openai`,
:mod:`.routes_kaito`, :mod:`.routes_tokenize`, :mod:`.routes_admin`); :func:`serve` runs it with uvicorn (with header,
body and keep-alive timeouts, :mod:`.listener`), or hands over to another runtime. Bodies are
parsed by hand (:mod:`.protocol`) so that every refusal is an OpenAI error object naming the
parameter, and nothing a client sends can make the server answer 500.

The vLLM modules are imported only inside the functions that need them: they must never load
with this module (they import the shared plumbing in :mod:`.http`, not this module).
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request

from kaito_core.runtime import routes_admin, routes_kaito, routes_openai, routes_tokenize
from kaito_core.runtime.http import Auth, StatusRecorder, install_error_handlers, install_log_redaction, read_json
from kaito_core.runtime.metrics import Metrics
from kaito_core.runtime.options import ServeOptions
from kaito_core.runtime.service import TransformersService

log = logging.getLogger("kaito.runtime.server")
OPEN_PATHS = ("/health", "/healthz", "/metrics", "/")


def resolve_preset(name: str | None) -> Any:
    if not name:
        return None
    from kaito_core.plugins import get_registry

    return get_registry().get_preset(name)


@dataclass
class RouteContext:
    """What every route module needs: the backend, the options, auth and the body reader."""

    service: TransformersService
    opts: ServeOptions
    metrics: Metrics
    auth: Auth

    async def read_body(self, request: Request, parse: Any = None) -> Any:
        """The JSON body, or ``parse(body)`` (checked off the event loop when the body is large)."""
        return await read_json(request, self.opts.max_body_bytes, self.opts.timeout_body or None, parse)

    async def body_of(self, request: Request, parse: Any = None) -> Any:
        self.auth.check(request)
        return await self.read_body(request, parse)


def _options(opts: ServeOptions | None, kwargs: dict[str, Any]) -> tuple[ServeOptions, Any]:
    from kaito_core.types import ModelPreset

    preset: Any = None
    if isinstance(kwargs.get("preset"), ModelPreset):
        preset = kwargs["preset"]
        kwargs["preset"] = preset.name
    if opts is None:
        opts = ServeOptions(**kwargs)
    elif kwargs:
        raise TypeError(f"create_app: pass either opts or keyword options, not both ({sorted(kwargs)})")
    return opts, preset


def create_app(opts: ServeOptions | None = None, *, load_in_background: bool = True, **kwargs: Any) -> FastAPI:
    """The server as an ASGI app: ``opts``, or keyword arguments of :class:`ServeOptions`
    (``preset`` may be a preset name or a :class:`~kaito_core.types.ModelPreset`)."""
    opts, preset = _options(opts, kwargs)
    if opts.runtime == "vllm":
        from kaito_core.runtime.vllm_proxy import create_proxy_app

        return create_proxy_app(opts, preset=preset)
    if opts.runtime != "transformers":
        from kaito_core.runtime.options import OptionsError

        raise OptionsError(f"runtime {opts.runtime!r} is not served by kaito's own server; run it with "
                           f"'kaito serve --runtime {opts.runtime}' (its plugin's local entry)")
    preset = preset if preset is not None else resolve_preset(opts.preset)
    metrics = Metrics(model_name=opts.model_name)
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
    install_error_handlers(app)
    install_log_redaction()
    ctx = RouteContext(service=service, opts=opts, metrics=metrics, auth=Auth(opts.api_key))
    routes_kaito.register(app, ctx)
    routes_openai.register(app, ctx)
    routes_tokenize.register(app, ctx)
    routes_admin.register(app, ctx)
    return app


def _check_host(host: str, port: int) -> None:
    """An address that does not resolve is named before the model loads (uvicorn's own
    message, "[Errno -2] Name or service not known", named neither the flag nor the value)."""
    import socket

    from kaito_core.runtime.options import OptionsError

    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise OptionsError(f"--host {host!r} is not an address this machine can listen on ({exc}); use "
                           "127.0.0.1 (this machine only) or 0.0.0.0 (every interface)") from None


def serve(opts: ServeOptions) -> int:
    """Run the server in this process until interrupted (what ``kaito serve`` calls)."""
    logging.basicConfig(level=opts.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if opts.runtime == "vllm":
        from kaito_core.runtime.vllm import run_vllm

        return run_vllm(opts)
    import sys

    import uvicorn

    from kaito_core.runtime.listener import uvicorn_config

    _check_host(opts.host, opts.port)
    app = create_app(opts)
    server = uvicorn.Server(uvicorn_config(app, host=opts.host, port=opts.port, log_level=opts.log_level,
                                           header_timeout=opts.timeout_header,
                                           keep_alive_timeout=opts.timeout_keep_alive,
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
