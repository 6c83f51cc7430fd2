"""Deterministic names, labels and the revision hash (pure).

Children of a Workspace carry upstream's names (Service and StatefulSet/Job ``<ws>``, headless
Service ``<ws>-headless``) so ``kubectl`` habits keep working. Node requests are cluster-scoped
and must never be duplicated: their names are derived from the Workspace *uid* and the index
(upstream: ``ws`` + 9 hex characters), so an operator killed between two steps re-derives the
same names and the API server's 409 makes a second node impossible.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

LABEL_WORKSPACE = "kaito.sh/workspace"
LABEL_NAMESPACE = "kaito.sh/workspacenamespace"
LABEL_UID = "kaito.sh/workspace-uid"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "kaito"
ANNOTATION_REVISION = "kaito.sh/revision"
# Upstream's revision annotation (v0.12): written beside ours so tools reading it keep working.
ANNOTATION_UPSTREAM_REVISION = "workspace.kaito.io/revision"
ANNOTATION_HASH = "kaito.sh/object-hash"
FINALIZER = "workspace.finalizer.kaito.sh"
WORKSPACE_API_VERSION = "kaito.sh/v1beta1"


def uid_of(namespace: str, name: str, uid: str | None) -> str:
    """The Workspace uid; objects without one (``kaito render`` of a file) get a stable stand-in."""
    if uid:
        return uid
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


def node_request_name(uid: str, index: int) -> str:
    """``ws`` + 9 hex characters of sha256(uid/index): a valid NodeClaim, AKS pool and node name."""
    return "ws" + hashlib.sha256(f"{uid}/{index}".encode()).hexdigest()[:9]


def headless_name(workspace: str) -> str:
    return f"{workspace}-headless"


def config_name(workspace: str, mode: str) -> str:
    return f"{workspace}-{'tuning' if mode == 'tuning' else 'inference'}-config"


def selector_labels(workspace: str) -> dict[str, str]:
    """The pods' selector (immutable in a StatefulSet/Job: never add to it)."""
    return {LABEL_WORKSPACE: workspace}


def child_labels(workspace: str, namespace: str, uid: str) -> dict[str, str]:
    return {LABEL_WORKSPACE: workspace, LABEL_NAMESPACE: namespace, LABEL_UID: uid,
            LABEL_MANAGED_BY: MANAGED_BY}


def stable_hash(obj: Any, length: int = 16) -> str:
    """sha256 of the canonical JSON of ``obj`` (key order and whitespace do not matter)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def revision(spec: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> str:
    """The revision of a Workspace: its resource/inference/tuning plus what sizing decided."""
    return stable_hash({"spec": spec, "extra": dict(extra or {})})


def revision_annotations(rev: str) -> dict[str, str]:
    return {ANNOTATION_REVISION: rev, ANNOTATION_UPSTREAM_REVISION: rev}


def owner_reference(*, name: str, uid: str, api_version: str = WORKSPACE_API_VERSION) -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": "Workspace", "name": name, "uid": uid,
            "controller": True, "blockOwnerDeletion": True}
