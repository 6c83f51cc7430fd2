"""Errors meant for people: each names the field, the value, what was expected and the fix."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class KaitoError(Exception):
    """Base class of every error kaito raises on purpose."""


class ContractError(KaitoError, ValueError):
    """A plugin handed the core an object that breaks the contract (bad preset, bad type...)."""

    def __init__(self, *, owner: str, field: str, value: Any, expected: str, plugin: str | None = None):
        self.owner, self.field, self.value, self.expected, self.plugin = owner, field, value, expected, plugin
        super().__init__(self._text())

    def _text(self) -> str:
        who = f"plugin {self.plugin!r}: " if self.plugin else ""
        return f"{who}{self.owner}: field {self.field!r} is {_show(self.value)}, expected {self.expected}"

    def with_plugin(self, plugin: str) -> "ContractError":
        self.plugin = plugin
        self.args = (self._text(),)
        return self


class RegistrationError(KaitoError, ValueError):
    """A registration the registry refuses (e.g. a duplicate name), naming both plugins."""


@dataclass(frozen=True)
class FieldError:
    """One problem in a user's object: ``path`` like ``inference.adapters[1].strength``."""

    path: str
    value: Any
    message: str
    hint: str = ""

    def __str__(self) -> str:
        shown = "" if self.value is _MISSING else f" (got {_show(self.value)})"
        hint = f"; {self.hint}" if self.hint else ""
        return f"{self.path}: {self.message}{shown}{hint}"


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()
MISSING = _MISSING


class WorkspaceInvalid(KaitoError, ValueError):
    """All the problems found in one object, not just the first."""

    def __init__(self, name: str, errors: Iterable[FieldError], source: str | None = None):
        self.name = name
        self.errors = list(errors)
        self.source = source
        where = f"{source}: " if source else ""
        lines = "\n".join(f"  - {e}" for e in self.errors)
        super().__init__(f"{where}{name} is invalid ({len(self.errors)} problem"
                         f"{'s' if len(self.errors) != 1 else ''}):\n{lines}")
