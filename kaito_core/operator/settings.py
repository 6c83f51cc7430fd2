"""Operator settings: environment variables (``KAITO_*``), overridden by ``kaito operator`` flags.

Standard library only: ``kaito operator --help`` must not import kopf.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from kaito_core.errors import KaitoError

# Environment passed to provisioners as ProvisionerContext.settings (cloud and Karpenter
# settings; never secrets such as tokens).
PROVISIONER_ENV_PREFIXES = ("ARM_", "AZURE_", "AKS_", "AWS_REGION", "CLOUD_PROVIDER", "KARPENTER_", "LOCATION",
                            "KAITO_PROVISIONER_")


class SettingsError(KaitoError, ValueError):
    pass


@dataclass
class Settings:
    """Everything the operator reads at start. ``env`` names the variable of each field."""

    provisioner: str = ""
    resync_seconds: float = 30.0
    relist_seconds: float = 60.0
    delete_grace_seconds: float = 300.0
    namespaces: tuple[str, ...] = ()
    server: str = ""
    workers: int = 8
    webhook: bool = False
    webhook_port: int = 9443
    webhook_addr: str = "0.0.0.0"
    webhook_host: str = ""
    webhook_cert: str = ""
    webhook_key: str = ""
    webhook_insecure: bool = False
    webhook_cert_check_seconds: float = 30.0
    webhook_managed: str = ""
    log_level: str = "INFO"
    metrics_port: int = 8080
    metrics_addr: str = "0.0.0.0"
    # The admin's policy (chart values): which other provisioners a Workspace's
    # kaito.sh/provisioner annotation may pick, and what may reach a pod spec.
    allowed_provisioners: tuple[str, ...] = ()
    allow_host_path: bool = False
    allow_templates: bool = False
    allow_local_weights: bool = False
    # Manual edits of owned objects: "revert" them (controller-style), or only "report" them.
    drift: str = "revert"
    provisioner_settings: dict[str, str] = field(default_factory=dict)

    ENV = {
        "provisioner": "KAITO_PROVISIONER", "resync_seconds": "KAITO_RESYNC_SECONDS", "relist_seconds": "KAITO_RELIST_SECONDS",
        "delete_grace_seconds": "KAITO_DELETE_GRACE_SECONDS", "namespaces": "KAITO_NAMESPACES",
        "server": "KAITO_KUBE_SERVER", "workers": "KAITO_WORKERS", "webhook": "KAITO_WEBHOOK",
        "webhook_port": "KAITO_WEBHOOK_PORT", "webhook_addr": "KAITO_WEBHOOK_ADDR",
        "webhook_host": "KAITO_WEBHOOK_HOST", "webhook_cert": "KAITO_WEBHOOK_CERT",
        "webhook_key": "KAITO_WEBHOOK_KEY", "webhook_insecure": "KAITO_WEBHOOK_INSECURE",
        "webhook_cert_check_seconds": "KAITO_WEBHOOK_CERT_CHECK_SECONDS",
        "webhook_managed": "KAITO_WEBHOOK_MANAGED", "log_level": "KAITO_LOG_LEVEL",
        "metrics_port": "KAITO_METRICS_PORT", "metrics_addr": "KAITO_METRICS_ADDR",
        "allowed_provisioners": "KAITO_ALLOWED_PROVISIONERS", "allow_host_path": "KAITO_ALLOW_HOST_PATH",
        "allow_templates": "KAITO_ALLOW_TEMPLATES", "allow_local_weights": "KAITO_ALLOW_LOCAL_WEIGHTS",
        "drift": "KAITO_DRIFT",
    }

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ
        s = cls()
        for f in fields(cls):
            var = cls.ENV.get(f.name)
            if var is None or var not in env:
                continue
            setattr(s, f.name, _convert(f.name, var, env[var], getattr(s, f.name)))
        s.provisioner_settings = {k: v for k, v in env.items() if k.startswith(PROVISIONER_ENV_PREFIXES)}
        s.check()
        return s

    def to_env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, var in self.ENV.items():
            value = getattr(self, name)
            if isinstance(value, bool):
                out[var] = "true" if value else "false"
            elif isinstance(value, tuple):
                out[var] = ",".join(value)
            else:
                out[var] = str(value)
        return out

    def check(self) -> None:
        if self.resync_seconds <= 0:
            raise SettingsError(f"KAITO_RESYNC_SECONDS is {self.resync_seconds}, expected a positive number of seconds")
        if self.relist_seconds <= 0:
            raise SettingsError(f"KAITO_RELIST_SECONDS is {self.relist_seconds}, expected a positive number of seconds")
        if self.delete_grace_seconds < 0:
            raise SettingsError(f"KAITO_DELETE_GRACE_SECONDS is {self.delete_grace_seconds}, expected >= 0")
        if not 0 < self.webhook_port < 65536:
            raise SettingsError(f"KAITO_WEBHOOK_PORT is {self.webhook_port}, expected 1..65535")
        if not 0 <= self.metrics_port < 65536:
            raise SettingsError(f"KAITO_METRICS_PORT is {self.metrics_port}, expected 1..65535 (or 0: no metrics server)")
        if self.workers < 1:
            raise SettingsError(f"KAITO_WORKERS is {self.workers}, expected a positive integer")
        if self.drift not in ("revert", "report"):
            raise SettingsError(f"KAITO_DRIFT is {self.drift!r}, expected 'revert' (undo manual edits of owned "
                                "objects) or 'report' (only a condition)")
        if bool(self.webhook_cert) != bool(self.webhook_key):
            raise SettingsError("KAITO_WEBHOOK_CERT and KAITO_WEBHOOK_KEY must be set together "
                                "(the webhook's TLS certificate and its private key)")

    def describe(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "provisioner_settings"}


def _convert(name: str, var: str, raw: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            low = raw.strip().lower()
            if low not in ("1", "true", "yes", "on", "0", "false", "no", "off", ""):
                raise ValueError(raw)
            return low in ("1", "true", "yes", "on")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, tuple):
            return tuple(p.strip() for p in raw.split(",") if p.strip())
        return raw
    except ValueError:
        kind = type(default).__name__
        raise SettingsError(f"{var} is {raw!r}, expected {'true or false' if kind == 'bool' else 'a ' + kind}") from None
