"""Where a pod's model weights come from: an OCI artifact, the hub at start, or a host path;
and the init container that pulls any OCI artifact (weights, adapters, data) into a volume."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kaito_core.images import runtime_image, weights_image
from kaito_core.reconcile import names, pods
from kaito_core.reconcile.context import WEIGHTS_DIR, Context


PULL_SECRETS_DIR = "/var/run/secrets/kaito/pull"


def artifact_init(name: str, ref: str, mount: dict[str, Any], dest: str, secrets: list[str] | tuple[str, ...] = (),
                  resources: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """An init container that pulls the OCI artifact ``ref`` into ``dest`` (on ``mount``), and
    the Secret volumes it reads registry credentials from.

    Weights, adapter and data references are read in the two layouts upstream KAITO produces:
    ORAS artifacts (one titled layer per file) and images whose files are under ``/data``
    (upstream's adapter images), pulled by ``python -m kaito_core.artifacts pull`` in the
    runtime image with :mod:`kaito_core.oci` (every blob verified against its digest, sizes
    capped, tar layers kept inside ``dest``). The ``imagePullSecrets`` named for the artifact
    (kubernetes.io/dockerconfigjson Secrets) are mounted and handed over as docker configs.
    """
    volumes, mounts, args = [], [dict(mount)], ["pull", ref, dest]
    for secret in dict.fromkeys(s for s in secrets if s):
        vol = f"pull-secret-{names.stable_hash(secret, 10)}"
        path = f"{PULL_SECRETS_DIR}/{vol}"
        volumes.append({"name": vol, "secret": {"secretName": secret, "optional": False,
                                                "items": [{"key": ".dockerconfigjson", "path": "config.json"}]}})
        mounts.append({"name": vol, "mountPath": path, "readOnly": True})
        args += ["--docker-config", path]
    init = {"name": name, "image": runtime_image("transformers"), "imagePullPolicy": "IfNotPresent",
            "command": ["python", "-m", "kaito_core.artifacts"], "args": args,
            "volumeMounts": mounts, "securityContext": pods.container_security(),
            "resources": resources or {"requests": {"cpu": "250m", "memory": "256Mi"}}}
    return init, volumes


def merge_volumes(*groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Volumes in order, each name once (two init containers may mount the same pull Secret)."""
    out: dict[str, dict[str, Any]] = {}
    for group in groups:
        for vol in group:
            out.setdefault(vol["name"], vol)
    return list(out.values())


@dataclass
class Weights:
    model: str  # what the server/recipe is given as --model
    volumes: list[dict[str, Any]] = field(default_factory=list)
    mounts: list[dict[str, Any]] = field(default_factory=list)
    init_containers: list[dict[str, Any]] = field(default_factory=list)
    env: list[dict[str, Any]] = field(default_factory=list)


# Upstream's node-local model cache: ``kaito.sh/use-local-weights: "true"`` mounts
# /opt/kaito/models/<preset> from the node (its image-baking and pre-pull tooling writes there).
LOCAL_MODELS_DIR = "/opt/kaito/models"


def local_weights_dir(ws: Any, preset: Any) -> str | None:
    """The node directory ``kaito.sh/use-local-weights`` names: "true" -> upstream's
    /opt/kaito/models/<preset>, "false" (or empty) -> off. The API model may already have
    turned "true" into that directory, which is kept as it is."""
    value = (ws.local_weights_path or "").strip()
    if value.lower() in ("", "false", "no"):
        return None
    if value.lower() in ("true", "yes"):
        return f"{LOCAL_MODELS_DIR}/{preset.name}" if preset is not None else None
    return value


def weights(ctx: Context) -> Weights:
    preset = ctx.preset
    mount = {"name": "weights", "mountPath": WEIGHTS_DIR}
    local = local_weights_dir(ctx.ws, preset)
    if local:
        # kaito.sh/use-local-weights: the node already holds the weights (upstream's annotation).
        return Weights(model=WEIGHTS_DIR, volumes=[{"name": "weights", "hostPath": {"path": local,
                                                                                   "type": "Directory"}}],
                       mounts=[dict(mount, readOnly=True)])
    size = max(ctx.disk_gib, 1)
    volume = {"name": "weights", "emptyDir": {"sizeLimit": f"{size}Gi"}}
    if preset.weights_source == "oci":
        # The weights are an ORAS artifact (images/models/pack.py): pulled onto the pod's volume
        # before the server starts, with the preset's imagePullSecrets as registry credentials.
        init, secret_volumes = artifact_init("model-weights", weights_image(preset.name, preset.tag), mount,
                                             WEIGHTS_DIR, ctx.pull_secrets,
                                             {"requests": {"cpu": "500m", "memory": "512Mi"}})
        return Weights(model=WEIGHTS_DIR, volumes=[volume] + secret_volumes, mounts=[mount], init_containers=[init])
    # runtime-download: the server fetches the pinned revision from the hub into the volume.
    env = [{"name": "HF_HOME", "value": f"{WEIGHTS_DIR}/.cache"},
           {"name": "KAITO_MODEL_REVISION", "value": preset.revision}]
    return Weights(model=preset.hf_repo, volumes=[volume], mounts=[mount], env=env)


def hf_token_env(secret: str | None) -> list[dict[str, Any]]:
    """The model access Secret's HF_TOKEN key as the HF_TOKEN variable (gated models)."""
    if not secret:
        return []
    return [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": secret, "key": "HF_TOKEN"}}}]
