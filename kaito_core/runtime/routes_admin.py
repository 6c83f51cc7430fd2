"""Adapter admin routes: vLLM's ``/v1/load_lora_adapter`` and ``/v1/unload_lora_adapter``, and a
REST form under ``/admin/adapters``. Disabled unless the server has an API key."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request

from kaito_core.runtime import responses as R
from kaito_core.runtime.errors import APIError, bad_param, missing_param
from kaito_core.runtime.options import OptionsError, check_adapter_name, check_strength


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
    value = body.get("strength", 1.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)):  # not "0.5", not true
        raise bad_param("strength", value, "a number in [0, 1]", code="invalid_type")
    try:
        strength = check_strength(value)
    except OptionsError:
        raise bad_param("strength", value, "a number in [0, 1]") from None
    return name, source, strength


_VLLM_NAMES = {"name": "lora_name", "source": "lora_path"}


async def as_vllm(call: Any) -> Any:
    """Await ``call``; an error names vLLM's fields (``lora_name``, ``lora_path``), the ones
    the client of ``/v1/load_lora_adapter`` sent, not the service's ``name``/``source``."""
    try:
        return await call
    except APIError as exc:
        new = _VLLM_NAMES.get(exc.param or "")
        if new is not None:
            exc.message = exc.message.replace(f"'{exc.param}'", f"'{new}'", 1)
            exc.param = new
        raise


def register(app: FastAPI, ctx: Any) -> None:
    service = ctx.service

    def adapter_card(info: Any) -> dict[str, Any]:
        card = R.model_card(info.name, info.created, parent=service.model_id, root=info.source)
        card["strength"] = info.strength
        return card

    async def admin_body(request: Request) -> dict[str, Any]:
        ctx.auth.check_admin(request)
        return await ctx.read_body(request)

    @app.post("/v1/load_lora_adapter")
    async def load_lora(request: Request) -> dict[str, Any]:
        name, source, strength = admin_args(await admin_body(request), "lora_name", "lora_path")
        info = await as_vllm(service.load_adapter(name, source, strength))
        return {"status": "loaded", "adapter": adapter_card(info)}

    @app.post("/v1/unload_lora_adapter")
    async def unload_lora(request: Request) -> dict[str, Any]:
        name, _, _ = admin_args(await admin_body(request), "lora_name", None)
        info = await as_vllm(service.unload_adapter(name))
        return {"status": "unloaded", "adapter": adapter_card(info)}

    @app.get("/admin/adapters")
    async def admin_list(request: Request) -> dict[str, Any]:
        ctx.auth.check_admin(request)
        service.require_ready()
        return {"object": "list", "data": [adapter_card(i) for _, i in sorted(service.adapters.adapters.items())]}

    @app.post("/admin/adapters", status_code=201)
    async def admin_load(request: Request) -> dict[str, Any]:
        name, source, strength = admin_args(await admin_body(request), "name", "source")
        return adapter_card(await service.load_adapter(name, source, strength))

    @app.delete("/admin/adapters/{name}")
    async def admin_unload(name: str, request: Request) -> dict[str, Any]:
        ctx.auth.check_admin(request)
        return adapter_card(await service.unload_adapter(name))
