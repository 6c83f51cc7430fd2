"""YAML as the Kubernetes tools read it, with bounds: safe tags only, no duplicate keys, no
alias bombs, no absurd nesting.

PyYAML's ``safe_load`` accepts a duplicate key (the last one silently wins) and expands
anchors/aliases lazily, so a few hundred bytes of ``&a [*a, *a, ...]`` become hundreds of
millions of nodes the moment anything walks the result (JSON dump, pydantic, a size check).
kubectl (sigs.k8s.io/yaml over go-yaml) refuses both: ``mapping key "x" already defined`` and
``document contains excessive aliasing``. Every Workspace and ConfigMap document kaito reads
goes through :func:`load_all` / :func:`load`, which raise :class:`yaml.YAMLError` subclasses
with a line and column, as PyYAML's own errors do.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

# Far above any real Workspace (a maximal one: 100 URLs, a 256 KiB template: ~50k nodes) and far
# below what exhausts the operator. go-yaml v3 refuses aliasing past a ratio of the same order.
MAX_NODES = 1_000_000
MAX_DEPTH = 100
MAX_BYTES = 16 * 1024 * 1024  # the API server takes at most 3 MiB per request; etcd 1.5 MiB
MAX_DOCUMENTS = 1000  # each Workspace is planned: a file of 100,000 tiny ones would take minutes

_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser: 100x faster on big strings


class TooComplex(yaml.YAMLError):
    """A document that would expand past the bounds (or refers to itself)."""

    def __init__(self, problem: str, mark: Any = None):
        self.problem, self.problem_mark = problem, mark
        super().__init__(problem)


class _Loader(_Base):  # type: ignore[misc, valid-type]
    """SafeLoader (libyaml when available) that refuses duplicate mapping keys."""

    def construct_mapping(self, node: Node, deep: bool = False) -> dict:
        if isinstance(node, MappingNode):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, ScalarNode):
                    continue  # complex keys are refused by the constructor itself (unhashable)
                key = self.construct_object(key_node, deep=deep)
                try:
                    first = seen.get(key)
                except TypeError:
                    continue
                if first is not None:
                    raise ConstructorError(
                        None, None, f"found duplicate key {key!r} (first at line {first.line + 1}); "
                        "a YAML mapping holds each key once (kubectl refuses it too): keep one of them",
                        key_node.start_mark)
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def check_node(root: Node) -> None:
    """Refuse a node graph whose full expansion exceeds :data:`MAX_NODES` or :data:`MAX_DEPTH`,
    or that contains itself. Iterative (no recursion) and linear in the distinct nodes."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            kids = _children(node)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
            on_path.discard(key)
            if size[key] > MAX_NODES:
                raise TooComplex(f"the document expands to more than {MAX_NODES} values through anchors and "
                                 "aliases (a YAML 'billion laughs' bomb); write the values out or use fewer aliases",
                                 node.start_mark)
            if depth[key] > MAX_DEPTH:
                raise TooComplex(f"values are nested more than {MAX_DEPTH} levels deep; a Workspace needs far "
                                 "fewer", node.start_mark)
            continue
        if key in size:
            continue
        if key in on_path:
            raise TooComplex("an alias refers to the collection that contains it (a recursive structure)",
                             node.start_mark)
        on_path.add(key)
        stack.append((node, True))
        stack.extend((k, False) for k in _children(node) if id(k) not in size)
        if len(on_path) > MAX_DEPTH + 1:
            raise TooComplex(f"values are nested more than {MAX_DEPTH} levels deep; a Workspace needs far fewer",
                             node.start_mark)


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def load_all(text: str) -> list[Any]:
    """Every document of ``text`` (``None`` for empty ones), checked as the module says."""
    if len(text) > MAX_BYTES:
        raise TooComplex(f"the text is {len(text)} characters, more than {MAX_BYTES}; a Kubernetes object "
                         "is at most 1.5 MiB")
    loader = _Loader(text)
    try:
        docs = []
        while loader.check_node():
            if len(docs) >= MAX_DOCUMENTS:
                raise TooComplex(f"more than {MAX_DOCUMENTS} documents in one file; split it", loader.peek_event().start_mark)
            node = loader.get_node()
            check_node(node)
            docs.append(loader.construct_document(node))
        return docs
    finally:
        loader.dispose()


def load(text: str) -> Any:
    """The single document of ``text`` (None when empty); more than one is an error, as in safe_load."""
    docs = load_all(text)
    if len(docs) > 1:
        raise TooComplex(f"expected one YAML document, found {len(docs)}")
    return docs[0] if docs else None
