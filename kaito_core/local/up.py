"""``kaito up``: realise a Workspace's Plan on this machine, step by step, saying what each step decided.

validate -> plan (the one planner's Plan, the same a cluster gets) -> provision (this machine
must hold the model, else refuse with the numbers) -> weights -> adapters / training data ->
start the Plan's container command, localised (kaito_core.local.realise lists every
difference) -> wait for ``/health`` (inference) or the end of the job (tuning) -> print the
endpoint and a ready-to-paste example. ``--dry-run`` prints the Plan and the local command.

Nothing heavy is imported here: the runtime and the tuning recipe run in their own processes
(``python -m kaito_core.runtime`` / ``python -m kaito_core.tuning``), the same entry points
the pods run.
"""

from __future__ import annotations

import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from kaito_core.local import machine as machine_mod
from kaito_core.local import processes, state
from kaito_core.local import status as st
from kaito_core.local import weights as weights_mod
from kaito_core.local.launch import local_plan, prepare as _prepare, refuse_invalid
from kaito_core.local.steps import (BASE, Printer, UpError, _params, examples, load_workspace, resolve_preset,
                                    sizing_rows, spec_hash, validate)
from kaito_core.local.wait import log_tail, wait_inference, wait_tuning
from kaito_core.local.workspaces import NotRunning, down as down_ws, get
from kaito_core.reconcile.inputs import tuning_method

HEALTH_TIMEOUT_S = 600.0
__all__ = ["UpError", "UpOptions", "UpResult", "Printer", "up"]


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


def up(opts: UpOptions, out: TextIO | None = None, registry: Any = None) -> UpResult:
    """Run ``kaito up``; returns what was started, raises :class:`UpError` (or another KaitoError)."""
    from kaito_core.plugins import get_registry

    p = Printer(out)
    registry = registry or get_registry()
    ws, configmaps, _ = load_workspace(opts)
    BASE[0] = Path(opts.file).expanduser().resolve().parent
    p(f"Workspace {ws.name} ({ws.mode}, preset {ws.preset_name}) from {opts.file}")
    p("1. validate")
    validate(ws, registry, configmaps, p)
    plan = local_plan(ws, registry, configmaps)
    refuse_invalid(plan)
    preset = resolve_preset(ws, registry)
    wdir = state.workspace_dir(ws.name)
    existing = _existing(ws, wdir)
    p("2. weights")
    found, local_preset, preset_arg, note = _weights(ws, preset, opts, p)
    p("3. plan and provision (this machine)")
    machine, fit = _fit(ws, plan, local_preset, found.path, note, p)
    if existing is not None:  # already running with the same spec: nothing to do (like kubectl apply)
        p(f"{ws.name} is already running unchanged ({existing.state}): "
          f"{existing.endpoint or existing.output or ''}; `kaito ps` shows its conditions")
        return existing
    if wdir.exists():
        shutil.rmtree(wdir)  # a stopped or finished run of the same name: start afresh
    wdir.mkdir(parents=True)
    try:
        launch = _prepare(ws, plan, opts, wdir, preset_arg, found.path, configmaps, p, registry)
        node = provision(ws, registry, machine)
        status = st.new_status(ws.mode, node)
        st.set_condition(status, st.RESOURCE_READY, True, st.R_RESOURCES_READY, f"node {node} (this machine): {fit.message}")
        (wdir / state.MANIFEST).write_text(_manifest_yaml(ws))
        state.write_json_atomic(wdir / state.LAUNCH, launch.to_dict())
        state.write_json_atomic(wdir / state.STATUS, status)
    except BaseException:
        shutil.rmtree(wdir, ignore_errors=True)
        raise
    return _start_and_wait(ws, opts, wdir, launch, p)


def _weights(ws: Any, preset: Any, opts: UpOptions, p: Printer) -> tuple[Any, Any, str | None, str | None]:
    """(found weights, the preset they really are, the --preset to keep or None, a note)."""
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
    if (found.path / "kaito-tiny.json").is_file():
        p("  note: these are tiny RANDOM-WEIGHT test weights (kaito_core.testing.tiny_models): answers are "
          "meaningless text")
    return found, local_preset, preset_arg, note


def _fit(ws: Any, plan: Any, local_preset: Any, path: Path, note: str | None, p: Printer) -> tuple[Any, Any]:
    """The sizing table (cluster plan, this machine); refuses a model this machine cannot hold."""
    from kaito_core.local.ps import table_lines

    machine = machine_mod.probe(str(path))
    rows, fit, notes = sizing_rows(plan, local_preset, machine, tuning_method(ws), note)
    for line in table_lines(["WHERE", "INSTANCE", "GPUS/NODE", "NODES", "MEMORY NEEDED", "AVAILABLE", "DISK",
                             "STATUS"], rows):
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
    return machine, fit


def _start_and_wait(ws: Any, opts: UpOptions, wdir: Path, launch: Any, p: Printer) -> UpResult:
    mode = ws.mode
    p(f"4. start ({'runtime' if mode == 'inference' else 'tuning job'}, supervised)")
    pid = processes.start_supervisor(wdir)
    p(f"  supervisor pid {pid}; logs: kaito logs {ws.name}   (file: {wdir / state.LOG})")
    lw = get(ws.name)
    result = UpResult(name=ws.name, mode=mode, state=st.PENDING, endpoint=launch.endpoint, model=launch.model_name,
                      output=launch.output or None, adapters=list(launch.adapters), wdir=wdir)
    if opts.detach:
        p("  started in the background: `kaito ps` shows its conditions")
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
            tail = log_tail(lw)
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
        p("Serve it with an inference Workspace whose inference.adapters[].source is "
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


def _manifest_yaml(ws: Any) -> str:
    import yaml

    return yaml.safe_dump(ws.to_k8s(), sort_keys=False)




def dry_run(opts: UpOptions, out: TextIO | None = None, registry: Any = None, as_json: bool = False) -> int:
    """``kaito up --dry-run``: the Plan and the local command it would run; nothing is started."""
    import json

    from kaito_core.local.launch import dry_run_view
    from kaito_core.plugins import get_registry

    p = Printer(out)
    registry = registry or get_registry()
    ws, configmaps, _ = load_workspace(opts)
    BASE[0] = Path(opts.file).expanduser().resolve().parent
    view = dry_run_view(ws, local_plan(ws, registry, configmaps), registry, host=opts.host, port=opts.port,
                        weights=opts.weights)
    if as_json:
        p(json.dumps(view, indent=2, default=str))
    else:
        plan, local = view["plan"], view["local"]
        p(f"Workspace {ws.name} ({ws.mode}): {plan['instanceType']} x {plan['nodeCount']} in a cluster, "
          f"runtime {plan['runtime']}, TP {plan['tensorParallelSize']} / PP {plan['pipelineParallelSize']}")
        for err in plan["errors"]:
            p(f"  ! {err}")
        p(f"pod command: {' '.join(plan['command'])}")
        if local["refused"]:
            p(f"would refuse: {local['refused']}")
        else:
            p(f"would run:   {' '.join(local['command'])}")
            for name, value in local["env"].items():
                p(f"  env {name}={value}")
            p("differences from the pod:")
            for d in local["differences"]:
                p(f"  - {d}")
    return 1 if view["local"]["refused"] else 0
