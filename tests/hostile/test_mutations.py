"""Every upstream example (and examples/), mutated field by field, through `kaito plan` and
`kaito validate` (in process) and the admission webhook: each mutation is refused, naming the field and the value,
never with a traceback. A sample also goes through `kaito render` and `kaito up --dry-run`.

One test per example file; a failure lists every mutation that got a bad answer.
"""

from __future__ import annotations

import random

import pytest

from kaito_core.plugins import get_registry

from tests.hostile.check import cli, problems, review, surrogate_line, write
from tests.hostile.corpus import Case, all_cases

CASES = all_cases()


def _workspace(case: Case) -> dict:
    return next(d for d in case.docs if d.get("kind") == "Workspace")


def test_the_corpus_covers_every_example_and_every_kind_of_mutation():
    assert len(CASES) >= 45  # upstream's examples + v0.12's + examples/
    kinds = {c.kind for cases in CASES.values() for c in cases}
    assert kinds == {"type", "text", "unknown-key", "missing", "template"}
    assert sum(len(c) for c in CASES.values()) >= 1000
    # deterministic: the same seed gives the same cases
    again = all_cases()
    assert [c.id for c in again["kaito_workspace_phi_3_with_adapters.yaml"]] == \
        [c.id for c in CASES["kaito_workspace_phi_3_with_adapters.yaml"]]


@pytest.mark.parametrize("source", sorted(CASES))
def test_every_mutation_is_refused_naming_field_and_value(source, tmp_path):
    registry = get_registry()
    bad: list[str] = []
    for i, case in enumerate(CASES[source]):
        f = write(tmp_path, case.docs)
        line = surrogate_line(f)
        found = []
        for command in ("plan", "validate") if i % 3 == 0 else ("plan",):  # validate: a third (time)
            rc, text = cli(command, str(f))
            found += problems(case, rc, text, f"kaito {command}", yaml_line=line)
        refused, message = review(_workspace(case), registry)
        found += problems(case, 1 if refused else 0, message, "admission")
        bad += [f"{case.id}: {p}" for p in found]
    assert not bad, f"{len(bad)} bad answers:\n" + "\n".join(bad[:20])


def _sample(k: int) -> list[Case]:
    every = [c for cases in CASES.values() for c in cases]
    return random.Random(7).sample(every, k)


@pytest.mark.parametrize("case", _sample(40), ids=lambda c: c.id)
def test_render_and_up_dry_run_refuse_the_same_way(case, tmp_path):
    f = write(tmp_path, case.docs)
    line = surrogate_line(f)
    for argv in (("render", str(f)), ("up", "--dry-run", str(f))):
        rc, text = cli(*argv)
        assert problems(case, rc, text, " ".join(argv[:-1]), yaml_line=line) == []


def _surrogate(case: Case) -> bool:
    return any(0xD800 <= ord(ch) <= 0xDFFF for ch in str(case.value))


def _single_workspace_sample(k: int) -> list[Case]:
    """Single-document cases; no lone surrogates (libyaml refuses the whole file for one)."""
    every = [c for cases in CASES.values() for c in cases if len(c.docs) == 1 and not _surrogate(c)]
    return random.Random(11).sample(every, k)


def test_the_installed_command_refuses_a_sample_the_same_way(tmp_path):
    """`kaito plan` and `kaito render` as a user runs them (a subprocess of the console entry),
    on one file holding 25 mutated Workspaces: every one is refused and named, in order."""
    import json
    import subprocess
    import sys

    import yaml

    sample = _single_workspace_sample(25)
    docs = [dict(c.docs[0], metadata={**(c.docs[0].get("metadata") if isinstance(c.docs[0].get("metadata"), dict)
                                         else {}), "name": f"case-{i}"}) if c.path != "metadata.name" else c.docs[0]
            for i, c in enumerate(sample)]
    f = tmp_path / "sample.yaml"
    f.write_text(yaml.safe_dump_all(docs, sort_keys=False, allow_unicode=False))
    run = [sys.executable, "-m", "kaito_core"]
    plan = subprocess.run(run + ["plan", "-o", "json", str(f)], capture_output=True, text=True, timeout=120)
    assert plan.returncode == 1 and "Traceback" not in plan.stderr
    rows = json.loads(plan.stdout)
    assert len(rows) == len(sample)
    bad = [f"{c.id}: {p}" for c, row in zip(sample, rows)
           for p in problems(c, 1 if row["errors"] else 0, "\n".join(row["errors"]), "kaito plan")]
    assert not bad, "\n".join(bad)
    render = subprocess.run(run + ["render", str(f)], capture_output=True, text=True, timeout=120)
    assert render.returncode == 1 and "Traceback" not in render.stderr and render.stdout == ""
    blocks = ("\n" + render.stderr).split("\nerror: ")[1:]
    assert len(blocks) == len(sample)
    bad = [f"{c.id}: {p}" for c, block in zip(sample, blocks) for p in problems(c, 1, block, "kaito render")]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("case", _single_workspace_sample(3), ids=lambda c: c.id)
def test_the_installed_up_dry_run_refuses_a_sample(case, tmp_path):
    import subprocess
    import sys

    f = write(tmp_path, case.docs)
    res = subprocess.run([sys.executable, "-m", "kaito_core", "up", "--dry-run", str(f)], capture_output=True,
                         text=True, timeout=120)
    assert problems(case, res.returncode, res.stdout + res.stderr, "kaito up --dry-run") == []
