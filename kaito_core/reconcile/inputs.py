"""From a Workspace, its ConfigMaps, the registry and the provisioner's catalog to the planner's
inputs: preset (or template), runtime, sizing, and every admission-time problem (pure).

Everything that sizes or refuses a Workspace is decided here, once: ``kaito plan``, ``kaito
render``, the operator, its webhook and ``kaito up`` all get the same answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import yaml

from kaito_core.api import limits, yamlsafe
from kaito_core.api.configs import vllm_int
from kaito_core.errors import KaitoError
from kaito_core.reconcile.catalog import catalog_for
from kaito_core.reconcile.rules import (partition_requirement, runtime_problems, short, template_requirement,
                                        user_parallelism)

INFERENCE_KEY = "inference_config.yaml"
TUNING_KEY = "training_config.yaml"
# Upstream's tuning default method (api/v1beta1 webhook defaults TuningSpec.Method to qlora).
DEFAULT_TUNING_METHOD = "qlora"
TUNING_METHODS = ("lora", "qlora")


@dataclass(frozen=True)
class Inputs:
    """What the planner works from. ``problems`` refuse the Workspace (admission and status)."""

    preset: Any
    requirement: Any
    problems: list[str]
    runtime: str | None = None
    found: str = ""
    method: str | None = None
    user_vllm: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


def config_doc(cm: Any, key: str) -> dict[str, Any]:
    """The YAML document under ``key`` of a ConfigMap (an API model or a plain object)."""
    if cm is None:
        return {}
    data = getattr(cm, "data", None) if not isinstance(cm, Mapping) else cm.get("data")
    text = (data or {}).get(key)
    if not text:
        return {}
    if not isinstance(text, str):
        return {}
    try:
        doc = yamlsafe.load(text)
    except yaml.YAMLError:
        return {}
    return doc if isinstance(doc, dict) else {}


def max_model_len(configmap: Mapping[str, Any] | None) -> int | None:
    """``vllm.max-model-len`` from an inference ConfigMap object, if set."""
    return _context(_section(config_doc(configmap, INFERENCE_KEY), "vllm").get("max-model-len"))


def _context(value: Any) -> int | None:
    """``vllm.max-model-len`` as vLLM reads it (4096, "4096", "32k"); None: the preset's default."""
    number = vllm_int(value, human=True)
    return number if number is not None and number > 1 else None


def _section(doc: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """``doc[key]`` when it is a mapping (a wrong type is validation's to report, by key)."""
    value = doc.get(key)
    return value if isinstance(value, Mapping) else {}


def tuning_method(ws: Any) -> str | None:
    """The one meaning of an unset ``tuning.method``: upstream's default, qlora."""
    if ws.tuning is None:
        return None
    return ws.tuning.method or DEFAULT_TUNING_METHOD


def runtime_of(ws: Any, preset: Any) -> str:
    if ws.tuning is not None:
        return "transformers"
    if ws.runtime_annotation:
        return ws.runtime_annotation
    return preset.default_runtime if preset is not None else "transformers"


def lookup_preset(registry: Any, name: str, path: str = "inference.preset.name") -> tuple[Any, str, str]:
    """(preset or None, how it was found, error led by ``path``): a plugin's preset, else the
    generic resolver's."""
    from kaito_core.plugins import UnknownPreset

    try:
        preset = registry.get_preset(name)
    except UnknownPreset as exc:
        from kaito_core.builtins import hf

        try:
            candidate = len(name) <= limits.MAX_NAME and hf.is_candidate(name)
        except (OSError, ValueError):  # a "path" the file system refuses outright
            candidate = False
        if not candidate:
            return None, "", f"{path}: unknown preset {short(name)}: {exc.hint}"
        preset, why = hf.try_resolve(name)
        if preset is None:
            return None, "", f"{path}: preset {short(name)} is not installed and could not be read as a model: {why}"
    except (KaitoError, LookupError) as exc:
        return None, "", f"{path}: {exc}"
    plugin = registry.plugin_of("presets", preset.name) if hasattr(registry, "plugin_of") else None
    if plugin is None:
        return preset, f"generic preset for {name!r} ({preset.description})", ""
    return preset, f"preset {preset.name!r} from plugin {plugin!r}", ""


def _configmap(configmaps: Mapping[str, Any] | None, name: str | None) -> Any:
    return (configmaps or {}).get(name) if name else None


def resolve(ws: Any, registry: Any, *, config: Mapping[str, Any] | None = None,
            configmaps: Mapping[str, Any] | None = None, provisioner: Any = None, batch: int = 1,
            cloud: str | None = None, settings: Mapping[str, str] | None = None) -> Inputs:
    """The preset and sizing of ``ws`` (problems instead of exceptions).

    :param config: the inference ConfigMap object (older callers); ``configmaps`` (name ->
        ConfigMap) is read for both ``inference.config`` and ``tuning.config``.
    :param provisioner: sizing picks only from its catalog (its ``cloud`` / ``instance_types``).
    :param cloud: ``kaito plan --cloud``: choose among this cloud's types.
    :param settings: the provisioner's settings (e.g. Karpenter's ``CLOUD_PROVIDER``).
    """
    from kaito_core import sizing

    cms = dict(configmaps or {})
    if config is not None and ws.inference is not None and ws.inference.config:
        cms.setdefault(ws.inference.config, config)
    if limits.check(ws.to_k8s()):
        # over a bound (validation names it): nothing is sized, looked up or echoed; a template
        # Workspace still gets a requirement of nothing (the plan fails on validation's errors)
        if ws.preset_name is not None:
            return Inputs(None, None, [])
        return Inputs(None, template_requirement(ws, {}, None)[0], [])
    catalog, cat_problem = catalog_for(provisioner, registry, ws, settings)
    if ws.preset_name is None:
        req, problems = template_requirement(ws, catalog, provisioner)
        req = replace(req, configmaps=cms)
        return Inputs(None, req, ([cat_problem] if cat_problem else []) + problems, runtime=None,
                      found="inference.template: the user's pod template")
    section = "tuning" if ws.tuning is not None else "inference"
    preset, found, error = lookup_preset(registry, ws.preset_name, f"{section}.preset.name")
    if preset is None:
        return Inputs(None, None, [error])
    method = tuning_method(ws)
    runtime = runtime_of(ws, preset)
    notes: list[str] = []
    user_vllm: dict[str, Any] = {}
    if method is not None:
        cfg_name = ws.tuning.config
        doc = config_doc(_configmap(cms, cfg_name), TUNING_KEY)
        args = _section(_section(doc, "training_config"), "TrainingArguments")
        value = args.get("per_device_train_batch_size")
        batch = value if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 4096 else 1
        max_len = None
    else:
        cfg_name = ws.inference.config
        user_vllm = dict(_section(config_doc(_configmap(cms, cfg_name), INFERENCE_KEY), "vllm"))
        max_len = _context(user_vllm.get("max-model-len")) if runtime == "vllm" else None
    if cfg_name and _configmap(cms, cfg_name) is None:
        notes.append(f"ConfigMap {cfg_name!r} was not given: its settings are not taken into account")
    it = ws.resource.instance_type if ws.resource is not None else None
    rt = registry.runtimes.get(runtime, runtime) if hasattr(registry, "runtimes") else runtime
    problems = [cat_problem] if cat_problem else []
    if ws.resource is not None and getattr(ws.resource, "partition", None) is not None:
        req, part_problems = partition_requirement(ws, preset, runtime, provisioner, max_model_len=max_len)
        problems += part_problems
    else:
        # an unknown tuning.method is validation's error (named there); size as upstream's default
        sized = method if method is None or method in TUNING_METHODS else DEFAULT_TUNING_METHOD
        req = sizing.place(preset, catalog, instance_type=it, runtime=rt, max_model_len=max_len, batch=batch,
                           method=sized, cloud=cloud)
    req = replace(req, configmaps=cms, errors=tuple(_lead(e, section) for e in req.errors))
    if it is not None and it not in catalog and it in getattr(registry, "instance_types", {}):
        problems.append(_wrong_cloud(it, registry, provisioner))
    problems += runtime_problems(ws, preset, runtime, registry)
    if method is None and runtime == "vllm":
        problems += user_parallelism(user_vllm, req, cfg_name)
    return Inputs(preset, req, problems, runtime=runtime, found=found, method=method, user_vllm=user_vllm,
                  notes=tuple(notes))


_PATH_LED = re.compile(r"(resource|inference|tuning|metadata)[\w.\[\]/-]*: ")


def _lead(error: str, section: str) -> str:
    """A sizing error led by the field that fixes it (sizing words its errors for the reasons
    list; the user needs the field): the context length is the ConfigMap's, a runtime is the
    annotation's, everything else (GiB that do not fit) the instance type's."""
    if _PATH_LED.match(error):
        return error
    if error.startswith("resource.instanceType "):
        return "resource.instanceType: " + error[len("resource.instanceType "):]
    if error.startswith("max-model-len "):
        return f"{section}.config: {error}"
    if error.startswith("runtime "):
        return f"metadata.annotations[kaito.sh/runtime]: {error}"
    return f"resource.instanceType: {error}"


def _wrong_cloud(it: str, registry: Any, provisioner: Any) -> str:
    other = registry.instance_types[it]
    name = getattr(provisioner, "name", "?")
    return (f"resource.instanceType: {short(it)} is an {other.cloud} instance type; provisioner {name!r} cannot "
            f"create it; choose a type of its catalog (kaito plan lists the reasons)")
