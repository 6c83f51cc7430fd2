"""The instance types a provisioner can create: placement picks only from them (pure).

A provisioner declares its catalog with one of (docs/provisioners.md):

- ``instance_types``: the exact type names it can create;
- ``cloud_of(settings)`` or a ``cloud`` attribute (``"azure"``, ``"aws"``): every registered
  type of that cloud (Karpenter on AKS must never get an AWS ``g5.xlarge``);
- nothing (``byo``, ``local``): the whole registered catalog; the nodes already exist.
"""

from __future__ import annotations

from typing import Any, Mapping


def provisioner_cloud(provisioner: Any, settings: Mapping[str, str] | None = None) -> str | None:
    """The cloud a provisioner creates nodes in (with these settings), or None when it does not say."""
    if provisioner is None:
        return None
    cloud_of = getattr(provisioner, "cloud_of", None)
    if callable(cloud_of):
        try:
            return cloud_of(settings)
        except Exception:  # noqa: BLE001 - a bad setting shows up when the provisioner runs
            return None
    cloud = getattr(provisioner, "cloud", None)
    return cloud if isinstance(cloud, str) and cloud else None


def catalog_for(provisioner: Any, registry: Any, ws: Any = None, settings: Mapping[str, str] | None = None
                ) -> tuple[Mapping[str, Any], str | None]:
    """(the instance types placement may choose, a problem when none is left)."""
    full = dict(getattr(registry, "instance_types", {}) or {})
    if provisioner is None:
        return full, None
    names = getattr(provisioner, "instance_types", None)
    if names:
        picked = {n: t for n, t in full.items() if n in set(names)}
        what = f"the instance types it declares ({', '.join(sorted(names))})"
    else:
        cloud = provisioner_cloud(provisioner, settings)
        if cloud is None:
            return full, None
        picked = {n: t for n, t in full.items() if t.cloud == cloud}
        what = f"{cloud} instance types"
    if not picked:
        return {}, (f"provisioner {getattr(provisioner, 'name', '?')!r} creates only {what}, and none is "
                    f"registered; install the catalog plugin for it")
    return picked, None
