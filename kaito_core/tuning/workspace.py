"""A tuning Workspace (+ its ConfigMap, + a push Secret) -> the arguments of a run.

Reads the YAML documents with PyYAML (the Workspace API's ``kaito_core.api.load_documents``
is used for validation when it is installed). ``tuning`` sits at the top level of the
Workspace, as upstream: ``preset.name``, ``method``, ``config`` (a ConfigMap holding
``training_config.yaml``), ``input`` (``urls`` | ``image`` | ``volumeSource``) and ``output``
(``volumeSource`` | ``image`` + ``imagePushSecret``).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from kaito_core.tuning.errors import TuningError


def load_documents(paths: list[str]) -> list[tuple[str, dict]]:
    import yaml

    docs: list[tuple[str, dict]] = []
    for p in paths:
        try:
            text = Path(p).read_text(encoding="utf-8")
        except OSError as exc:
            raise TuningError(f"cannot read {p}: {exc.strerror or exc}") from None
        try:
            for doc in yaml.safe_load_all(text):
                if isinstance(doc, dict):
                    docs.append((p, doc))
        except yaml.YAMLError as exc:
            raise TuningError(f"{p}: not valid YAML: {exc}") from None
    return docs


def _validate_with_api(paths: list[str]) -> None:
    """Use the Workspace API's validation when that module provides it."""
    try:
        from kaito_core import api
    except ImportError:
        return
    loader = getattr(api, "load_documents", None)
    if loader is None:
        return
    for p in paths:
        loader(p)  # raises WorkspaceInvalid with every problem


def _host_path(volume: Any) -> str | None:
    if isinstance(volume, dict):
        hp = volume.get("hostPath")
        if isinstance(hp, dict) and hp.get("path"):
            return str(hp["path"])
    return None


def request_fields(paths: list[str], *, workspace: str | None = None) -> dict[str, Any]:
    """The TuneRequest fields a Workspace gives; flags given on the command line win over them."""
    _validate_with_api(paths)
    docs = load_documents(paths)
    workspaces = [(p, d) for p, d in docs if d.get("kind") == "Workspace" and "tuning" in d]
    if workspace:
        workspaces = [(p, d) for p, d in workspaces if (d.get("metadata") or {}).get("name") == workspace]
    if not workspaces:
        raise TuningError(f"no Workspace with a tuning section{f' named {workspace!r}' if workspace else ''} "
                          f"in {', '.join(paths)}")
    if len(workspaces) > 1:
        names = [(d.get("metadata") or {}).get("name") for _, d in workspaces]
        raise TuningError(f"several tuning Workspaces {names} in the files; pick one with --workspace NAME")
    source, ws = workspaces[0]
    name = (ws.get("metadata") or {}).get("name", "?")
    tuning = ws.get("tuning") or {}
    out: dict[str, Any] = {"workspace": name}
    preset = (tuning.get("preset") or {}).get("name")
    if preset:
        out["preset"] = preset
    if tuning.get("method"):
        out["method"] = tuning["method"]
    cm_name = tuning.get("config")
    if cm_name:
        cms = [d for _, d in docs if d.get("kind") == "ConfigMap" and (d.get("metadata") or {}).get("name") == cm_name]
        if not cms:
            raise TuningError(f"Workspace {name}: tuning.config names ConfigMap {cm_name!r}, which is not in "
                              f"{', '.join(paths)}; add the file holding it (-f configmap.yaml)")
        out["config"] = cms[0]
    inp = tuning.get("input") or {}
    if inp.get("urls"):
        out["data"] = [str(u) for u in inp["urls"]]
    if inp.get("image"):
        out["input_image"] = str(inp["image"])
    if inp.get("volumeSource") is not None:
        hp = _host_path(inp["volumeSource"])
        out["data_volume"] = hp  # None: the caller must give --data
        if hp:
            out["data"] = [hp]
    outp = tuning.get("output") or {}
    if outp.get("image"):
        out["output_image"] = str(outp["image"])
        secret = outp.get("imagePushSecret")
        if secret:
            out["push_secret_name"] = secret
            found = [d for _, d in docs if d.get("kind") == "Secret" and (d.get("metadata") or {}).get("name") == secret]
            if found:
                out["push_secret"] = _secret_config(found[0])
    if outp.get("volumeSource") is not None:
        hp = _host_path(outp["volumeSource"])
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
