"""YAML that attacks the reader: alias bombs, recursion, nesting, duplicate keys, Python tags,
huge files. Each runs `kaito` as a user does (a subprocess) under memory and CPU limits, so a
bomb that is not refused kills the process and fails the test; no timing is asserted."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hostile.check import CRASH_MARKS

MEMORY_LIMIT = 1536 * 1024 * 1024  # address space: far above `kaito plan` (~400 MB), far below a bomb's
CPU_LIMIT_S = 60
HEAD = ("apiVersion: kaito.sh/v1beta1\nkind: Workspace\nmetadata: {name: ws}\n"
        "resource: {labelSelector: {matchLabels: {apps: x}}}\n")
PRESET = "inference: {preset: {name: phi-3-mini-4k-instruct}}\n"


def _limits() -> None:  # runs in the child before exec
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_LIMIT_S, CPU_LIMIT_S))


def kaito(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kaito_core", *args], capture_output=True, text=True,
                          preexec_fn=_limits, timeout=CPU_LIMIT_S * 3, cwd=cwd)


def laughs(levels: int, fanout: int = 9) -> str:
    """A 'billion laughs' template: ``fanout ** levels`` values from a few hundred bytes."""
    lines = ["      l0: &l0 [" + ", ".join(['"lol"'] * fanout) + "]"]
    for i in range(1, levels + 1):
        lines.append(f"      l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * fanout) + "]")
    return (HEAD + "inference:\n  template:\n    spec:\n" + "\n".join(lines)
            + "\n      containers: [{name: c, image: r.io/c:1}]\n")


CASES = {
    # (file text, words the error must contain)
    "billion-laughs": (laughs(9), ["line", "aliases"]),
    "recursive-alias": (HEAD + "inference:\n  template: &t\n    spec: {containers: [{name: c, image: r.io/c:1}]}\n"
                        "    loop: *t\n", ["line"]),
    "deep-nesting": (HEAD + PRESET + "status: {conditions: " + "[" * 500 + "]" * 500 + "}\n",
                     ["line", "nested more than 100 levels"]),
    "very-deep-nesting": (HEAD + PRESET + "status: {conditions: " + "[" * 50_000 + "]" * 50_000 + "}\n",
                          ["line", "nesting"]),
    "duplicate-key": (HEAD + PRESET + "inference: {preset: {name: llama-3.1-8b-instruct}}\n",
                      ["line 6", "duplicate key 'inference'", "line 5"]),
    "duplicate-nested-key": (HEAD.replace("{apps: x}", "{apps: x, apps: y}") + PRESET,
                             ["line 4", "duplicate key 'apps'"]),
    "python-object-tag": (HEAD.replace("{name: ws}", '{name: !!python/object/apply:os.system ["touch pwned"]}')
                          + PRESET, ["line 3", "python/object/apply"]),
    "python-name-tag": (HEAD + "inference: {preset: {name: !!python/name:os.system ''}}\n",
                        ["line 5", "python/name"]),
    "top-level-list": ("- " + HEAD.replace("\n", "\n  ") + PRESET, ["document 1", "list"]),
    "not-yaml": (HEAD + PRESET + "metadata: {name: [unclosed\n", ["not valid YAML", "line"]),
    "huge-string": (HEAD + 'inference: {preset: {name: "' + "x" * 10_000_000 + '"}}\n',
                    ["inference.preset.name", "at most 253 characters", "10000000 characters"]),
    "many-documents": ((HEAD + PRESET + "---\n") * 1500, ["line 6001,", "more than 1000 documents"]),
    "huge-file": (HEAD + PRESET + "# " + "x" * (17 * 1024 * 1024) + "\n", ["more than 16777216 characters"]),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("yaml-tricks")
    out = {}
    for name, (text, _) in CASES.items():
        out[name] = root / f"{name}.yaml"
        out[name].write_text(text, encoding="utf-8")
    out["valid"] = root / "valid.yaml"
    out["valid"].write_text(HEAD + PRESET)
    return out


def test_the_limits_leave_room_for_a_real_plan(files):
    """The same limits, a valid Workspace: planned (so a refusal below is kaito's, not the limit's)."""
    res = kaito("plan", str(files["valid"]))
    assert res.returncode == 0, res.stderr
    assert "phi-3-mini-4k-instruct" in res.stdout


# plan reads every case; render and up --dry-run share the reader: a sample of them
RUNS = [(name, ("plan",)) for name in sorted(CASES)] + [
    (name, command) for name in ("billion-laughs", "duplicate-key", "python-object-tag", "huge-string")
    for command in (("render",), ("up", "--dry-run"))]


@pytest.mark.parametrize("name, command", RUNS, ids=[f"{n}-{'-'.join(c)}" for n, c in RUNS])
def test_hostile_yaml_is_refused_in_bounded_memory_without_a_traceback(files, name, command):
    res = kaito(*command, str(files[name]))
    text = res.stdout + res.stderr
    assert res.returncode == 1, f"exit {res.returncode} (negative: killed by a limit): {text[-800:]}"
    for mark in CRASH_MARKS + ("MemoryError", "RecursionError"):
        assert mark not in text
    for word in CASES[name][1]:
        assert word in text, f"{word!r} not in {text[-800:]}"
    assert len(text) < 20_000


def test_no_python_tag_is_ever_executed(files, tmp_path):
    res = kaito("plan", str(files["python-object-tag"]), cwd=tmp_path)
    assert res.returncode == 1 and not (tmp_path / "pwned").exists()
