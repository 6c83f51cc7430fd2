"""Watch streams as kube-apiserver serves them: from a resourceVersion (410 Gone once the
history is compacted, sent as an ERROR event as the watch cache does), BOOKMARK events with
``allowWatchBookmarks``, ``sendInitialEvents`` ending with the ``k8s.io/initial-events-end``
bookmark, and the stream ended by the server after ``timeoutSeconds``."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from kaito_core.testing.emulator_rules import ApiStatus
from kaito_core.testing.emulator_store import ResourceType, Watcher, offer


async def watch(server: Any, request: Any, rt: ResourceType, ns: str | None) -> Any:
    from aiohttp import web

    if server.watches_open is not None:
        await server.watches_open.wait()  # Emulator.hold_watches(): the watch is "down"
    q = request.query
    match = server._matcher(q)
    queue: asyncio.Queue = asyncio.Queue()
    w = Watcher(rt.gk, ns, match, queue)
    rv = q.get("resourceVersion", "")
    if rv and not rv.isdigit():
        raise ApiStatus(400, "BadRequest", f"resourceVersion: Invalid value: {rv!r}: must be a resource version "
                                           f"from a list or watch")
    initial = q.get("sendInitialEvents") == "true" or rv in ("", "0")
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    await resp.prepare(request)
    if initial:
        for obj in server.store.list(rt, ns, match):
            queue.put_nowait(("ADDED", obj))
        if q.get("sendInitialEvents") == "true":
            queue.put_nowait(("BOOKMARK", {"metadata": {"resourceVersion": str(server.store.rv), "annotations": {
                "k8s.io/initial-events-end": "true"}}}))
    else:
        try:
            for ev in server.store.since(rt.gk, int(rv)):
                offer(w, ev)
        except ApiStatus as exc:
            await resp.write(json.dumps({"type": "ERROR", "object": exc.body()}).encode() + b"\n")
            return resp
    server.store.watchers.add(w)
    try:
        await _stream(server, resp, w, rt, q)
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        server.store.watchers.discard(w)
    return resp

async def _stream(server: Any, resp: Any, w: Watcher, rt: ResourceType, q: Any) -> None:
    loop = asyncio.get_running_loop()
    limits = [float(q["timeoutSeconds"])] if q.get("timeoutSeconds") else []
    if server.max_watch_seconds is not None:
        limits.append(server.max_watch_seconds)
    deadline = loop.time() + min(limits) if limits else None
    bookmarks = q.get("allowWatchBookmarks") == "true"
    next_bookmark = loop.time() + server.bookmark_interval
    while True:
        now = loop.time()
        wait = min(x for x in (deadline, next_bookmark if bookmarks else None) if x is not None) - now \
            if deadline is not None or bookmarks else None
        try:
            item = await asyncio.wait_for(w.queue.get(), timeout=max(wait, 0)) if wait is not None \
                else await w.queue.get()
        except asyncio.TimeoutError:
            if deadline is not None and loop.time() >= deadline:
                return  # timeoutSeconds: the server ends the watch; clients resume from their last version
            next_bookmark = loop.time() + server.bookmark_interval
            item = ("BOOKMARK", {"metadata": {"resourceVersion": str(server.store.rv)}})
        if item is None:
            return  # cut by the test
        type_, obj = item
        if type_ == "BOOKMARK":
            if not bookmarks and "annotations" not in obj["metadata"]:
                continue
            payload = {"apiVersion": rt.api_version, "kind": rt.kind, **obj}
        else:
            payload = server.out(rt, obj)
        await resp.write(json.dumps({"type": type_, "object": payload}).encode() + b"\n")
