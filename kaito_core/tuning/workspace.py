"""A tuning Workspace (+ its ConfigMap, + a push Secret) -> the arguments of a run.

The files are read with the Workspace API (:func:`kaito_core.api.load_documents`), so a
Workspace with mistakes is refused with every field named, exactly as ``kaito validate`` does.
``tuning`` sits at the top level of the Workspace, as upstream: ``preset.name``, ``method``,
``config`` (a ConfigMap holding ``training_config.yaml``), ``input`` (``urls`` | ``image`` |
``volumeSource``) and ``output`` (``volumeSource`` | ``image`` + ``imagePushSecret``).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from kaito_core.api.training.errors import TuningError


def _host_path(volume: Any) -> str | None:
    if isinstance(volume, dict):
        hp = volume.get("hostPath")
        if isinstance(hp, dict) and hp.get("path"):
            return str(hp["path"])
    return None


def _load(paths: list[str]) -> tuple[list[Any], list[dict], dict[str, list[dict]], dict[str, list[dict]]]:
    """(workspaces, their raw mappings, ConfigMaps by name, Secrets by name) from every file."""
    from kaito_core.api import Workspace, load_documents

    workspaces, raws = [], []
    configmaps: dict[str, list[dict]] = {}
    secrets: dict[str, list[dict]] = {}
    for p in paths:
        for doc in load_documents(p):
            if doc.error is not None:
                raise doc.error
            meta = doc.raw.get("metadata") if isinstance(doc.raw.get("metadata"), dict) else {}
            name = str(meta.get("name", ""))
            if isinstance(doc.obj, Workspace):
                workspaces.append(doc.obj)
                raws.append(doc.raw)
            elif doc.kind == "ConfigMap":
                configmaps.setdefault(name, []).append(doc.raw)
            elif doc.kind == "Secret":
                secrets.setdefault(name, []).append(doc.raw)
    return workspaces, raws, configmaps, secrets


def _same_namespace(found: dict[str, list[dict]], name: str, namespace: str) -> dict | None:
    """The object ``name`` the Workspace's namespace would see: one in that namespace, or one
    without a namespace (kubectl applies it to the namespace given). A ConfigMap of another
    namespace is not the Workspace's, as the operator would not read it either."""
    for raw in found.get(name, []):
        ns = (raw.get("metadata") or {}).get("namespace")
        if ns in (None, "", namespace):
            return raw
    return None


def request_fields(paths: list[str], *, workspace: str | None = None) -> dict[str, Any]:
    """The TuneRequest fields a Workspace gives; flags given on the command line win over them."""
    workspaces, _raws, configmaps, secrets = _load(paths)
    tuning_ws = [w for w in workspaces if w.tuning is not None]
    if workspace:
        tuning_ws = [w for w in tuning_ws if w.name == workspace]
    if not tuning_ws:
        raise TuningError(f"no Workspace with a tuning section{f' named {workspace!r}' if workspace else ''} "
                          f"in {', '.join(paths)}")
    if len(tuning_ws) > 1:
        raise TuningError(f"several tuning Workspaces {[w.name for w in tuning_ws]} in the files; pick one with "
                          "--workspace NAME")
    ws = tuning_ws[0]
    tuning = ws.tuning
    out: dict[str, Any] = {"workspace": ws.name}
    if tuning.preset is not None and tuning.preset.name:
        out["preset"] = tuning.preset.name
    if tuning.method:
        out["method"] = tuning.method
    if tuning.config:
        cm = _same_namespace(configmaps, tuning.config, ws.namespace)
        if cm is None:
            elsewhere = [(r.get("metadata") or {}).get("namespace") for r in configmaps.get(tuning.config, [])]
            where = f" (only in namespace {', '.join(map(str, elsewhere))})" if elsewhere else ""
            raise TuningError(f"Workspace {ws.name}: tuning.config names ConfigMap {tuning.config!r}, which is "
                              f"not in namespace {ws.namespace} in {', '.join(paths)}{where}; add the file holding "
                              "it (-f configmap.yaml)")
        out["config"] = cm
    inp = tuning.input
    if inp is not None:
        if inp.urls:
            out["data"] = list(inp.urls)
        if inp.image:
            out["input_image"] = inp.image
        if inp.volume_source is not None:
            hp = _host_path(inp.volume_source)
            out["data_volume"] = hp  # None: the caller must give --data
            if hp:
                out["data"] = [hp]
    outp = tuning.output
    if outp is not None:
        if outp.image:
            out["output_image"] = outp.image
            if outp.image_push_secret:
                out["push_secret_name"] = outp.image_push_secret
                secret = _same_namespace(secrets, outp.image_push_secret, ws.namespace)
                if secret is not None:
                    out["push_secret"] = _secret_config(secret)
        if outp.volume_source is not None:
            hp = _host_path(outp.volume_source)
            out["output_volume"] = hp
            if hp:
                out["output"] = hp
    return out


def _secret_config(secret: dict) -> dict:
    name = (secret.get("metadata") or {}).get("name")
    data = secret.get("data") or {}
    string_data = secret.get("stringData") or {}
    try:
        if isinstance(data, dict) and ".dockerconfigjson" in data:
            where = "data..dockerconfigjson"
            blob = base64.b64decode(str(data[".dockerconfigjson"]), validate=True).decode("utf-8")
        elif isinstance(string_data, dict) and ".dockerconfigjson" in string_data:
            where, blob = "stringData..dockerconfigjson", str(string_data[".dockerconfigjson"])
        else:
            raise TuningError(f"Secret {name!r} has no .dockerconfigjson key; an image push secret must be of type "
                              "kubernetes.io/dockerconfigjson")
        config = json.loads(blob)
    except (ValueError, binascii.Error) as exc:  # bad base64, not UTF-8, not JSON
        raise TuningError(f"Secret {name!r}: {where} is not a base64-encoded docker config JSON ({exc}); create it "
                          "with kubectl create secret docker-registry") from None
    if not isinstance(config, dict):
        raise TuningError(f"Secret {name!r}: {where} must hold a JSON object with 'auths'")
    return config
