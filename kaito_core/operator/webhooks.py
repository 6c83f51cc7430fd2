"""kopf's admission handlers: :mod:`kaito_core.operator.admission` with the admin's policy
(registered by :mod:`kaito_core.operator.handlers` when ``KAITO_WEBHOOK`` is on)."""

from __future__ import annotations

from typing import Any

import kopf

from kaito_core.operator.admission import Policy, Rejection, defaults, review
from kaito_core.operator.apply import default_provisioner
from kaito_core.operator.settings import Settings


def policy(settings: Settings | None = None) -> Policy:
    """The admin's policy, with the operator's effective provisioner."""
    from kaito_core.plugins import get_registry

    cfg = settings or Settings.from_env()
    return Policy.from_settings(cfg, provisioner=cfg.provisioner or default_provisioner(get_registry()))


def validate(body: kopf.Body, old: Any, warnings: list[str], operation: str | None = None, **_: Any) -> None:
    from kaito_core.operator.handlers import STATE
    from kaito_core.plugins import get_registry

    try:
        warnings.extend(review(body, old=old if operation == "UPDATE" else None, registry=get_registry(),
                               policy=policy(STATE.settings), kube=_kube()))
    except Rejection as exc:
        raise kopf.AdmissionError(exc.message, code=exc.code)


def _kube() -> Any:
    """The operator's client, to read the Workspace's ConfigMaps (None before login: plan without)."""
    from kaito_core.operator.handlers import STATE, _reconciler

    if STATE.connection is None and STATE.reconciler is None:
        return None
    try:
        return _reconciler().kube
    except Exception:  # noqa: BLE001 - admission must answer even when the client cannot be built
        return None


def default(body: kopf.Body, patch: kopf.Patch, operation: str | None = None, **_: Any) -> None:
    from kaito_core.plugins import get_registry

    for key, value in defaults(body, registry=get_registry(), creating=operation == "CREATE").items():
        patch[key] = value
