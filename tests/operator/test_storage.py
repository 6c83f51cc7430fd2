"""kopf's bookkeeping for Workspaces (kaito_core.operator.storage): the diff-base kept in memory,
and kopf's progress annotations without the ``kopf-managed`` marker. Unit level: kopf's own
storage classes are driven with kopf's own Body and Patch types."""

from __future__ import annotations

import kopf
from kopf._cogs.structs import bodies, patches

from kaito_core.operator.storage import MemoryDiffBase, ProgressAnnotations


def _body(uid: str | None = "u1", name: str = "ws") -> bodies.Body:
    meta = {"name": name, "namespace": "default"}
    if uid is not None:
        meta["uid"] = uid
    return bodies.Body({"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": meta})


def test_the_diff_base_is_kept_per_object_and_forgotten_when_it_goes():
    store = MemoryDiffBase()
    a, b = _body("u1", "a"), _body("u2", "b")
    assert store.fetch(body=a) is None  # a new (or, after a restart, every) object: kopf's create path
    patch = patches.Patch()
    store.store(body=a, patch=patch, essence={"spec": {"x": 1}})
    store.store(body=b, patch=patches.Patch(), essence={"spec": {"x": 2}})
    assert not patch  # nothing is written to the object
    assert store.fetch(body=a) == {"spec": {"x": 1}} and store.fetch(body=b) == {"spec": {"x": 2}}
    store.store(body=a, patch=patches.Patch(), essence={"spec": {"x": 3}})
    assert store.fetch(body=a) == {"spec": {"x": 3}} and len(store) == 2
    store.forget(a)
    assert store.fetch(body=a) is None and store.fetch(body=b) == {"spec": {"x": 2}} and len(store) == 1
    # no uid (a body kopf builds before the server assigned one): keyed by namespace/name
    store.store(body=_body(None, "c"), patch=patches.Patch(), essence={"spec": {}})
    assert store.fetch(body=_body(None, "c")) == {"spec": {}}


def test_the_diff_base_is_what_kopf_reads_through_its_settings():
    settings = kopf.OperatorSettings()
    settings.persistence.diffbase_storage = MemoryDiffBase()
    assert isinstance(settings.persistence.diffbase_storage, kopf.DiffBaseStorage)


def test_progress_is_stored_as_kopf_does_but_without_the_managed_marker():
    ours = ProgressAnnotations(prefix="operator.kaito.sh")
    kopfs = kopf.AnnotationsProgressStorage(prefix="operator.kaito.sh")
    record = {"started": "2026-01-01T00:00:00", "retries": 2, "delayed": "2026-01-01T00:01:00",
              "success": False, "failure": False, "message": "release failed"}
    mine, theirs = patches.Patch(), patches.Patch()
    ours.store(key="release", record=record, body=_body(), patch=mine)
    kopfs.store(key="release", record=record, body=_body(), patch=theirs)
    marker = "operator.kaito.sh/kopf-managed"
    assert marker in theirs["metadata"]["annotations"]  # kopf's own class writes it (the hook is live)
    assert marker not in mine["metadata"]["annotations"]
    progress = {k: v for k, v in theirs["metadata"]["annotations"].items() if k != marker}
    assert mine["metadata"]["annotations"] == progress and progress  # the retry record itself is kept
    # and read back the same way after a restart (the delete handler's backoff depends on it)
    stored = _body()
    stored["metadata"]["annotations"] = dict(mine["metadata"]["annotations"])
    assert ours.fetch(key="release", body=bodies.Body(stored)) == kopfs.fetch(key="release", body=bodies.Body(stored))
    assert ours.fetch(key="release", body=bodies.Body(stored))["retries"] == 2
