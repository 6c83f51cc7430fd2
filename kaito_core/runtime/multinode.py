"""Multi-node vLLM: a Ray cluster across the StatefulSet's pods, as upstream KAITO runs it.

Upstream (pkg/model/interface.go ``buildMultiNodeRayCommand``) runs, in every pod::

    if [ "${POD_INDEX}" = "0" ]; then
        multi-node-serving.sh leader --ray_cluster_size=N --ray_port=6379; python3 inference_api.py ...
    else
        multi-node-serving.sh worker --ray_address=<ws>-0.<ws>-headless.<ns>.svc.cluster.local --ray_port=6379
    fi

with vLLM's ``examples/online_serving/multi-node-serving.sh``: the leader runs ``ray start --head
--port=6379`` and polls ``ray.nodes()`` until N nodes are alive (300 s); a worker retries
``ray start --address=<leader>:6379 --block`` every 5 s until it joins. Here the same steps run in
Python so that the pod's /health tells the truth on every pod:

- pod 0 (:func:`start_head` + :func:`wait_for_nodes`, driven by :mod:`.vllm_proxy`): /health is
  503 while the group assembles and vLLM loads, 200 once vLLM answers; vLLM runs with
  ``--distributed-executor-backend ray`` and the plan's TP/PP.
- pods 1..N-1 (:func:`run_worker`): resolve the leader's DNS name (retried until the headless
  Service publishes it), join with ``ray start --block``, and answer /health themselves: 200
  while the Ray worker process runs, 503 before it joined and after it died; the process exits
  with Ray's code when the worker dies so the pod restarts and joins again. SIGTERM stops Ray.

Standard library only (the worker needs neither vLLM, fastapi nor torch).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Sequence

from kaito_core.errors import KaitoError
from kaito_core.runtime.parallel import ENV_LEADER, GroupPlan

log = logging.getLogger("kaito.runtime.multinode")

RAY_PORT = 6379  # upstream KAITO PortRayCluster; the headless Service publishes it
ENV_RAY_PORT = "KAITO_RAY_PORT"
ENV_RAY_TIMEOUT = "KAITO_RAY_INIT_TIMEOUT"
DEFAULT_RAY_TIMEOUT = 900.0  # upstream's script waits 300 s; new GPU nodes pull a large image first
POLL_SECONDS = 2.0  # upstream's script polls every 5 s; a probe answers sooner with 2

# What upstream's leader script runs to count the cluster (ray.nodes()), plus the GPUs Ray sees,
# in a child process so the launcher never becomes a Ray driver itself.
COUNT_SNIPPET = (
    "import json, ray\n"
    "ray.init(address='auto', logging_level='ERROR')\n"
    "alive = [n for n in ray.nodes() if n.get('Alive')]\n"
    "print(json.dumps({'nodes': len(alive), 'gpus': ray.cluster_resources().get('GPU', 0)}))\n"
)


class GroupError(KaitoError, RuntimeError):
    """The Ray group could not be formed (leader not reachable, workers missing, Ray failed)."""


def ray_timeout() -> float:
    raw = os.environ.get(ENV_RAY_TIMEOUT, "")
    try:
        value = float(raw) if raw.strip() else DEFAULT_RAY_TIMEOUT
    except ValueError:
        raise GroupError(f"environment {ENV_RAY_TIMEOUT} is {raw!r}, expected seconds (e.g. 900)") from None
    if value <= 0:
        raise GroupError(f"environment {ENV_RAY_TIMEOUT} is {raw!r}, expected a positive number of seconds")
    return value


def ray_port() -> int:
    raw = os.environ.get(ENV_RAY_PORT, "").strip()
    if not raw:
        return RAY_PORT
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise GroupError(f"environment {ENV_RAY_PORT} is {raw!r}, expected a port number (default {RAY_PORT})")
    return int(raw)


def ray_command() -> list[str]:
    return ["ray"]


def head_command(port: int) -> list[str]:
    # --disable-usage-stats: GPU pods often have no egress, and Ray would try to report.
    return [*ray_command(), "start", "--head", f"--port={port}", "--disable-usage-stats"]


def worker_command(leader_ip: str, port: int) -> list[str]:
    # --block keeps `ray start` in the foreground for the life of the worker (upstream's script).
    return [*ray_command(), "start", f"--address={leader_ip}:{port}", "--block", "--disable-usage-stats"]


def stop_ray() -> None:
    """``ray stop`` (best effort: called on shutdown, when Ray may be gone already)."""
    try:
        subprocess.run([*ray_command(), "stop"], timeout=60, check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("ray stop failed: %s", exc)


def resolve_leader(address: str, timeout: float, *, resolve: Callable[[str], str] | None = None,
                   sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> str:
    """The leader's IP. The headless Service publishes ``<ws>-0.<ws>-headless...`` only once pod 0
    exists (``publishNotReadyAddresses`` makes that before it is ready), so retry until ``timeout``."""
    resolve = resolve or socket.gethostbyname
    deadline = clock() + timeout
    while True:
        try:
            return resolve(address)
        except OSError as exc:
            if clock() >= deadline:
                raise GroupError(f"cannot resolve the leader {address!r} ({ENV_LEADER}) after {timeout:.0f} s: "
                                 f"{exc}; check that pod 0 exists and that the headless Service selects it") from None
            log.info("waiting for DNS of the leader %s (%s)", address, exc)
            sleep(POLL_SECONDS)


def start_head(port: int) -> None:
    """``ray start --head`` (returns once the head runs; the daemon keeps running)."""
    log.info("starting the Ray head: %s", " ".join(head_command(port)))
    try:
        done = subprocess.run(head_command(port), check=False, timeout=300)
    except FileNotFoundError:
        raise GroupError("the 'ray' command is not on PATH; the runtime-vllm image ships it with vLLM") from None
    except subprocess.TimeoutExpired:
        raise GroupError("ray start --head did not return within 300 s") from None
    if done.returncode != 0:
        raise GroupError(f"ray start --head --port={port} failed with exit code {done.returncode}")


def count_cluster(python: str | None = None) -> dict[str, float]:
    """``{"nodes": alive nodes, "gpus": GPUs}`` of the local Ray cluster."""
    done = subprocess.run([python or sys.executable, "-c", COUNT_SNIPPET], capture_output=True, text=True,
                          timeout=120, check=False)
    if done.returncode != 0:
        raise GroupError(f"cannot query the Ray cluster: {(done.stderr or done.stdout).strip()[-500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def wait_for_nodes(plan: GroupPlan, world_size: int, timeout: float, *, status: Callable[[str], None] = log.info,
                   sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                   count: Callable[[], dict[str, float]] = count_cluster) -> dict[str, float]:
    """Poll the cluster until all ``plan.node_count`` nodes joined; then check its GPUs hold
    ``world_size`` (TP x PP), so vLLM never waits forever for a placement group Ray cannot place."""
    deadline = clock() + timeout
    seen: dict[str, float] = {"nodes": 0, "gpus": 0}
    while True:
        try:
            seen = count()
        except (GroupError, ValueError, subprocess.TimeoutExpired) as exc:
            status(f"Ray cluster not answering yet: {exc}")
        else:
            if seen["nodes"] >= plan.node_count:
                break
            status(f"waiting for Ray workers: {int(seen['nodes'])}/{plan.node_count} nodes joined")
        if clock() >= deadline:
            raise GroupError(f"only {int(seen['nodes'])} of {plan.node_count} nodes joined the Ray cluster "
                             f"within {timeout:.0f} s ({ENV_RAY_TIMEOUT}); check the other pods' logs "
                             "(kubectl logs <ws>-1) and that pods reach each other on the Ray port "
                             f"({ENV_RAY_PORT}, default {RAY_PORT})")
        sleep(POLL_SECONDS)
    if seen["gpus"] < world_size:
        raise GroupError(f"the Ray cluster has {plan.node_count} nodes but {seen['gpus']:g} GPUs; "
                         f"tensor-parallel-size x pipeline-parallel-size needs {world_size}")
    status(f"all {plan.node_count} nodes joined the Ray cluster ({seen['gpus']:g} GPUs)")
    return seen


# -- pods 1..N-1 -----------------------------------------------------------------------------


class WorkerState:
    """What a worker pod's /health reports."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.joined_at: float | None = None
        self.head: tuple[str, int] | None = None
        self.phase = "resolving the leader"
        self.stopping = False

    def head_reachable(self) -> bool:
        if self.head is None:
            return False
        try:
            with socket.create_connection(self.head, timeout=2):
                return True
        except OSError:
            return False

    def healthy(self) -> bool:
        """The Ray worker runs, has joined, and the head still answers on its port."""
        alive = self.proc is not None and self.proc.poll() is None and self.joined_at is not None
        return alive and self.head_reachable()

    def body(self) -> dict[str, Any]:
        return {"status": "Healthy" if self.healthy() else "Unavailable", "role": "ray-worker", "phase": self.phase}


def health_server(state: WorkerState, host: str, port: int) -> ThreadingHTTPServer:
    """/health and /healthz for a worker pod: the kubelet's probes hit every pod (httpGet)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path.split("?")[0] not in ("/health", "/healthz"):
                self.send_error(404, "a Ray worker pod serves only /health; send requests to the Workspace Service")
                return
            data = json.dumps(state.body()).encode()
            self.send_response(200 if state.healthy() else 503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:  # probes every 10 s: keep the log for Ray
            return

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="kaito-worker-health", daemon=True).start()
    return server


def _join_once(state: WorkerState, cmd: Sequence[str], settle: float) -> int:
    """Run ``ray start --block``; returns its exit code. It counts as joined once it ran ``settle`` s."""
    try:
        state.proc = subprocess.Popen(list(cmd))
    except FileNotFoundError:
        raise GroupError("the 'ray' command is not on PATH; the runtime-vllm image ships it with vLLM") from None
    started = time.monotonic()
    while True:
        try:
            return state.proc.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            if state.joined_at is None and time.monotonic() - started >= settle:
                state.joined_at = time.monotonic()
                state.phase = "joined"
                log.info("Ray worker joined %s", cmd[2] if len(cmd) > 2 else cmd)


def run_worker(opts: Any, plan: GroupPlan, *, settle: float = 3.0) -> int:
    """A pod of rank > 0: join pod 0's Ray cluster and answer /health until Ray stops."""
    logging.basicConfig(level=str(getattr(opts, "log_level", "info")).upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    state = WorkerState()
    server = health_server(state, opts.host, opts.port)
    log.info("node %d of %d: Ray worker for leader %s; /health on %s:%d", plan.node_rank, plan.node_count,
             plan.leader_address, opts.host, opts.port)

    def on_term(signum: int, _frame: Any) -> None:
        state.stopping = True
        state.phase = "stopping"
        stop_ray()  # the worker's raylet; `ray start --block` then returns
        if state.proc is not None and state.proc.poll() is None:
            state.proc.terminate()

    previous = {sig: signal.signal(sig, on_term) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        timeout, port = ray_timeout(), ray_port()
        deadline = time.monotonic() + timeout
        leader_ip = resolve_leader(str(plan.leader_address), timeout)
        cmd = worker_command(leader_ip, port)
        state.head = (leader_ip, port)
        state.phase = f"joining the Ray head at {leader_ip}:{port}"
        while not state.stopping:
            code = _join_once(state, cmd, settle)
            if state.stopping:
                return 0
            if state.joined_at is not None:
                # The worker lost its head (pod 0 restarted, network): exit so the kubelet restarts
                # this pod and it joins the new head, as a fresh group.
                print(f"error: the Ray worker stopped (exit code {code}); restarting to rejoin the leader",
                      file=sys.stderr)
                return code or 1
            if time.monotonic() >= deadline:
                raise GroupError(f"could not join the Ray head at {leader_ip}:{port} ({plan.leader_address}) "
                                 f"within {timeout:.0f} s ({ENV_RAY_TIMEOUT}); is pod 0 running?")
            log.info("Ray head not reachable yet (exit code %d); retrying in %.0f s", code, POLL_SECONDS)
            time.sleep(POLL_SECONDS)
        return 0
    except GroupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        server.shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
