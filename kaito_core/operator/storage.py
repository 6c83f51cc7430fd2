"""Where kopf keeps its bookkeeping for Workspaces, chosen so that a Workspace reconciled at once
costs no write besides the finalizer.

kopf's defaults write twice per Workspace after the first successful handler: the
``last-handled-configuration`` annotation (the "diff-base" it compares the next event with to
tell an update from a status change) and a ``kopf-managed`` marker annotation. Each write is an
API request and one more watch event kopf must process; with the status patches and Events, they
were a fifth of the operator's writes per Workspace.

- :class:`MemoryDiffBase`: the diff-base lives in this process. After a restart it is empty, so
  kopf treats every Workspace as new and runs the create handler (the same pass as resume: the
  handlers are one idempotent function), and a spec changed while the operator was down is
  reconciled all the same.
- :class:`ProgressAnnotations`: kopf's annotation progress storage (retries, delays and their
  timestamps survive restarts: the delete handler's backoff depends on it) without the marker.
"""

from __future__ import annotations

import threading
from typing import Any

import kopf


class MemoryDiffBase(kopf.DiffBaseStorage):
    """The last handled essence of each object, by uid, in memory (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._essences: dict[str, Any] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _uid(body: Any) -> str:
        meta = body.get("metadata") or {}
        return meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}"

    def fetch(self, *, body: Any) -> Any:
        with self._lock:
            return self._essences.get(self._uid(body))

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:
        with self._lock:
            self._essences[self._uid(body)] = essence

    def forget(self, body: Any) -> None:
        """The object is gone: drop its essence (memory stays flat as Workspaces come and go)."""
        with self._lock:
            self._essences.pop(self._uid(body), None)

    def __len__(self) -> int:
        return len(self._essences)


class ProgressAnnotations(kopf.AnnotationsProgressStorage):
    """:class:`kopf.AnnotationsProgressStorage` without the ``<prefix>/kopf-managed`` marker
    (one more PATCH per object). The marker tells *other* kopf-based operators watching the
    same objects to ignore this prefix; none watches Workspaces, and this operator's progress
    annotations exist only while a handler is being retried (a failing release)."""

    def _store_marker(self, prefix: str, patch: Any, body: Any) -> None:  # kopf 1.45's hook
        return None
