"""kopf handlers: thin async wrappers around :class:`~kaito_core.operator.apply.Reconciler`.

Run with ``kaito operator`` (which sets the environment and calls kopf) or directly with
``kopf run -m kaito_core.operator.handlers --standalone -A``. Settings come from ``KAITO_*``
environment variables (see :mod:`kaito_core.operator.settings`), read at import for the timer
interval and at startup for the rest.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
from typing import Any

import kopf

from kaito_core.operator.admission import Rejection, defaults, review
from kaito_core.operator.apply import Outcome, Reconciler, default_provisioner
from kaito_core.operator.kube import KubeClient
from kaito_core.operator.settings import Settings
from kaito_core.reconcile import names

GROUP, VERSION, PLURAL = "kaito.sh", "v1beta1", "workspaces"
RESYNC = float(os.environ.get("KAITO_RESYNC_SECONDS", "30") or 30)
# kopf refuses to start with admission handlers but no webhook server: register them only
# when the webhook is enabled (read at import, like the timer interval).
WEBHOOK = os.environ.get("KAITO_WEBHOOK", "").strip().lower() in ("1", "true", "yes", "on")
log = logging.getLogger("kaito.operator")


class State:
    """What the process holds between handlers (one operator per process)."""

    settings: Settings | None = None
    connection: Any = None
    reconciler: Reconciler | None = None
    executor: concurrent.futures.ThreadPoolExecutor | None = None


STATE = State()


def _reconciler() -> Reconciler:
    if STATE.reconciler is None:
        from kaito_core.plugins import get_registry

        if STATE.connection is None:
            raise kopf.TemporaryError("not logged in to the API server yet", delay=1)
        STATE.reconciler = Reconciler(KubeClient.from_connection_info(STATE.connection), get_registry(),
                                      STATE.settings or Settings.from_env())
    return STATE.reconciler


async def _in_thread(fn: Any, *args: Any) -> Any:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(STATE.executor, fn, *args)


def _log_actions(body: Any, outcome: Outcome) -> None:
    changed = {k: v for k, v in outcome.actions.items() if v != "unchanged"}
    if changed:
        meta = body.get("metadata") or {}
        log.info("workspace %s/%s: %s", meta.get("namespace"), meta.get("name"),
                 ", ".join(f"{k} {v}" for k, v in sorted(changed.items())))


def _report(body: Any, patch: Any, outcome: Outcome) -> None:
    old = dict(body.get("status") or {})
    from kaito_core.reconcile.status import same

    if not same(old, outcome.status):
        for key, value in outcome.status.items():
            patch.status[key] = value
    for ev in outcome.events:
        kopf.event(body, type=ev.type, reason=ev.reason, message=ev.message[:1000])


# -- startup ----------------------------------------------------------------------------------


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, logger: logging.Logger, **_: Any) -> None:
    cfg = Settings.from_env()
    STATE.settings = cfg
    STATE.executor = concurrent.futures.ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="kaito")
    settings.persistence.finalizer = names.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="operator.kaito.sh")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="operator.kaito.sh", key="last-handled-configuration")
    # Our own Events carry the reasons; kopf's per-handler chatter stays in the log.
    settings.posting.level = logging.ERROR
    settings.execution.max_workers = cfg.workers
    # A resync pass in flight when a Workspace is deleted must not hold the finalizer for
    # kopf's default 60 s polling: wait for it briefly, then re-check every second.
    settings.background.instant_exit_timeout = 0.5
    settings.background.cancellation_polling = 1.0
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60
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
    if chosen not in registry.provisioners:
        logger.error("provisioner %r is not installed (installed: %s): Workspaces will report ProvisioningError",
                     chosen, ", ".join(sorted(registry.provisioners)))
    logger.info("kaito operator: provisioner=%s resync=%ss delete-grace=%ss webhook=%s namespaces=%s",
                chosen, cfg.resync_seconds, cfg.delete_grace_seconds, cfg.webhook, ",".join(cfg.namespaces) or "all")


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
        STATE.reconciler.kube = KubeClient.from_connection_info(info)
    return info


# -- Workspaces -------------------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
async def reconcile(body: kopf.Body, patch: kopf.Patch, logger: logging.Logger, **_: Any) -> None:
    rec = _reconciler()
    outcome = await _in_thread(rec.reconcile, body)
    _log_actions(body, outcome)
    _report(body, patch, outcome)


@kopf.timer(GROUP, VERSION, PLURAL, interval=RESYNC, initial_delay=min(RESYNC, 1.0))
async def resync(body: kopf.Body, patch: kopf.Patch, logger: logging.Logger, **_: Any) -> None:
    """Re-observe nodes and children: status follows the cluster, not only spec changes."""
    rec = _reconciler()
    outcome = await _in_thread(rec.reconcile, body)
    _log_actions(body, outcome)
    _report(body, patch, outcome)


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def delete(body: kopf.Body, patch: kopf.Patch, logger: logging.Logger, runtime: Any, retry: int,
                 **_: Any) -> None:
    """Release nodes and children; never hang: after the grace period the finalizer goes."""
    rec = _reconciler()
    grace = (STATE.settings or Settings.from_env()).delete_grace_seconds
    try:
        deleted = await _in_thread(rec.release, body)
    except Exception as exc:  # noqa: BLE001 - any failure: retry within the grace, then give up loudly
        elapsed = runtime.total_seconds()
        if elapsed < grace:
            logger.warning("release failed (attempt %d, %.0fs of %.0fs grace): %s", retry + 1, elapsed, grace, exc)
            kopf.event(body, type="Warning", reason="ReleaseFailed",
                       message=f"cannot release nodes yet (retrying for {grace - elapsed:.0f}s): {exc}"[:1000])
            raise kopf.TemporaryError(str(exc), delay=max(1.0, min(10.0, grace - elapsed)))
        logger.error("giving up releasing after %.0fs: %s; removing the finalizer", elapsed, exc)
        kopf.event(body, type="Warning", reason="ReleaseAbandoned",
                   message=(f"gave up releasing nodes after {elapsed:.0f}s: {exc}; delete leftover node requests "
                            f"labelled {names.LABEL_WORKSPACE}={body.get('metadata', {}).get('name')} by hand")[:1000])
        return
    meta = body.get("metadata") or {}
    log.info("workspace %s/%s: released nodes; deleted %s", meta.get("namespace"), meta.get("name"),
             ", ".join(deleted) or "no children")


# -- admission webhooks -----------------------------------------------------------------------


def validate(body: kopf.Body, old: Any, warnings: list[str], operation: str | None = None, **_: Any) -> None:
    from kaito_core.plugins import get_registry

    try:
        warnings.extend(review(body, old=old if operation == "UPDATE" else None, registry=get_registry()))
    except Rejection as exc:
        raise kopf.AdmissionError(exc.message, code=exc.code)


def default(body: kopf.Body, patch: kopf.Patch, operation: str | None = None, **_: Any) -> None:
    from kaito_core.plugins import get_registry

    for key, value in defaults(body, registry=get_registry(), creating=operation == "CREATE").items():
        patch[key] = value


if WEBHOOK:
    kopf.on.validate(GROUP, VERSION, PLURAL, id="validate", operations=["CREATE", "UPDATE"])(validate)
    kopf.on.mutate(GROUP, VERSION, PLURAL, id="defaults", operations=["CREATE"])(default)
