"""Upstream KAITO's routes: ``POST /chat`` (its older transformers API), health, metrics.

``/chat`` behaves as upstream's did where its clients notice: an unknown ``model`` is ignored
(upstream never read the field; an adapter name still selects the adapter), and errors carry
upstream's ``{"detail": "..."}`` next to OpenAI's ``error`` object.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from kaito_core.runtime.protocol import parse_kaito_chat
from kaito_core.runtime.routes_openai import collect


def register(app: FastAPI, ctx: Any) -> None:
    service, metrics = ctx.service, ctx.metrics

    def health() -> JSONResponse:
        if service.ready:
            return JSONResponse({"status": "Healthy"})
        status = {"loading": "Loading", "failed": "Failed"}.get(service.state, "Unavailable")
        body = {"status": status}
        if service.error:
            body["error"] = service.error
        return JSONResponse(body, status_code=503)

    # GET routes answer HEAD too (RFC 9110 9.3.2; load balancers probe with it): uvicorn sends
    # the headers and drops the body
    read = ["GET", "HEAD"]
    app.api_route("/health", methods=read)(health)
    app.api_route("/healthz", methods=read)(health)

    @app.api_route("/", methods=read)
    async def home() -> dict[str, str]:
        return {"message": "Server is running"}

    @app.api_route("/metrics", methods=read)
    async def metrics_route() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.post("/chat")
    async def kaito_chat(request: Request) -> dict[str, str]:
        parsed = await ctx.body_of(request, parse_kaito_chat)
        prep = await service.prepare_async(parsed)
        text = (await collect(service, request, [prep]))[0].text
        if parsed.return_full_text and parsed.prompt is not None:
            text = parsed.prompt + text
        return {"Result": text}
