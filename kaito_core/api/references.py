"""Checks of what a Workspace refers to: Secret names, adapter URLs and volume sources wherever
they appear, what Pod Security "baseline" forbids in a user pod template (issue 16, finding
9: these used to pass unchecked into pods), and upstream's annotations. Part of
:func:`kaito_core.api.validation.validate_workspace`."""

from __future__ import annotations

from typing import Any

import re

from kaito_core.api import models as m
from kaito_core.netguard import url_problem

ValidationResult = Any  # kaito_core.api.validation.ValidationResult (which imports this module)
DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


# Volume types a Workspace may name in a volumeSource (core/v1 VolumeSource's members).
VOLUME_TYPES = {"awsElasticBlockStore", "azureDisk", "azureFile", "cephfs", "cinder", "configMap", "csi",
                "downwardAPI", "emptyDir", "ephemeral", "fc", "flexVolume", "flocker", "gcePersistentDisk",
                "gitRepo", "glusterfs", "hostPath", "image", "iscsi", "nfs", "persistentVolumeClaim",
                "photonPersistentDisk", "portworxVolume", "projected", "quobyte", "rbd", "scaleIO", "secret",
                "storageos", "vsphereVolume"}


def references(ws: m.Workspace, r: ValidationResult) -> None:
    """Secret names, adapter URLs and volume sources wherever they appear (a bad one would
    otherwise surface only as a pod that never starts)."""
    secrets: list[tuple[str, Any]] = []
    volumes: list[tuple[str, Any]] = []
    for i, ad in enumerate((ws.inference.adapters or []) if ws.inference is not None else []):
        p = f"inference.adapters[{i}].source"
        secrets += [(f"{p}.imagePullSecrets[{j}]", n) for j, n in enumerate(ad.source.image_pull_secrets or [])]
        volumes.append((f"{p}.volumeSource", ad.source.volume_source))
        for j, url in enumerate(ad.source.urls or []):
            problem = url_problem(url)
            if problem:
                r.error(f"{p}.urls[{j}]", url, problem, "adapters must come from a public http(s) URL, an image "
                        "or a volume")
    if ws.tuning is not None:
        src, out = ws.tuning.input, ws.tuning.output
        if src is not None:
            secrets += [(f"tuning.input.imagePullSecrets[{j}]", n) for j, n in enumerate(src.image_pull_secrets or [])]
            volumes.append(("tuning.input.volumeSource", src.volume_source))
        if out is not None:
            if out.image_push_secret:
                secrets.append(("tuning.output.imagePushSecret", out.image_push_secret))
            volumes.append(("tuning.output.volumeSource", out.volume_source))
            if out.image and "@" in out.image:
                r.error("tuning.output.image", out.image, "cannot be pinned by digest: it is pushed, not pulled",
                        "name a tag, e.g. registry.example.com/adapters/phi:1")
    for path, name in secrets:
        if len(name) <= 253 and DNS1123_SUBDOMAIN.fullmatch(name):
            continue
        if DNS1123_SUBDOMAIN.fullmatch(name.lower().replace("_", "-")):
            # upstream's examples carry placeholders such as ACR_REGISTRY_SECRET_HERE: accepted
            # unchanged, as upstream accepts them, with a warning
            r.warn(path, name, "cannot be a Secret name (uppercase or '_')", "replace the placeholder")
        else:
            r.error(path, name, "must be a Secret name (DNS-1123 subdomain)")
    for path, vs in volumes:
        if vs is None:
            continue
        kinds = sorted(vs) if isinstance(vs, dict) else []
        if len(kinds) != 1 or kinds[0] not in VOLUME_TYPES:
            r.error(path, kinds or vs, "must name exactly one volume type",
                    "for example {persistentVolumeClaim: {claimName: my-data}}")


def template_baseline(template: dict, r: ValidationResult) -> None:
    """What Pod Security "baseline" forbids in a user pod template, refused whatever the admin
    allows (hostPath is the admin's call: kaito_core.operator.admission.Policy)."""
    spec = template.get("spec") if isinstance(template.get("spec"), dict) else {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            r.error(f"inference.template.spec.{key}", True, "is not allowed (Pod Security 'baseline')")
    for section in ("initContainers", "containers"):
        containers = spec.get(section)
        for i, c in enumerate(containers if isinstance(containers, list) else []):
            if not isinstance(c, dict):
                continue
            p = f"inference.template.spec.{section}[{i}]"
            sc = c.get("securityContext") if isinstance(c.get("securityContext"), dict) else {}
            if sc.get("privileged"):
                r.error(f"{p}.securityContext.privileged", True, "is not allowed (Pod Security 'baseline')")
            added = (sc.get("capabilities") or {}).get("add") if isinstance(sc.get("capabilities"), dict) else None
            added = [str(a) for a in added] if isinstance(added, list) else ([str(added)] if added else [])
            if set(added) - BASELINE_CAPABILITIES:
                r.error(f"{p}.securityContext.capabilities.add", sorted(set(added) - BASELINE_CAPABILITIES),
                        "are not allowed (Pod Security 'baseline')")
            ports = c.get("ports")
            for j, port in enumerate(ports if isinstance(ports, list) else []):
                if isinstance(port, dict) and port.get("hostPort"):
                    r.error(f"{p}.ports[{j}].hostPort", port["hostPort"], "is not allowed (Pod Security 'baseline')",
                            "expose the port through the Workspace's Service")


BASELINE_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                         "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}


# Annotations upstream gives a closed set of values (case-insensitive, as upstream compares
# them); anything else is refused instead of silently meaning "off".
ANNOTATION_VALUES = {
    m.ANNOTATION_LOCAL_WEIGHTS: ("true", "false"),
    m.ANNOTATION_ENABLE_LB: ("true", "false"),
    m.ANNOTATION_BYPASS_CHECKS: ("true", "false"),
    m.ANNOTATION_DISABLE_BENCHMARK: ("true", "false"),
    m.ANNOTATION_PERFORMANCE_MODE: ("balanced", "throughput", "latency"),
}


def annotations(ws: m.Workspace, preset: Any, registry: Any, r: ValidationResult) -> None:
    for key, allowed in ANNOTATION_VALUES.items():
        value = ws.annotations.get(key)
        if value is not None and value.strip().lower() not in allowed:
            r.error(f"metadata.annotations[{key}]", value, f"must be one of {', '.join(allowed)}",
                    "upstream KAITO's values" + (f" (true mounts {m.LOCAL_MODELS_DIR}/<preset> from the node)"
                                                 if key == m.ANNOTATION_LOCAL_WEIGHTS else ""))
    if ws.use_local_weights and ws.inference is None:
        r.error(f"metadata.annotations[{m.ANNOTATION_LOCAL_WEIGHTS}]", "true", "applies to inference only",
                "remove it from a tuning Workspace")
    runtime = ws.runtime_annotation
    if runtime is None:
        return
    path = f"metadata.annotations[{m.ANNOTATION_RUNTIME}]"
    known = sorted(getattr(registry, "runtimes", {}) or {"transformers": 1, "vllm": 1})
    if runtime not in known:
        r.error(path, runtime, f"must be one of {', '.join(known)}")
    elif preset is not None and runtime not in preset.runtimes:
        r.error(path, runtime, f"is not supported by preset {preset.name}",
                f"supported: {', '.join(sorted(preset.runtimes))}")
    if ws.tuning is not None:
        r.warn(path, runtime, "is ignored for tuning Workspaces")
