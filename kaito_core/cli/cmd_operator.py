"""``kaito operator``: run the KAITO operator (kopf) with settings from flags and ``KAITO_*`` env."""

from __future__ import annotations

import os

FLAGS = (
    # flag, settings field, help
    ("--provisioner", "provisioner", "provisioner plugin for new nodes (env KAITO_PROVISIONER; default karpenter "
                                     "when installed, else byo)"),
    ("--resync-seconds", "resync_seconds", "re-observe each Workspace this often (KAITO_RESYNC_SECONDS, 30)"),
    ("--delete-grace-seconds", "delete_grace_seconds",
     "on delete, retry releasing nodes this long before removing the finalizer anyway (KAITO_DELETE_GRACE_SECONDS, 300)"),
    ("--namespaces", "namespaces", "comma-separated namespaces to watch (KAITO_NAMESPACES; default all)"),
    ("--server", "server", "API server URL without auth, e.g. kubectl proxy's http://127.0.0.1:8001 "
                           "(KAITO_KUBE_SERVER; default in-cluster or kubeconfig)"),
    ("--workers", "workers", "reconcile threads (KAITO_WORKERS, 8)"),
    ("--webhook-port", "webhook_port", "admission webhook port (KAITO_WEBHOOK_PORT, 9443)"),
    ("--webhook-host", "webhook_host", "host name the API server reaches the webhook at (KAITO_WEBHOOK_HOST)"),
    ("--webhook-cert", "webhook_cert", "TLS certificate file (KAITO_WEBHOOK_CERT; default self-signed)"),
    ("--webhook-key", "webhook_key", "TLS private key file (KAITO_WEBHOOK_KEY)"),
    ("--webhook-managed", "webhook_managed",
     "name of the webhook configurations the operator creates and keeps updated (KAITO_WEBHOOK_MANAGED)"),
    ("--metrics-port", "metrics_port", "Prometheus metrics on this port, path /metrics; 0 disables "
                                       "(KAITO_METRICS_PORT, 8080)"),
    ("--allowed-provisioners", "allowed_provisioners",
     "comma-separated provisioners a Workspace's kaito.sh/provisioner annotation may pick besides --provisioner "
     "(KAITO_ALLOWED_PROVISIONERS; default none)"),
    ("--drift", "drift", "manual edits of owned objects: revert (default) or report (a condition only) (KAITO_DRIFT)"),
    ("--log-level", "log_level", "DEBUG, INFO, WARNING, ERROR (KAITO_LOG_LEVEL, INFO)"),
)


def register(sub) -> None:
    from kaito_core.operator.settings import Settings

    p = sub.add_parser("operator", help="run the operator: reconcile Workspaces, serve admission webhooks")
    for flag, _field, text in FLAGS:
        p.add_argument(flag, dest=_field, default=None, help=text)
    p.add_argument("--webhook", dest="webhook", action="store_true", default=None,
                   help="serve the validating and defaulting admission webhooks (KAITO_WEBHOOK)")
    p.add_argument("--webhook-insecure", dest="webhook_insecure", action="store_true", default=None,
                   help="serve the webhook over plain HTTP (tests, local development only)")
    for flag, fld, text in (("--allow-host-path", "allow_host_path", "hostPath volumes in Workspaces"),
                            ("--allow-templates", "allow_templates", "inference.template (any pod spec)"),
                            ("--allow-local-weights", "allow_local_weights", "kaito.sh/use-local-weights")):
        p.add_argument(flag, dest=fld, action="store_true", default=None,
                       help=f"admit {text} (env {Settings.ENV[fld]}; default refused at admission)")
    p.add_argument("--liveness", default=os.environ.get("KAITO_LIVENESS", ""),
                   help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz (KAITO_LIVENESS)")
    p.add_argument("--print-settings", action="store_true", help="print the effective settings and exit")
    p.set_defaults(func=run)


def effective_env(args, environ=None) -> dict[str, str]:
    """The environment the operator runs with: ``environ`` + the flags given."""
    env = dict(os.environ if environ is None else environ)
    from kaito_core.operator.settings import Settings

    switches = ("webhook", "webhook_insecure", "allow_host_path", "allow_templates", "allow_local_weights")
    for _flag, fld, _text in FLAGS + tuple(("", s, "") for s in switches):
        value = getattr(args, fld, None)
        if value is None:
            continue
        env[Settings.ENV[fld]] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return env


def run(args) -> int:
    import json
    import logging

    from kaito_core.operator.settings import Settings

    env = effective_env(args)
    settings = Settings.from_env(env)  # raises SettingsError (a KaitoError) naming the variable
    if args.print_settings:
        print(json.dumps(settings.describe(), indent=2, default=list))
        return 0
    os.environ.update({k: v for k, v in env.items() if k.startswith("KAITO_")})
    logging.basicConfig(level=getattr(logging, settings.log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.log_level.upper() != "DEBUG":
        # kopf logs every handler run at INFO ("Timer 'resync' succeeded" per Workspace per
        # resync); kaito's own lines say what changed. kopf's warnings and errors stay.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    import kopf

    import kaito_core.operator.handlers  # noqa: F401 - registers the handlers with kopf

    kopf.run(standalone=True, clusterwide=not settings.namespaces, namespaces=list(settings.namespaces),
             liveness_endpoint=args.liveness or None)
    return 0
