"""Workspace rules beyond shape: everything upstream's admission webhook checks, and more.

``validate_workspace`` collects every problem (not just the first) as
:class:`~kaito_core.errors.FieldError` with the field path, the value, what was expected and
the fix. The same function backs ``kaito validate``, the admission webhook, ``kaito plan`` and
``kaito up``. It is pure: the plugins' registry, the previous object (for immutability on
update) and the ConfigMaps the Workspace refers to are passed in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml

from kaito_core.api import limits, template
from kaito_core.api.labels import label as _label, selector as _selector
from kaito_core.api import models as m
from kaito_core.errors import MISSING, FieldError
from kaito_core.api.configs import inference_config_problems, training_config_problems
from kaito_core.api.references import annotations, references, template_baseline
from kaito_core.netguard import allow_private_from_env, url_problem

# Checked with fullmatch: "^...$" with re.match also accepts a trailing newline ("name\n").
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# registry[:port]/path[:tag][@sha256:...]. Upstream's examples carry placeholders such as
# "ACR_REPO_HERE.azurecr.io/IMAGE_NAME_HERE:0.0.1", which must still be accepted, so case is
# not enforced here (a warning says a registry will refuse it).
IMAGE_REF = re.compile(
    r"^(?:[A-Za-z0-9_.-]+(?::[0-9]+)?/)?[A-Za-z0-9_]+(?:[._-]+[A-Za-z0-9_]+)*(?:/[A-Za-z0-9_]+(?:[._-]+[A-Za-z0-9_]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$")


def _image(path: str, ref: str, r: "ValidationResult", hint: str = "expected registry/repository[:tag]") -> None:
    if not IMAGE_REF.fullmatch(ref):
        r.error(path, ref, "is not a valid image reference", hint)
    elif ref.split("@")[0].rsplit(":", 1)[0].split("/", 1)[-1] != ref.split("@")[0].rsplit(":", 1)[0].split("/", 1)[-1].lower():
        r.warn(path, ref, "has uppercase letters in the repository name",
               "OCI registries require lowercase repository names; replace the placeholder")
AZURE_GPU_SKU = re.compile(r"^Standard_N[A-Za-z0-9_]+$")
MAX_ADAPTERS = limits.MAX_ADAPTERS
TUNING_METHODS = ("lora", "qlora")
PARTITION_MODES = ("mig", "accelerator")
# Fields that cannot change once the Workspace exists (upstream's webhook): changing them
# would need new nodes or a different model; the fix is a new Workspace.
IMMUTABLE = (
    ("resource.instanceType", lambda w: w.resource.instance_type if w.resource else None),
    ("resource.labelSelector", lambda w: w.resource.label_selector.to_k8s()
     if w.resource and w.resource.label_selector else None),
    ("resource.count", lambda w: w.resource.count if w.resource else None),
    ("inference.preset.name", lambda w: w.inference.preset.name if w.inference and w.inference.preset else None),
    ("tuning.preset.name", lambda w: w.tuning.preset.name if w.tuning and w.tuning.preset else None),
    ("tuning.method", lambda w: w.tuning.method if w.tuning else None),
    ("tuning.input", lambda w: w.tuning.input.to_k8s() if w.tuning and w.tuning.input else None),
)


@dataclass
class ValidationResult:
    errors: list[FieldError] = field(default_factory=list)
    warnings: list[FieldError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def error(self, path: str, value: Any, message: str, hint: str = "") -> None:
        self.errors.append(FieldError(path, value, message, hint))

    def warn(self, path: str, value: Any, message: str, hint: str = "") -> None:
        self.warnings.append(FieldError(path, value, message, hint))


def validate_workspace(ws: m.Workspace, *, registry: Any = None, old: m.Workspace | None = None,
                       configmaps: Mapping[str, m.ConfigMap] | None = None) -> ValidationResult:
    """Check ``ws`` (and, on update, that immutable fields match ``old``).

    :param registry: a :class:`kaito_core.plugins.Registry`; ``None`` loads the default one.
    :param configmaps: ConfigMaps by name, to check ``inference.config`` / ``tuning.config``
        when they are at hand (a missing one is only a warning: it may be created later).
    """
    if registry is None:
        from kaito_core.plugins import get_registry

        registry = get_registry()
    r = ValidationResult()
    r.errors.extend(limits.check(ws.to_k8s()))
    if r.errors:
        # sizing and node planning must not run with an unbounded count, nor every later message
        # echo a 10 MB value: the bounds are reported alone, first
        return r
    _metadata(ws, r)
    for key, value in (ws.metadata.labels or {}).items():
        _label("metadata.labels", key, value, r)  # the API server refuses bad labels of any object
    if (ws.inference is None) == (ws.tuning is None):
        both = ws.inference is not None
        r.error("inference" if both else "<root>", MISSING,
                "exactly one of 'inference' or 'tuning' must be set" + (", not both" if both else ""),
                "a Workspace either serves a model (inference) or fine-tunes one (tuning)")
    preset = None
    if ws.inference is not None:
        preset = _inference(ws, ws.inference, registry, r)
    if ws.tuning is not None:
        preset = _tuning(ws, ws.tuning, registry, r)
    _resource(ws, registry, preset, r)
    annotations(ws, preset, registry, r)
    references(ws, r)
    if ws.inference is not None and isinstance(ws.inference.template, dict):
        template_baseline(ws.inference.template, r)
    if configmaps is not None:
        _configs(ws, configmaps, r)
    if old is not None:
        _immutable(ws, old, r)
    return r


# -- metadata -------------------------------------------------------------------------------


def _metadata(ws: m.Workspace, r: ValidationResult) -> None:
    name = ws.metadata.name
    if not name:
        r.error("metadata.name", MISSING, "is required", "give the Workspace a name such as 'phi-3-mini'")
    elif len(name) > 63 or not DNS1123_LABEL.fullmatch(name):
        r.error("metadata.name", name, "must be a DNS-1123 label: lowercase letters, digits and '-', "
                "starting and ending with a letter or digit, at most 63 characters",
                f"for example {_suggest_label(name)!r}")
    ns = ws.metadata.namespace
    if ns is not None and (len(ns) > 63 or not DNS1123_LABEL.fullmatch(ns)):
        r.error("metadata.namespace", ns, "must be a DNS-1123 label", f"for example {_suggest_label(ns)!r}")


def _suggest_label(text: str) -> str:
    s = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return (s or "workspace")[:63].rstrip("-")


# -- resource -------------------------------------------------------------------------------


def _resource(ws: m.Workspace, registry: Any, preset: Any, r: ValidationResult) -> None:
    res = ws.resource
    if res is None:
        r.error("resource", MISSING, "is required",
                "add 'resource: {instanceType: ..., labelSelector: {matchLabels: {apps: <name>}}}'")
        return
    if res.label_selector is None:
        r.error("resource.labelSelector", MISSING, "is required",
                "nodes for this Workspace are found by label, e.g. labelSelector: {matchLabels: {apps: my-model}}")
    else:
        _selector(res.label_selector, r)
    if res.count is not None:
        if res.count < 1:
            r.error("resource.count", res.count, "must be at least 1")
        elif ws.tuning is not None and res.count > 1:
            r.error("resource.count", res.count, "must be 1 for tuning", "tuning runs on a single node")
        elif res.count > 1:  # 1 is the CRD's default: every Workspace has it
            r.warn("resource.count", res.count, "is deprecated; the node count is computed from the model's size")
    if res.partition is not None and res.partition.mode not in PARTITION_MODES:
        # upstream's CRD: enum [mig, accelerator]
        r.error("resource.partition.mode", res.partition.mode, f"must be one of {', '.join(PARTITION_MODES)}",
                "mig: one MIG slice named by profile; accelerator: count whole GPUs")
    if res.preferred_nodes is not None:
        for i, node in enumerate(res.preferred_nodes):
            if not DNS1123_SUBDOMAIN.fullmatch(node) or len(node) > 253:
                r.error(f"resource.preferredNodes[{i}]", node, "must be a node name (DNS-1123 subdomain)")
    it_name = res.instance_type
    if it_name is None:
        return
    types = getattr(registry, "instance_types", {}) or {}
    it = types.get(it_name)
    if it is None:
        import difflib

        close = difflib.get_close_matches(it_name, list(types), n=1, cutoff=0.85)
        if close:
            r.error("resource.instanceType", it_name, "is not a known GPU instance type",
                    f"did you mean {close[0]!r}?")
        elif AZURE_GPU_SKU.fullmatch(it_name):
            # upstream accepts any Azure N-series SKU; we cannot check its GPU memory
            r.warn("resource.instanceType", it_name, "is not in the installed instance catalogs; "
                   "GPU memory cannot be checked", "set kaito.sh/bypass-resource-checks if this is intended")
        elif types:
            r.error("resource.instanceType", it_name, "is not a known GPU instance type",
                    "see `kaito plan` for types that fit, or install the provisioner plugin for your cloud")
        return
    if preset is not None and not ws.bypass_resource_checks:
        # Sizing decides fit (weights + KV cache + overhead against usable GPU memory, and
        # multi-node where the runtime and preset allow it); upstream only compares weights.
        from kaito_core.sizing import place

        runtime = ws.runtime_annotation if ws.runtime_annotation in preset.runtimes else None
        method = ws.tuning.method if ws.tuning is not None else None
        if method is not None and method not in TUNING_METHODS:
            return  # reported on tuning.method
        req = place(preset, types, instance_type=it_name, runtime=runtime, method=method)
        if req.errors:
            r.error("resource.instanceType", it_name, "; ".join(req.errors),
                    "or set the annotation kaito.sh/bypass-resource-checks: \"True\"")


# -- presets --------------------------------------------------------------------------------


def _preset(spec: m.PresetSpec, path: str, registry: Any, r: ValidationResult) -> Any:
    from kaito_core.plugins import UnknownPreset

    if spec.access_mode is not None:
        r.warn(f"{path}.accessMode", spec.access_mode, "is deprecated and ignored",
               "private images are set with presetOptions.image and imagePullSecrets")
    opts = spec.preset_options
    if opts is not None:
        if opts.image is not None:
            _image(f"{path}.presetOptions.image", opts.image, r)
        for i, s in enumerate(opts.image_pull_secrets or []):
            if not DNS1123_SUBDOMAIN.fullmatch(s):
                r.error(f"{path}.presetOptions.imagePullSecrets[{i}]", s, "must be a Secret name")
        if opts.model_access_secret is not None and not DNS1123_SUBDOMAIN.fullmatch(opts.model_access_secret):
            r.error(f"{path}.presetOptions.modelAccessSecret", opts.model_access_secret, "must be a Secret name")
    try:
        preset = registry.get_preset(spec.name)
    except UnknownPreset as exc:
        r.error(f"{path}.name", spec.name, "is not a known preset", exc.hint)
        return None
    except LookupError as exc:
        r.error(f"{path}.name", spec.name, "is not a known preset", str(exc))
        return None
    if preset.deprecated:
        r.error(f"{path}.name", spec.name, f"is deprecated: {preset.deprecated}",
                "pick a newer preset (`kaito presets list`)")
    if preset.gated and not (opts and opts.model_access_secret):
        r.error(f"{path}.presetOptions.modelAccessSecret", MISSING,
                f"is required: {preset.name}'s weights are gated on Hugging Face",
                "create a Secret with key HF_TOKEN and name it in presetOptions.modelAccessSecret")
    return preset


def _inference(ws: m.Workspace, inf: m.InferenceSpec, registry: Any, r: ValidationResult) -> Any:
    preset = None
    if (inf.preset is None) == (inf.template is None):
        r.error("inference", MISSING, "exactly one of 'inference.preset' or 'inference.template' must be set"
                + (", not both" if inf.preset is not None else ""),
                "use preset.name for a known model, or template for your own pod")
    if inf.preset is not None:
        preset = _preset(inf.preset, "inference.preset", registry, r)
    if inf.template is not None:
        template.check(inf.template, r)
    if inf.config is not None and not DNS1123_SUBDOMAIN.fullmatch(inf.config):
        r.error("inference.config", inf.config, "must be a ConfigMap name (DNS-1123 subdomain)")
    adapters = inf.adapters or []
    if adapters and inf.preset is None:
        r.error("inference.adapters", len(adapters), "need inference.preset", "adapters apply to a preset model")
    seen: dict[str, int] = {}
    for i, ad in enumerate(adapters):
        p = f"inference.adapters[{i}]"
        name = ad.source.name
        if not name:
            r.error(f"{p}.source.name", MISSING, "is required", "the adapter is served as model '<name>'")
        elif len(name) > 63 or not DNS1123_LABEL.fullmatch(name):
            r.error(f"{p}.source.name", name, "must be a DNS-1123 label", f"for example {_suggest_label(name)!r}")
        elif name in seen:
            r.error(f"{p}.source.name", name, f"is already used by inference.adapters[{seen[name]}]",
                    "adapter names must be unique")
        else:
            seen[name] = i
        kinds = [k for k in ("image", "volume_source", "urls") if getattr(ad.source, k)]
        if len(kinds) != 1:
            r.error(f"{p}.source", MISSING if not kinds else kinds,
                    "must set exactly one of image or volumeSource" + (", not several" if kinds else ""))
        if ad.source.image is not None:
            _image(f"{p}.source.image", ad.source.image, r)
        if ad.strength is not None:
            try:
                strength = float(ad.strength)
            except ValueError:
                r.error(f"{p}.strength", ad.strength, "must be a number between 0 and 1, as a string",
                        'for example strength: "0.5"')
            else:
                if not 0.0 <= strength <= 1.0:
                    r.error(f"{p}.strength", ad.strength, "must be between 0 and 1")
    return preset


def _tuning(ws: m.Workspace, tun: m.TuningSpec, registry: Any, r: ValidationResult) -> Any:
    preset = None
    if tun.preset is None:
        r.error("tuning.preset", MISSING, "is required", "name the model to tune, e.g. preset: {name: phi-3-mini-4k-instruct}")
    else:
        preset = _preset(tun.preset, "tuning.preset", registry, r)
    if tun.method is None:
        r.error("tuning.method", MISSING, "is required", "lora or qlora")
    elif tun.method not in TUNING_METHODS:
        r.error("tuning.method", tun.method, "must be 'lora' or 'qlora'")
    elif preset is not None:
        recipe = preset.tuning
        if recipe is None:
            r.error("tuning.preset.name", preset.name, "cannot be tuned: the preset has no tuning recipe")
        elif tun.method not in recipe.methods:
            r.error("tuning.method", tun.method, f"is not supported by {preset.name}",
                    f"supported: {', '.join(recipe.methods)}")
    if tun.config is not None and not DNS1123_SUBDOMAIN.fullmatch(tun.config):
        r.error("tuning.config", tun.config, "must be a ConfigMap name (DNS-1123 subdomain)")
    if tun.input is None:
        r.error("tuning.input", MISSING, "is required", "set one of urls, image or volumeSource")
    else:
        src = tun.input
        kinds = [k for k in ("urls", "image", "volume_source") if getattr(src, k) is not None]
        if len(kinds) != 1:
            r.error("tuning.input", MISSING if not kinds else [_camel(k) for k in kinds],
                    "must set exactly one of urls, image or volumeSource" + (", not several" if kinds else ""))
        if src.urls is not None:
            if not src.urls:
                r.error("tuning.input.urls", src.urls, "must not be empty")
            for i, url in enumerate(src.urls):
                # KAITO_ALLOW_PRIVATE_URLS=1 on the operator (chart: extraEnv) admits in-cluster
                # data servers; the Job's downloader then gets the same setting.
                problem = url_problem(url, allow_private=allow_private_from_env())
                if problem:
                    r.error(f"tuning.input.urls[{i}]", url, problem,
                            "data must come from a public http(s) URL, an image or a volume (or set "
                            "KAITO_ALLOW_PRIVATE_URLS=1 on the operator for in-cluster data servers)")
        if src.image is not None:
            _image("tuning.input.image", src.image, r)
    if tun.output is None:
        r.error("tuning.output", MISSING, "is required", "set image (+ imagePushSecret) or volumeSource")
    else:
        out = tun.output
        kinds = [k for k in ("image", "volume_source") if getattr(out, k) is not None]
        if len(kinds) != 1:
            r.error("tuning.output", MISSING if not kinds else [_camel(k) for k in kinds],
                    "must set exactly one of image or volumeSource" + (", not both" if kinds else ""))
        if out.image is not None:
            _image("tuning.output.image", out.image, r)
            if not out.image_push_secret:
                r.error("tuning.output.imagePushSecret", MISSING, "is required when output.image is set",
                        "a docker-registry Secret with push rights to the registry")
        elif out.image_push_secret is not None:
            r.warn("tuning.output.imagePushSecret", out.image_push_secret, "is ignored without output.image")
    return preset


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


# -- configs --------------------------------------------------------------------------------


def _configs(ws: m.Workspace, configmaps: Mapping[str, m.ConfigMap], r: ValidationResult) -> None:
    checks = (("inference", ws.inference, inference_config_problems, "the pods start"),
              ("tuning", ws.tuning, training_config_problems, "the Job starts"))
    for section, spec, problems_of, before in checks:
        if spec is None or not spec.config:
            continue
        path = f"{section}.config"
        cm = configmaps.get(spec.config)
        if cm is None:
            r.warn(path, spec.config, "ConfigMap not found here",
                   f"it must exist in the Workspace's namespace before {before}")
            continue
        for problem in problems_of(cm):
            r.errors.append(FieldError(path, spec.config, problem))


def _immutable(ws: m.Workspace, old: m.Workspace, r: ValidationResult) -> None:
    if (ws.tuning is None) != (old.tuning is None):
        r.error("inference" if ws.inference is not None else "tuning", MISSING,
                "cannot switch a Workspace between inference and tuning", "create a new Workspace")
        return
    for path, get in IMMUTABLE:
        before, after = get(old), get(ws)
        if before != after:
            r.error(path, after, f"is immutable (was {before!r})",
                    "delete and re-create the Workspace to change it")
