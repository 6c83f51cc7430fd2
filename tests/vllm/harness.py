"""Run a rendered inference StatefulSet's pods on this machine, with fake ``vllm`` and ``ray``.

Each "pod" is the container's real command (``python -m kaito_core.runtime ...``) with its real
environment, as the kubelet would start it, except where a pod differs from a process here:
the StatefulSet's pod index becomes ``KAITO_NODE_RANK``; the serving port, the Ray port and the
mounted files (/mnt/config, /mnt/adapter) are made free/local; ``KAITO_LEADER_ADDRESS`` (the
headless Service's DNS name, checked separately against the rendered Service) is answered by
``localhost``, as cluster DNS would answer it with pod 0's IP.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.vllm.fakes import state as fake_state

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
EXAMPLES = REPO / "tests" / "data" / "reference" / "kaito-examples"
CONFIG_KEY = "inference_config.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Rendered:
    """What ``kaito render`` printed for one Workspace file (+ the file's own documents)."""

    source: Path
    objects: list[dict]
    inputs: list[dict]

    def one(self, kind: str, name: str | None = None) -> dict:
        found = [o for o in self.objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
        assert len(found) == 1, f"{self.source.name}: expected one {kind} {name or ''}, got {len(found)}"
        return found[0]

    @property
    def statefulset(self) -> dict:
        return self.one("StatefulSet")

    @property
    def container(self) -> dict:
        return self.statefulset["spec"]["template"]["spec"]["containers"][0]

    @property
    def workspace(self) -> dict:
        return next(d for d in self.inputs if d.get("kind") == "Workspace")

    def config_text(self) -> str:
        """The inference_config.yaml the pod mounts: the user's ConfigMap, else the rendered one."""
        vol = next(v for v in self.statefulset["spec"]["template"]["spec"]["volumes"] if v["name"] == "config")
        name = vol["configMap"]["name"]
        for doc in [*self.objects, *self.inputs]:
            if doc.get("kind") == "ConfigMap" and doc["metadata"]["name"] == name:
                return doc["data"][CONFIG_KEY]
        raise AssertionError(f"{self.source.name}: ConfigMap {name!r} (mounted at /mnt/config) is nowhere")

    def instance_type(self) -> str | None:
        """The nodes' instance type; None on existing (BYO) nodes of a type the Workspace leaves open."""
        for obj in self.objects:
            for req in (obj.get("spec") or {}).get("requirements") or []:
                if req.get("key") == "node.kubernetes.io/instance-type":
                    return req["values"][0]
        return self.workspace["resource"].get("instanceType")


def render(path: Path, provisioner: str = "karpenter") -> Rendered:
    """``kaito render FILE`` (the public CLI, in this process), parsed."""
    from kaito_core.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["render", str(path), "--provisioner", provisioner])
    if code != 0:
        raise RenderFailed(err.getvalue().strip() or f"exit code {code}")
    objects = [d for d in yaml.safe_load_all(out.getvalue()) if d]
    inputs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    return Rendered(path, objects, inputs)


class RenderFailed(AssertionError):
    pass


@dataclass
class FakeTools:
    """PATH and PYTHONPATH entries for the fake ``vllm`` and ``ray`` and their shared state."""

    root: Path
    bin: Path = field(init=False)
    state: Path = field(init=False)

    def __post_init__(self) -> None:
        self.bin = self.root / "bin"
        self.state = self.root / "state"
        self.bin.mkdir(parents=True)
        self.state.mkdir()
        for tool in ("vllm", "ray"):
            script = self.bin / tool
            script.write_text(f"#!{sys.executable}\nimport runpy, sys\nsys.argv[0] = {tool!r}\n"
                              f"runpy.run_path({str(HERE / 'fakes' / f'fake_{tool}.py')!r}, run_name='__main__')\n")
            script.chmod(0o755)

    def env(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("KAITO_", "FAKE_", "VLLM_"))}
        base.update({"PATH": f"{self.bin}{os.pathsep}{base.get('PATH', '')}", "FAKE_STATE": str(self.state),
                     "PYTHONPATH": str(HERE / "fakes" / "pylib"), "HF_HUB_OFFLINE": "1",
                     "HF_HOME": str(self.root / "hf")})
        return base

    def kill_leftovers(self) -> None:
        for path in self.state.glob("raynode-*.json"):
            pid = json.loads(path.read_text())["pid"]
            if fake_state.alive(pid):
                os.kill(pid, signal.SIGKILL)

    def calls(self, tool: str | None = None) -> list[dict]:
        return [c for c in fake_state.calls(self.state) if tool is None or c["tool"] == tool]


@dataclass
class Pod:
    rank: int
    port: int
    proc: subprocess.Popen
    log: Path
    argv: list[str]
    env: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def health(self) -> int | None:
        try:
            return httpx.get(self.url + "/health", timeout=3).status_code
        except httpx.HTTPError:
            return None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def pod_env(container: dict, rank: int) -> dict[str, str]:
    """The container's env as the kubelet resolves it for pod ``rank``."""
    env: dict[str, str] = {}
    for e in container.get("env") or []:
        if "value" in e:
            env[e["name"]] = str(e["value"])
            continue
        ref = (e.get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath", "")
        if ref == "metadata.labels['apps.kubernetes.io/pod-index']":
            env[e["name"]] = str(rank)
        elif (e.get("valueFrom") or {}).get("secretKeyRef"):
            env[e["name"]] = "secret-from-the-cluster"
    return env


def gpus_of(container: dict) -> int:
    return int(str((container.get("resources") or {}).get("limits", {}).get("nvidia.com/gpu", 0)))


def start_pods(rendered: Rendered, tools: FakeTools, workdir: Path, *, compute_capability: float = 8.0,
               ray_port: int | None = None, timeout: float = 60.0) -> list[Pod]:
    """Start every replica of the rendered StatefulSet (the leader first, as the kubelet might)."""
    sts, container = rendered.statefulset, rendered.container
    replicas = int(sts["spec"]["replicas"])
    ray_port = ray_port or free_port()
    cfg = workdir / "config" / CONFIG_KEY
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(rendered.config_text())
    adapters = workdir / "adapter"
    adapters.mkdir(exist_ok=True)
    pods = []
    for rank in range(replicas):
        port = free_port()
        argv = [sys.executable if a == "python" else a for a in [*container["command"], *container["args"]]]
        swap = {"--port": str(port), "--host": "127.0.0.1", "--config": str(cfg), "--adapters-dir": str(adapters)}
        argv = [swap.get(argv[i - 1], a) if i else a for i, a in enumerate(argv)]
        env = {**tools.env(), **pod_env(container, rank)}
        if "KAITO_LEADER_ADDRESS" in env:
            env["KAITO_LEADER_ADDRESS"] = "localhost"  # cluster DNS answers the headless name with pod 0
        env.update({"FAKE_NODE": str(rank), "FAKE_GPUS": str(gpus_of(container)),
                    "FAKE_COMPUTE_CAPABILITY": str(compute_capability), "KAITO_RAY_PORT": str(ray_port),
                    "KAITO_RAY_INIT_TIMEOUT": str(int(timeout)), "HF_HOME": str(workdir / "hf")})
        log = workdir / f"pod-{rank}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
        pods.append(Pod(rank, port, proc, log, argv, env))
    return pods


def wait_healthy(pods: list[Pod], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = [p for p in pods if p.proc.poll() is not None]
        if dead:
            raise AssertionError("pod(s) exited: " + "; ".join(
                f"pod {p.rank} exit {p.proc.returncode}:\n{p.output()[-3000:]}" for p in dead))
        if all(p.health() == 200 for p in pods):
            return
        time.sleep(0.3)
    raise AssertionError("pods not healthy in time: " + "; ".join(
        f"pod {p.rank} health {p.health()}:\n{p.output()[-2000:]}" for p in pods))


def wait_exit(pod: Pod, timeout: float = 60.0) -> int:
    try:
        return pod.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"pod {pod.rank} did not exit within {timeout}s:\n{pod.output()[-2000:]}") from None


def stop_pods(pods: list[Pod], timeout: float = 40.0) -> dict[int, int]:
    """SIGTERM, as the kubelet sends; the exit code of each pod (killed if it hangs)."""
    for p in pods:
        if p.proc.poll() is None:
            p.proc.send_signal(signal.SIGTERM)
    codes = {}
    for p in pods:
        try:
            codes[p.rank] = p.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            p.proc.kill()
            codes[p.rank] = p.proc.wait()
    return codes


def flag_values(argv: list[str]) -> dict[str, list[str]]:
    """``[..., "serve", MODEL, "--a", "1", "--b"]`` -> {"--a": ["1"], "--b": []}."""
    out: dict[str, list[str]] = {}
    current = None
    for a in argv[argv.index("serve") + 2:]:
        if a.startswith("--") or (a.startswith("-") and a[1:2].isalpha()):
            current = a.split("=", 1)[0]
            out[current] = [a.split("=", 1)[1]] if "=" in a else []
        elif current is not None:
            out[current].append(a)
    return out


def known_flags() -> set[str]:
    text = (HERE / "data" / "vllm_serve_args.txt").read_text()
    return {w for line in text.splitlines() if line.strip() and not line.startswith("#") for w in line.split()}


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=True)[:4000]
