"""LoRA adapters for the transformers backend: load, unload, per-request selection, strength.

All adapters live in one ``PeftModel`` next to the untouched base weights; each forward pass
passes peft's ``adapter_names`` (one per row, ``"__base__"`` for the base model), so requests
for different adapters share a batch. ``strength`` scales an adapter's LoRA delta
(``scaling = strength * alpha / r``), the per-adapter weight upstream KAITO applies when it
combines mounted adapters. Mutations run on the engine thread, between forward passes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kaito_core.runtime.loader import ModelLoadError, check_weights
from kaito_core.runtime.oci import looks_like_reference, pull_adapter
from kaito_core.runtime.options import AdapterSpec, check_adapter_name, check_strength

log = logging.getLogger("kaito.runtime.adapters")
BASE = "__base__"


@dataclass
class AdapterInfo:
    name: str
    source: str
    path: str
    strength: float
    created: int
    base_model: str | None = None
    internal: str = ""      # the name inside peft (user names may clash with torch attributes)


def resolve_source(source: str, cache_dir: Path, name: str) -> Path:
    """A directory as is; an OCI reference pulled into ``cache_dir/name``."""
    path = Path(source)
    if path.exists():
        if not (path / "adapter_config.json").is_file():
            raise ModelLoadError(f"adapter {name!r}: {source!r} has no adapter_config.json; expected a PEFT "
                                 "LoRA directory (/mnt/adapter/<name>) with adapter_config.json and "
                                 "adapter_model.safetensors")
        return path
    if looks_like_reference(source):
        # a directory per pull: a pull that timed out may still be writing into its own
        cache_dir.mkdir(parents=True, exist_ok=True)
        return pull_adapter(source, Path(tempfile.mkdtemp(prefix=f"{name}-", dir=cache_dir)))
    raise ModelLoadError(f"adapter {name!r}: source {source!r} is neither an existing directory nor an OCI "
                         "reference (REGISTRY/REPOSITORY:TAG)")


def scan_adapters_dir(root: str | os.PathLike, strengths: dict[str, float] | None = None) -> list[AdapterSpec]:
    """Every ``root/<name>`` holding ``adapter_config.json`` (upstream's /mnt/adapter layout).

    Strength: ``strengths[name]`` (``--adapter-strength``), else an environment variable named
    like the adapter, as upstream's transformers server reads it (``os.getenv(adapter_name,
    '1.0')``), else 1.0.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    specs = []
    for sub in sorted(root.iterdir()):
        if (sub / "adapter_config.json").is_file():
            name = check_adapter_name(sub.name, where=f"adapter directory {str(sub)!r}")
            if strengths and sub.name in strengths:
                strength = check_strength(strengths[sub.name], where=f"--adapter-strength {sub.name}")
            else:
                strength = check_strength(os.environ.get(sub.name, "1.0"), where=f"env {sub.name}")
            specs.append(AdapterSpec(name=name, source=str(sub), strength=strength))
    return specs


def check_compatible(base_model: Any, path: Path, name: str) -> None:
    """Refuse an adapter trained for another model before peft half-loads it: every LoRA
    matrix must sit on a module of this model with matching in/out features."""
    from safetensors import safe_open

    weights = path / "adapter_model.safetensors"
    if not weights.is_file():
        return  # a pickle adapter (allowed explicitly): peft reports what does not fit
    with safe_open(str(weights), framework="pt") as f:
        shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
    for key, shape in sorted(shapes.items()):
        for part, dim in ((".lora_A.", 1), (".lora_B.", 0)):
            if part not in key:
                continue
            module_path = key.split(part)[0].removeprefix("base_model.model.")
            try:
                module = base_model.get_submodule(module_path)
            except AttributeError:
                raise ModelLoadError(f"adapter {name!r} was trained for another model: it adapts module "
                                     f"{module_path!r}, which this model does not have") from None
            features = getattr(module, "in_features" if dim == 1 else "out_features", None)
            if features is not None and len(shape) == 2 and shape[dim] != features:
                raise ModelLoadError(f"adapter {name!r} was trained for another model: module {module_path!r} has "
                                     f"{features} {'input' if dim == 1 else 'output'} features here, the adapter "
                                     f"expects {shape[dim]}")


class AdapterSet:
    """The adapters loaded into one base model. Not thread-safe: call from the engine thread."""

    def __init__(self, base_model: Any, *, allow_pickle: bool = False, cache_dir: str | None = None):
        self.base = base_model
        self.peft: Any = None
        self.allow_pickle = allow_pickle
        self.cache_dir = Path(cache_dir or tempfile.mkdtemp(prefix="kaito-adapters-"))
        self.adapters: dict[str, AdapterInfo] = {}
        self._counter = 0

    @property
    def model(self) -> Any:
        """What the engine calls: the PeftModel once an adapter was loaded, else the base model."""
        return self.peft if self.peft is not None else self.base

    def forward_kwargs(self, rows: list[Any]) -> dict[str, Any]:
        if self.peft is None:
            return {}
        names = {n: i.internal for n, i in self.adapters.items()}
        return {"adapter_names": [names.get(r.adapter, BASE) if r.adapter else BASE for r in rows]}

    def fetch(self, name: str, source: str) -> Path:
        """Resolve ``source`` to a local directory (pulling OCI references). Any thread."""
        check_adapter_name(name)
        return resolve_source(source, self.cache_dir, name)

    def load(self, name: str, source: str, strength: float = 1.0, path: Path | None = None) -> AdapterInfo:
        """Load adapter ``name`` (from ``path`` when already fetched). Engine thread only."""
        from peft import PeftModel

        check_adapter_name(name)
        strength = check_strength(strength, where=f"adapter {name!r}")
        if name in self.adapters:
            raise ModelLoadError(f"adapter {name!r} is already loaded; unload it first to replace it")
        path = path or resolve_source(source, self.cache_dir, name)
        check_weights(path, allow_pickle=self.allow_pickle, what=f"adapter {name!r}")
        check_compatible(self.base, path, name)
        try:
            config = json.loads((path / "adapter_config.json").read_text())
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"adapter {name!r}: adapter_config.json is not valid JSON ({exc})") from None
        if str(config.get("peft_type", "LORA")).upper() != "LORA":
            raise ModelLoadError(f"adapter {name!r}: peft_type is {config.get('peft_type')!r}; only LoRA adapters "
                                 "can be served")
        # peft keeps adapters in torch ModuleDicts: a user's name like "half" or "v1.2" would
        # clash with a module attribute or be refused, so peft sees a generated name.
        self._counter += 1
        internal = f"kaito_adapter_{self._counter}"
        kwargs = {"adapter_name": internal, "is_trainable": False,
                  "use_safetensors": None if self.allow_pickle else True}
        try:
            if self.peft is None:
                self.peft = PeftModel.from_pretrained(self.base, str(path), **kwargs)
            else:
                self.peft.load_adapter(str(path), **kwargs)
        except TypeError:  # a peft without use_safetensors: weights were checked above
            kwargs.pop("use_safetensors")
            if self.peft is None:
                self.peft = PeftModel.from_pretrained(self.base, str(path), **kwargs)
            else:
                self.peft.load_adapter(str(path), **kwargs)
        except Exception as exc:  # noqa: BLE001 - a wrong base model, missing modules, bad tensors
            self._forget(internal)
            raise ModelLoadError(f"adapter {name!r} from {source!r} does not fit this model: "
                                 f"{type(exc).__name__}: {exc}") from exc
        self.peft.eval()
        self._set_strength(internal, strength)
        info = AdapterInfo(name=name, source=source, path=str(path), strength=strength, created=int(time.time()),
                           base_model=config.get("base_model_name_or_path"), internal=internal)
        self.adapters[name] = info
        log.info("adapter %s loaded from %s (strength %.2f)", name, source, strength)
        return info

    def _set_strength(self, name: str, strength: float) -> None:
        from peft.tuners.lora import LoraLayer

        for module in self.peft.modules():
            if isinstance(module, LoraLayer):
                module.set_scale(name, strength)

    def _forget(self, name: str) -> None:
        if self.peft is not None and name in getattr(self.peft, "peft_config", {}):
            try:
                self.peft.delete_adapter(name)
            except Exception:  # noqa: BLE001
                log.exception("cleanup of adapter %s failed", name)

    def unload(self, name: str) -> AdapterInfo:
        info = self.adapters.pop(name)
        if self.adapters:
            self.peft.delete_adapter(info.internal)
        else:
            # peft cannot run with no adapter left: take its LoRA layers out, back to the base model
            self.base = self.peft.unload()
            self.peft = None
        if Path(info.path).parent == self.cache_dir:  # pulled by us, not the user's own directory
            shutil.rmtree(info.path, ignore_errors=True)
        log.info("adapter %s unloaded", name)
        return info
