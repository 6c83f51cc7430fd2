"""A tuning Workspace (+ its ConfigMap, + a push Secret) -> the arguments of a run.

The files are read with the Workspace API (:func:`kaito_core.api.load_documents`), so a
Workspace with mistakes is refused with every field named, exactly as ``kaito validate`` does.
``tuning`` sits at the top level of the Workspace, as upstream: ``preset.name``, ``method``,
``config`` (a ConfigMap holding ``training_config.yaml``), ``input`` (``urls`` | ``image`` |
``volumeSource``) and ``output`` (``volumeSource`` | ``image`` + ``imagePushSecret``).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from kaito_core.api.training.errors import TuningError


def _host_path(volume: Any) -> str | None:
    if isinstance(volume, dict):
        hp = volume.get("hostPath")
        if isinstance(hp, dict) and hp.get("path"):
            return str(hp["path"])
    return None


def _load(paths: list[str]) -> tuple[list[Any], list[dict], dict[str, dict], dict[str, dict]]:
    """(workspaces, their raw mappings, ConfigMaps by name, Secrets by name) from every file."""
    from kaito_core.api import Workspace, load_documents

    workspaces, raws, configmaps, secrets = [], [], {}, {}
    for p in paths:
        for doc in load_documents(p):
            if doc.error is not None:
                raise doc.error
            name = (doc.raw.get("metadata") or {}).get("name", "")
            if isinstance(doc.obj, Workspace):
                workspaces.append(doc.obj)
                raws.append(doc.raw)
            elif doc.kind == "ConfigMap":
                configmaps[name] = doc.raw
            elif doc.kind == "Secret":
                secrets[name] = doc.raw
    return workspaces, raws, configmaps, secrets


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
        cm = configmaps.get(tuning.config)
        if cm is None:
            raise TuningError(f"Workspace {ws.name}: tuning.config names ConfigMap {tuning.config!r}, which is "
                              f"not in {', '.join(paths)}; add the file holding it (-f configmap.yaml)")
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
                if outp.image_push_secret in secrets:
                    out["push_secret"] = _secret_config(secrets[outp.image_push_secret])
        if outp.volume_source is not None:
            hp = _host_path(outp.volume_source)
            out["output_volume"] = hp
            if hp:
                out["output"] = hp
    return out


def _secret_config(secret: dict) -> dict:
    data = secret.get("data") or {}
    if ".dockerconfigjson" in data:
        blob = base64.b64decode(data[".dockerconfigjson"]).decode()
    elif ".dockerconfigjson" in (secret.get("stringData") or {}):
        blob = secret["stringData"][".dockerconfigjson"]
    else:
        name = (secret.get("metadata") or {}).get("name")
        raise TuningError(f"Secret {name!r} has no .dockerconfigjson key; an image push secret must be of type "
                          "kubernetes.io/dockerconfigjson")
    return json.loads(blob)
