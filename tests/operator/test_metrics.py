"""The operator's Prometheus metrics over HTTP (KAITO_METRICS_PORT): reconcile counts by trigger,
durations, errors by reason, Workspaces by state, watch wake-ups. Real kopf, strict API emulator."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from kaito_core.testing.emulator import start_operator, stop_operator
from tests.operator.conftest import Cluster, cluster_emulator, free_port, wait_for
from tests.operator.test_flow import _ready_claim, _workspace

NS = "flow"


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_over_http(tmp_path):
    port = free_port()
    log = tmp_path / "operator.log"
    with cluster_emulator() as emu:
        cluster = Cluster(emu.url)
        proc = start_operator(emu.url, env={"KAITO_PROVISIONER": "karpenter", "KAITO_RESYNC_SECONDS": "30",
                                            "KAITO_METRICS_PORT": str(port), "KAITO_METRICS_ADDR": "127.0.0.1"},
                              log_path=str(log))
        try:
            wait_for("the metrics server", lambda: scrape(port), timeout=30)
            cluster.create_workspace(_workspace("m1"))
            claims = wait_for("a NodeClaim", lambda: cluster.nodeclaims("m1"))
            pending = wait_for("a Pending workspace in the gauge",
                               lambda: (lambda s: s if value(s, "kaito_workspaces", state="Pending") == 1 else None)(
                                   scrape(port)))
            assert value(pending, "kaito_reconcile_total", trigger="create") >= 1
            assert value(pending, "kaito_reconcile_duration_seconds_count", trigger="create") >= 1
            # the node becomes ready: a watch event (not the 30 s resync) wakes the reconcile
            _ready_claim(cluster, claims[0], "gpu-node-m1")
            woke = wait_for("a reconcile woken by the node", lambda: (lambda s: s if value(
                s, "kaito_reconcile_total", trigger="event") >= 1 else None)(scrape(port)))
            assert value(woke, "kaito_watch_wakeups_total", kind="nodes") + value(
                woke, "kaito_watch_wakeups_total", kind="nodeclaims") >= 1
            assert value(woke, "kaito_reconcile_total", trigger="resync") == 0
            # the provider's API fails: errors counted by reason
            emu.fail("nodeclaims")
            cluster.create_workspace(_workspace("m2"))
            errs = wait_for("a ProvisioningError", lambda: (lambda s: s if value(
                s, "kaito_reconcile_errors_total", reason="ProvisioningError") >= 1 else None)(scrape(port)))
            assert value(errs, "kaito_workspaces", state="Pending") == 2
        finally:
            stop_operator(proc)


def test_metrics_port_zero_serves_nothing(tmp_path):
    log = tmp_path / "operator.log"
    with cluster_emulator() as emu:
        cluster = Cluster(emu.url)
        proc = start_operator(emu.url, env={"KAITO_METRICS_PORT": "0", "KAITO_PROVISIONER": "karpenter"},
                              log_path=str(log))
        try:
            cluster.create_workspace(_workspace("quiet"))
            wait_for("the operator to reconcile", lambda: cluster.conditions("quiet", NS))
            text = log.read_text(errors="replace")
            assert "kaito operator: provisioner=" in text and "metrics on" not in text
        finally:
            stop_operator(proc)
