"""``kaito up``: realise a Workspace on this machine, step by step, saying what each step decided.

validate -> plan (the sizing a cluster would get) -> provision (this machine must hold the
model, else refuse with the numbers) -> weights -> adapters / training data -> start the
supervised process -> wait for ``/health`` (inference) or the end of the job (tuning) -> print
the endpoint and a ready-to-paste example.

Nothing heavy is imported here: the runtime and the tuning recipe run in their own processes
(``python -m kaito_core.runtime`` / ``python -m kaito_core.tuning``), the same entry points
the pods run.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from kaito_core.errors import KaitoError
from kaito_core.local import machine as machine_mod
from kaito_core.local import processes, state
from kaito_core.local import status as st
from kaito_core.local import weights as weights_mod
from kaito_core.local.workspaces import LocalWorkspace, get, down as down_ws, NotRunning

DEFAULT_PORT = 5000
HEALTH_TIMEOUT_S = 600.0


class UpError(KaitoError):
    """``kaito up`` stopped before starting anything; the message says why and how to fix it."""


@dataclass
class UpOptions:
    file: str
    weights: str | None = None
    port: int | None = None
    host: str = "127.0.0.1"
    name: str | None = None  # pick one Workspace of a file with several
    detach: bool = False
    timeout_s: float = HEALTH_TIMEOUT_S
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    extra_args: list[str] = field(default_factory=list)


@dataclass
class UpResult:
    name: str
    mode: str
    state: str
    endpoint: str | None = None
    model: str | None = None
    output: str | None = None
    adapters: list[str] = field(default_factory=list)
    wdir: Path | None = None


class Printer:
    def __init__(self, out: TextIO | None = None):
        self.out = out or sys.stdout

    def __call__(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    @property
    def tty(self) -> bool:
        return bool(getattr(self.out, "isatty", lambda: False)())


# -- choosing things ------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1", preferred: int | None = DEFAULT_PORT, span: int = 100) -> int:
    """``preferred`` when it is free, else the next free one, else any port the OS gives."""
    if preferred:
        for port in range(preferred, preferred + span):
            if _port_free(host, port):
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As uvicorn binds: SO_REUSEADDR, so a port in TIME_WAIT from a stopped server counts as free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


_BASE: list[Path] = [Path(".")]  # the directory of the YAML file being brought up


def _host_path(volume: Any, base: Path | None = None) -> str | None:
    """A volumeSource's hostPath.path; a relative path is relative to the YAML file (local mode only)."""
    if isinstance(volume, dict):
        hp = volume.get("hostPath")
        if isinstance(hp, dict) and hp.get("path"):
            path = Path(str(hp["path"])).expanduser()
            if not path.is_absolute():
                path = (base or _BASE[0]) / path
            return str(path)
    return None


def _params(n: int) -> str:
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _gib(x: float) -> str:
    if x < 0.1:
        return f"{x * 1024:.0f} MiB"
    return f"{x:.2f} GiB" if x < 10 else f"{x:.1f} GiB"


# -- the steps ------------------------------------------------------------------------------


def load_workspace(opts: UpOptions) -> tuple[Any, dict, list[str]]:
    """(Workspace, ConfigMaps by name, warnings) from the file; raises UpError on any problem."""
    from kaito_core.api import Workspace, configmaps_by_name, load_documents

    docs = load_documents(opts.file)
    bad = [d for d in docs if d.error is not None]
    if bad:
        raise UpError(str(bad[0].error))
    workspaces = [d.obj for d in docs if isinstance(d.obj, Workspace)]
    if opts.name:
        workspaces = [w for w in workspaces if w.name == opts.name]
    if not workspaces:
        raise UpError(f"{opts.file}: no Workspace{f' named {opts.name!r}' if opts.name else ''} in this file")
    if len(workspaces) > 1:
        raise UpError(f"{opts.file}: {len(workspaces)} Workspaces ({', '.join(w.name for w in workspaces)}); "
                      "pick one with --name NAME")
    return workspaces[0], configmaps_by_name(docs), []


def validate(ws: Any, registry: Any, configmaps: dict, p: Printer) -> None:
    from kaito_core.api import validate_workspace

    result = validate_workspace(ws, registry=registry, configmaps=configmaps)
    # The generic resolver accepts any local model directory or org/model id; validation
    # without it would call such a preset unknown.
    errors = [e for e in result.errors if not (e.path.endswith("preset.name") and _generic_ok(registry, ws))]
    for w in result.warnings:
        p(f"  warning: {w}")
    if errors:
        lines = "\n".join(f"  - {e}" for e in errors)
        raise UpError(f"Workspace {ws.name!r} is invalid ({len(errors)} problem{'s' if len(errors) != 1 else ''}):\n{lines}")
    if ws.inference is not None and ws.inference.template is not None:
        raise UpError(f"Workspace {ws.name!r}: inference.template (your own pod) cannot run in local mode; "
                      "name a model with inference.preset.name instead")


def _generic_ok(registry: Any, ws: Any) -> bool:
    try:
        registry.get_preset(ws.preset_name or "")
        return True
    except Exception:  # noqa: BLE001
        return False


def resolve_preset(ws: Any, registry: Any) -> Any:
    from kaito_core.plugins import UnknownPreset

    try:
        return registry.get_preset(ws.preset_name)
    except UnknownPreset as exc:
        raise UpError(f"preset {ws.preset_name!r} is not known: {exc.hint}") from None


def sizing_rows(ws: Any, registry: Any, configmaps: dict, preset: Any, local_preset: Any, machine: Any,
                method: str | None, note: str | None) -> tuple[list[list[str]], Any, list[str]]:
    """Rows of the sizing table (cluster plan, this machine), the local fit, and notes."""
    from kaito_core import sizing
    from kaito_core.reconcile import plan_workspace

    notes: list[str] = []
    rows: list[list[str]] = []
    try:
        plan = plan_workspace(ws, registry=registry, provisioner=registry.provisioners.get("byo"),
                              configmaps=configmaps).to_dict()
    except Exception as exc:  # noqa: BLE001 - the cluster row is information, not a gate
        plan = {"errors": [str(exc)]}
    if plan.get("errors"):
        rows.append(["cluster", str(plan.get("instanceType") or "-"), "-", "-", "-", "-", "-",
                     "cannot place: " + plan["errors"][0][:80]])
    else:
        rows.append(["cluster", str(plan["instanceType"]), f"{plan['gpusPerNode']} GPU", str(plan["nodeCount"]),
                     _gib(plan["gpuMemoryRequiredGiB"]) + " GPU", _gib(plan["gpuMemoryAvailableGiB"]) + " GPU",
                     f"{plan['diskGiB']} GiB", "plan"])
    est = sizing.estimate(local_preset, runtime="transformers", method=method, device=machine.device)
    fit = machine_mod.check(est.total_gib, machine, weights_gib=local_preset.weight_gib)
    what = "GPU" if fit.device == "gpu" else "RAM"
    where = (f"{len(machine.gpus)} GPU" if machine.gpus else f"cpu x{machine.cpus}")
    rows.append(["this machine", where, "-", "1", f"{_gib(fit.required_gib)} {what}",
                 f"{_gib(fit.available_gib)} {what}", _gib(local_preset.weight_gib),
                 "fits" if fit.ok else "DOES NOT FIT"])
    if note:
        notes.append(note)
    return rows, fit, notes


def adapters_for(ws: Any, wdir: Path, p: Printer) -> list[tuple[str, str, float]]:
    """(name, local directory, strength) of every adapter; OCI images are pulled now."""
    out = []
    for i, ad in enumerate(ws.inference.adapters or [] if ws.inference else []):
        name = ad.source.name
        strength = float(ad.strength) if ad.strength is not None else 1.0
        if ad.source.image:
            dest = wdir / "adapters" / name
            p(f"  adapter {name}: pulling {ad.source.image}")
            from kaito_core.runtime.oci import OCIError, pull_adapter

            try:
                pull_adapter(ad.source.image, dest)
            except OCIError as exc:
                raise UpError(f"inference.adapters[{i}].source.image {ad.source.image!r}: {exc}") from None
            out.append((name, str(dest), strength))
            continue
        path = _host_path(ad.source.volume_source)
        if not path:
            raise UpError(f"inference.adapters[{i}].source: local mode reads adapters from an image or a "
                          "volumeSource.hostPath.path directory")
        folder = Path(path).expanduser()
        if not (folder / "adapter_config.json").is_file():
            raise UpError(f"inference.adapters[{i}].source.volumeSource.hostPath.path {path!r}: no adapter_config.json "
                          "there; expected a LoRA adapter directory (what a tuning Workspace writes)")
        p(f"  adapter {name}: {folder}")
        out.append((name, str(folder.resolve()), strength))
    return out


def _write_configmap_key(configmaps: dict, name: str | None, key: str, dest: Path) -> Path | None:
    if not name:
        return None
    cm = configmaps.get(name)
    if cm is None:
        raise UpError(f"the Workspace names ConfigMap {name!r}, which is not in the file; put the ConfigMap "
                      f"(with data key {key}) in the same YAML file, separated by ---")
    text = (cm.data or {}).get(key)
    if text is None:
        raise UpError(f"ConfigMap {name!r} has no data key {key!r}")
    dest.write_text(text)
    return dest


def inference_command(ws: Any, weights: Path, served: str, preset_arg: str | None, port: int, host: str,
                      adapters: list[tuple[str, str, float]], config: Path | None, runtime: str) -> list[str]:
    cmd = [sys.executable, "-m", "kaito_core.runtime", "--model", str(weights), "--host", host, "--port", str(port),
           "--served-model-name", served, "--runtime", runtime]
    if preset_arg:
        cmd += ["--preset", preset_arg]
    for name, path, strength in adapters:
        cmd += ["--adapter", f"{name}={path}"]
        if strength != 1.0:
            cmd += ["--adapter-strength", f"{name}={strength:g}"]
    if config is not None:
        cmd += ["--config", str(config)]
    return cmd


def tuning_command(ws: Any, weights: Path, wdir: Path, configmaps: dict, preset_arg: str | None) -> tuple[list[str], str]:
    """The tuning job's command and where its adapter goes (a directory or an OCI reference)."""
    tun = ws.tuning
    cmd = [sys.executable, "-m", "kaito_core.tuning", "--model-dir", str(weights), "--method", tun.method or "qlora",
           "--progress", "log"]
    if preset_arg:
        cmd += ["--preset", preset_arg]
    src = tun.input
    if src.urls:
        for url in src.urls:
            cmd += ["--data", url]
    elif src.image:
        cmd += ["--input-image", src.image]
    else:
        path = _host_path(src.volume_source)
        if not path:
            raise UpError("tuning.input.volumeSource: local mode reads training data from hostPath.path "
                          "(a file or a directory on this machine)")
        if not Path(path).expanduser().exists():
            raise UpError(f"tuning.input.volumeSource.hostPath.path {path!r} does not exist; expected a data file "
                          "(jsonl, json, csv, parquet) or a directory of them")
        cmd += ["--data", str(Path(path).expanduser().resolve())]
    cfg = _write_configmap_key(configmaps, tun.config, "training_config.yaml", wdir / "training_config.yaml")
    if cfg is not None:
        cmd += ["--config", str(cfg)]
    out = tun.output
    if out.image:
        cmd += ["--output-image", out.image]
        target = out.image
    else:
        path = _host_path(out.volume_source)
        if not path:
            raise UpError("tuning.output.volumeSource: local mode writes the adapter to hostPath.path (a directory)")
        target = str(Path(path).expanduser().resolve())
        cmd += ["--output", target, "--overwrite"]
    cmd += ["--work-dir", str(wdir / "work")]
    return cmd, target


def spec_hash(ws: Any) -> str:
    blob = json.dumps(ws.spec_dict(), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def examples(endpoint: str, model: str, adapters: list[str]) -> list[str]:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 64})
    lines = [
        "Try it:",
        f"  curl -s {endpoint}/v1/chat/completions -H 'Content-Type: application/json' \\",
        f"    -d {shlex.quote(body)}",
        "",
        "  # or with the OpenAI client (pip install openai)",
        "  from openai import OpenAI",
        f"  client = OpenAI(base_url=\"{endpoint}/v1\", api_key=\"unused\")",
        f"  reply = client.chat.completions.create(model=\"{model}\", "
        "messages=[{\"role\": \"user\", \"content\": \"Hello!\"}])",
        "  print(reply.choices[0].message.content)",
    ]
    if adapters:
        lines.append(f"  # adapters are models too: model=\"{adapters[0]}\"" if len(adapters) == 1 else
                     f"  # adapters are models too: model= one of {', '.join(adapters)}")
    return lines


# -- waiting --------------------------------------------------------------------------------


def wait_inference(lw: LocalWorkspace, p: Printer, timeout_s: float) -> dict[str, Any]:
    """Until InferenceReady is True (returns the status) or the runtime crashed / timed out (UpError)."""
    start = time.monotonic()
    last_print = -10.0
    while True:
        status = lw.status()
        cond = st.condition(status, st.INFERENCE_READY) or {}
        elapsed = time.monotonic() - start
        if cond.get("status") == "True":
            p(f"  ready after {elapsed:.1f}s")
            return status
        if cond.get("reason") in (st.R_CRASHED, st.R_LOAD_FAILED) or status.get("state") == st.STOPPED:
            raise UpError(f"the runtime did not start: {cond.get('message', status.get('state'))}")
        if elapsed > timeout_s:
            raise UpError(f"the runtime is not ready after {timeout_s:.0f}s ({cond.get('message', '')}); it keeps "
                          f"loading in the background: follow it with `kaito ps` and `kaito logs {lw.name}`, "
                          f"or stop it with `kaito down {lw.name}`")
        if elapsed - last_print >= 5.0:
            p(f"  waiting for {lw.launch.endpoint}/health ... {elapsed:.0f}s ({cond.get('message', 'starting')})")
            last_print = elapsed
        time.sleep(0.25)


def wait_tuning(lw: LocalWorkspace, p: Printer, timeout_s: float | None) -> dict[str, Any]:
    """Stream the job's output until it succeeds (returns the status) or fails (UpError)."""
    start = time.monotonic()
    pos = 0
    while True:
        status = lw.status()
        try:
            with open(lw.log_path, "rb") as fh:
                fh.seek(pos)
                chunk = fh.read()
                pos += len(chunk)
            for line in chunk.decode("utf-8", "replace").splitlines():
                if line.strip():
                    p(f"  | {line.rstrip()[:200]}")
        except OSError:
            pass
        if status.get("state") == st.SUCCEEDED:
            return status
        if status.get("state") in (st.FAILED, st.STOPPED):
            cond = st.condition(status, st.WORKSPACE_SUCCEEDED) or st.condition(status, st.JOB_STARTED) or {}
            raise UpError(f"tuning failed: {cond.get('message', status.get('state'))}")
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            raise UpError(f"tuning has not finished after {timeout_s:.0f}s; it goes on in the background "
                          f"(`kaito ps`, `kaito logs {lw.name}`)")
        time.sleep(0.25)


# -- the command ----------------------------------------------------------------------------


def up(opts: UpOptions, out: TextIO | None = None, registry: Any = None) -> UpResult:
    """Run ``kaito up``; returns what was started, raises :class:`UpError` (or another KaitoError)."""
    from kaito_core.cli.output import table
    from kaito_core.plugins import get_registry

    p = Printer(out)
    registry = registry or get_registry()
    ws, configmaps, _ = load_workspace(opts)
    _BASE[0] = Path(opts.file).expanduser().resolve().parent
    mode = ws.mode
    p(f"Workspace {ws.name} ({mode}, preset {ws.preset_name}) from {opts.file}")
    p("1. validate")
    validate(ws, registry, configmaps, p)
    preset = resolve_preset(ws, registry)

    wdir = state.workspace_dir(ws.name)
    existing = _existing(ws, wdir)

    p("2. weights")
    found = weights_mod.locate(ws, preset, opts.weights)
    p(f"  {found.path} ({found.origin})")
    local_preset, preset_arg, note = preset, preset.name, None
    why = weights_mod.mismatch(preset, found.path)
    if why is not None:
        from kaito_core.builtins import hf

        local_preset = hf.from_directory(found.path)
        preset_arg = None  # the preset's dtype/context/template describe other weights
        note = (f"the weights in {found.path} are not {preset.name}'s published weights ({why}); this machine "
                f"is sized for the weights as they are ({_params(local_preset.parameters)} parameters)")
    stamp_file = found.path / "kaito-tiny.json"
    if stamp_file.is_file():
        p("  note: these are tiny RANDOM-WEIGHT test weights (kaito_core.testing.tiny_models): answers are "
          "meaningless text")

    p("3. plan and provision (this machine)")
    method = (ws.tuning.method or "qlora") if mode == "tuning" else None
    machine = machine_mod.probe(str(found.path))
    rows, fit, notes = sizing_rows(ws, registry, configmaps, preset, local_preset, machine, method, note)
    import io

    buf = io.StringIO()
    table(["WHERE", "INSTANCE", "GPUS/NODE", "NODES", "MEMORY NEEDED", "AVAILABLE", "DISK", "STATUS"], rows, out=buf)
    for line in buf.getvalue().rstrip("\n").splitlines():
        p("  " + line)
    for n in notes:
        p(f"  note: {n}")
    p(f"  this machine: {machine.describe()}")
    if not fit.ok:
        if ws.bypass_resource_checks:
            p(f"  warning: {fit.message} (kaito.sh/bypass-resource-checks is set: starting anyway)")
        else:
            raise UpError(f"{ws.name}: {local_preset.name} does not fit this machine: {fit.message}. "
                          "To try anyway, set the annotation kaito.sh/bypass-resource-checks: \"True\"")

    if existing is not None:  # already running with the same spec: nothing to do (like kubectl apply)
        p(f"{ws.name} is already running unchanged ({existing.state}): "
          f"{existing.endpoint or existing.output or ''}; `kaito ps` shows its conditions")
        return existing
    if wdir.exists():
        shutil.rmtree(wdir)  # a stopped or finished run of the same name: start afresh
    wdir.mkdir(parents=True)
    try:
        launch = _prepare(ws, opts, wdir, mode, preset, preset_arg, found.path, configmaps, registry, p)
        node = provision(ws, registry, machine)
        status = st.new_status(mode, node)
        st.set_condition(status, st.RESOURCE_READY, True, st.R_RESOURCES_READY, f"node {node} (this machine): {fit.message}")
        (wdir / state.MANIFEST).write_text(_manifest_yaml(ws))
        state.write_json_atomic(wdir / state.LAUNCH, launch.to_dict())
        state.write_json_atomic(wdir / state.STATUS, status)
    except BaseException:
        shutil.rmtree(wdir, ignore_errors=True)
        raise

    p(f"4. start ({'runtime' if mode == 'inference' else 'tuning job'}, supervised)")
    pid = processes.start_supervisor(wdir)
    p(f"  supervisor pid {pid}; logs: kaito logs {ws.name}   (file: {wdir / state.LOG})")
    lw = get(ws.name)
    result = UpResult(name=ws.name, mode=mode, state=st.PENDING, endpoint=launch.endpoint, model=launch.model_name,
                      output=launch.output or None, adapters=list(launch.adapters), wdir=wdir)
    if opts.detach:
        p(f"  started in the background: `kaito ps` shows its conditions")
        return result
    try:
        if mode == "inference":
            p("5. wait for /health")
            status = wait_inference(lw, p, opts.timeout_s)
        else:
            p("5. tune (the job's output follows)")
            status = wait_tuning(lw, p, None)
    except UpError:
        reason = (st.condition(lw.status(), st.INFERENCE_READY) or {}).get("reason")
        if mode == "inference" and reason in (st.R_CRASHED, st.R_LOAD_FAILED):
            tail = _log_tail(lw)
            down_ws(lw)
            p("  the runtime's last output:")
            for line in tail:
                p(f"  | {line}")
            p(f"  stopped {ws.name} (nothing left running)")
        raise
    result.state = status.get("state", "")
    p("")
    if mode == "inference":
        p(f"{ws.name} is serving {launch.model_name} at {launch.endpoint}"
          + (f" (+ adapters: {', '.join(launch.adapters)})" if launch.adapters else ""))
        for line in examples(str(launch.endpoint), str(launch.model_name), launch.adapters):
            p(line)
        p(f"Then: kaito ps | kaito logs {ws.name} | kaito down {ws.name}")
    else:
        p(f"{ws.name} succeeded: the adapter is at {launch.output}")
        p(f"Serve it with an inference Workspace whose inference.adapters[].source is "
          + (f"image: {launch.output}" if not launch.output.startswith("/") else
             f"volumeSource: {{hostPath: {{path: {launch.output}}}}}"))
    return result


def provision(ws: Any, registry: Any, machine: Any) -> str:
    """This machine as the Workspace's one node, through the built-in ``local`` provisioner."""
    from types import SimpleNamespace

    from kaito_core.types import ProvisionerContext

    prov = getattr(registry, "provisioners", {}).get("local")
    if prov is None:  # blocked with KAITO_DISABLE_PLUGINS: this machine is still the node
        return socket.gethostname()
    ctx = ProvisionerContext(kube=None, settings={})
    from kaito_core.reconcile.nodes import standard_node_requests

    requests = standard_node_requests(ws, SimpleNamespace(gpus_per_node=len(machine.gpus), node_count=1,
                                                          instance_type="local", disk_gib=0))[:1]
    states = list(prov.ensure(requests=requests, ctx=ctx))
    bad = [s for s in states if not s.ready]
    if bad or not states:
        why = bad[0].message or bad[0].reason if bad else "no node"
        raise UpError(f"the local provisioner did not make this machine ready: {why}")
    return states[0].node_name or socket.gethostname()


def _existing(ws: Any, wdir: Path) -> UpResult | None:
    """The running Workspace of that name when its spec is the same; UpError when it differs."""
    try:
        lw = get(ws.name, wdir.parent)
    except NotRunning:
        return None
    status = lw.status()
    if status.get("state") in (st.STOPPED, st.FAILED, st.SUCCEEDED) or processes.supervisor_pid(wdir) is None:
        return None
    if lw.launch.spec_hash == spec_hash(ws):
        return UpResult(name=lw.name, mode=lw.launch.mode, state=str(status.get("state")),
                        endpoint=lw.launch.endpoint, model=lw.launch.model_name, output=lw.launch.output or None,
                        adapters=lw.launch.adapters, wdir=wdir)
    raise UpError(f"a different Workspace named {ws.name!r} is already running here (from {lw.launch.source}); "
                  f"stop it first: kaito down {ws.name}")


def _log_tail(lw: LocalWorkspace, n: int = 15) -> list[str]:
    try:
        lines = lw.log_path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [ln[:200] for ln in lines[-n:]]


def _manifest_yaml(ws: Any) -> str:
    import yaml

    return yaml.safe_dump(ws.to_k8s(), sort_keys=False)


def _prepare(ws: Any, opts: UpOptions, wdir: Path, mode: str, preset: Any, preset_arg: str | None, weights: Path,
             configmaps: dict, registry: Any, p: Printer) -> state.Launch:
    common = dict(name=ws.name, namespace=ws.namespace, mode=mode, preset=preset.name, source=str(opts.file),
                  weights=str(weights), backoff_s=opts.backoff_s, max_backoff_s=opts.max_backoff_s,
                  spec_hash=spec_hash(ws), created=_now(), host=opts.host)
    if mode == "tuning":
        cmd, target = tuning_command(ws, weights, wdir, configmaps, preset_arg)
        return state.Launch(command=cmd + list(opts.extra_args), output=target, **common)
    runtime = ws.runtime_annotation or "transformers"
    if runtime == "vllm":
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise UpError("metadata.annotations[kaito.sh/runtime] is 'vllm', but vllm is not installed here; "
                          "install it (GPU machines: pip install vllm) or remove the annotation to use transformers")
    if opts.port == 0:
        port = free_port(opts.host, None)  # any free port the OS gives
    elif opts.port is not None:
        if not _port_free(opts.host, opts.port):
            raise UpError(f"--port {opts.port}: {opts.host}:{opts.port} is already in use; pick another port "
                          "or leave --port out to use a free one")
        port = opts.port
    else:
        port = free_port(opts.host)
    adapters = adapters_for(ws, wdir, p)
    config = _write_configmap_key(configmaps, ws.inference.config, "inference_config.yaml",
                                  wdir / "inference_config.yaml")
    served = ws.preset_name or preset.name
    cmd = inference_command(ws, weights, served, preset_arg, port, opts.host, adapters, config, runtime)
    return state.Launch(command=cmd + list(opts.extra_args), port=port, model_name=served,
                        adapters=[a[0] for a in adapters], **common)
