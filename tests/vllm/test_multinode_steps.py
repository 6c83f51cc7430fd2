"""The steps of the Ray launcher one by one: DNS retries, waiting for the group, commands."""

from __future__ import annotations

import socket

import pytest

from kaito_core.runtime import multinode
from kaito_core.runtime.multinode import GroupError, resolve_leader, wait_for_nodes
from kaito_core.runtime.parallel import GroupPlan

PLAN = GroupPlan(tensor_parallel_size=2, pipeline_parallel_size=3, node_count=3, gpus_per_node=2,
                 leader_address="ws-0.ws-headless.ns.svc.cluster.local")


class Clock:
    """Time that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_leader_dns_is_retried_until_the_headless_service_publishes_it():
    clock, asked = Clock(), []

    def resolve(name: str) -> str:
        asked.append(name)
        if len(asked) < 3:
            raise socket.gaierror(-2, "Name or service not known")
        return "10.1.2.3"

    assert resolve_leader(PLAN.leader_address, 60, resolve=resolve, sleep=clock.sleep, clock=clock) == "10.1.2.3"
    assert asked == [PLAN.leader_address] * 3 and len(clock.sleeps) == 2


def test_leader_dns_gives_up_with_a_clear_message():
    clock = Clock()

    def never(name: str) -> str:
        raise socket.gaierror(-2, "Name or service not known")

    with pytest.raises(GroupError, match=r"cannot resolve the leader 'ws-0\.ws-headless.*KAITO_LEADER_ADDRESS.*"
                                         r"headless Service"):
        resolve_leader(PLAN.leader_address, 10, resolve=never, sleep=clock.sleep, clock=clock)
    assert clock.now >= 10


def test_waits_until_every_node_joined():
    clock, seen, said = Clock(), iter([{"nodes": 1, "gpus": 2}, {"nodes": 2, "gpus": 4},
                                       {"nodes": 3, "gpus": 6}]), []
    got = wait_for_nodes(PLAN, 6, 60, status=said.append, sleep=clock.sleep, clock=clock, count=lambda: next(seen))
    assert got == {"nodes": 3, "gpus": 6}
    assert said == ["waiting for Ray workers: 1/3 nodes joined", "waiting for Ray workers: 2/3 nodes joined",
                    "all 3 nodes joined the Ray cluster (6 GPUs)"]


def test_a_group_short_of_gpus_is_refused_before_vllm_waits_forever():
    with pytest.raises(GroupError, match="3 nodes but 5 GPUs; tensor-parallel-size x pipeline-parallel-size needs 6"):
        wait_for_nodes(PLAN, 6, 60, status=lambda _: None, count=lambda: {"nodes": 3, "gpus": 5})


def test_missing_workers_time_out_naming_the_count_and_the_fix():
    clock = Clock()
    with pytest.raises(GroupError, match=r"only 1 of 3 nodes joined the Ray cluster within 30 s "
                                         r"\(KAITO_RAY_INIT_TIMEOUT\).*kubectl logs"):
        wait_for_nodes(PLAN, 6, 30, status=lambda _: None, sleep=clock.sleep, clock=clock,
                       count=lambda: {"nodes": 1, "gpus": 2})


def test_a_cluster_not_answering_yet_is_retried():
    clock, said = Clock(), []
    answers = iter([GroupError("no head yet"), {"nodes": 3, "gpus": 6}])

    def count():
        a = next(answers)
        if isinstance(a, Exception):
            raise a
        return a

    wait_for_nodes(PLAN, 6, 60, status=said.append, sleep=clock.sleep, clock=clock, count=count)
    assert said[0] == "Ray cluster not answering yet: no head yet"


def test_ray_commands_follow_upstreams_script():
    """vLLM's examples/online_serving/multi-node-serving.sh: `ray start --head --port=6379` on the
    leader, `ray start --address=<leader>:6379 --block` on workers."""
    assert multinode.head_command(6379)[:4] == ["ray", "start", "--head", "--port=6379"]
    assert multinode.worker_command("10.1.2.3", 6379)[:4] == ["ray", "start", "--address=10.1.2.3:6379", "--block"]


@pytest.mark.parametrize("name,value,needle", [("KAITO_RAY_PORT", "http", "KAITO_RAY_PORT is 'http'"),
                                               ("KAITO_RAY_INIT_TIMEOUT", "soon", "KAITO_RAY_INIT_TIMEOUT is 'soon'"),
                                               ("KAITO_RAY_INIT_TIMEOUT", "-1", "positive")])
def test_bad_ray_settings_are_clear_errors(monkeypatch, name, value, needle):
    monkeypatch.setenv(name, value)
    with pytest.raises(GroupError, match=needle):
        multinode.ray_port() if name == "KAITO_RAY_PORT" else multinode.ray_timeout()


def test_a_worker_without_ray_says_so(tmp_path, monkeypatch, capsys):
    from kaito_core.runtime.options import ServeOptions
    from tests.vllm.harness import free_port

    monkeypatch.setenv("PATH", str(tmp_path))  # no `ray` here
    monkeypatch.setenv("KAITO_RAY_INIT_TIMEOUT", "5")
    plan = GroupPlan(tensor_parallel_size=1, pipeline_parallel_size=2, node_count=2, gpus_per_node=1, node_rank=1,
                     leader_address="localhost")
    code = multinode.run_worker(ServeOptions(model="m", runtime="vllm", port=free_port()), plan)
    assert code == 1 and "the 'ray' command is not on PATH" in capsys.readouterr().err
