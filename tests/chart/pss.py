"""Pod Security Standards checks (kubernetes.io/docs/concepts/security/pod-security-standards,
v1.30): what the "baseline" and "restricted" levels forbid, for a PodSpec."""

from __future__ import annotations

from typing import Any

RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret", "name"}
BASELINE_CAPS = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
                 "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}


def _containers(spec: dict) -> list[dict]:
    return [c for k in ("initContainers", "containers", "ephemeralContainers") for c in spec.get(k) or []]


def baseline(spec: dict) -> list[str]:
    out = [f"spec.{k}" for k in ("hostNetwork", "hostPID", "hostIPC") if spec.get(k)]
    out += [f"volumes[{v['name']}].hostPath" for v in spec.get("volumes") or [] if "hostPath" in v]
    for c in _containers(spec):
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            out.append(f"{c['name']}.privileged")
        extra = set((sc.get("capabilities") or {}).get("add") or []) - BASELINE_CAPS
        if extra:
            out.append(f"{c['name']}.capabilities.add {sorted(extra)}")
        if any(p.get("hostPort") for p in c.get("ports") or []):
            out.append(f"{c['name']}.hostPort")
    return out


def restricted(spec: dict) -> list[str]:
    out = baseline(spec)
    pod = spec.get("securityContext") or {}
    for v in spec.get("volumes") or []:
        if set(v) - RESTRICTED_VOLUMES:
            out.append(f"volumes[{v['name']}] type {sorted(set(v) - RESTRICTED_VOLUMES)}")
    for c in _containers(spec):
        sc: dict[str, Any] = c.get("securityContext") or {}
        name = c["name"]
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{name}.allowPrivilegeEscalation must be false")
        if not sc.get("runAsNonRoot", pod.get("runAsNonRoot")):
            out.append(f"{name}.runAsNonRoot must be true")
        if sc.get("runAsUser", pod.get("runAsUser")) == 0:
            out.append(f"{name}.runAsUser must not be 0")
        seccomp = (sc.get("seccompProfile") or pod.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{name}.seccompProfile must be RuntimeDefault or Localhost")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{name}.capabilities.drop must include ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            out.append(f"{name}.capabilities.add only NET_BIND_SERVICE")
    return out
