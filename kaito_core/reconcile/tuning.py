"""Tuning objects: the recipe ConfigMap and a batch Job ``<ws>`` (pure).

Upstream's shape (KAITO-REFERENCE.md, step 5): init containers fetch the weights and the
input data, the main container runs the recipe, the adapter is written to the output volume
or pushed as an OCI artifact with the push secret.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from kaito_core.netguard import ALLOW_ENV, allow_private_from_env
from kaito_core.reconcile import names, pods
from kaito_core.reconcile.context import CONFIG_DIR, DATA_DIR, RESULTS_DIR, Context
from kaito_core.reconcile.inputs import tuning_method
from kaito_core.reconcile.weights import artifact_init, hf_token_env, merge_volumes, weights
from kaito_core.api.training import defaults

CONFIG_KEY = "training_config.yaml"
# Where a restarted pod finds the interrupted run's downloads and checkpoints: on the output
# volume when it is one the pod does not own (a volumeSource); an emptyDir dies with the pod.
WORK_DIR = f"{RESULTS_DIR}/.kaito-work"
# The recipe's exit code when a signal interrupted it outside or between training steps
# (kaito_core.tuning: SIGTERM on node drain or preemption): resumable, so not a failure.
EXIT_INTERRUPTED = 75
PUSH_SECRET_DIR = "/var/run/secrets/kaito/push"
# SIGTERM lets the recipe finish its step and save a checkpoint before it exits 75; Kubernetes'
# default 30 s can be shorter than one step with gradient accumulation plus the save on a large
# model, and a pod killed before it saved loses the steps since the last periodic checkpoint.
# A node drain waits this long at most; the pod exits as soon as the checkpoint is written.
TERMINATION_GRACE_S = 120

# Downloads each URL into /mnt/data with the recipe's own downloader: a name that resolves to
# a private or metadata address (or redirects to one) is refused, as `kaito tune --data URL`
# refuses it; admission can only check the URL's text. Retries, size limit, atomic files.
FETCH_COMMAND = ["python", "-m", "kaito_core.tuning.fetch"]


def training_config(ctx: Context) -> dict[str, Any]:
    """The default ``training_config.yaml``: upstream's chart template for the method (the same
    defaults ``kaito tune`` trains with when it has no config), with the preset's target modules."""
    return defaults.template_config(tuning_method(ctx.ws), ctx.preset.tuning.target_modules)


def config_map(ctx: Context) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": ctx.metadata(names.config_name(ctx.name, "tuning")),
            "data": {CONFIG_KEY: yaml.safe_dump(training_config(ctx), sort_keys=True)}}


def _data(ctx: Context) -> tuple[list[dict], list[dict], list[dict]]:
    """Init containers, volumes and recipe mounts for tuning.input."""
    src = ctx.ws.tuning.input
    mount = {"name": "data", "mountPath": DATA_DIR}
    if src.volume_source:
        return [], [{"name": "data", **copy.deepcopy(src.volume_source)}], [dict(mount, readOnly=True)]
    volumes = [{"name": "data", "emptyDir": {}}]
    common = {"imagePullPolicy": "IfNotPresent", "volumeMounts": [mount],
              "securityContext": pods.container_security(),
              "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}}}
    if src.urls:
        env = [{"name": "DATA_DIR", "value": DATA_DIR}]
        if allow_private_from_env():  # the operator admits in-cluster data servers: so does the Job
            env.append({"name": ALLOW_ENV, "value": "1"})
        init = {"name": "data-fetch", "image": ctx.image, "command": list(FETCH_COMMAND),
                "args": list(src.urls), "env": env, **common}
    else:
        # A data image is an OCI artifact (files as layers, as `oras push` makes them): pulled
        # into /mnt/data with tuning.input.imagePullSecrets.
        init, secret_volumes = artifact_init("data-fetch", src.image, mount, DATA_DIR,
                                             list(src.image_pull_secrets or []), common["resources"])
        volumes += secret_volumes
    return [init], volumes, [dict(mount, readOnly=True)]


def _output(ctx: Context) -> tuple[list[dict], list[dict], list[str], list[dict]]:
    """Volumes, mounts, recipe args and env for tuning.output."""
    out = ctx.ws.tuning.output
    mount = {"name": "results", "mountPath": RESULTS_DIR}
    if out.volume_source:
        return [{"name": "results", **copy.deepcopy(out.volume_source)}], [mount], [], []
    volumes = [{"name": "results", "emptyDir": {}},
               {"name": "push-secret", "secret": {"secretName": out.image_push_secret,
                                                  "items": [{"key": ".dockerconfigjson", "path": "config.json"}]}}]
    mounts = [mount, {"name": "push-secret", "mountPath": PUSH_SECRET_DIR, "readOnly": True}]
    return volumes, mounts, ["--push", out.image], [{"name": "DOCKER_CONFIG", "value": PUSH_SECRET_DIR}]


def job(ctx: Context) -> dict[str, Any]:
    tun = ctx.ws.tuning
    w = weights(ctx)
    data_inits, data_volumes, data_mounts = _data(ctx)
    out_volumes, out_mounts, out_args, out_env = _output(ctx)
    config_ref = tun.config or names.config_name(ctx.name, "tuning")
    args = ["--preset", ctx.preset.name, "--method", (tuning_method(ctx.ws) or "").lower(), "--model", w.model,
            "--config", f"{CONFIG_DIR}/{CONFIG_KEY}", "--data", DATA_DIR, "--output", RESULTS_DIR] + out_args
    if tun.output.volume_source:
        args += ["--work-dir", WORK_DIR]
    if ctx.gpus_per_node > 1:
        # one process per GPU, as upstream's `accelerate launch` (data parallel)
        args += ["--nproc-per-node", str(ctx.gpus_per_node)]
    container = {
        "name": "tuning", "image": ctx.image, "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", "kaito_core.tuning"], "args": args,
        "env": [{"name": "KAITO_WORKSPACE", "value": ctx.name}] + w.env + out_env
        + hf_token_env(ctx.model_access_secret),
        "resources": pods.gpu_resources(ctx.gpus_per_node, ctx.cpu if ctx.memory_gib else "4", ctx.host_memory_gib),
        "volumeMounts": w.mounts + data_mounts + out_mounts
        + [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}, {"name": "dshm", "mountPath": "/dev/shm"}],
        "securityContext": pods.container_security(),
    }
    labels = {**ctx.labels, **names.selector_labels(ctx.name)}
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": TERMINATION_GRACE_S,
        "initContainers": w.init_containers + data_inits,
        "containers": [container],
        "volumes": merge_volumes(w.volumes, data_volumes, out_volumes,
                                 [{"name": "config", "configMap": {"name": config_ref}}, pods.shm_volume()]),
        "tolerations": list(pods.TOLERATIONS),
        "securityContext": pods.pod_security(),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
    }
    pods.finish_spec(spec, ctx.label_selector, ctx.pull_secrets + list(tun.input.image_pull_secrets or []))
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": ctx.metadata(ctx.name, annotations=names.revision_annotations(ctx.revision)),
            "spec": {"backoffLimit": defaults.JOB_BACKOFF_LIMIT, "podFailurePolicy": _failure_policy(),
                     "ttlSecondsAfterFinished": None,
                     "template": {"metadata": {"labels": labels,
                                               "annotations": names.revision_annotations(ctx.revision)},
                                  "spec": spec}}}


def _failure_policy() -> dict[str, Any]:
    """An interrupted recipe (exit 75: drained or preempted node) starts again without counting
    against ``backoffLimit`` (Kubernetes' podFailurePolicy ``Ignore``); it resumes from its work dir.
    A pod the cluster disrupted (eviction, preemption, a node going away: condition
    ``DisruptionTarget``) is not the recipe's failure either, as Kubernetes' Job docs advise."""
    return {"rules": [{"action": "Ignore", "onExitCodes": {"containerName": "tuning", "operator": "In",
                                                            "values": [EXIT_INTERRUPTED]}},
                      {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]}


def objects(ctx: Context) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    first = [] if ctx.ws.tuning.config else [config_map(ctx)]
    j = job(ctx)
    j["spec"] = {k: v for k, v in j["spec"].items() if v is not None}
    return first, [j]
