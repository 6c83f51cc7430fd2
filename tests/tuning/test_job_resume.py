"""A tuning Job whose pod gets SIGTERM (node drain, spot eviction) resumes in the pod that replaces it.

The Job is rendered by the real reconciler; its container command and arguments are run here
as they are, with only the mount paths (``/mnt/...``) moved under a temporary directory and the
model pointed at a tiny local Phi-3. The "persistent volume" is a directory both runs share,
as two pods of the Job share the PersistentVolumeClaim named by ``tuning.output.volumeSource``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import yaml

from kaito_core.api import parse_workspace
from kaito_core.builtins.byo import PROVISIONER as BYO
from kaito_core.plugins import get_registry
from kaito_core.reconcile import Observed, plan
from kaito_core.reconcile.inputs import resolve
from kaito_core.tuning.output import is_complete
from kaito_core.tuning.train import EXIT_INTERRUPTED
from tests.tuning.helpers import run_until_sigterm, step_lines

ROOT = Path(__file__).resolve().parents[2]
# Volume sources whose data outlives the pod that mounted it (a replacement pod, maybe on
# another node, sees the same files). emptyDir, ephemeral and hostPath die with the pod or node.
OUTLIVES_THE_POD = ("persistentVolumeClaim", "nfs", "azureFile", "csi", "cephfs", "glusterfs")


def _rendered(output: dict) -> tuple[dict, dict]:
    """(the Job, the training ConfigMap) for a LoRA tuning Workspace on ready nodes."""
    raw = {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
           "metadata": {"name": "tune", "namespace": "default", "uid": "0b3c1f7e-6f1a-4d5e-9a62-3f0d2c9b1e11"},
           "resource": {"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {"matchLabels": {"a": "b"}}},
           "tuning": {"preset": {"name": "phi-3-mini-4k-instruct"}, "method": "lora",
                      "input": {"volumeSource": {"persistentVolumeClaim": {"claimName": "tuning-data"}}},
                      "output": output}}
    ws = parse_workspace(raw)
    inputs = resolve(ws, get_registry())
    assert not inputs.problems, inputs.problems
    first = plan(ws, inputs.preset, inputs.requirement, BYO)
    ready = Observed.nodes_ready(first.node_requests, inputs.requirement.gpus_per_node)
    p = plan(ws, inputs.preset, inputs.requirement, BYO, ready)
    config_map = next(o for o in p.objects if o["kind"] == "ConfigMap")
    return p.workload, config_map


def _arg(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def _volume_of(pod: dict, container: dict, path: str) -> dict:
    """The pod volume that holds ``path`` in ``container`` (the longest mount path above it)."""
    mounts = [m for m in container["volumeMounts"] if path == m["mountPath"] or path.startswith(m["mountPath"] + "/")]
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    return next(v for v in pod["volumes"] if v["name"] == mount["name"])


def test_the_rendered_job_keeps_its_checkpoints_where_a_new_pod_finds_them():
    job, config_map = _rendered({"volumeSource": {"persistentVolumeClaim": {"claimName": "tuning-results"}}})
    for obj in (job, config_map):
        kubernetes_validate.validate(obj, "1.35", strict=True)
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    # SIGTERM -> exit 75 -> the Job replaces the pod without counting a failure ...
    assert pod["restartPolicy"] == "Never"  # a podFailurePolicy requires it: every restart is a new pod
    assert {"action": "Ignore", "onExitCodes": {"containerName": container["name"], "operator": "In",
                                               "values": [EXIT_INTERRUPTED]}} in spec["podFailurePolicy"]["rules"]
    assert spec["backoffLimit"] == 6
    assert pod["terminationGracePeriodSeconds"] >= 60  # time to finish the step and save, past the 30 s default
    # ... and the new pod's recipe finds the checkpoints on a volume that outlived the old pod.
    work = _arg(container["args"], "--work-dir")
    volume = _volume_of(pod, container, work)
    assert any(k in volume for k in OUTLIVES_THE_POD), volume
    assert volume["persistentVolumeClaim"] == {"claimName": "tuning-results"}

    # An adapter pushed to a registry has no volume of its own: the checkpoints stay in the pod
    # (no --work-dir: a temporary directory), so a replaced pod starts over (docs/tuning.md).
    job, _ = _rendered({"image": "registry.example.com/adapters/tune:1", "imagePushSecret": "push"})
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert "--work-dir" not in container["args"]
    assert _volume_of(job["spec"]["template"]["spec"], container, "/mnt/results")["emptyDir"] == {}


def test_a_pod_stopped_by_sigterm_resumes_in_the_next_pod(tiny_models, chat_jsonl, tmp_path):
    job, config_map = _rendered({"volumeSource": {"persistentVolumeClaim": {"claimName": "tuning-results"}}})
    (container,) = job["spec"]["template"]["spec"]["containers"]
    mnt = tmp_path / "mnt"

    def here(value: str) -> str:
        return str(mnt) + value[len("/mnt"):] if value.startswith("/mnt/") else value

    # The volumes: data, the training ConfigMap (upstream's template, with a step line per step
    # so the test knows when training runs), and the results "PVC" both pods mount.
    (mnt / "data").mkdir(parents=True)
    shutil.copy(chat_jsonl, mnt / "data" / "train.jsonl")
    cfg = yaml.safe_load(config_map["data"]["training_config.yaml"])
    cfg["training_config"]["TrainingArguments"]["logging_steps"] = 1
    (mnt / "config").mkdir()
    (mnt / "config" / "training_config.yaml").write_text(yaml.safe_dump(cfg))
    args = [here(a) for a in container["args"]]
    args[args.index("--model") + 1] = str(tiny_models["phi3"])  # the weights the init container would fetch
    command = [sys.executable if c == "python" else c for c in container["command"]] + args
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               **{e["name"]: here(e["value"]) for e in container["env"] if "value" in e})
    work = Path(_arg(args, "--work-dir"))
    results = Path(_arg(args, "--output"))

    # the first pod: SIGTERM once training is under way
    returncode, first = run_until_sigterm(command, cwd=ROOT, env=env)
    assert returncode == EXIT_INTERRUPTED, first[-3000:]
    stopped = step_lines(first)[-1]["step"]
    assert (work / "checkpoints" / f"checkpoint-{stopped}" / "adapter_model.safetensors").is_file()
    assert not is_complete(results)

    # the replacement pod: the same command, the same results volume
    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    steps = [s["step"] for s in step_lines(again.stderr)]
    assert steps[0] == stopped + 1 and steps == list(range(stopped + 1, steps[-1] + 1))  # not from step 1
    assert is_complete(results)
    summary = json.loads((results / "kaito-tuning-summary.json").read_text())
    assert summary["resumed_from"] == str(work / "checkpoints" / f"checkpoint-{stopped}")
    assert summary["steps"] == steps[-1] == 3 * 16  # upstream's template: 3 epochs of 16 rows, batch size 1
