"""The official kubernetes client against the emulator: what it sends by default (strategic
merge patches, the status subresource) and how it sees 410 Gone on a watch."""

from __future__ import annotations

import kubernetes
import pytest


@pytest.fixture(scope="module")
def core(emu):
    cfg = kubernetes.client.Configuration()
    cfg.host = emu.url
    return kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(cfg))


def pod(name: str) -> dict:
    return {"metadata": {"name": name}, "spec": {"containers": [
        {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]}, {"name": "b", "image": "b:1"}]}}


def test_strategic_merge_patch_merges_containers_by_name(core):
    core.create_namespaced_pod("kc1", pod("p"))
    out = core.patch_namespaced_pod("p", "kc1", {"spec": {"containers": [{"name": "b", "image": "b:2"}]}})
    assert [(c.name, c.image) for c in out.spec.containers] == [("a", "a:1"), ("b", "b:2")]
    assert out.spec.containers[0].env[0].value == "1"


def test_status_subresource_through_the_client(core):
    core.create_namespaced_pod("kc2", pod("p"))
    ignored = core.patch_namespaced_pod("p", "kc2", {"status": {"phase": "Running"}})
    assert ignored.status.phase == "Pending"
    written = core.patch_namespaced_pod_status("p", "kc2", {"status": {"phase": "Running"}})
    assert written.status.phase == "Running"


def test_watch_raises_410_gone_after_compaction(core, emu):
    made = core.create_namespaced_config_map("kc3", {"metadata": {"name": "a"}})
    emu.compact()
    watch = kubernetes.watch.Watch()
    with pytest.raises(kubernetes.client.ApiException) as info:
        for _ in watch.stream(core.list_namespaced_config_map, "kc3", resource_version=made.metadata.resource_version,
                              timeout_seconds=2):
            pass
    assert info.value.status == 410


def test_watch_from_a_list_version_sees_the_next_change(core):
    listed = core.list_namespaced_config_map("kc4")
    core.create_namespaced_config_map("kc4", {"metadata": {"name": "b"}})
    watch = kubernetes.watch.Watch()
    events = []
    for ev in watch.stream(core.list_namespaced_config_map, "kc4", resource_version=listed.metadata.resource_version,
                           timeout_seconds=2):
        events.append((ev["type"], ev["object"].metadata.name))
        watch.stop()
    assert events == [("ADDED", "b")]
