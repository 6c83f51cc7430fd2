"""The Plan's container command and env, realised on this machine (pure).

``kaito up`` runs exactly the command and env the cluster pod gets (the Plan's), with these
differences only, each listed in ``LocalRun.differences`` (``kaito up --dry-run`` prints them):

- ``python`` is this interpreter;
- paths: ``--model`` is the local weights directory, ``--config`` the ConfigMap's file written
  under the run's directory, ``--adapters-dir`` a directory of the adapters (links or pulled),
  tuning's ``--data`` the URLs / data image / host path itself (the pod's init container
  fetches them to /mnt/data), ``--output`` the host path (the pod writes /mnt/results);
- ports: ``--host``/``--port`` are the local bind address and port (the pod: 0.0.0.0:5000);
- the runtime: ``vllm`` (the preset's default) becomes ``transformers`` when vllm is not
  installed here and no ``kaito.sh/runtime`` annotation asks for it;
- ``--preset`` is dropped when the local weights are not the preset's published ones;
- ``--config`` is dropped when the Workspace names no ConfigMap (the pod's generated one holds
  the preset's defaults, which the runtime and the recipe apply themselves);
- env: the pod's cache location (HF_HOME) and pinned revision (the weights are already here),
  and Secret/downward-API variables (HF_TOKEN comes from your environment; one node has no rank).
Tuning adds ``--progress log`` and its own ``--work-dir``, and ``--base-model`` (the preset's id)
when ``--preset`` is dropped.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Sequence

# Env the pod sets for its own volumes: meaningless on this machine.
POD_ONLY_ENV = ("HF_HOME", "KAITO_MODEL_REVISION")


@dataclass
class LocalRun:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    differences: list[str] = field(default_factory=list)


def flag_value(argv: Sequence[str], flag: str) -> str | None:
    try:
        return argv[list(argv).index(flag) + 1]
    except (ValueError, IndexError):
        return None


def set_flag(run: LocalRun, flag: str, value: str | None, why: str) -> None:
    """Replace ``flag``'s value (None: drop the flag), recording the difference."""
    argv = run.argv
    if flag in argv:
        i = argv.index(flag)
        old = argv[i + 1] if i + 1 < len(argv) else ""
        if value == old:
            return
        if value is None:
            del argv[i:i + 2]
            run.differences.append(f"{flag} {old}: dropped here ({why})")
        else:
            argv[i + 1] = value
            run.differences.append(f"{flag}: {old} in the pod, {value} here ({why})")
    elif value is not None:
        argv += [flag, value]
        run.differences.append(f"{flag} {value}: added here ({why})")


def _env(plan: Any, run: LocalRun) -> None:
    for e in plan.env:
        name = e.get("name")
        if "value" not in e:
            run.differences.append(f"env {name}: from a Secret or the downward API in the pod, not set here")
        elif name in POD_ONLY_ENV:
            run.differences.append(f"env {name}={e['value']}: the pod's weights volume; the weights are local here")
        else:
            run.env[name] = str(e["value"])


def _python(run: LocalRun) -> None:
    if run.argv and run.argv[0] in ("python", "python3"):
        run.differences.append(f"{run.argv[0]}: this interpreter ({sys.executable})")
        run.argv[0] = sys.executable


def inference_run(plan: Any, *, weights: str, host: str, port: int, config: str | None, adapters_dir: str | None,
                  runtime: str | None = None, keep_preset: bool = True) -> LocalRun:
    """The local inference command from the Plan's container command."""
    run = LocalRun(argv=list(plan.command))
    _python(run)
    set_flag(run, "--model", weights, "the local weights")
    set_flag(run, "--host", host, "local bind address")
    set_flag(run, "--port", str(port), "local port")
    set_flag(run, "--config", config, "the ConfigMap's file under the run directory" if config else
             "no inference.config: the generated ConfigMap holds the preset's defaults, applied from --preset")
    if "--adapters-dir" in run.argv:
        set_flag(run, "--adapters-dir", adapters_dir, "the adapters, linked or pulled here")
    if runtime is not None:
        set_flag(run, "--runtime", runtime, "vllm is not installed here")
    if not keep_preset:
        set_flag(run, "--preset", None, "the local weights are not the preset's published ones")
    _env(plan, run)
    return run


def tuning_run(plan: Any, *, weights: str, config: str | None, data_args: list[str], output: str | None,
               work_dir: str, keep_preset: bool = True, base_model: str | None = None) -> LocalRun:
    """The local tuning command from the Plan's Job command.

    :param base_model: the model id the adapter records when ``--preset`` is dropped (the
        Workspace's preset's Hugging Face id: the weights here are a host path, not that id).
    """
    run = LocalRun(argv=list(plan.command))
    _python(run)
    set_flag(run, "--model", weights, "the local weights")
    set_flag(run, "--config", config, "the ConfigMap's file under the run directory" if config else
             "no tuning.config: the recipe's own defaults, chosen for this machine's device")
    if "--data" in run.argv:
        i = run.argv.index("--data")
        old = run.argv[i + 1]
        run.argv[i:i + 2] = data_args
        run.differences.append(f"--data {old}: {' '.join(data_args)} here (the pod's init container fetches "
                               f"the data to {old})")
    # No --overwrite: the recipe lets a Workspace replace its own adapter (KAITO_WORKSPACE, in the
    # env below), and refuses another Workspace's, here as in the pod.
    set_flag(run, "--output", output, "the adapter goes to the host path" if output else "pushed, not written")
    if not keep_preset:
        set_flag(run, "--preset", None, "the local weights are not the preset's published ones")
        if base_model:
            set_flag(run, "--base-model", base_model, "the adapter records the Workspace's model id, "
                                                      "not the local weights' path")
    set_flag(run, "--work-dir", work_dir, "downloads and checkpoints under the run directory; a run started "
                                          "again resumes from them")
    run.argv += ["--progress", "log"]
    run.differences.append("--progress log: added here (one JSON line per step in the run's log)")
    _env(plan, run)
    return run
