# Over 400 lines: every kopf handler and the process state they share live in the one module kopf imports.
"""kopf handlers: thin async wrappers around :class:`~kaito_core.operator.apply.Reconciler`.

Run with ``kaito operator`` (which sets the environment and calls kopf) or directly with
``kopf run -m kaito_core.operator.handlers --standalone -A``. Settings come from ``KAITO_*``
environment variables (see :mod:`kaito_core.operator.settings`), read at startup (the webhook
switch at import).

Reconciles are event-driven: create/update/resume handlers for the Workspace itself, and a
per-Workspace daemon woken by watch events on what it depends on (StatefulSets, Jobs, Pods,
Nodes, NodeClaims carrying kaito's labels; see :mod:`kaito_core.operator.wakeup`), with a slow
resync (``KAITO_RESYNC_SECONDS``) as the safety net.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import os
import time
from typing import Any

import kopf

from kaito_core.operator.apply import Outcome, Reconciler, default_provisioner
from kaito_core.operator import metrics
from kaito_core.operator.cache import CachedKube, WatchCache
from kaito_core.operator.kube import ApiError, KubeClient
from kaito_core.operator.release import ReleaseTracker
from kaito_core.operator.settings import Settings
from kaito_core.operator.storage import MemoryDiffBase, ProgressAnnotations
from kaito_core.operator.wakeup import Wakeups
from kaito_core.reconcile import names
from kaito_core.reconcile.status import same

GROUP, VERSION, PLURAL = "kaito.sh", "v1beta1", "workspaces"
# kopf refuses to start with admission handlers but no webhook server: register them only
# when the webhook is enabled (read at import).
WEBHOOK = os.environ.get("KAITO_WEBHOOK", "").strip().lower() in ("1", "true", "yes", "on")
log = logging.getLogger("kaito.operator")


class State:
    """What the process holds between handlers (one operator per process)."""

    settings: Settings | None = None
    connection: Any = None
    reconciler: Reconciler | None = None
    executor: concurrent.futures.ThreadPoolExecutor | None = None
    relist_executor: concurrent.futures.ThreadPoolExecutor | None = None  # the re-list's own thread
    wakeups: Wakeups = Wakeups()
    cache: WatchCache = WatchCache({("apps/v1", "StatefulSet"), ("batch/v1", "Job"), ("v1", "Node"),
                                    ("karpenter.sh/v1", "NodeClaim"), ("v1", "Service"), ("v1", "ConfigMap")})
    written: dict[str, dict] = {}  # "ns/name" -> the status this process last wrote
    metrics_server: Any = None
    relister: Any = None
    orphan_suspects: set = set()  # (namespace, workspace) of node requests whose Workspace was missing
    pods_known: set = set()  # (namespace, name) of kaito's pods the watch showed
    pods_gone: set = set()  # of those, the ones a re-list no longer has (stale in kopf's index)
    releases: ReleaseTracker = ReleaseTracker()
    diffbase: MemoryDiffBase = MemoryDiffBase()  # kopf's last handled essence per Workspace
    refusals: dict[str, int] = {}  # "ns/name" -> passes in a row where the API server refused a child


STATE = State()


def _reconciler() -> Reconciler:
    if STATE.reconciler is None:
        from kaito_core.plugins import get_registry

        if STATE.connection is None:
            raise kopf.TemporaryError("not logged in to the API server yet", delay=1)
        STATE.reconciler = Reconciler(CachedKube(KubeClient.from_connection_info(STATE.connection), STATE.cache),
                                      get_registry(),
                                      STATE.settings or Settings.from_env())
    return STATE.reconciler


async def _in_thread(fn: Any, *args: Any, **kwargs: Any) -> Any:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(STATE.executor, functools.partial(fn, *args, **kwargs))


async def _in_relist_thread(fn: Any, *args: Any, **kwargs: Any) -> Any:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(STATE.relist_executor, functools.partial(fn, *args, **kwargs))


def _key(body: Any) -> str:
    meta = body.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


def _log_actions(body: Any, outcome: Outcome) -> None:
    changed = {k: v for k, v in outcome.actions.items() if v != "unchanged"}
    if changed:
        meta = body.get("metadata") or {}
        log.info("workspace %s/%s: %s", meta.get("namespace"), meta.get("name"),
                 ", ".join(f"{k} {v}" for k, v in sorted(changed.items())))


def _pods(body: Any, kaito_pods: Any) -> list[dict] | None:
    """The Workspace's pods from the watch index (a copy: the index changes under us)."""
    if kaito_pods is None:
        return None
    uid = names.uid_of((body.get("metadata") or {}).get("namespace") or "default",
                       (body.get("metadata") or {}).get("name") or "", (body.get("metadata") or {}).get("uid"))
    pods = [dict(p) for p in kaito_pods.get(uid, [])]
    if STATE.pods_gone:
        pods = [p for p in pods if ((p.get("metadata") or {}).get("namespace") or "",
                                    (p.get("metadata") or {}).get("name") or "") not in STATE.pods_gone]
    return pods


def _as_written(body: Any) -> Any:
    """``body`` with the status this process last wrote, when kopf's copy has not caught up with
    that write yet: a pass compares its conditions with the previous status (transition times,
    one Event per transition), and comparing with a status already replaced posted the same
    transition Events again. Only this operator writes a Workspace's status."""
    written = STATE.written.get(_key(body))
    if written is None or same(dict(body.get("status") or {}), written):
        return body
    return {**dict(body), "status": written}


async def _pass(body: Any, trigger: str, kaito_pods: Any, verify: bool = True) -> Outcome:
    """One reconcile pass in a worker thread, with metrics."""
    rec = _reconciler()
    started = time.monotonic()
    try:
        outcome = await _in_thread(rec.reconcile, _as_written(body), pods=_pods(body, kaito_pods), verify=verify)
    except Exception as exc:
        metrics.error(type(exc).__name__)
        raise
    finally:
        metrics.reconciled(trigger, time.monotonic() - started)
    if any(v == "error" for v in outcome.actions.values()):
        metrics.error("ApplyFailed")
        STATE.refusals[_key(body)] = min(STATE.refusals.get(_key(body), 0) + 1, 6)
    else:
        STATE.refusals.pop(_key(body), None)
    if any(c.get("reason") == "ProvisioningError" for c in outcome.status.get("conditions") or []):
        metrics.error("ProvisioningError")
    metrics.workspace_state(_key(body), outcome.status.get("state"))
    _log_actions(body, outcome)
    return outcome


def _events(body: Any, outcome: Outcome) -> None:
    for ev in outcome.events:
        kopf.event(body, type=ev.type, reason=ev.reason, message=ev.message[:1000])


async def _write_status(body: Any, outcome: Outcome, *, must: bool = False) -> None:
    """Our own PATCH of the status subresource (kopf's patch would be applied only after the
    handler, or for a daemon only when it exits, and a failed one is not retried), skipped when
    neither the live body nor our last *successful* write differs. Conflicts and server errors
    are retried a few times; ``must``: then raise so kopf retries the handler."""
    key = _key(body)
    if same(dict(body.get("status") or {}), outcome.status):
        _events(body, outcome)
        return
    if same(STATE.written.get(key), outcome.status):
        return  # written already; kopf's copy of the body has not caught up yet
    meta = body.get("metadata") or {}
    rec = _reconciler()
    for attempt in range(4):
        try:
            await _in_thread(rec.kube.patch, api_version=f"{GROUP}/{VERSION}", kind="Workspace",
                             name=meta.get("name"), namespace=meta.get("namespace"),
                             patch={"status": outcome.status}, subresource="status")
            break
        except ApiError as exc:
            if exc.status == 404:
                return  # deleted meanwhile
            if exc.status in (409, 429, 500, 502, 503, 504) and attempt < 3:
                await asyncio.sleep(0.2 * 2 ** attempt)
                continue
            metrics.error("StatusPatchFailed")
            log.warning("workspace %s: cannot write status: %s", key, exc)
            if must:
                raise kopf.TemporaryError(f"cannot write status: {exc}", delay=5) from None
            return
    STATE.written[key] = outcome.status
    _events(body, outcome)


# -- startup ----------------------------------------------------------------------------------


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, logger: logging.Logger, **_: Any) -> None:
    cfg = Settings.from_env()
    STATE.settings = cfg
    STATE.executor = concurrent.futures.ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="kaito")
    STATE.relist_executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="kaito-relist")
    settings.persistence.finalizer = names.FINALIZER
    # No bookkeeping writes for a Workspace reconciled at once (kaito_core.operator.storage).
    settings.persistence.progress_storage = ProgressAnnotations(prefix="operator.kaito.sh")
    settings.persistence.diffbase_storage = STATE.diffbase
    # Our own Events carry the reasons; kopf's per-handler chatter stays in the log.
    settings.posting.level = logging.ERROR
    settings.execution.max_workers = cfg.workers
    # A resync pass in flight when a Workspace is deleted must not hold the finalizer for
    # kopf's default 60 s polling: wait for it briefly, then re-check every second.
    settings.background.instant_exit_timeout = 0.5
    settings.background.cancellation_polling = 1.0
    settings.watching.server_timeout = 300
    # Server-side label selectors: the API server sends only kaito's objects. Without them kopf
    # lists and watches every pod of the cluster (thousands) and filters them in Python.
    # Nodes too, unless a Workspace may use BYO (below): its nodes carry the user's labels.
    for plural in ("pods", "statefulsets", "jobs", "nodeclaims", "services", "configmaps"):
        settings.watching.label_selectors[plural] = names.LABEL_WORKSPACE
    STATE.relister = asyncio.get_running_loop().create_task(_relist_forever(cfg.relist_seconds), name="kaito-relist")
    settings.networking.request_timeout = 60
    if cfg.metrics_port:
        STATE.metrics_server = metrics.serve(cfg.metrics_port, cfg.metrics_addr)
        logger.info("metrics on http://%s:%d/metrics", cfg.metrics_addr, cfg.metrics_port)
    if cfg.webhook:
        from kaito_core.operator.certs import webhook_server

        settings.admission.server = webhook_server(cfg)
        settings.admission.managed = cfg.webhook_managed or None
    from kaito_core.plugins import get_plugin_manager

    pm = get_plugin_manager()
    registry = pm.registry
    for info in sorted(pm.infos.values(), key=lambda i: i.name):
        what = ", ".join(f"{k}={len(v)}" for k, v in sorted(info.registered.items())) or "nothing"
        where = f"{info.distribution or info.module} {info.version or ''}".strip()
        if info.blocked:
            logger.info("plugin %s (%s): blocked by KAITO_DISABLE_PLUGINS", info.name, where)
        elif info.errors:
            logger.warning("plugin %s (%s) is broken and skipped: %s", info.name, where, "; ".join(info.errors))
        else:
            logger.info("plugin %s (%s): %s", info.name, where, what)
    chosen = cfg.provisioner or default_provisioner(registry)
    if "byo" not in (chosen, *cfg.allowed_provisioners):
        # No Workspace can pick BYO: every node that matters carries kaito's labels (Karpenter
        # copies the claim's, AKS agent pools get the request's), so the cluster's other nodes
        # never reach the operator, nor their status updates.
        settings.watching.label_selectors["nodes"] = names.LABEL_WORKSPACE
    if chosen not in registry.provisioners:
        logger.error("provisioner %r is not installed (installed: %s): Workspaces will report ProvisioningError",
                     chosen, ", ".join(sorted(registry.provisioners)))
    logger.info("kaito operator: provisioner=%s resync=%ss delete-grace=%ss webhook=%s namespaces=%s",
                chosen, cfg.resync_seconds, cfg.delete_grace_seconds, cfg.webhook, ",".join(cfg.namespaces) or "all")
    _freeze_startup_heap()


def _freeze_startup_heap() -> None:
    """What the start built (modules, kopf, pydantic models, the plugins' presets and catalogs:
    most of the heap) lives as long as the process: move it out of the cyclic garbage
    collector's reach (:func:`gc.freeze`, as CPython's docs suggest for servers), so that each
    full collection walks only what reconciling allocates, not the whole start-up heap (in the
    scale bench: 227 -> 93 ms of collections, the longest pause 128 -> 27 ms)."""
    import gc

    gc.collect()
    gc.freeze()


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    if STATE.relister is not None:
        STATE.relister.cancel()


async def _relist_forever(period: float) -> None:
    """Every ``period`` seconds, :func:`kaito_core.operator.relist.relist` (see there why)."""
    from kaito_core.operator.relist import relist, relist_pods, sweep_orphans

    first = True
    while True:
        # The first round runs at once: it syncs the watch cache, which then answers the
        # reconciler's labelled lists (cache.py); later rounds every ``period``.
        await asyncio.sleep(0.05 if first else period)
        if STATE.connection is None:
            continue  # not logged in yet
        first = False
        try:
            _reconciler()  # also when no Workspace has been reconciled yet (the orphan sweep)
            # On its own thread: queued behind the passes of a start (40 Workspaces at once), the
            # first round synced the cache late, and until then every pass LISTed NodeClaims.
            await relist(STATE.reconciler, STATE.cache, STATE.wakeups, _in_relist_thread)
            await relist_pods(STATE.reconciler, STATE.pods_known, STATE.pods_gone, STATE.wakeups, _in_relist_thread)
            for _key in await _in_relist_thread(sweep_orphans, STATE.reconciler, STATE.cache,
                                                STATE.orphan_suspects):
                metrics.error("OrphanReleased")  # sweep_orphans logs each one
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the API may be down; the next round retries
            log.warning("relist failed: %s", exc)


@kopf.on.login()
def login(**kwargs: Any) -> Any:
    cfg = STATE.settings or Settings.from_env()
    if cfg.server:
        # A plain URL (kubectl proxy, or an emulator in tests): no credentials of our own.
        info = kopf.ConnectionInfo(server=cfg.server, insecure=cfg.server.startswith("https"))
    else:
        info = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
    STATE.connection = info
    if STATE.reconciler is not None:
        STATE.reconciler.kube = CachedKube(KubeClient.from_connection_info(info), STATE.cache)
    return info


# -- Workspaces -------------------------------------------------------------------------------


# Pods: indexed by Workspace uid from the watch (status reasons without a LIST per pass). kopf
# fills indexes from its initial listing before any other handler runs.
@kopf.index("v1", "pods", labels={names.LABEL_UID: kopf.PRESENT})
def kaito_pods(body: kopf.Body, labels: Any, **_: Any) -> dict[str, dict]:
    meta = body.get("metadata") or {}
    slim = {"metadata": {k: meta.get(k) for k in ("name", "namespace", "labels", "deletionTimestamp")
                         if meta.get(k) is not None},
            "status": dict(body.get("status") or {})}
    return {labels[names.LABEL_UID]: json_copy(slim)}


def json_copy(obj: Any) -> Any:
    import json

    return json.loads(json.dumps(obj, default=dict))


@kopf.on.resume(GROUP, VERSION, PLURAL, id="resume")
@kopf.on.create(GROUP, VERSION, PLURAL, id="create")
@kopf.on.update(GROUP, VERSION, PLURAL, id="update")
async def reconcile(body: kopf.Body, reason: Any, kaito_pods: kopf.Index, **_: Any) -> None:
    trigger = str(getattr(reason, "value", reason) or "update")
    if trigger == "create" and body.get("status"):
        trigger = "resume"  # the diff-base is in memory: after a restart kopf says "create"
    outcome = await _pass(body, trigger, kaito_pods)
    await _write_status(body, outcome, must=True)


@kopf.daemon(GROUP, VERSION, PLURAL, id="watch", cancellation_timeout=2.0)
async def watch(body: kopf.Body, stopped: Any, kaito_pods: kopf.Index, **_: Any) -> None:
    """Per Workspace: sleep until a watched object it depends on changes (a child, pod, node
    or node claim: see :func:`wake`), then reconcile; without events, re-check every
    ``KAITO_RESYNC_SECONDS`` (children not watched, BYO nodes, provider-side changes)."""
    key = _key(body)
    ev = STATE.wakeups.event_for(key)
    resync = (STATE.settings or Settings.from_env()).resync_seconds
    try:
        while not stopped:
            _track_byo(key, body)
            try:
                # a refused child is tried again with backoff (2, 4, ... s), not only at the resync
                refusals = STATE.refusals.get(key, 0)
                await asyncio.wait_for(ev.wait(), timeout=min(resync, 2.0 ** refusals) if refusals else resync)
                woke = True
                # Changes come in bursts (a node and its claim; a pod and its StatefulSet):
                # one pass for the burst.
                await asyncio.sleep(DEBOUNCE)
            except asyncio.TimeoutError:
                woke = False
            ev.clear()
            if stopped or (body.get("metadata") or {}).get("deletionTimestamp"):
                break
            try:
                outcome = await _pass(body, "event" if woke else "resync", kaito_pods, verify=not woke)
            except Exception as exc:  # noqa: BLE001 - the daemon must live on; the next pass retries
                log.warning("workspace %s: reconcile failed (%s); retrying in %.0fs", key, exc, min(resync, 10))
                await asyncio.sleep(min(resync, 10))
                ev.set()
                continue
            await _write_status(body, outcome)
    except asyncio.CancelledError:
        return  # the operator is stopping or the Workspace is going: nothing to escalate
    finally:
        STATE.wakeups.drop(key, ev)
        STATE.wakeups.selectors.pop(key, None)
        STATE.refusals.pop(key, None)
        if (body.get("metadata") or {}).get("deletionTimestamp"):
            STATE.diffbase.forget(body)  # also when the finalizer goes without our delete handler


def _track_byo(key: str, body: Any) -> None:
    """Remember the label selector of a Workspace served by the byo provisioner."""
    name = ""
    if STATE.reconciler is not None:
        try:
            name = STATE.reconciler.provisioner_name(Reconciler.parse(body))
        except Exception:  # noqa: BLE001 - an invalid or disallowed Workspace serves no nodes
            name = ""
    selector = (body.get("resource") or {}).get("labelSelector")
    if name == "byo" and isinstance(selector, dict):
        STATE.wakeups.selectors[key] = json_copy(selector)
    else:
        STATE.wakeups.selectors.pop(key, None)


DEBOUNCE = 0.03
# (group, version, plural) -> kind; all but pods are also served to the reconciler from the
# watch cache (pods come from the kaito_pods index).
WATCHED = {("apps", "v1", "statefulsets"): "StatefulSet", ("batch", "v1", "jobs"): "Job", ("", "v1", "pods"): "Pod",
           ("", "v1", "nodes"): "Node", ("karpenter.sh", "v1", "nodeclaims"): "NodeClaim",
           ("", "v1", "services"): "Service", ("", "v1", "configmaps"): "ConfigMap"}


def _waker(group: str, version: str, plural: str) -> Any:
    api_version, kind_name = (f"{group}/{version}" if group else version), WATCHED[(group, version, plural)]
    cached = (api_version, kind_name) in STATE.cache.kinds

    async def wake(type: str | None, body: kopf.Body, labels: Any, **_: Any) -> None:  # noqa: A002 - kopf's name
        if kind_name == "Pod":
            meta = body.get("metadata") or {}
            pod = (meta.get("namespace") or "", meta.get("name") or "")
            if type == "DELETED":
                STATE.pods_known.discard(pod)
            else:
                STATE.pods_known.add(pod)
            STATE.pods_gone.discard(pod)
        if cached:
            raw = {**json_copy(body), "apiVersion": api_version, "kind": kind_name}
            if type == "DELETED":
                STATE.cache.remove(raw)
            else:
                STATE.cache.put(raw)
        key = STATE.wakeups.observe(plural, type, body)
        if key is None:
            return
        if STATE.reconciler is not None and kind_name in ("StatefulSet", "Job", "Service", "ConfigMap"):
            uid = (labels or {}).get(names.LABEL_UID)
            if uid:  # deleted or edited: the next pass must look at it (apply again, or undo drift)
                STATE.reconciler.forget_object(uid, kind_name, (body.get("metadata") or {}).get("name") or "")
        if STATE.wakeups.wake(key):
            metrics.woke(plural)
    wake.__name__ = wake.__qualname__ = f"wake_on_{plural}"
    return wake


@kopf.on.event("", "v1", "nodes", id="wake-byo-nodes")
async def wake_byo(type: str | None, body: kopf.Body, labels: Any, **_: Any) -> None:  # noqa: A002 - kopf's name
    """BYO nodes carry the user's labels, not kaito's: wake the BYO Workspaces they match."""
    labels = dict(labels or {})
    if not STATE.wakeups.selectors or names.LABEL_WORKSPACE in labels:
        return
    if not STATE.wakeups.changed("byo-nodes", type, body):
        return
    for key in STATE.wakeups.byo_keys(labels):
        if STATE.wakeups.wake(key):
            metrics.woke("nodes")


for (_group, _version, _plural) in WATCHED:
    kopf.on.event(_group, _version, _plural, id=f"wake-{_plural}",
                  labels={names.LABEL_WORKSPACE: kopf.PRESENT})(_waker(_group, _version, _plural))


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def delete(body: kopf.Body, patch: kopf.Patch, logger: logging.Logger, retry: int, **_: Any) -> None:
    """Release nodes and children; while that fails, retry with backoff and say so (Event +
    condition); see :mod:`kaito_core.operator.release` for when the finalizer may go anyway."""
    from kaito_core.operator.apply import now_rfc3339
    from kaito_core.operator.release import failing_status

    rec = _reconciler()
    grace = (STATE.settings or Settings.from_env()).delete_grace_seconds
    meta = body.get("metadata") or {}
    uid = meta.get("uid") or _key(body)
    started = time.monotonic()
    try:
        deleted = await _in_thread(rec.release, body)
    except Exception as exc:  # noqa: BLE001 - any failure: retried, visible, never silent
        metrics.reconciled("delete", time.monotonic() - started)
        metrics.error("ReleaseFailed")
        decision = STATE.releases.failed(uid, exc, attempt=retry, grace=grace, workspace=meta.get("name") or "",
                                         namespace=meta.get("namespace") or "default")
        kopf.event(body, type="Warning", reason=decision.event_reason, message=decision.message[:1000])
        if decision.action == "retry":
            logger.warning("%s: %s", decision.event_reason, decision.message)
            for key, value in failing_status(body.get("status"), decision.message, now_rfc3339()).items():
                patch.status[key] = value
            raise kopf.TemporaryError(str(exc), delay=decision.delay)
        logger.error("%s", decision.message)
        _forget(body)
        return
    STATE.releases.succeeded(uid)
    metrics.reconciled("delete", time.monotonic() - started)
    _forget(body)
    log.info("workspace %s/%s: released nodes; deleted %s", meta.get("namespace"), meta.get("name"),
             ", ".join(deleted) or "no children")


def _forget(body: Any) -> None:
    metrics.workspace_state(_key(body), None)
    STATE.diffbase.forget(body)
    STATE.written.pop(_key(body), None)


# -- admission webhooks (kaito_core.operator.webhooks) ------------------------------------------


if WEBHOOK:
    from kaito_core.operator.webhooks import default, validate

    kopf.on.validate(GROUP, VERSION, PLURAL, id="validate", operations=["CREATE", "UPDATE"])(validate)
    kopf.on.mutate(GROUP, VERSION, PLURAL, id="defaults", operations=["CREATE"])(default)
