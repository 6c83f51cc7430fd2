"""The vllm runtime: vLLM's own OpenAI server, started with the preset's engine arguments.

Engine arguments come from the preset (``ModelPreset.runtimes["vllm"]``), then the Workspace's
``inference_config.yaml`` ``vllm:`` map on top (upstream KAITO's order: the user's file wins),
then explicit flags (``--max-model-len``, ``--dtype``). vLLM listens on a private loopback port;
kaito's proxy app listens on ``--port``, forwards the OpenAI routes and ``/metrics``, answers
``/health`` from vLLM's, and keeps upstream KAITO's ``POST /chat`` working on top of
``/v1/completions`` and ``/v1/chat/completions``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Mapping, Sequence

from kaito_core.errors import KaitoError
from kaito_core.runtime.options import ServeOptions

log = logging.getLogger("kaito.runtime.vllm")
VLLM_ENTRY = ("-m", "vllm.entrypoints.openai.api_server")
# Settings that belong to kaito, never passed to vLLM as flags.
_NOT_FLAGS = {"model", "served-model-name", "host", "port", "api-key"}


class VLLMUnavailable(KaitoError, RuntimeError):
    """vllm is not installed in this environment."""


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def require_vllm() -> None:
    if not vllm_available():
        raise VLLMUnavailable(
            "--runtime vllm needs the 'vllm' package, which is not installed in this Python "
            f"({sys.executable}); install it on a GPU machine (pip install vllm) or use the runtime-vllm "
            "image, or serve with --runtime transformers (CPU or GPU)")


def _flag(key: str) -> str:
    return "--" + str(key).strip().lstrip("-").replace("_", "-")


def engine_args(opts: ServeOptions, preset: Any = None) -> dict[str, Any]:
    """Preset defaults, then ``inference_config.yaml``'s ``vllm:`` map, then explicit flags."""
    args: dict[str, Any] = {}
    if preset is not None:
        args.update({_flag(k)[2:]: v for k, v in dict(preset.runtimes.get("vllm", {})).items()})
    args.update({_flag(k)[2:]: v for k, v in opts.vllm_args.items()})
    if opts.max_model_len is not None:
        args["max-model-len"] = opts.max_model_len
    if opts.dtype:
        args["dtype"] = opts.dtype
    if opts.trust_remote_code:
        args["trust-remote-code"] = True
    if opts.max_batch and "max-num-seqs" not in args and opts.max_batch != 16:
        args["max-num-seqs"] = opts.max_batch
    clash = sorted(k for k in args if k in _NOT_FLAGS)
    if clash:
        raise KaitoError(f"inference_config.yaml vllm: {clash} are set by kaito itself (from --model, --port, "
                         "--served-model-name, --api-key); remove them from the file")
    return args


def to_flags(args: Mapping[str, Any]) -> list[str]:
    """``{"max-model-len": 8192, "enforce-eager": True, "x": [1, 2]}`` -> vLLM command-line flags."""
    out: list[str] = []
    for key in sorted(args):
        value = args[key]
        flag = _flag(key)
        if value is None or value is False:
            continue
        if value is True:
            out.append(flag)
        elif isinstance(value, (list, tuple)):
            out.append(flag)
            out.extend(str(v) for v in value)
        elif isinstance(value, Mapping):
            out.extend([flag, json.dumps(dict(value), separators=(",", ":"))])
        else:
            out.extend([flag, str(value)])
    return out


def vllm_command(opts: ServeOptions, preset: Any = None, *, port: int | None = None, host: str = "127.0.0.1",
                 adapter_paths: Mapping[str, str] | None = None, python: str | None = None) -> list[str]:
    """The vLLM OpenAI server command line for ``opts`` (and the preset's engine arguments)."""
    args = engine_args(opts, preset)
    adapters = dict(adapter_paths if adapter_paths is not None else {a.name: a.source for a in opts.adapters})
    cmd = [python or sys.executable, *VLLM_ENTRY, "--model", opts.model, "--served-model-name", opts.model_name,
           "--host", host, "--port", str(port if port is not None else opts.port)]
    if adapters:
        args.setdefault("enable-lora", True)
    cmd += to_flags(args)
    if adapters:
        cmd.append("--lora-modules")
        cmd.extend(f"{name}={path}" for name, path in sorted(adapters.items()))
    return cmd


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare_adapters(opts: ServeOptions) -> dict[str, str]:
    """Directories for the adapters (OCI references pulled first). vLLM has no per-adapter
    strength: an adapter with strength below 1 is refused rather than served at full strength."""
    from kaito_core.runtime.adapters import resolve_source, scan_adapters_dir

    specs = list(opts.adapters)
    if opts.adapters_dir:
        specs += [s for s in scan_adapters_dir(opts.adapters_dir) if s.name not in {a.name for a in specs}]
    weak = [s.name for s in specs if s.strength != 1.0]
    if weak:
        raise KaitoError(f"adapters {weak} have a strength below 1.0, which vLLM cannot apply; use "
                         "--runtime transformers for weighted adapters, or strength 1.0")
    cache = tempfile.mkdtemp(prefix="kaito-vllm-adapters-")
    from pathlib import Path

    return {s.name: str(resolve_source(s.source, Path(cache), s.name)) for s in specs}


def run_vllm(opts: ServeOptions) -> int:
    """Serve with vLLM behind kaito's proxy (same routes as the transformers runtime)."""
    require_vllm()
    import uvicorn

    uvicorn.run(create_proxy_app(opts), host=opts.host, port=opts.port, log_level=opts.log_level)
    return 0


def create_proxy_app(opts: ServeOptions, *, preset: Any = None, command: Sequence[str] | None = None,
                     upstream_port: int | None = None) -> Any:
    """kaito's routes in front of a vLLM server it starts (``command`` overrides the vLLM command,
    e.g. to put any OpenAI-compatible server behind the proxy)."""
    import httpx
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response, StreamingResponse

    from kaito_core.runtime.errors import APIError
    from kaito_core.runtime.protocol import parse_json, parse_kaito_chat

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
