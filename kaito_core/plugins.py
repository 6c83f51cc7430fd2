# Over 400 lines: the manager and the registry it fills share one contract (isolation, attribution, precedence).
"""Plugin manager: built-ins and ``kaito`` entry points, isolated, recorded, blockable.

Built-in features are plugins too (pytest's ``default_plugins``): every module in
:mod:`kaito_core.builtins` is registered as ``kaito.<module>``. Third-party plugins come from
the ``kaito`` entry-point group. A plugin that fails to import, raises inside a hook or
registers something invalid is recorded (``kaito plugins doctor`` shows it) and skipped; the
others keep working. ``KAITO_DISABLE_PLUGINS=phi3,kaito.byo`` blocks plugins by name.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import threading
import time
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable, Iterable, Mapping

import pluggy

from kaito_core import hints, hookspecs
from kaito_core.errors import ContractError, KaitoError, RegistrationError
from kaito_core.types import InstanceType, ModelPreset, Provisioner, Runtime

ENTRY_POINT_GROUP = "kaito"
DISABLE_ENV = "KAITO_DISABLE_PLUGINS"
BUILTIN_PREFIX = "kaito."

MAX_GENERIC_NAME = 253  # kaito_core.api.limits.MAX_NAME: the longest preset name a Workspace may hold
# What a plugin's import or hook may raise and the core survives: SystemExit too (a plugin
# calling sys.exit() must not end `kaito`), not KeyboardInterrupt (the user's own Ctrl-C).
PLUGIN_FAILURES = (Exception, SystemExit)
HOOKS = ("kaito_register_presets", "kaito_register_provisioners",
         "kaito_register_instance_types", "kaito_register_runtimes")
KINDS = {"kaito_register_presets": "presets", "kaito_register_provisioners": "provisioners",
         "kaito_register_instance_types": "instance_types", "kaito_register_runtimes": "runtimes"}


class UnknownPreset(KaitoError, LookupError):
    def __init__(self, name: str, hint: str):
        self.name, self.hint = name, hint
        shown = repr(name) if len(name) <= 80 else repr(name[:77]) + "..."
        super().__init__(f"unknown preset {shown}: {hint[:1000]}")


@dataclass
class PluginInfo:
    """One plugin as ``kaito plugins list`` shows it."""

    name: str
    distribution: str | None = None
    version: str | None = None
    module: str | None = None
    builtin: bool = False
    blocked: bool = False
    registered: dict[str, list[str]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    #: seconds its entry point took to import (every kaito command pays it)
    load_seconds: float | None = None

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "distribution": self.distribution, "version": self.version,
                "module": self.module, "builtin": self.builtin, "blocked": self.blocked,
                "registered": self.registered, "errors": self.errors, "load_seconds": self.load_seconds}


class Registry:
    """What the plugins registered, with who registered what."""

    def __init__(self) -> None:
        self.presets: dict[str, ModelPreset] = {}
        self.provisioners: dict[str, Provisioner] = {}
        self.instance_types: dict[str, InstanceType] = {}
        self.runtimes: dict[str, Runtime] = {}
        self.owner: dict[tuple[str, str], str] = {}  # (kind, name) -> plugin
        self.aliases: dict[str, str] = {}  # alias (lowercased) -> preset name
        self.plugins: dict[str, PluginInfo] = {}
        self._generic_reasons: dict[str, str] = {}

    # -- registration (called through the hooks' ``register`` callbacks) ------------------

    def _claim(self, kind: str, name: str, plugin: str) -> None:
        other = self.owner.get((kind, name))
        if other is not None:
            raise RegistrationError(
                f"plugin {plugin!r} registers {kind[:-1].replace('_', ' ')} {name!r}, "
                f"which plugin {other!r} already registered; uninstall one of them or block it "
                f"with {DISABLE_ENV}={plugin}")
        self.owner[(kind, name)] = plugin

    def add_preset(self, preset: Any, plugin: str) -> None:
        if not isinstance(preset, ModelPreset):
            raise ContractError(owner="register()", field="preset", value=preset,
                                expected="a kaito_core.types.ModelPreset", plugin=plugin)
        # checked again on the way in: a frozen dataclass can still be changed with
        # object.__setattr__ after it was built (transformers' AutoConfig.register checks too)
        preset.__post_init__()
        if any(not isinstance(a, str) or not a for a in preset.aliases):
            raise ContractError(owner=f"preset {preset.name!r}", field="aliases", value=preset.aliases,
                                expected="non-empty strings", plugin=plugin)
        _check_pod_facts(preset, plugin)
        keys = [preset.name.lower(), *(a.lower() for a in preset.aliases)]
        for key in keys:
            if key in self.aliases or key in self.presets:
                target = self.aliases.get(key, key)
                other = self.owner.get(("presets", target), "?")
                raise RegistrationError(
                    f"plugin {plugin!r} registers preset {preset.name!r} (name or alias {key!r}), "
                    f"which plugin {other!r} already registered as preset {target!r}; uninstall one "
                    f"of them or block it with {DISABLE_ENV}={plugin}")
        self._claim("presets", preset.name, plugin)
        self.presets[preset.name] = preset
        for alias in keys[1:]:
            self.aliases[alias] = preset.name

    def add_provisioner(self, prov: Any, plugin: str) -> None:
        name = getattr(prov, "name", None)
        if not isinstance(name, str) or not name or not isinstance(prov, Provisioner):
            raise ContractError(owner="register()", field="provisioner", value=prov,
                                expected="an object with a 'name' and desired_objects/ensure/observe/release "
                                         "(kaito_core.types.Provisioner)",
                                plugin=plugin)
        self._claim("provisioners", name, plugin)
        self.provisioners[name] = prov

    def add_instance_type(self, it: Any, plugin: str) -> None:
        if not isinstance(it, InstanceType):
            raise ContractError(owner="register()", field="instance_type", value=it,
                                expected="a kaito_core.types.InstanceType", plugin=plugin)
        existing = self.instance_types.get(it.name)
        if existing is not None:
            if existing == it:
                return  # two plugins that know the same cloud agree: fine
            other = self.owner.get(("instance_types", it.name), "?")
            raise RegistrationError(
                f"plugin {plugin!r} registers instance type {it.name!r} with facts that differ from "
                f"plugin {other!r}'s ({it} vs {existing})")
        self._claim("instance_types", it.name, plugin)
        self.instance_types[it.name] = it

    def add_runtime(self, rt: Any, plugin: str) -> None:
        if not isinstance(rt, Runtime):
            raise ContractError(owner="register()", field="runtime", value=rt,
                                expected="a kaito_core.types.Runtime", plugin=plugin)
        self._claim("runtimes", rt.name, plugin)
        self.runtimes[rt.name] = rt

    # -- lookups -------------------------------------------------------------------------

    def resolve_preset_name(self, name: str) -> str | None:
        key = name.lower()
        if name in self.presets:
            return name
        if key in self.presets:
            return key
        return self.aliases.get(key)

    def get_preset(self, name: str) -> ModelPreset:
        """The preset called ``name`` (or with that alias), else :class:`UnknownPreset` with a fix."""
        found = self.resolve_preset_name(name)
        if found is not None:
            return self.presets[found]
        generic = self._resolve_generic(name)
        if generic is not None:
            return generic
        raise UnknownPreset(name, self.unknown_preset_hint(name))

    def _resolve_generic(self, name: str) -> ModelPreset | None:
        """Any Hugging Face id ``org/model`` or local model directory, sized from its config.

        Served by the built-in ``kaito.hf`` plugin module (blockable like any plugin).
        """
        if "/" not in name or "kaito.hf" not in self.plugins or self.plugins["kaito.hf"].blocked:
            return None
        if len(name) > MAX_GENERIC_NAME:
            return None  # no model id or path is this long (the Workspace API bounds the field)
        try:
            from kaito_core.builtins import hf
        except ImportError:
            return None
        try:
            preset, reason = hf.try_resolve(name)
        except (OSError, ValueError) as exc:  # e.g. a name the file system refuses outright
            preset, reason = None, f"cannot be read as a model directory: {type(exc).__name__}"
        self._generic_reasons[name] = reason if len(reason) <= 500 else reason[:497] + "..."
        return preset

    def unknown_preset_hint(self, name: str) -> str:
        """A true fix for ``name`` (closest installed preset, its family's plugin, upstream's
        retirement story, the ``org/model`` route): :func:`kaito_core.hints.unknown_preset_hint`."""
        if name in self._generic_reasons and self._generic_reasons[name]:
            return self._generic_reasons[name]
        return hints.unknown_preset_hint(name, self)

    def plugin_of(self, kind: str, name: str) -> str | None:
        return self.owner.get((kind, name))

    @property
    def errors(self) -> list[tuple[str, str]]:
        return [(p.name, e) for p in self.plugins.values() for e in p.errors]


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _check_pod_facts(preset: ModelPreset, plugin: str) -> None:
    """What of a preset becomes pod flags and sizes nodes, checked on the way in so a plugin's
    mistake names the plugin, not a Workspace author's ValueError: engine arguments are scalars
    (or lists of them) under string keys, vLLM's sizing flags read as vLLM reads them, the image
    a reference without spaces."""
    from kaito_core.api.configs import VLLM_INTS, vllm_int

    owner = f"preset {preset.name!r}"
    for runtime, args in preset.runtimes.items():
        where = f"runtimes[{runtime!r}]"
        if not isinstance(runtime, str) or not isinstance(args, Mapping):
            raise ContractError(owner=owner, field=where, value=args, expected="a mapping engine flag -> value",
                                plugin=plugin)
        for key, value in args.items():
            ok = isinstance(key, str) and (_scalar(value) or (isinstance(value, (list, tuple))
                                                              and all(_scalar(v) for v in value)))
            if ok and runtime == "vllm" and key in VLLM_INTS:
                number = vllm_int(value, human=key == "max-model-len")
                ok = number is not None and VLLM_INTS[key][0] <= number <= VLLM_INTS[key][1]
            if not ok:
                sizing = runtime == "vllm" and key in VLLM_INTS
                expected = (f"an integer from {VLLM_INTS[key][0]} to {VLLM_INTS[key][1]} (vLLM's --{key})" if sizing
                            else "a string, number or boolean (or a list of them)")
                raise ContractError(owner=owner, field=f"{where}[{key!r}]", value=value, plugin=plugin,
                                    expected=expected)
    if preset.image and (not isinstance(preset.image, str) or not re.fullmatch(r"\S+", preset.image)):
        raise ContractError(owner=owner, field="image", value=preset.image, plugin=plugin,
                            expected="an image reference registry/repository:tag, or empty for the runtime's own")


def family_of(preset_name: str) -> str | None:
    """The entry-point name of the repository plugin whose presets share ``preset_name``'s prefix
    (``gpt-oss-20b`` -> ``gptoss``), or None: :func:`kaito_core.hints.family_for`."""
    family = hints.family_for(preset_name)
    return family.entry if family is not None else None


def disabled_from_env(environ: dict[str, str] | None = None) -> set[str]:
    env = os.environ if environ is None else environ
    return {p.strip() for p in env.get(DISABLE_ENV, "").split(",") if p.strip()}


def _describe_exc(exc: BaseException) -> str:
    if isinstance(exc, (ContractError, RegistrationError)):
        return str(exc)
    frame = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" at {frame[0].filename}:{frame[0].lineno}" if frame else ""
    return f"{type(exc).__name__}: {exc}{where}"


class KaitoPluginManager(pluggy.PluginManager):
    """A pluggy manager that remembers each plugin's distribution, version and failures."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self._registry: Registry | None = None

    # -- loading -------------------------------------------------------------------------

    def add_plugin(self, plugin: object, name: str, info: PluginInfo) -> None:
        """Register ``plugin``; a plugin with hooks that are not in the contract is refused."""
        self.infos[name] = info
        try:
            self.register(plugin, name=name)
            unknown = [h for h in dir(plugin) if h.startswith("kaito_") and h not in HOOKS
                       and callable(getattr(plugin, h, None))]
            if unknown:
                self.unregister(name=name)
                raise ContractError(owner=f"plugin module {info.module or name!r}", field=unknown[0],
                                    value=unknown[0], expected=f"one of the hooks {list(HOOKS)} "
                                    "(is the kaito-core version too old for this plugin?)")
            # pluggy only calls functions marked with the project's hookimpl: an unmarked
            # kaito_register_presets would be skipped without a word
            for hook in HOOKS:
                if callable(getattr(plugin, hook, None)) and self.parse_hookimpl_opts(plugin, hook) is None:
                    info.errors.append(f"{hook} is not marked @hookimpl (from kaito_core.hookspecs import "
                                       "hookimpl), so it is never called")
        except PLUGIN_FAILURES as exc:  # a broken plugin must never take the core down
            info.errors.append(f"could not register: {_describe_exc(exc)}")
        self._registry = None

    def load_builtins(self, disabled: set[str]) -> None:
        import kaito_core.builtins as pkg

        for mod in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
            if mod.name.startswith("_"):
                continue
            name = BUILTIN_PREFIX + mod.name
            info = PluginInfo(name=name, distribution="kaito-core", version=_version("kaito-core"),
                              module=f"kaito_core.builtins.{mod.name}", builtin=True)
            if name in disabled:
                info.blocked = True
                self.infos[name] = info
                continue
            try:
                module = importlib.import_module(info.module)
            except PLUGIN_FAILURES as exc:
                info.errors.append(f"import failed: {_describe_exc(exc)}")
                self.infos[name] = info
                continue
            self.add_plugin(module, name, info)

    def load_entry_points(self, disabled: set[str],
                          entry_points: Iterable[metadata.EntryPoint] | None = None) -> None:
        eps = metadata.entry_points(group=ENTRY_POINT_GROUP) if entry_points is None else entry_points
        for ep in eps:
            dist = getattr(ep, "dist", None)
            info = PluginInfo(name=ep.name, distribution=dist.metadata["Name"] if dist else None,
                              version=dist.version if dist else None, module=ep.value)
            if ep.name in disabled:
                info.blocked = True
                self.infos.setdefault(ep.name, info)
                continue
            if ep.name in self.infos and not self.infos[ep.name].blocked:
                # pluggy would silently drop the second one; say so instead.
                first = self.infos[ep.name]
                info.errors.append(f"entry point name {ep.name!r} is already used by "
                                   f"{first.distribution or first.module}; one of them must be renamed")
                self.infos[f"{ep.name}@{info.distribution}"] = info
                continue
            started = time.perf_counter()
            try:
                plugin = ep.load()
            except PLUGIN_FAILURES as exc:
                info.errors.append(f"import failed: {_describe_exc(exc)}")
                self.infos[ep.name] = info
                continue
            finally:
                info.load_seconds = round(time.perf_counter() - started, 3)
            self.add_plugin(plugin, ep.name, info)

    # -- the registry --------------------------------------------------------------------

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = self._build_registry()
        return self._registry

    def _build_registry(self) -> Registry:
        reg = Registry()
        reg.plugins = self.infos
        for info in self.infos.values():
            info.registered = {}
            info.errors = [e for e in info.errors if not e.startswith("hook ")]
        adders: dict[str, Callable[[Any, str], None]] = {
            "kaito_register_presets": reg.add_preset,
            "kaito_register_provisioners": reg.add_provisioner,
            "kaito_register_instance_types": reg.add_instance_type,
            "kaito_register_runtimes": reg.add_runtime,
        }
        # Call every implementation on its own, in registration order (pluggy would call LIFO and
        # aborts the whole call when one raises), so a failure is attributed and isolated.
        for hook_name in HOOKS:
            caller = getattr(self.hook, hook_name)
            for impl in sorted(caller.get_hookimpls(), key=lambda i: _precedence(i.plugin_name)):
                plugin = impl.plugin_name
                info = self.infos.setdefault(plugin, PluginInfo(name=plugin))
                names: list[str] = []

                def register(obj: Any, _plugin: str = plugin, _names: list[str] = names,
                             _add: Callable[[Any, str], None] = adders[hook_name]) -> None:
                    try:
                        _add(obj, _plugin)
                    except ContractError as exc:
                        raise exc.with_plugin(_plugin)
                    _names.append(getattr(obj, "name", repr(obj)))

                try:
                    returned = impl.function(register=register)
                except PLUGIN_FAILURES as exc:
                    info.errors.append(f"hook {hook_name} failed: {_describe_exc(exc)}")
                else:
                    if returned is not None:
                        # llm/tox-style hooks register through the callback; a returned list
                        # would otherwise vanish without a word
                        info.errors.append(f"hook {hook_name} returned {type(returned).__name__} "
                                           f"instead of None: call register(obj) for each object")
                if names:
                    info.registered.setdefault(KINDS[hook_name], []).extend(names)
        return reg


def _precedence(plugin: str) -> int:
    """Who registers first, so who keeps a contested name: the core's built-ins, then this
    repository's preset families (``phi3`` owns ``phi-*``), then every other plugin in install
    order. A third-party plugin installed earlier on sys.path cannot take over ``phi-3-...``."""
    if plugin.startswith(BUILTIN_PREFIX):
        return 0
    return 1 if plugin in {f.entry for f in hints.FAMILIES} else 2


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


_LOCK = threading.Lock()
_CACHED: KaitoPluginManager | None = None


def get_plugin_manager(*, disabled: Iterable[str] | None = None, entry_points: bool = True,
                       extra: Iterable[tuple[str, object]] = (), cached: bool = True) -> KaitoPluginManager:
    """The plugin manager with built-ins, then entry points, then ``extra`` (name, plugin).

    The default call (no arguments) is cached for the process: plugins are loaded once.
    """
    global _CACHED
    default = disabled is None and entry_points and not extra
    with _LOCK:
        if default and cached and _CACHED is not None:
            return _CACHED
        blocked = disabled_from_env() | set(disabled or ())
        pm = KaitoPluginManager()
        pm.load_builtins(blocked)
        if entry_points:
            pm.load_entry_points(blocked)
        for name, plugin in extra:
            info = PluginInfo(name=name, module=getattr(plugin, "__name__", type(plugin).__name__))
            if name in blocked:
                info.blocked = True
                pm.infos[name] = info
                continue
            pm.add_plugin(plugin, name, info)
        pm.registry  # noqa: B018 - run the hooks now, so failures are recorded in pm.infos
        if default and cached:
            _CACHED = pm
        return pm


def get_registry() -> Registry:
    """The registry of the default (cached) plugin manager."""
    return get_plugin_manager().registry


def reset_cache() -> None:
    global _CACHED
    with _LOCK:
        _CACHED = None
