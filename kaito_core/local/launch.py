"""From the Workspace's Plan to what ``kaito up`` starts (and what ``kaito up --dry-run`` shows).

The Plan is the one planner's (:func:`kaito_core.reconcile.plan_workspace`, with the built-in
``local`` provisioner: this machine is the node); the command and env are the Plan's container
command and env, localised by :mod:`kaito_core.local.realise`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from kaito_core.local import state
from kaito_core.local.realise import LocalRun, flag_value, inference_run, tuning_run
from kaito_core.local.steps import (Printer, UpError, _now, _port_free, adapters_for, free_port, host_path,
                                    spec_hash, write_configmap_key)


def local_plan(ws: Any, registry: Any, configmaps: dict) -> Any:
    """The Workspace's Plan as the cluster gets it, with this machine as the (only kind of) node."""
    from kaito_core.reconcile import plan_workspace

    prov = registry.provisioners.get("local") or registry.provisioners.get("byo")
    return plan_workspace(ws, registry=registry, provisioner=prov, configmaps=configmaps)


def refuse_invalid(plan: Any) -> None:
    """A Workspace the webhook would refuse is refused here too (sizing misfits are only
    information: this machine's own fit decides locally)."""
    reason = ((plan.status.get("conditions") or [{}])[0]).get("reason")
    if plan.errors and reason == "InvalidWorkspace":
        lines = "\n".join(f"  - {e}" for e in plan.errors)
        raise UpError(f"Workspace {plan.name!r} is invalid ({len(plan.errors)} problem"
                      f"{'s' if len(plan.errors) != 1 else ''}):\n{lines}")


def local_runtime(ws: Any, plan: Any, registry: Any) -> str | None:
    """The runtime to run here when it differs from the Plan's (None: the Plan's)."""
    spec = getattr(registry, "runtimes", {}).get(plan.runtime or "")
    if spec is not None and spec.cluster_only:
        raise UpError(f"runtime {plan.runtime!r} runs in clusters only (its plugin says so); "
                      "set the annotation kaito.sh/runtime: transformers to run this Workspace here")
    if plan.runtime != "vllm" or importlib.util.find_spec("vllm") is not None:
        return None
    if ws.runtime_annotation == "vllm":
        raise UpError("metadata.annotations[kaito.sh/runtime] is 'vllm', but vllm is not installed here; "
                      "install it (GPU machines: pip install vllm) or remove the annotation to use transformers")
    return "transformers"


def tuning_data_args(ws: Any, check: bool = True) -> list[str]:
    src = ws.tuning.input
    if src.urls:
        return [a for url in src.urls for a in ("--data", url)]
    if src.image:
        return ["--input-image", src.image]
    path = host_path(src.volume_source)
    if not path:
        raise UpError("tuning.input.volumeSource: local mode reads training data from hostPath.path "
                      "(a file or a directory on this machine)")
    if check and not Path(path).expanduser().exists():
        raise UpError(f"tuning.input.volumeSource.hostPath.path {path!r} does not exist; expected a data file "
                      "(jsonl, json, csv, parquet) or a directory of them")
    return ["--data", str(Path(path).expanduser().resolve())]


def tuning_output(ws: Any) -> tuple[str | None, str]:
    """(local output directory or None when pushed, where the adapter goes)."""
    out = ws.tuning.output
    if out.image:
        return None, out.image
    path = host_path(out.volume_source)
    if not path:
        raise UpError("tuning.output.volumeSource: local mode writes the adapter to hostPath.path (a directory)")
    target = str(Path(path).expanduser().resolve())
    return target, target


def _pick_port(host: str, port: int | None) -> int:
    if port == 0:
        return free_port(host, None)  # any free port the OS gives
    if port is not None:
        if not _port_free(host, port):
            raise UpError(f"--port {port}: {host}:{port} is already in use; pick another port "
                          "or leave --port out to use a free one")
        return port
    return free_port(host)


def link_adapters(adapters: list[tuple[str, str, float]], wdir: Path) -> Path:
    """``<wdir>/adapters/<name>`` for each adapter (the pod's /mnt/adapter/<name>)."""
    root = wdir / "adapters"
    root.mkdir(parents=True, exist_ok=True)
    for name, path, _ in adapters:
        link = root / name
        if Path(path).resolve() != link.resolve() and not link.exists():
            link.symlink_to(Path(path).resolve(), target_is_directory=True)
    return root


def prepare(ws: Any, plan: Any, opts: Any, wdir: Path, preset_arg: str | None, weights: Path,
            configmaps: dict, p: Printer, registry: Any = None) -> state.Launch:
    """The supervised process's Launch: the Plan's command and env, localised."""
    from kaito_core.plugins import get_registry

    registry = registry or get_registry()
    common = dict(name=ws.name, namespace=ws.namespace, mode=ws.mode, preset=plan.preset or "",
                  source=str(opts.file), weights=str(weights), backoff_s=opts.backoff_s,
                  max_backoff_s=opts.max_backoff_s, spec_hash=spec_hash(ws), created=_now(), host=opts.host)
    if ws.mode == "tuning":
        cfg = write_configmap_key(configmaps, ws.tuning.config, "training_config.yaml", wdir / "training_config.yaml")
        output, target = tuning_output(ws)
        run = tuning_run(plan, weights=str(weights), config=str(cfg) if cfg else None,
                         data_args=tuning_data_args(ws), output=output, work_dir=str(wdir / "work"),
                         keep_preset=preset_arg is not None, base_model=_hf_repo(registry, plan.preset))
        return state.Launch(command=run.argv + list(opts.extra_args), output=target, env=run.env, **common)
    runtime = local_runtime(ws, plan, registry)
    port = _pick_port(opts.host, opts.port)
    adapters = adapters_for(ws, wdir, p)
    cfg = write_configmap_key(configmaps, ws.inference.config, "inference_config.yaml",
                              wdir / "inference_config.yaml")
    run = inference_run(plan, weights=str(weights), host=opts.host, port=port, config=str(cfg) if cfg else None,
                        adapters_dir=str(link_adapters(adapters, wdir)) if adapters else None, runtime=runtime,
                        keep_preset=preset_arg is not None)
    served = flag_value(run.argv, "--served-model-name") or plan.preset
    return state.Launch(command=run.argv + list(opts.extra_args), port=port, model_name=served,
                        adapters=[a[0] for a in adapters], env=run.env, **common)


def _hf_repo(registry: Any, preset: str | None) -> str | None:
    """The Hugging Face id of the Workspace's preset (what a tuned adapter records as its base)."""
    found = registry.resolve_preset_name(preset) if preset else None
    return registry.presets[found].hf_repo if found is not None else None


def dry_run_view(ws: Any, plan: Any, registry: Any, *, host: str, port: int | None, weights: str | None) -> dict:
    """What ``kaito up`` would run, without locating, pulling, writing or starting anything."""
    base = Path(state.workspace_dir(ws.name))
    run: LocalRun | None = None
    refused = None
    try:
        refuse_invalid(plan)
        if ws.inference is not None and ws.inference.template is not None:
            raise UpError("inference.template (your own pod) cannot run in local mode")
        w = weights or "<local weights>"
        if ws.mode == "tuning":
            output, _ = tuning_output(ws)
            run = tuning_run(plan, weights=w, config=str(base / "training_config.yaml") if ws.tuning.config else None,
                             data_args=tuning_data_args(ws, check=False), output=output, work_dir=str(base / "work"))
        else:
            run = inference_run(plan, weights=w, host=host, port=port or 5000,
                                config=str(base / "inference_config.yaml") if ws.inference.config else None,
                                adapters_dir=str(base / "adapters"), runtime=local_runtime(ws, plan, registry))
    except UpError as exc:
        refused = str(exc)
    return {"plan": plan.to_dict(), "local": {
        "command": run.argv if run else [], "env": run.env if run else {},
        "differences": run.differences if run else [], "refused": refused}}
