"""kaito's routes in front of vLLM's OpenAI server (the vllm runtime).

vLLM listens on a private loopback port; this app listens on ``--port``, forwards the OpenAI
routes and ``/metrics`` (streams included), answers ``/health`` from vLLM's own (503 while it
loads, and when the process has died), and keeps upstream KAITO's ``POST /chat`` working on top
of ``/v1/completions`` and ``/v1/chat/completions``.
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
from kaito_core.runtime.options import ServeOptions
from kaito_core.runtime.protocol import parse_json, parse_kaito_chat
from kaito_core.runtime.vllm import _free_port, prepare_adapters, require_vllm, vllm_command

log = logging.getLogger("kaito.runtime.vllm")


def create_proxy_app(opts: ServeOptions, *, preset: Any = None, command: Sequence[str] | None = None,
                     upstream_port: int | None = None) -> Any:
    """kaito's routes in front of a vLLM server it starts (``command`` overrides the vLLM command,
    e.g. to put any OpenAI-compatible server behind the proxy)."""
    if command is None:
        require_vllm()
        from kaito_core.runtime.server import resolve_preset

        preset = preset if preset is not None else resolve_preset(opts.preset)
    port = upstream_port or _free_port()
    state: dict[str, Any] = {"proc": None, "client": None, "error": None}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        cmd = list(command) if command is not None else vllm_command(
            opts, preset, port=port, adapter_paths=prepare_adapters(opts))
        env = dict(os.environ)
        if opts.api_key:
            env["VLLM_API_KEY"] = opts.api_key  # not on the command line, where `ps` would show it
        log.info("starting: %s", " ".join(cmd))
        state["proc"] = subprocess.Popen(cmd, env=env)
        state["client"] = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=None)
        try:
            yield
        finally:
            await state["client"].aclose()
            proc = state["proc"]
            proc.terminate()
            try:
                await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                proc.kill()

    app = FastAPI(title="kaito inference (vllm)", lifespan=lifespan, docs_url=None, redoc_url=None)

    def auth_headers(request: Request) -> dict[str, str]:
        keep = {}
        for h in ("authorization", "content-type", "accept"):
            if h in request.headers:
                keep[h] = request.headers[h]
        return keep

    async def health(request: Request) -> Response:
        proc = state["proc"]
        if proc is None or proc.poll() is not None:
            code = None if proc is None else proc.returncode
            return JSONResponse({"status": "Failed", "error": f"vLLM exited with code {code}"}, status_code=503)
        try:
            r = await state["client"].get("/health", timeout=5)
        except httpx.HTTPError:
            return JSONResponse({"status": "Loading"}, status_code=503)
        if r.status_code == 200:
            return JSONResponse({"status": "Healthy"})
        return JSONResponse({"status": "Loading"}, status_code=503)

    app.get("/health")(health)
    app.get("/healthz")(health)

    async def forward(request: Request, path: str, body: bytes | None = None) -> Response:
        client: httpx.AsyncClient = state["client"]
        req = client.build_request(request.method, path, params=request.query_params,
                                   headers=auth_headers(request),
                                   content=body if body is not None else await request.body())
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

    @app.post("/chat")
    async def kaito_chat(request: Request) -> Response:
        try:
            parsed = parse_kaito_chat(parse_json(await request.body()))
        except APIError as exc:
            return JSONResponse(exc.body(), status_code=exc.status)
        p = parsed.params
        payload: dict[str, Any] = {"model": parsed.model or opts.model_name, "temperature": p.temperature,
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
        client: httpx.AsyncClient = state["client"]
        try:
            r = await client.post(path, json=payload, headers={k: v for k, v in auth_headers(request).items()
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

    return app
