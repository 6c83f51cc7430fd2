"""Hostile Workspaces, generated from real ones (deterministic: seeded, no hypothesis).

Every upstream example manifest (tests/data/reference/kaito-examples) and the repository's own
examples/ is mutated field by field: wrong types, unknown keys, missing required keys, text no
Kubernetes object can hold, huge values. Each :class:`Case` knows the field path its error must
name, so the tests can check the message, not only the exit code.
"""

from __future__ import annotations

import copy
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import yaml

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "tests" / "data" / "reference" / "kaito-examples"
SEED = 20261127
DELETE = object()


def example_files() -> list[Path]:
    files = sorted(REFERENCE.glob("*.yaml")) + sorted((REFERENCE / "v0.12.0").glob("*.yaml"))
    return files + sorted((ROOT / "examples").glob("**/*.yaml"))


def example_id(path: Path) -> str:
    return str(path.relative_to(ROOT)).replace("tests/data/reference/kaito-examples/", "")


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]


# Fields whose type the Workspace API fixes (camelCase path, no list indexes). Free-form
# objects (volumeSource, most of a pod template) are left out: any value is theirs to hold.
STRINGS = {
    "metadata.name", "metadata.namespace", "resource.instanceType", "resource.preferredNodes[]",
    "resource.labelSelector.matchLabels.*", "resource.labelSelector.matchExpressions[].key",
    "resource.labelSelector.matchExpressions[].values[]", "resource.partition.profile",
    "inference.preset.name", "inference.preset.presetOptions.image",
    "inference.preset.presetOptions.imagePullSecrets[]", "inference.preset.presetOptions.modelAccessSecret",
    "inference.config", "inference.adapters[].source.name", "inference.adapters[].source.image",
    "inference.adapters[].source.urls[]", "inference.adapters[].source.imagePullSecrets[]",
    "inference.adapters[].strength", "tuning.preset.name", "tuning.method", "tuning.config",
    "tuning.input.urls[]", "tuning.input.image", "tuning.input.imagePullSecrets[]", "tuning.output.image",
    "tuning.output.imagePushSecret", "metadata.annotations.*", "metadata.labels.*",
}
INTS = {"resource.count", "resource.partition.count"}
MODELS = {"", "metadata", "resource", "resource.labelSelector", "resource.partition", "inference",
          "inference.preset", "inference.preset.presetOptions", "inference.adapters[]",
          "inference.adapters[].source", "tuning", "tuning.preset", "tuning.input", "tuning.output"}
REQUIRED = {"inference.preset.name", "tuning.method", "resource.labelSelector", "metadata.name",
            "inference.adapters[].source", "inference.adapters[].source.name", "tuning.input", "tuning.output"}
# pod template fields whose type kaito checks (kaito_core.api.template)
TEMPLATE = {"inference.template.spec.containers": "list", "inference.template.spec.containers[]": "map",
            "inference.template.spec.containers[].args": "strings",
            "inference.template.spec.containers[].command": "strings",
            "inference.template.spec.containers[].name": "name",
            "inference.template.spec.containers[].resources.limits.*": "quantity",
            "inference.template.spec.containers[].resources.requests.*": "quantity",
            "inference.template.spec": "map"}

WRONG_FOR_STRING = [["x"], 7, True, 1.5, {"a": "b"}, 2**70]
WRONG_FOR_INT = ["3", 1.5, True, -1, 0, 2**70, ["1"]]
BAD_TEXT = ["\x00", "\ud800"]


@dataclass
class Case:
    """One mutated file: ``docs`` (every document), the field the error must name, and the
    value it must show (``None``: no value to show, e.g. a missing key)."""

    source: str
    kind: str
    docs: list[dict]
    path: str
    value: Any = None
    show_value: bool = True

    @property
    def id(self) -> str:
        shown = repr(self.value)
        return f"{self.source}:{self.path}:{self.kind}:{shown[:30]}"


def schema_path(loc: tuple) -> str:
    """``('inference', 'adapters', 0, 'strength')`` -> ``inference.adapters[].strength``."""
    out = ""
    for part in loc:
        out += "[]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out


def field_path(loc: tuple) -> str:
    """``('inference', 'adapters', 0, 'strength')`` -> ``inference.adapters[0].strength``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out


def _schema_of(loc: tuple) -> str:
    """The schema key of ``loc``: map entries (labels, annotations) as ``.*``."""
    path = schema_path(loc)
    for prefix in ("metadata.annotations.", "metadata.labels.", "resource.labelSelector.matchLabels.",
                   "inference.template.spec.containers[].resources.limits.",
                   "inference.template.spec.containers[].resources.requests."):
        if path.startswith(prefix):
            return prefix + "*"
    return path


def walk(obj: Any, loc: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield loc + (key,), value
            yield from walk(value, loc + (key,))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield loc + (i,), value
            yield from walk(value, loc + (i,))


def set_at(obj: Any, loc: tuple, value: Any) -> None:
    for part in loc[:-1]:
        obj = obj[part]
    if value is DELETE:
        del obj[loc[-1]]
    else:
        obj[loc[-1]] = value


def _mutated(docs: list[dict], index: int, loc: tuple, value: Any) -> list[dict]:
    out = copy.deepcopy(docs)
    set_at(out[index], loc, value)
    return out


def cases_for(path: Path, rng: random.Random, per_field: int = 2) -> list[Case]:
    """The mutations of one example file: ``per_field`` wrong values per typed field (drawn
    with ``rng``), one unknown key per object, each required key removed, bad text once per
    string field."""
    docs = documents(path)
    src = example_id(path)
    out: list[Case] = []
    for index, doc in enumerate(docs):
        if doc.get("kind") != "Workspace":
            continue
        for loc, value in list(walk(doc)):
            schema = _schema_of(loc)
            where = field_path(loc)
            if schema in STRINGS and isinstance(value, str):
                for wrong in rng.sample(WRONG_FOR_STRING, per_field):
                    out.append(Case(src, "type", _mutated(docs, index, loc, wrong), where, wrong,
                                    show_value=not isinstance(wrong, dict)))
            if schema in INTS and isinstance(value, int):
                for wrong in rng.sample(WRONG_FOR_INT, per_field):
                    out.append(Case(src, "type", _mutated(docs, index, loc, wrong), where, wrong))
            if isinstance(value, str) and (schema in STRINGS or schema.startswith("inference.template")):
                bad = value[: rng.randrange(len(value) + 1)] + rng.choice(BAD_TEXT) + "x"
                out.append(Case(src, "text", _mutated(docs, index, loc, bad), where, bad))
            if schema in MODELS and isinstance(value, dict):
                out.append(Case(src, "unknown-key", _mutated(docs, index, loc + ("bogusField",), 1),
                                f"{where}.bogusField", show_value=False))
            if schema in REQUIRED:
                out.append(Case(src, "missing", _mutated(docs, index, loc, DELETE), where, show_value=False))
            kind = TEMPLATE.get(schema)
            if kind is not None:
                wrong = {"list": 5, "map": "x", "strings": [1, 2], "name": ["c"], "quantity": "1gb"}[kind]
                out.append(Case(src, "template", _mutated(docs, index, loc, wrong), where, wrong))
        out.append(Case(src, "unknown-key", _mutated(docs, index, ("bogusTop",), {}), "bogusTop", show_value=False))
    return out


def all_cases(per_field: int = 2) -> dict[str, list[Case]]:
    """Every example file's cases, by file id (one seeded generator per file: stable ids)."""
    return {example_id(f): cases_for(f, random.Random(f"{SEED}:{example_id(f)}"), per_field)
            for f in example_files()}


_KEY_IN_BRACKETS = re.compile(r"\[([^\]0-9][^\]]*)\]")


def normalise(text: str) -> str:
    """Map keys are written ``a[key]`` by the validator and ``a.key`` by the parser: one form."""
    return _KEY_IN_BRACKETS.sub(r".\1", text)


def names_path(text: str, path: str) -> bool:
    """``text`` names ``path`` (or a field inside it) as the place of a problem."""
    text, path = normalise(text), normalise(path)
    return re.search(re.escape(path) + r"(?=[.:\[ ])", text) is not None
