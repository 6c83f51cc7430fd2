"""What counts as drift (kaito_core.operator.drift), on plain dicts."""

from __future__ import annotations

from kaito_core.operator.drift import describe, differences, same_quantity

DESIRED = {"apiVersion": "apps/v1", "kind": "StatefulSet",
           "metadata": {"name": "w", "labels": {"a": "1"}, "annotations": {"kaito.sh/object-hash": "h"}},
           "spec": {"replicas": 1, "template": {"spec": {"containers": [
               {"name": "c", "image": "r/x:1", "resources": {"limits": {"memory": "2048Mi", "cpu": "0.5",
                                                                         "nvidia.com/gpu": "1"}}}]}}}}


def _live(**changes) -> dict:
    import copy

    live = copy.deepcopy(DESIRED)
    live["metadata"]["labels"]["extra"] = "by-someone"  # additions are not drift
    c = live["spec"]["template"]["spec"]["containers"][0]
    c["terminationMessagePath"] = "/dev/termination-log"  # a server default
    c["resources"]["limits"] = {"memory": "2Gi", "cpu": "500m", "nvidia.com/gpu": 1}  # canonical quantities
    for path, value in changes.items():
        cur = live
        *parents, last = path.split(".")
        for p in parents:
            cur = cur[int(p)] if p.isdigit() else cur[p]
        cur[last] = value
    return live


def test_server_defaults_and_canonical_quantities_are_not_drift():
    assert differences(DESIRED, _live()) == []
    assert same_quantity("2048Mi", "2Gi") and same_quantity("0.5", "500m") and not same_quantity("1", "2")
    assert not same_quantity("r/x:1", "r/x:2")


def test_zero_values_the_server_omits_are_not_drift():
    import copy

    desired = copy.deepcopy(DESIRED)
    c = desired["spec"]["template"]["spec"]["containers"][0]
    c.update(args=[], env=[], readinessProbe={"initialDelaySeconds": 0, "periodSeconds": 5})
    desired["spec"]["template"]["spec"]["hostNetwork"] = False
    live = _live()
    live["spec"]["template"]["spec"]["containers"][0]["readinessProbe"] = {"periodSeconds": 5}
    assert differences(desired, live) == []
    live["spec"]["template"]["spec"]["containers"][0]["readinessProbe"] = {"periodSeconds": 50}
    assert differences(desired, live) == ["spec.template.spec.containers[0].readinessProbe.periodSeconds"]


def test_hand_edits_are_drift_with_their_values():
    live = _live(**{"spec.replicas": 0, "spec.template.spec.containers.0.image": "evil/miner:1"})
    paths = differences(DESIRED, live)
    assert paths == ["spec.replicas", "spec.template.spec.containers[0].image"]
    text = describe("StatefulSet", "w", paths, live)
    assert "spec.replicas is 0" in text and "'evil/miner:1'" in text
    extra = _live()
    extra["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "evil/side:1"})
    assert differences(DESIRED, extra) == ["spec.template.spec.containers"]
