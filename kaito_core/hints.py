"""What to tell a user whose Workspace names a preset no installed plugin provides.

Every sentence must be true for this installation: the installed preset whose name is closest
(difflib), the plugin family that provides the name when that plugin is one of this repository's
``plugins/`` distributions (installed from the repository: nothing is published on PyPI), what
upstream KAITO did with presets it removed or deprecated, and the generic ``org/model`` route.
Standard library only: the operator's admission webhook calls this.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["FAMILIES", "RETIRED", "Family", "Retired", "family_for", "retired", "closest_preset",
           "unknown_preset_hint", "plugins_dir", "broken_plugins"]


@dataclass(frozen=True)
class Family:
    """A preset plugin of this repository: ``plugins/<directory>``, entry point ``entry``."""

    entry: str
    directory: str
    prefixes: tuple[str, ...]

    @property
    def distribution(self) -> str:
        return f"kaito-preset-{self.directory}"


# Upstream v0.12's preset families and the plugin of this repository that ports each one
# (tests/presets checks that every directory exists with this entry point, and the reverse).
FAMILIES: tuple[Family, ...] = (
    Family("phi3", "phi3", ("phi-",)),
    Family("llama", "llama", ("llama-",)),
    Family("falcon", "falcon", ("falcon-",)),
    Family("mistral", "mistral", ("mistral-", "ministral-")),
    Family("qwen", "qwen", ("qwen",)),
    Family("deepseek", "deepseek", ("deepseek-",)),
    Family("gemma", "gemma", ("gemma-",)),
    Family("gptoss", "gptoss", ("gpt-oss",)),
)


@dataclass(frozen=True)
class Retired:
    """A preset upstream KAITO removed or deprecated: what upstream says, and what to use."""

    what: str
    instead: tuple[str, ...]


_LLAMA2 = ("removed by upstream KAITO in v0.4.6 together with every Llama 2 preset "
           "(kaito-project/kaito#1091, which added the downloadable Llama 3 presets)")
_PHI2 = ("deprecated by upstream KAITO: its preset was removed and the admission webhook refuses it "
         "(kaito-project/kaito#1667); v0.12's supported_models.yaml marks phi-2 deprecated, and vLLM's "
         "v1 engine no longer serves Phi-2 (kaito-project/kaito#1369)")
RETIRED: dict[str, Retired] = {
    **{n: Retired(_LLAMA2, ("llama-3.1-8b-instruct",)) for n in
       ("llama-2-7b", "llama-2-7b-chat", "llama-2-13b", "llama-2-13b-chat")},
    **{n: Retired(_LLAMA2, ("llama-3.3-70b-instruct",)) for n in ("llama-2-70b", "llama-2-70b-chat")},
    "phi-2": Retired(_PHI2, ("phi-3-mini-4k-instruct", "phi-4-mini-instruct")),
}


def plugins_dir() -> Path:
    """The ``plugins/`` folder of the repository this kaito_core runs from (may not exist)."""
    return Path(__file__).resolve().parent.parent / "plugins"


def family_for(name: str) -> Family | None:
    """The repository plugin whose presets share ``name``'s prefix (longest prefix wins)."""
    lower = name.lower()
    matches = [(len(p), f) for f in FAMILIES for p in f.prefixes if lower.startswith(p)]
    return max(matches, key=lambda m: m[0])[1] if matches else None


def retired(name: str) -> Retired | None:
    return RETIRED.get(name.lower())


def closest_preset(name: str, registry: Any) -> str | None:
    """The installed preset (or alias, reported as its preset) closest to ``name``, if any is close."""
    presets = dict(getattr(registry, "presets", {}) or {})
    aliases = {str(a).lower(): n for a, n in (getattr(registry, "aliases", {}) or {}).items()}
    candidates = {n.lower(): n for n in presets} | aliases
    found = difflib.get_close_matches(name.lower(), list(candidates), n=1, cutoff=0.6)
    return candidates[found[0]] if found else None


def _install(family: Family) -> str:
    where = plugins_dir() / family.directory
    if (where / "pyproject.toml").is_file():
        return f"install it from this kaito repository: pip install -e {where}"
    return (f"install it from a kaito repository checkout: pip install ./plugins/{family.directory} "
            f"(it is not published on PyPI)")


def _family_sentence(family: Family, registry: Any) -> str:
    info = (getattr(registry, "plugins", {}) or {}).get(family.entry)
    if info is None:
        return f"presets named like this come from the {family.distribution} plugin, which is not installed: " \
               + _install(family)
    if getattr(info, "blocked", False):
        return f"the {family.distribution} plugin provides this family but is blocked by KAITO_DISABLE_PLUGINS"
    if getattr(info, "errors", None):
        return f"the {family.distribution} plugin is installed but broken: see `kaito plugins doctor`"
    owner = getattr(registry, "owner", {}) or {}
    have = sorted(n for n in getattr(registry, "presets", {}) if owner.get(("presets", n)) == family.entry)
    return f"the installed {family.distribution} plugin provides {', '.join(have) or 'no presets'}"


def unknown_preset_hint(name: str, registry: Any) -> str:
    """A fix for a Workspace naming ``name``, which no installed plugin provides.

    :param registry: a :class:`kaito_core.plugins.Registry` (``presets``, ``aliases``,
        ``plugins``, ``owner`` are read; nothing is loaded or installed).
    """
    presets = getattr(registry, "presets", {}) or {}
    parts: list[str] = []
    gone = retired(name)
    if gone is not None:
        usable = [n for n in gone.instead if n in presets]
        parts.append(f"{name} was {gone.what}; use {' or '.join(gone.instead)} instead"
                     + ("" if usable else " (from the plugin named below)"))
    family = family_for(name)
    near = closest_preset(name, registry) if gone is None else None
    if near is not None:
        parts.append(f"did you mean {near!r}?")
    if family is not None and (gone is None or not all(n in presets for n in gone.instead)):
        parts.append(_family_sentence(family, registry))
    elif family is None and gone is None and near is None:
        parts.append(f"no installed plugin provides it ({len(presets)} presets installed: `kaito presets list`)")
    if "/" not in name:
        parts.append("any Hugging Face model can also be named by its id 'org/model' "
                     "(kaito sizes it from its config.json)")
    broken = broken_plugins(registry)
    if broken and (family is None or family.entry not in broken):
        # a preset plugin that failed to load may be the one that provides it
        parts.append(f"{len(broken)} installed plugin(s) failed to load and may provide it: "
                     f"{', '.join(repr(b) for b in broken[:12])}{', ...' if len(broken) > 12 else ''} "
                     "(`kaito plugins doctor` says why)")
    return "; ".join(parts)


def broken_plugins(registry: Any) -> list[str]:
    """Names of the installed plugins that recorded errors (import, hooks, registrations)."""
    infos = getattr(registry, "plugins", {}) or {}
    return sorted(n for n, i in infos.items() if getattr(i, "errors", None) and not getattr(i, "blocked", False))
