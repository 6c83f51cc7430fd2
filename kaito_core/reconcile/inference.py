"""Inference objects: engine ConfigMap, Service ``<ws>``, headless Service, StatefulSet (pure).

Follows upstream's controller (KAITO-REFERENCE.md, "The controller, in order", step 4).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import yaml

from kaito_core.reconcile import command, names, pods
from kaito_core.reconcile.context import ADAPTER_DIR, CONFIG_DIR, SERVE_PORT, Context
from kaito_core.reconcile.weights import artifact_init, hf_token_env, merge_volumes, weights

CONFIG_KEY = command.CONFIG_KEY
RAY_PORT = 6379  # upstream's multi-node vLLM: the Ray head's GCS port on pod 0


def engine_config(ctx: Context) -> dict[str, Any]:
    """The default ``inference_config.yaml``: the preset's engine arguments + what the plan
    decided (parallelism, gpu-memory-utilization = what sizing counted on, the dtype this GPU
    supports); used when the Workspace names no ``inference.config``."""
    preset = ctx.preset
    vllm = dict(preset.runtimes.get("vllm", {})) if preset is not None else {}
    if ctx.runtime == "vllm":
        vllm["tensor-parallel-size"] = ctx.tensor_parallel_size
        if ctx.pipeline_parallel_size > 1:
            vllm["pipeline-parallel-size"] = ctx.pipeline_parallel_size
        vllm["gpu-memory-utilization"] = ctx.gpu_memory_utilization
        if ctx.dtype in command.VLLM_COMPUTE_DTYPES:
            vllm["dtype"] = ctx.dtype
        elif vllm.get("dtype") not in (None, "auto", *command.VLLM_COMPUTE_DTYPES):
            # A quantised checkpoint (gpt-oss's MXFP4: sized as int4) keeps its stored format;
            # vLLM's --dtype is the activation dtype and refuses anything else.
            del vllm["dtype"]
    if vllm.get("tool-call-parser"):
        # vLLM only calls tools on its own with this flag (upstream's tool-calling example).
        vllm["enable-auto-tool-choice"] = True
    doc: dict[str, Any] = {"vllm": {k: vllm[k] for k in sorted(vllm)}}
    if preset is not None and "transformers" in preset.runtimes:
        tr = dict(preset.runtimes["transformers"])
        if tr.get("dtype") == "bfloat16" and ctx.dtype in command.VLLM_COMPUTE_DTYPES and ctx.dtype != "bfloat16":
            tr["dtype"] = ctx.dtype  # below compute capability 8.0 (V100) there is no bfloat16
        if tr:
            doc["transformers"] = {k: tr[k] for k in sorted(tr)}
    return doc


_DUMPED: dict[str, str] = {}  # repr of an engine config -> its YAML (bounded below)


def _yaml(doc: dict[str, Any]) -> str:
    """``yaml.safe_dump`` of ``doc``, remembered: the operator plans the same config on every pass
    of a Workspace, and PyYAML's pure-Python dumper was about 13% of a pass. (libyaml's
    CSafeDumper is faster but may quote or fold differently; a different text would change the
    ConfigMap's hash and roll every inference pod on upgrade.)"""
    key = repr(doc)  # types included: equal reprs dump to equal YAML
    text = _DUMPED.get(key)
    if text is None:
        text = yaml.safe_dump(doc, sort_keys=True)
        if len(_DUMPED) >= 256:
            _DUMPED.clear()
        _DUMPED[key] = text
    return text


def config_map(ctx: Context) -> dict[str, Any]:
    text = _yaml(engine_config(ctx))
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": ctx.metadata(names.config_name(ctx.name, "inference")),
            "data": {CONFIG_KEY: text}}


def service(ctx: Context) -> dict[str, Any]:
    selector = names.selector_labels(ctx.name)
    if ctx.group_size > 1:
        # Multi-node: only the leader (pod 0) serves the API; the others are engine workers.
        # Independent replicas (group size 1) all serve.
        selector["statefulset.kubernetes.io/pod-name"] = f"{ctx.name}-0"
    spec: dict[str, Any] = {"selector": selector,
                            "ports": [{"name": "http", "port": 80, "targetPort": SERVE_PORT, "protocol": "TCP"}],
                            "type": "LoadBalancer" if ctx.ws.load_balancer else "ClusterIP"}
    return {"apiVersion": "v1", "kind": "Service", "metadata": ctx.metadata(ctx.name), "spec": spec}


def _multinode_ray(ctx: Context) -> bool:
    return ctx.group_size > 1 and ctx.runtime == "vllm" and ctx.preset is not None


def headless_service(ctx: Context) -> dict[str, Any]:
    # Stable DNS names <ws>-N.<ws>-headless for multi-node rendezvous, ready or not
    # (publishNotReadyAddresses: workers must reach the Ray head before anyone is Ready).
    ports = [{"name": "http", "port": SERVE_PORT, "targetPort": SERVE_PORT, "protocol": "TCP"}]
    if _multinode_ray(ctx):
        # Only the head's GCS port: Ray's dashboard (8265) stays on the head's localhost, since
        # its job API runs any code it is sent (docs/multinode.md).
        ports += [{"name": "ray", "port": RAY_PORT, "targetPort": RAY_PORT, "protocol": "TCP"}]
    spec = {"clusterIP": "None", "publishNotReadyAddresses": True, "selector": names.selector_labels(ctx.name),
            "ports": ports}
    return {"apiVersion": "v1", "kind": "Service", "metadata": ctx.metadata(names.headless_name(ctx.name)),
            "spec": spec}


def _adapters(ctx: Context) -> tuple[list[dict], list[dict], list[dict], list[str]]:
    """Init containers, volumes, main-container mounts and server args for the adapters."""
    adapters = ctx.ws.inference.adapters or []
    if not adapters:
        return [], [], [], []
    inits: list[dict] = []
    volumes: list[dict] = [{"name": "adapters", "emptyDir": {}}]
    mounts: list[dict] = [{"name": "adapters", "mountPath": ADAPTER_DIR}]
    args = ["--adapters-dir", ADAPTER_DIR]
    for i, ad in enumerate(adapters):
        name = ad.source.name or f"adapter-{i}"
        if ad.source.image:
            # An adapter image (upstream's /data layout, or an ORAS artifact): pulled into
            # /mnt/adapter/<name> with the adapter's imagePullSecrets.
            mount = {"name": "adapters", "mountPath": ADAPTER_DIR}
            init, secret_volumes = artifact_init(f"adapter-{i}", ad.source.image, mount, f"{ADAPTER_DIR}/{name}",
                                                 list(ad.source.image_pull_secrets or []),
                                                 {"requests": {"cpu": "100m", "memory": "128Mi"}})
            inits.append(init)
            volumes += secret_volumes
        elif ad.source.volume_source:
            vol = {"name": f"adapter-src-{i}", **copy.deepcopy(ad.source.volume_source)}
            volumes.append(vol)
            mounts.append({"name": f"adapter-src-{i}", "mountPath": f"{ADAPTER_DIR}/{name}", "readOnly": True})
        if ad.strength is not None:
            args += ["--adapter-strength", f"{name}={ad.strength}"]
    return inits, volumes, mounts, args


def _probes(ctx: Context) -> dict[str, Any]:
    get = {"path": "/health", "port": SERVE_PORT}
    # Loading grows with the weights: allow ~30 s per GiB on top of 30 minutes (upstream waits
    # 30+ minutes: a cold node pulls a large image and the weights before /health answers).
    startup_failures = 180 + int(math.ceil(ctx.weight_gib)) * 3
    return {
        "startupProbe": {"httpGet": get, "periodSeconds": 10, "failureThreshold": startup_failures},
        "readinessProbe": {"httpGet": get, "periodSeconds": 10, "failureThreshold": 3, "timeoutSeconds": 5},
        "livenessProbe": {"httpGet": get, "periodSeconds": 20, "failureThreshold": 6, "timeoutSeconds": 5},
    }


def statefulset(ctx: Context) -> dict[str, Any]:
    ws = ctx.ws
    template = pod_template(ctx)
    spec = {"replicas": ctx.node_count, "serviceName": names.headless_name(ctx.name),
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": names.selector_labels(ctx.name)},
            "template": template,
            "updateStrategy": {"type": "RollingUpdate"},
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Delete"}}
    del ws
    return {"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": ctx.metadata(ctx.name, annotations=names.revision_annotations(ctx.revision)),
            "spec": spec}


def _template_pod(ctx: Context) -> dict[str, Any]:
    """``inference.template``: the user's pod, placed on the Workspace's nodes."""
    tpl = copy.deepcopy(ctx.ws.inference.template or {})
    spec = tpl.get("spec") or {}
    meta = tpl.get("metadata") or {}
    return {"metadata": meta, "spec": spec}


def pod_template(ctx: Context) -> dict[str, Any]:
    labels = {**ctx.labels, **names.selector_labels(ctx.name)}
    annotations = names.revision_annotations(ctx.revision)
    if ctx.preset is None:
        tpl = _template_pod(ctx)
        spec = tpl["spec"]
        meta = tpl["metadata"]
        meta["labels"] = {**(meta.get("labels") or {}), **labels}
        meta["annotations"] = {**(meta.get("annotations") or {}), **annotations}
        spec.setdefault("tolerations", [])
        spec["tolerations"] = spec["tolerations"] + [t for t in pods.TOLERATIONS if t not in spec["tolerations"]]
        aff = pods.node_affinity(ctx.label_selector)
        if aff and "affinity" not in spec:
            spec["affinity"] = aff
        return {"metadata": meta, "spec": spec}

    w = weights(ctx)
    inits, ad_volumes, ad_mounts, ad_args = _adapters(ctx)
    preset = ctx.preset
    config_ref = ctx.ws.inference.config or names.config_name(ctx.name, "inference")
    env = command.env(ctx) + w.env + hf_token_env(ctx.model_access_secret)
    cmd, args = command.command_and_args(ctx, w.model, ad_args, env)
    ports = [{"name": "http", "containerPort": SERVE_PORT, "protocol": "TCP"}]
    if _multinode_ray(ctx):
        ports += [{"name": "ray", "containerPort": RAY_PORT, "protocol": "TCP"}]
    container = {
        # Upstream names the inference container after the Workspace (kubectl logs -c <ws>).
        "name": ctx.name, "image": ctx.image, "imagePullPolicy": "IfNotPresent",
        "command": cmd, "env": env, **({"args": args} if args else {}),
        "ports": ports,
        "resources": pods.gpu_resources(ctx.gpus_per_node, ctx.cpu, ctx.host_memory_gib, ctx.gpu_resource),
        "volumeMounts": w.mounts + [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                                    {"name": "dshm", "mountPath": "/dev/shm"}] + ad_mounts,
        "securityContext": pods.container_security(),
        **_probes(ctx),
    }
    spec: dict[str, Any] = {
        "initContainers": w.init_containers + inits,
        "containers": [container],
        "volumes": merge_volumes(w.volumes, [{"name": "config", "configMap": {"name": config_ref}}, pods.shm_volume()],
                                 ad_volumes),
        "tolerations": list(pods.TOLERATIONS),
        "securityContext": pods.pod_security(),
        "terminationGracePeriodSeconds": 30,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
    }
    secrets = ctx.pull_secrets + [s for ad in (ctx.ws.inference.adapters or [])
                                  for s in (ad.source.image_pull_secrets or [])]
    pods.finish_spec(spec, ctx.label_selector, secrets)
    return {"metadata": {"labels": labels, "annotations": annotations}, "spec": spec}


def objects(ctx: Context) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(objects that can exist before the nodes, the workload that waits for them)."""
    first: list[dict[str, Any]] = []
    if ctx.preset is not None and not ctx.ws.inference.config:
        first.append(config_map(ctx))
    first += [service(ctx), headless_service(ctx)]
    return first, [statefulset(ctx)]
