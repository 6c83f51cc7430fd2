"""Conformance kit for preset plugins: what every ``kaito_register_presets`` plugin must satisfy.

A preset plugin's own tests call :func:`check_preset_plugin` with its entry-point name (or its
distribution name); the check goes through the INSTALLED entry point and the public registry,
like a user's ``kaito plan`` would, and fails with every problem found at once::

    from kaito_core.testing.presets import check_preset_plugin

    def test_conformance():
        check_preset_plugin("mistral")

:func:`upstream_problems` compares one preset with upstream KAITO's data (a ``supported_models``
entry and, when there is one, its ``model_catalog`` entry), for plugins that port upstream presets.
"""

from __future__ import annotations

from typing import Any, Mapping

from kaito_core import sizing
from kaito_core.types import ModelPreset

__all__ = ["check_preset_plugin", "preset_problems", "upstream_problems", "is_instruct", "render_chat",
           "upstream_repo_and_commit"]

GIB = 2**30
# Name markers of chat/instruction-tuned models (upstream's names and Hugging Face ids): these
# are served through /v1/chat/completions and need a chat template.
INSTRUCT_MARKERS = ("instruct", "-chat", "-it", "deepseek-r1", "deepseek-v3", "gpt-oss", "phi-4")


def is_instruct(preset: ModelPreset) -> bool:
    """Whether the preset is a chat model (then it must carry a chat template)."""
    text = f"{preset.name} {preset.hf_repo}".lower()
    return any(marker in text for marker in INSTRUCT_MARKERS)


def render_chat(preset: ModelPreset, content: str = "Hello from kaito") -> str:
    """The preset's chat template applied to a system + user turn, with the generation prompt."""
    import jinja2  # the runtime's own dependency; imported here so this module stays light

    env = jinja2.Environment(undefined=jinja2.ChainableUndefined)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": content}]
    return env.from_string(preset.chat_template or "").render(
        messages=messages, add_generation_prompt=True, bos_token="", eos_token="")


def _plugin(name: str, pm: Any = None) -> tuple[Any, Any]:
    from kaito_core.plugins import get_plugin_manager

    pm = pm if pm is not None else get_plugin_manager()
    for info in pm.infos.values():
        if name in (info.name, info.distribution):
            return pm, info
    installed = sorted(f"{i.name} ({i.distribution})" for i in pm.infos.values() if not i.builtin)
    raise AssertionError(f"no installed kaito plugin is called {name!r}; installed: {installed}. "
                         f"Install it from the repository: pip install -e plugins/<dir>")


def _workspace(preset: ModelPreset, instance_type: str) -> dict[str, Any]:
    preset_spec: dict[str, Any] = {"name": preset.name}
    if preset.gated:
        preset_spec["presetOptions"] = {"modelAccessSecret": "hf-token"}
    return {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "conformance"},
            "resource": {"instanceType": instance_type, "labelSelector": {"matchLabels": {"apps": "conformance"}}},
            "inference": {"preset": preset_spec}}


def preset_problems(preset: ModelPreset, registry: Any) -> list[str]:
    """Everything wrong with one registered preset (empty when it conforms)."""
    from kaito_core.api import parse_workspace, validate_workspace

    p, out = preset, []
    where = f"preset {p.name!r}"
    # A deprecated preset may leave its Hugging Face id to the generic resolver (upstream's route
    # for a model it no longer presets).
    # resolve_preset_name looks only at registered names and aliases (never at the hub).
    if not p.deprecated and registry.resolve_preset_name(p.hf_repo) != p.name:
        out.append(f"{where}: its Hugging Face id {p.hf_repo!r} does not resolve to it (add it to aliases)")
    for alias in p.aliases:
        if registry.resolve_preset_name(alias) != p.name:
            out.append(f"{where}: alias {alias!r} resolves to another preset")
    if not p.tag or not p.description or p.license == "unknown":
        out.append(f"{where}: tag, description and license must be set (got {p.tag!r}, {p.description!r}, "
                   f"{p.license!r})")
    if is_instruct(p):
        if not p.chat_template:
            out.append(f"{where}: a chat model needs a chat template")
        elif "Hello from kaito" not in render_chat(p):
            out.append(f"{where}: the chat template drops the user's message")
    for runtime, args in p.runtimes.items():
        mml = args.get("max-model-len") if isinstance(args, Mapping) else None
        if mml is not None and not (isinstance(mml, int) and 0 < mml <= p.context_length):
            out.append(f"{where}: runtimes.{runtime}.max-model-len {mml!r} must be 1..{p.context_length}")
    best = sizing.place(p, registry.instance_types)
    if not best.ok:
        out.append(f"{where}: fits no instance type of the catalog: {'; '.join(best.errors)}")
        return out
    result = validate_workspace(parse_workspace(_workspace(p, best.instance_type)), registry=registry)
    errors = [str(e) for e in result.errors]
    if p.deprecated:
        if not any("deprecated" in e for e in errors):
            out.append(f"{where}: deprecated, yet a Workspace naming it is not refused as deprecated")
    elif errors:
        out.append(f"{where}: a Workspace on {best.instance_type} does not validate: {'; '.join(errors)}")
    return out


def check_preset_plugin(name: str, *, plugin_manager: Any = None) -> list[ModelPreset]:
    """Assert that the installed preset plugin ``name`` (entry point or distribution) conforms.

    Checks: the plugin loaded without errors and registered presets; every preset's name and
    aliases are its own (the registry refuses collisions; this checks the HF id resolves back);
    tag, description and license are set; chat models carry a template that keeps the user's
    message; default ``max-model-len`` within the context limit; the preset fits at least one
    instance type of the catalog, and a Workspace naming it there validates (deprecated presets
    must be refused as deprecated). The revision is checked on construction (40 hex digits).

    :param plugin_manager: the manager to look in (default: the installed plugins, as
        ``kaito`` loads them).
    :returns: the plugin's presets, for further checks.
    :raises AssertionError: listing every problem.
    """
    pm, info = _plugin(name, plugin_manager)
    registry = pm.registry
    problems = [f"plugin {info.name!r}: {e}" for e in info.errors]
    names = info.registered.get("presets", [])
    if not names:
        problems.append(f"plugin {info.name!r} registers no presets")
    presets = [registry.presets[n] for n in names if n in registry.presets]
    for p in presets:
        if registry.plugin_of("presets", p.name) != info.name:
            problems.append(f"preset {p.name!r} is owned by {registry.plugin_of('presets', p.name)!r}")
        problems += preset_problems(p, registry)
    if problems:
        raise AssertionError(f"{len(problems)} problem(s) in preset plugin {info.name!r}:\n- " + "\n- ".join(problems))
    return presets


def upstream_repo_and_commit(entry: Mapping[str, Any]) -> tuple[str, str]:
    """``(org/model, commit)`` from a ``supported_models.yaml`` entry's ``version`` URL."""
    repo, commit = str(entry["version"]).split("huggingface.co/")[1].split("/commit/")
    return repo, commit


def upstream_problems(preset: ModelPreset, supported: Mapping[str, Any],
                      catalog: Mapping[str, Any] | None = None, *, weight_gib: float | None = None) -> list[str]:
    """Differences between ``preset`` and upstream's data for it.

    :param supported: the preset's ``supported_models.yaml`` entry (name, version URL, tag,
        downloadAtRuntime, deprecated).
    :param catalog: its ``model_catalog.yaml`` entry (shape, context, file size), if upstream has one.
    :param weight_gib: the size upstream serves, when it differs from the catalog's ``modelFileSize``
        (say why in the plugin).
    """
    p, out = preset, []
    repo, commit = upstream_repo_and_commit(supported)
    got = (p.name, p.hf_repo, p.revision, p.tag)
    want = (supported["name"], repo, commit, str(supported["tag"]))
    if got != want:
        out.append(f"{p.name}: (name, hf_repo, revision, tag) {got} != upstream {want}")
    source = "runtime-download" if supported.get("downloadAtRuntime") else "oci"
    if p.weights_source != source:
        out.append(f"{p.name}: weights_source {p.weights_source!r} != upstream's {source!r}")
    if bool(p.deprecated) != bool(supported.get("deprecated", False)):
        out.append(f"{p.name}: deprecated {p.deprecated!r} != upstream's {supported.get('deprecated', False)}")
    if supported.get("downloadAuthRequired") and not p.gated:
        out.append(f"{p.name}: upstream requires a Hugging Face token, the preset is not gated")
    if catalog is None:
        return out
    if p.license != catalog["license"]:
        out.append(f"{p.name}: license {p.license!r} != upstream's {catalog['license']!r}")
    if p.context_length != catalog["modelTokenLimit"] or p.num_layers != catalog["numHiddenLayers"] \
            or p.hidden_size != catalog["hiddenSize"]:
        out.append(f"{p.name}: (context, layers, hidden) {(p.context_length, p.num_layers, p.hidden_size)} != "
                   f"upstream's {(catalog['modelTokenLimit'], catalog['numHiddenLayers'], catalog['hiddenSize'])}")
    want_gib = weight_gib if weight_gib is not None else float(str(catalog["modelFileSize"]).removesuffix("Gi"))
    if abs(p.weight_gib - want_gib) > 0.01:
        out.append(f"{p.name}: weights {p.weight_gib:.2f} GiB != upstream's {want_gib:.2f} GiB")
    # KV bytes per token as upstream's generator computes them (calculateKVCacheTokenSize):
    # MLA caches kv_lora_rank + qk_rope_head_dim per layer, others 2 x kv_heads x head_dim, in 16 bits.
    if catalog.get("kvLoraRank"):
        want_kv = 2 * catalog["numHiddenLayers"] * (catalog["kvLoraRank"] + catalog["qkRopeHeadDim"])
    else:
        head_dim = catalog.get("headDim") or catalog["hiddenSize"] // catalog["numAttentionHeads"]
        want_kv = 2 * 2 * catalog["numHiddenLayers"] * catalog["numKeyValueHeads"] * head_dim
        if (p.num_attention_heads, p.num_kv_heads) != (catalog["numAttentionHeads"], catalog["numKeyValueHeads"]):
            out.append(f"{p.name}: heads {(p.num_attention_heads, p.num_kv_heads)} != upstream's "
                       f"{(catalog['numAttentionHeads'], catalog['numKeyValueHeads'])}")
    if p.kv_bytes_per_token(2) != want_kv:
        out.append(f"{p.name}: KV cache {p.kv_bytes_per_token(2):.0f} bytes/token != upstream's {want_kv}")
    return out
