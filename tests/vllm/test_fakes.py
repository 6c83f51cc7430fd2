"""The fake ``vllm`` and ``ray`` refuse what the real ones refuse: otherwise the pod tests could
not fail. Each case runs the fake command as the launcher would."""

from __future__ import annotations

import subprocess

import pytest

from tests.vllm.harness import free_port


def run(fake_tools, argv: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env={**fake_tools.env(), "FAKE_NODE": "0", **env}, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("args,gpus,cc,needle", [
    (["--num-scheduler-steps", "1"], "1", "9.0", "unrecognized arguments: --num-scheduler-steps"),
    (["--tensor-parallel-size", "2"], "1", "9.0", "required GPUs (2) exceeds the total number of available GPUs"),
    (["--dtype", "bfloat16"], "1", "7.0", "Bfloat16 is only supported on GPUs with compute capability of at least 8.0"),
    (["--dtype", "bf16"], "1", "9.0", "invalid choice"),
    (["--enable-auto-tool-choice"], "1", "9.0", "--enable-auto-tool-choice requires --tool-call-parser"),
])
def test_fake_vllm_refuses_what_vllm_refuses(fake_tools, args, gpus, cc, needle):
    done = run(fake_tools, ["vllm", "serve", "org/m", "--port", str(free_port()), *args],
               FAKE_GPUS=gpus, FAKE_COMPUTE_CAPABILITY=cc)
    assert done.returncode == 1 and needle in done.stderr
    (call,) = fake_tools.calls("vllm")
    assert call["problem"] and needle in call["problem"]


def test_fake_vllm_with_ray_counts_the_gpus_of_the_ray_cluster(fake_tools):
    port = free_port()
    assert run(fake_tools, ["ray", "start", "--head", f"--port={port}"], FAKE_GPUS="2").returncode == 0
    try:
        done = run(fake_tools, ["vllm", "serve", "org/m", "--tensor-parallel-size", "2", "--pipeline-parallel-size",
                                "2", "--distributed-executor-backend", "ray"], FAKE_GPUS="2")
        assert done.returncode == 1 and "exceeds the total number of available GPUs in the Ray cluster (1 nodes) (2)" \
            in done.stderr
    finally:
        run(fake_tools, ["ray", "stop"])


def test_fake_ray_worker_cannot_join_without_a_head(fake_tools):
    done = run(fake_tools, ["ray", "start", f"--address=127.0.0.1:{free_port()}", "--block"], FAKE_NODE="1")
    assert done.returncode == 1 and "could not connect to the GCS" in done.stderr
