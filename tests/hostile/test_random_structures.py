"""Random structural damage (seeded): any subtree of any example Workspace replaced by random
values, one to three times. Whatever the damage, `kaito plan`, `kaito validate`, `kaito render`
and the admission webhook answer with an error or a plan, never a crash or a traceback."""

from __future__ import annotations

import random
from typing import Any

from kaito_core.plugins import get_plugin_manager

from tests.hostile.check import CRASH_MARKS, cli, review, write
from tests.hostile.corpus import documents, example_files, set_at, walk

ATOMS = [None, True, False, 0, -1, 1, 2**63, 1.5, float("nan"), "", "x", "In", "vllm", "lora", "1Gi", "\t",
         "nvidia.com/gpu", "https://example.com/a", "Standard_NC24ads_A100_v4", "phi-3-mini-4k-instruct", "a" * 300]
KEYS = ["name", "image", "spec", "containers", "hostPath", "values", "key", "operator", "count", "mode", "urls",
        "source", "strength", "x"]
CASES = 300


def _value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 3 or roll < 0.6:
        return rng.choice(ATOMS)
    if roll < 0.8:
        return [_value(rng, depth + 1) for _ in range(rng.randrange(3))]
    return {rng.choice(KEYS): _value(rng, depth + 1) for _ in range(rng.randrange(3))}


def _damaged(rng: random.Random, files: list) -> tuple[list[dict], int]:
    docs = documents(rng.choice(files))
    index = next(i for i, d in enumerate(docs) if d.get("kind") == "Workspace")
    for _ in range(rng.randrange(1, 4)):
        loc = rng.choice([loc for loc, _ in walk(docs[index])] or [("x",)])
        try:
            set_at(docs[index], loc, _value(rng))
        except (KeyError, IndexError, TypeError):  # an earlier edit removed the parent
            pass
    return docs, index


def test_no_damage_crashes_any_entry_point(tmp_path):
    registry = get_plugin_manager().registry
    rng = random.Random(20261127)
    files = [f for f in example_files() if any(d.get("kind") == "Workspace" for d in documents(f))]
    crashes: list[str] = []
    answered = 0
    for n in range(CASES):
        docs, index = _damaged(rng, files)
        f = write(tmp_path, docs)
        for command in ("plan", "validate", "render"):
            rc, text = cli(command, str(f))
            answered += rc in (0, 1)
            crashes += [f"case {n} kaito {command}: {text[-300:]}" for mark in CRASH_MARKS if mark in text]
        if not isinstance(docs[index].get("metadata"), dict):
            continue  # admission.ws_name: see test_targeted's strict xfail
        try:
            review(docs[index], registry)
        except Exception as exc:  # noqa: BLE001 - the test reports what crashed
            crashes.append(f"case {n} admission: {type(exc).__name__}: {exc}")
    assert not crashes, "\n".join(crashes[:10])
    assert answered == 3 * CASES
