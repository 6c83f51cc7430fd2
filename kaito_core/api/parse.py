"""Reading Workspaces and ConfigMaps from YAML, with errors that name the field.

``load_documents`` reads a (multi-document) YAML file; ``parse_workspace`` turns one mapping
into a :class:`~kaito_core.api.models.Workspace` or raises
:class:`~kaito_core.errors.WorkspaceInvalid` listing every problem (pydantic's errors are
translated: path like ``inference.adapters[1].strength``, the value, what was expected).
"""

from __future__ import annotations

import datetime
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Union

import yaml
from pydantic import BaseModel, ValidationError

from kaito_core.api import models as m
from kaito_core.api import yamlsafe
from kaito_core.errors import MISSING, FieldError, KaitoError, WorkspaceInvalid


class DocumentError(KaitoError, ValueError):
    """A file that is not YAML, or a document that is not a Kubernetes object."""


@dataclass
class Document:
    """One YAML document of a file: ``obj`` is a Workspace, a ConfigMap, or the raw mapping."""

    obj: Union[m.Workspace, m.ConfigMap, dict]
    source: str
    index: int
    raw: dict
    error: WorkspaceInvalid | None = None

    @property
    def kind(self) -> str:
        return str(self.raw.get("kind", ""))

    @property
    def label(self) -> str:
        name = (self.raw.get("metadata") or {}).get("name") if isinstance(self.raw.get("metadata"), dict) else None
        return f"{self.kind or 'object'}/{name or '<unnamed>'}"


def format_path(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = str(part)  # a map key is part of the path: a 10 MB key must not become a 10 MB path
            out += ("." if out else "") + (text if len(text) <= 80 else text[:77] + "...")
    return out or "<root>"


def _all_aliases() -> set[str]:
    names: set[str] = set()
    for cls in (m.Workspace, m.ObjectMeta, m.ResourceSpec, m.LabelSelector, m.LabelSelectorRequirement,
                m.Partition, m.PresetOptions, m.PresetSpec, m.DataSource, m.DataDestination, m.AdapterSpec,
                m.InferenceSpec, m.TuningSpec, m.WorkspaceStatus, m.Condition):
        for name, info in cls.model_fields.items():
            names.add(info.alias or name)
    return names


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """The field names allowed at the parent of ``loc`` (for 'did you mean' hints)."""
    import typing

    cls: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
            return []
        fld = next((f for n, f in cls.model_fields.items() if (f.alias or n) == part), None)
        if fld is None:
            return []
        ann = fld.annotation
        # unwrap Optional[...] / list[...]
        for _ in range(3):
            args = [a for a in typing.get_args(ann) if a is not type(None)]
            if typing.get_origin(ann) in (typing.Union, list) and args:
                ann = args[0]
        cls = ann
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        return [f.alias or n for n, f in cls.model_fields.items()]
    return []


_TYPE_WORDS = {
    "string_type": "must be a string", "int_type": "must be an integer", "int_parsing": "must be an integer",
    "bool_type": "must be true or false", "dict_type": "must be a mapping (key: value)",
    "list_type": "must be a list", "model_type": "must be a mapping of fields",
    "model_attributes_type": "must be a mapping of fields",
}


# YAML 1.1 (what Kubernetes' go-yaml and PyYAML read) turns yes/no/on/off, bare numbers and dates
# into non-strings: "country: no" is false (the "Norway problem").
_QUOTE_HINT = ("YAML reads yes/no/on/off/true/false, bare numbers and dates as non-strings: quote the value, "
               'e.g. "no" or "1.0"')


def translate(exc: ValidationError, model: type[BaseModel] = m.Workspace) -> list[FieldError]:
    errors: list[FieldError] = []
    for err in exc.errors(include_url=False):
        loc = tuple(err.get("loc", ()))
        path = format_path(loc)
        kind = err.get("type", "")
        value = err.get("input", MISSING)
        if kind == "missing":
            errors.append(FieldError(path, MISSING, "is required"))
        elif kind == "extra_forbidden":
            allowed = _fields_at(model, loc) or sorted(_all_aliases())
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else f"allowed here: {', '.join(allowed)}"
            errors.append(FieldError(path, MISSING, "unknown field", hint))
        elif kind == "literal_error":
            expected = (err.get("ctx") or {}).get("expected", "")
            errors.append(FieldError(path, value, f"must be one of {expected}"))
        elif kind == "string_type" and isinstance(value, (bool, int, float, datetime.date)):
            errors.append(FieldError(path, value, _TYPE_WORDS[kind], _QUOTE_HINT))
        elif kind in _TYPE_WORDS:
            errors.append(FieldError(path, value, _TYPE_WORDS[kind]))
        else:
            errors.append(FieldError(path, value, str(err.get("msg", "is invalid")).lower()))
    return errors


def _name_of(raw: Any) -> str:
    meta = raw.get("metadata") if isinstance(raw, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    kind = raw.get("kind") if isinstance(raw, dict) else None
    kind = kind[:63].encode("utf-8", "backslashreplace").decode() if isinstance(kind, str) and kind else "Workspace"
    if isinstance(name, str) and len(name) > 80:
        name = name[:77] + "..."
    return f"{kind} {name!r}" if name else f"{kind} <unnamed>"


def text_problems(raw: Any) -> list[FieldError]:
    """Strings no Kubernetes object can hold, wherever they are: a lone UTF-16 surrogate (not
    encodable as UTF-8: the API server's JSON and every hash of the name would fail) or a NUL
    character (cut short by C strings on the node: container args, env, paths); and nesting
    deeper than :data:`~kaito_core.api.yamlsafe.MAX_DEPTH`."""
    problems: list[FieldError] = []
    stack: list[tuple[tuple, Any]] = [((), raw)]
    seen = 0
    while stack and len(problems) < 20:
        loc, value = stack.pop()
        seen += 1
        if seen > yamlsafe.MAX_NODES:  # an in-process object that shares (or contains) itself
            problems.append(FieldError("<root>", f"{seen}+ values", f"holds more than {yamlsafe.MAX_NODES} values"))
            break
        if isinstance(value, (dict, list)) and len(loc) >= yamlsafe.MAX_DEPTH:
            # JSON from the API server has no YAML reader's bound; pydantic's serializer gives up
            # (ValueError) far deeper, after the walk through every level
            problems.append(FieldError(format_path(loc[:8]) + "...", f"{len(loc)}+ levels",
                                       f"is nested more than {yamlsafe.MAX_DEPTH} levels deep",
                                       "a Workspace needs far fewer"))
            continue
        if isinstance(value, dict):
            for key, sub in value.items():
                if isinstance(key, str) and _bad_text(key):
                    problems.append(FieldError(format_path(loc + (key,)), key, "is not a valid key: " + _bad_text(key),
                                               "keys are plain UTF-8 text"))
                stack.append((loc + (key,), sub))
        elif isinstance(value, list):
            stack.extend((loc + (i,), sub) for i, sub in enumerate(value))
        elif isinstance(value, str) and _bad_text(value):
            problems.append(FieldError(format_path(loc), value, "is not valid text: " + _bad_text(value),
                                       "remove the character (YAML escapes such as \\ud800 or \\0 make them)"))
    return sorted(problems, key=lambda e: e.path)


def _bad_text(text: str) -> str:
    if "\x00" in text:
        return "it contains a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "it contains a lone surrogate (not encodable as UTF-8)"
    return ""


def parse_workspace(raw: Any, source: str | None = None) -> m.Workspace:
    """Parse one mapping into a Workspace (shape and types only; see validation for rules)."""
    if not isinstance(raw, dict):
        raise WorkspaceInvalid("Workspace", [FieldError("<root>", raw, "must be a mapping (a Kubernetes object)")],
                               source)
    if "spec" in raw and not any(k in raw for k in ("resource", "inference", "tuning")):
        # A common mistake: KAITO's fields sit at the top level, not under spec.
        raise WorkspaceInvalid(_name_of(raw), [FieldError(
            "spec", MISSING, "Workspace has no 'spec'",
            "move 'resource', 'inference' and 'tuning' to the top level, beside 'metadata' (as upstream KAITO)")],
            source)
    bad_text = text_problems(raw)
    if bad_text:
        raise WorkspaceInvalid(_name_of(raw), bad_text, source)
    try:
        return m.Workspace.model_validate(raw)
    except ValidationError as exc:
        raise WorkspaceInvalid(_name_of(raw), translate(exc), source) from None


def parse_configmap(raw: Any, source: str | None = None) -> m.ConfigMap:
    bad_text = text_problems(raw)
    if bad_text:
        raise WorkspaceInvalid(_name_of(raw), bad_text, source)
    try:
        return m.ConfigMap.model_validate(raw)
    except ValidationError as exc:
        raise WorkspaceInvalid(_name_of(raw), translate(exc, m.ConfigMap), source) from None


def load_text(text: str, source: str = "<string>") -> list[Document]:
    """Every document in ``text``; a Workspace that does not parse keeps its error on ``.error``."""
    try:
        raws = [d for d in yamlsafe.load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise DocumentError(f"{source}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    # `kubectl get ... -o yaml` of several objects is one v1 List: its items are the documents
    raws = [item for raw in raws for item in (raw["items"] if _is_list(raw) else [raw])]
    docs: list[Document] = []
    for i, raw in enumerate(raws):
        if not isinstance(raw, dict):
            raise DocumentError(f"{source}: document {i + 1} is a {type(raw).__name__}, "
                                "expected a Kubernetes object (a mapping with apiVersion and kind)")
        kind = raw.get("kind")
        if kind == m.KIND or (kind is None and any(k in raw for k in ("inference", "tuning"))) or _misspelt(kind):
            try:
                docs.append(Document(parse_workspace(raw, source), source, i, raw))
            except WorkspaceInvalid as exc:
                docs.append(Document(raw, source, i, raw, error=exc))
        elif kind == "ConfigMap":
            try:
                docs.append(Document(parse_configmap(raw, source), source, i, raw))
            except WorkspaceInvalid as exc:
                docs.append(Document(raw, source, i, raw, error=exc))
        else:
            docs.append(Document(raw, source, i, raw))
    return docs


def _is_list(raw: Any) -> bool:
    return isinstance(raw, dict) and raw.get("kind") == "List" and isinstance(raw.get("items"), list)


def _misspelt(kind: Any) -> bool:
    """``workspace``, ``Workspaces``: meant as a Workspace (parsed, so the error names ``kind``)."""
    return isinstance(kind, str) and kind != m.KIND and kind.lower().rstrip("s") == "workspace"


def load_documents(path: str | Path) -> list[Document]:
    """Every document in a YAML file (``-`` reads standard input)."""
    if str(path) == "-":
        import sys

        return load_text(_bounded(sys.stdin.read(yamlsafe.MAX_BYTES + 1), "<stdin>"), "<stdin>")
    p = Path(path)
    try:
        # read at most one byte past the bound: /dev/zero or a fifo must not fill the memory
        with open(p, encoding="utf-8") as fh:
            text = _bounded(fh.read(yamlsafe.MAX_BYTES + 1), str(path))
    except FileNotFoundError:
        raise DocumentError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DocumentError(f"{path}: cannot read: {exc}") from None
    return load_text(text, str(path))


def _bounded(text: str, source: str) -> str:
    if len(text) > yamlsafe.MAX_BYTES:
        raise DocumentError(f"{source}: more than {yamlsafe.MAX_BYTES} characters; a Kubernetes object is at most "
                            "1.5 MiB")
    return text


def load_workspaces(path: str | Path) -> list[m.Workspace]:
    """The Workspaces in a file; raises the first parse error (use load_documents to get all)."""
    out = []
    for doc in load_documents(path):
        if doc.error is not None:
            raise doc.error
        if isinstance(doc.obj, m.Workspace):
            out.append(doc.obj)
    return out


def configmaps_by_name(docs: Iterable[Document]) -> dict[str, m.ConfigMap]:
    return {d.obj.name: d.obj for d in docs if isinstance(d.obj, m.ConfigMap)}
