"""Where a pod's model weights come from: an OCI artifact, the hub at start, or a host path."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kaito_core.images import weights_image
from kaito_core.reconcile import pods
from kaito_core.reconcile.context import WEIGHTS_DIR, Context


@dataclass
class Weights:
    model: str  # what the server/recipe is given as --model
    volumes: list[dict[str, Any]] = field(default_factory=list)
    mounts: list[dict[str, Any]] = field(default_factory=list)
    init_containers: list[dict[str, Any]] = field(default_factory=list)
    env: list[dict[str, Any]] = field(default_factory=list)


def weights(ctx: Context) -> Weights:
    preset = ctx.preset
    mount = {"name": "weights", "mountPath": WEIGHTS_DIR}
    local = ctx.ws.local_weights_path
    if local:
        # kaito.sh/use-local-weights: the node already holds the weights (upstream's annotation).
        return Weights(model=WEIGHTS_DIR, volumes=[{"name": "weights", "hostPath": {"path": local,
                                                                                   "type": "Directory"}}],
                       mounts=[dict(mount, readOnly=True)])
    size = max(ctx.disk_gib, 1)
    volume = {"name": "weights", "emptyDir": {"sizeLimit": f"{size}Gi"}}
    if preset.weights_source == "oci":
        # The weights artifact image holds the files under /weights; an init container copies
        # them onto the pod's volume before the server starts (upstream pulls them the same way).
        init = {"name": "model-weights", "image": weights_image(preset.name, preset.tag),
                "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", f"cp -a /weights/. {WEIGHTS_DIR}/"],
                "volumeMounts": [mount], "securityContext": pods.container_security(),
                "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}}}
        return Weights(model=WEIGHTS_DIR, volumes=[volume], mounts=[mount], init_containers=[init])
    # runtime-download: the server fetches the pinned revision from the hub into the volume.
    env = [{"name": "HF_HOME", "value": f"{WEIGHTS_DIR}/.cache"},
           {"name": "KAITO_MODEL_REVISION", "value": preset.revision}]
    return Weights(model=preset.hf_repo, volumes=[volume], mounts=[mount], env=env)


def hf_token_env(secret: str | None) -> list[dict[str, Any]]:
    """The model access Secret's HF_TOKEN key as the HF_TOKEN variable (gated models)."""
    if not secret:
        return []
    return [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": secret, "key": "HF_TOKEN"}}}]
