"""An in-memory Kubernetes API for provisioner tests (a test double of the API server).

:class:`FakeKube` implements :class:`kaito_core.types.KubeAPI` over a dictionary: objects are
deep-copied in and out (a caller can never change stored state by accident), and every verb is
recorded in ``calls`` so a test can assert that a second ``ensure`` created nothing. ``create``
keeps the API server's rules a provisioner meets on a cluster: an existing name is refused
(409 AlreadyExists), so is a ``metadata.resourceVersion`` (the server's 500), uid and
creationTimestamp are the server's, and status is dropped (a status subresource: only a
Node is registered with its status). The cluster's own writes go through ``put`` and
``set_status``.

It is deliberately small: no watches, no finalizers, no admission. The operator's own tests run
the real kopf against the API emulator (:mod:`kaito_core.testing.emulator`); this
fake is for the conformance suite and plugin unit tests.
"""

from __future__ import annotations

import copy
import itertools
import threading
import uuid
from datetime import datetime, timezone
from typing import Any, Mapping

from kaito_core.errors import KaitoError

__all__ = ["FakeKube", "AlreadyExists", "now_rfc3339"]

Key = tuple[str, str, str, str]  # apiVersion, kind, namespace ("" when cluster-scoped), name


class AlreadyExists(KaitoError):
    """``create`` of a name that exists (the API server answers 409 AlreadyExists)."""


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _key(api_version: str, kind: str, name: str, namespace: str | None) -> Key:
    return (api_version, kind, namespace or "", name)


def _matches(obj: Mapping[str, Any], labels: Mapping[str, str] | None) -> bool:
    have = (obj.get("metadata") or {}).get("labels") or {}
    return all(have.get(k) == v for k, v in (labels or {}).items())


class FakeKube:
    """Objects keyed by (apiVersion, kind, namespace, name); thread-safe.

    ``cluster_scoped`` lists kinds whose namespace is ignored (NodeClaim, NodePool, Node...).
    """

    CLUSTER_SCOPED = frozenset({"Node", "NodeClaim", "NodePool", "Namespace",
                                "CustomResourceDefinition", "AKSNodeClass", "EC2NodeClass"})

    def __init__(self, *, cluster_scoped: frozenset[str] | None = None) -> None:
        self.objects: dict[Key, dict] = {}
        self.calls: list[tuple[str, str, str]] = []  # (verb, kind, name or "*")
        self.cluster_scoped = self.CLUSTER_SCOPED if cluster_scoped is None else cluster_scoped
        self._lock = threading.RLock()
        self._rv = itertools.count(1)

    def _ns(self, kind: str, namespace: str | None) -> str | None:
        return None if kind in self.cluster_scoped else namespace

    # -- the KubeAPI protocol --------------------------------------------------------------

    def get(self, *, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict | None:
        with self._lock:
            self.calls.append(("get", kind, name))
            obj = self.objects.get(_key(api_version, kind, name, self._ns(kind, namespace)))
            return copy.deepcopy(obj) if obj is not None else None

    def list(self, *, api_version: str, kind: str, namespace: str | None = None,
             labels: Mapping[str, str] | None = None) -> list[dict]:
        with self._lock:
            self.calls.append(("list", kind, "*"))
            ns = self._ns(kind, namespace)
            out = [copy.deepcopy(o) for (av, k, n, _), o in sorted(self.objects.items())
                   if av == api_version and k == kind and (ns is None or n == ns) and _matches(o, labels)]
            return out

    def create(self, obj: dict) -> dict:
        meta = obj.get("metadata") or {}
        api_version, kind, name = obj.get("apiVersion"), obj.get("kind"), meta.get("name")
        if not (api_version and kind and name):
            raise ValueError(f"create(): the object needs apiVersion, kind and metadata.name, got "
                             f"apiVersion={api_version!r} kind={kind!r} name={name!r}")
        if meta.get("resourceVersion"):
            raise ValueError(f"create(): {kind} {name!r} carries metadata.resourceVersion "
                             f"{meta['resourceVersion']!r}; an API server refuses that (500 \"resourceVersion should "
                             f"not be set on objects to be created\"): drop it (or put() the cluster's own object)")
        with self._lock:
            self.calls.append(("create", kind, name))
            key = _key(api_version, kind, name, self._ns(kind, meta.get("namespace")))
            if key in self.objects:
                raise AlreadyExists(f"{kind} {name!r} already exists")
            stored = copy.deepcopy(obj)
            if kind != "Node":  # create cannot set status (a Node registers with its own)
                stored.pop("status", None)
            m = stored.setdefault("metadata", {})
            m["uid"] = str(uuid.uuid4())
            m["resourceVersion"] = str(next(self._rv))
            m["creationTimestamp"] = now_rfc3339()
            if kind in self.cluster_scoped:
                m.pop("namespace", None)
            self.objects[key] = stored
            return copy.deepcopy(stored)

    def delete(self, *, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
        with self._lock:
            self.calls.append(("delete", kind, name))
            return self.objects.pop(_key(api_version, kind, name, self._ns(kind, namespace)), None) is not None

    # -- what a test (playing the cluster) does ----------------------------------------------

    def put(self, obj: dict) -> dict:
        """Create or replace ``obj`` without recording a call (the cluster's own writes)."""
        meta = obj.setdefault("metadata", {})
        with self._lock:
            key = _key(obj["apiVersion"], obj["kind"], meta["name"], self._ns(obj["kind"], meta.get("namespace")))
            stored = copy.deepcopy(obj)
            stored["metadata"]["resourceVersion"] = str(next(self._rv))
            stored["metadata"].setdefault("uid", str(uuid.uuid4()))
            self.objects[key] = stored
            return copy.deepcopy(stored)

    def set_status(self, *, api_version: str, kind: str, name: str, status: Mapping[str, Any],
                   namespace: str | None = None) -> dict:
        """Replace an object's ``status`` (what a controller such as Karpenter would write)."""
        with self._lock:
            key = _key(api_version, kind, name, self._ns(kind, namespace))
            if key not in self.objects:
                raise KeyError(f"{kind} {name!r} does not exist (known: {sorted(k[3] for k in self.objects)})")
            self.objects[key]["status"] = copy.deepcopy(dict(status))
            self.objects[key]["metadata"]["resourceVersion"] = str(next(self._rv))
            return copy.deepcopy(self.objects[key])

    def count(self, verb: str, kind: str | None = None) -> int:
        return sum(1 for v, k, _ in self.calls if v == verb and (kind is None or k == kind))

    def names(self, *, api_version: str, kind: str, labels: Mapping[str, str] | None = None) -> list[str]:
        with self._lock:
            return sorted(o["metadata"]["name"] for (av, k, _, _), o in self.objects.items()
                          if av == api_version and k == kind and _matches(o, labels))
