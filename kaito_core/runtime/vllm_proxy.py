"""kaito's routes in front of vLLM's OpenAI server (the vllm runtime).

vLLM listens on a private loopback port; this app listens on ``--port``, forwards the OpenAI
routes and ``/metrics`` (streams included), answers ``/health`` from vLLM's own (503 while the
Ray group assembles and vLLM loads, and when the process has died), and keeps upstream KAITO's
``POST /chat`` working on top of ``/v1/completions`` and ``/v1/chat/completions``. When vLLM
(or the Ray group) fails, the process ends with exit code 1 so the pod restarts with the reason
in its log instead of answering 503 forever.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Sequence

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from kaito_core.runtime.errors import APIError
from kaito_core.runtime.http import install_error_handlers, read_body, read_json
from kaito_core.runtime.options import ServeOptions
from kaito_core.runtime.parallel import GroupPlan, world_size
from kaito_core.runtime.protocol import parse_kaito_chat
from kaito_core.runtime.vllm import (_free_port, check_strengths, engine_args, gpu_compute_capability,
                                     prepare_adapters, require_vllm, vllm_command)

log = logging.getLogger("kaito.runtime.vllm")


def _preset(opts: ServeOptions) -> Any:
    # The plugin registry directly: this module must not import runtime/server.py (which imports it).
    if not opts.preset:
        return None
    from kaito_core.plugins import get_registry

    return get_registry().get_preset(opts.preset)


def group_prestart(opts: ServeOptions, preset: Any, plan: GroupPlan, status: Any) -> None:
    """Pod 0 of a multi-node group: the Ray head, then every node joined, before vLLM starts."""
    from kaito_core.runtime import multinode

    timeout = multinode.ray_timeout()
    status("starting the Ray head")
    multinode.start_head(multinode.ray_port())
    multinode.wait_for_nodes(plan, world_size(engine_args(opts, preset, plan)), timeout, status=status)


class Upstream:
    """The vLLM process behind the proxy: started in the background (after the Ray group on a
    multi-node leader), watched until it exits, stopped with the app."""

    def __init__(self, opts: ServeOptions, preset: Any, command: Sequence[str] | None, port: int,
                 plan: GroupPlan | None, on_failed: Any) -> None:
        self.opts, self.preset, self.command, self.port, self.plan = opts, preset, command, port, plan
        self.on_failed = on_failed
        self.proc: subprocess.Popen | None = None
        self.client: httpx.AsyncClient | None = None
        self.error: str | None = None
        self.phase = "starting"
        self.closing = False
        self.task: asyncio.Task | None = None
        self.compute_capability: float | None = None

    @property
    def group_leader(self) -> bool:
        return self.command is None and self.plan is not None and self.plan.multinode

    def fail(self, message: str) -> None:
        self.error = message
        log.error("%s", message)
        if self.on_failed is not None:
            self.on_failed()

    def set_phase(self, text: str) -> None:
        self.phase = text
        log.info("%s", text)

    async def launch(self) -> None:
        """Ray group (multi-node leader) -> adapters -> vLLM, then watch vLLM until it exits."""
        try:
            if self.group_leader:
                await asyncio.to_thread(group_prestart, self.opts, self.preset, self.plan, self.set_phase)
            cmd = list(self.command) if self.command is not None else vllm_command(
                self.opts, self.preset, port=self.port, plan=self.plan, compute_capability=self.compute_capability,
                adapter_paths=await asyncio.to_thread(prepare_adapters, self.opts))
        except Exception as exc:  # noqa: BLE001 (any failure here ends the pod with its reason)
            self.fail(f"vLLM cannot start: {exc}")
            return
        env = dict(os.environ)
        if self.opts.api_key:
            env["VLLM_API_KEY"] = self.opts.api_key  # not on the command line, where `ps` would show it
        log.info("starting: %s", " ".join(cmd))
        self.proc = proc = subprocess.Popen(cmd, env=env)
        self.set_phase("loading the model")
        code = await asyncio.to_thread(proc.wait)
        if not self.closing:
            self.fail(f"vLLM exited with code {code}")

    async def start(self) -> None:
        self.client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=None)
        self.task = asyncio.create_task(self.launch())

    async def stop(self) -> None:
        self.closing = True
        if self.client is not None:
            await self.client.aclose()
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self.task is not None:
            self.task.cancel()
        if self.group_leader:
            from kaito_core.runtime.multinode import stop_ray

            await asyncio.to_thread(stop_ray)

    async def health(self) -> tuple[int, dict[str, Any]]:
        loading = {"status": "Loading", "phase": self.phase}
        if self.error:
            return 503, {"status": "Failed", "error": self.error}
        if self.proc is None:
            return 503, loading
        if self.proc.poll() is not None:
            return 503, {"status": "Failed", "error": f"vLLM exited with code {self.proc.returncode}"}
        try:
            r = await self.client.get("/health", timeout=5)
        except httpx.HTTPError:
            return 503, loading
        return (200, {"status": "Healthy"}) if r.status_code == 200 else (503, loading)


def auth_headers(request: Request) -> dict[str, str]:
    return {h: request.headers[h] for h in ("authorization", "content-type", "accept") if h in request.headers}


def create_proxy_app(opts: ServeOptions, *, preset: Any = None, command: Sequence[str] | None = None,
                     upstream_port: int | None = None, plan: GroupPlan | None = None,
                     on_failed: Any = None, compute_capability: float | None = None) -> Any:
    """kaito's routes in front of a vLLM server it starts (``command`` overrides the vLLM command,
    e.g. to put any OpenAI-compatible server behind the proxy). ``plan``: the pod's parallel plan
    (TP/PP, multi-node); ``on_failed``: called once when vLLM or the Ray group fails."""
    if command is None:
        require_vllm()
        preset = preset if preset is not None else _preset(opts)
    up = Upstream(opts, preset, command, upstream_port or _free_port(), plan, on_failed)
    up.compute_capability = compute_capability

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await up.start()
        try:
            yield
        finally:
            await up.stop()

    app = FastAPI(title="kaito inference (vllm)", lifespan=lifespan, docs_url=None, redoc_url=None)

    async def health(request: Request) -> Response:
        code, body = await up.health()
        return JSONResponse(body, status_code=code)

    app.api_route("/health", methods=["GET", "HEAD"])(health)
    app.api_route("/healthz", methods=["GET", "HEAD"])(health)
    # OpenAI-shaped errors for what the proxy itself refuses (unknown routes, wrong methods,
    # bodies over the limit, /chat's bad input), as kaito's own server answers them
    install_error_handlers(app)
    _install_forwarding(app, up)
    _install_kaito_chat(app, up)
    app.state.kaito = up
    return app


def _install_forwarding(app: FastAPI, up: Upstream) -> None:
    """The OpenAI routes and /metrics, relayed as they stream."""

    async def forward(request: Request, path: str) -> Response:
        client = up.client
        # the same body limits as kaito's own server (vLLM's has none: a 1 GB body was read whole)
        body = await read_body(request, up.opts.max_body_bytes, up.opts.timeout_body or None)
        req = client.build_request(request.method, path, params=request.query_params,
                                   headers=auth_headers(request), content=body)
        try:
            upstream = await client.send(req, stream=True)
        except httpx.HTTPError as exc:
            err = APIError(503, f"the model server is not reachable yet ({type(exc).__name__}); retry shortly",
                           type="server_error", code="upstream_unavailable", headers={"Retry-After": "5"})
            return JSONResponse(err.body(), status_code=503, headers=err.headers)
        headers = {k: v for k, v in upstream.headers.items()
                   if k.lower() in ("content-type", "cache-control", "www-authenticate", "retry-after")}

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for chunk in upstream.aiter_raw():
                    yield chunk
            finally:
                await upstream.aclose()

        return StreamingResponse(relay(), status_code=upstream.status_code, headers=headers)

    @app.api_route("/v1/{rest:path}", methods=["GET", "POST", "DELETE"])
    async def v1(rest: str, request: Request) -> Response:
        return await forward(request, f"/v1/{rest}")

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        return await forward(request, "/metrics")


def _install_kaito_chat(app: FastAPI, up: Upstream) -> None:
    """Upstream KAITO's older ``POST /chat`` on top of vLLM's completions routes."""

    @app.post("/chat")
    async def kaito_chat(request: Request) -> Response:
        parsed = parse_kaito_chat(await read_json(request, up.opts.max_body_bytes, up.opts.timeout_body or None))
        p = parsed.params
        payload: dict[str, Any] = {"model": parsed.model or up.opts.model_name, "temperature": p.temperature,
                                   "top_p": p.top_p, "repetition_penalty": p.repetition_penalty}
        if p.top_k:
            payload["top_k"] = p.top_k
        if p.max_tokens:
            payload["max_tokens"] = p.max_tokens
        elif parsed.max_length:
            payload["max_tokens"] = parsed.max_length  # upper bound: vLLM has no prompt+new limit
        if parsed.messages is not None:
            payload["messages"] = parsed.messages
            path = "/v1/chat/completions"
        else:
            payload["prompt"] = parsed.prompt
            path = "/v1/completions"
        try:
            r = await up.client.post(path, json=payload, headers={k: v for k, v in auth_headers(request).items()
                                                                   if k == "authorization"})
        except httpx.HTTPError as exc:
            return JSONResponse(APIError(503, f"the model server is not reachable yet ({exc})",
                                         type="server_error").body(), status_code=503)
        if r.status_code != 200:
            return Response(r.content, status_code=r.status_code, media_type="application/json")
        choice = r.json()["choices"][0]
        text = choice["message"]["content"] if "message" in choice else choice["text"]
        if parsed.return_full_text and parsed.prompt is not None:
            text = parsed.prompt + text
        return JSONResponse({"Result": text})


def serve_proxy(opts: ServeOptions, plan: GroupPlan | None = None) -> int:
    """Run the proxy (and vLLM, and on a multi-node leader the Ray head) until interrupted or
    until vLLM fails (exit code 1). Bad configuration is refused before anything starts."""
    import sys

    import uvicorn

    from kaito_core.runtime.listener import uvicorn_config

    plan = plan if plan is not None else GroupPlan.from_env()
    preset = _preset(opts)
    cc = gpu_compute_capability()
    engine_args(opts, preset, plan, cc)  # refuse a contradicting TP/PP now, with one line, not in a traceback
    check_strengths(opts)
    holder: dict[str, Any] = {}
    app = create_proxy_app(opts, preset=preset, plan=plan, compute_capability=cc,
                           on_failed=lambda: setattr(holder["server"], "should_exit", True))
    # the same listener as the transformers runtime: half-open connections are closed after
    # --timeout-header, idle keep-alives after --timeout-keep-alive
    config = uvicorn_config(app, host=opts.host, port=opts.port, log_level=opts.log_level,
                            header_timeout=opts.timeout_header, keep_alive_timeout=opts.timeout_keep_alive,
                            timeout_graceful_shutdown=10)
    holder["server"] = server = uvicorn.Server(config)
    server.run()
    error = app.state.kaito.error
    if error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
