"""Hostile flags and files for the planning commands: each refused naming the flag (or the
file) and the value, with argparse's exit code 2 for flags, never a traceback or a hang."""

from __future__ import annotations

import pytest

from tests.hostile.check import CRASH_MARKS, cli
from tests.hostile.corpus import REFERENCE

GOOD = str(REFERENCE / "kaito_workspace_phi_3_mini_4k.yaml")

FLAGS = [
    # (argv, exit code, words)
    (["plan", "--batch", "-1", GOOD], 2, ["--batch", "-1", "1 to 4096"]),
    (["plan", "--batch", "1000000000000", GOOD], 2, ["--batch", "1000000000000"]),
    (["plan", "--batch", "two", GOOD], 2, ["--batch", "'two'"]),
    (["plan", "--cloud", "gcp", GOOD], 2, ["--cloud 'gcp'", "azure"]),
    (["plan", "--provisioner", "../byo", GOOD], 2, ["--provisioner '../byo'", "byo"]),
    (["render", "-n", "Prod_NS", GOOD], 2, ["--namespace", "'Prod_NS'"]),
    (["render", "--observed", "everything", GOOD], 2, ["--observed", "'everything'"]),
    (["up", "--dry-run", "--port", "99999", GOOD], 2, ["--port", "99999", "0 to 65535"]),
    (["up", "--dry-run", "--port", "-5", GOOD], 2, ["--port", "-5"]),
    (["up", "--dry-run", "--timeout", "nan", GOOD], 2, ["--timeout", "'nan'"]),
    (["up", "--dry-run", "--timeout", "-1", GOOD], 2, ["--timeout", "'-1'"]),
    (["up", "--dry-run", "--name", "nope", GOOD], 1, ["no Workspace named 'nope'"]),
    (["plan", "/dev/zero"], 1, ["/dev/zero", "more than 16777216 characters"]),
    (["plan", "/etc"], 1, ["/etc", "cannot read"]),
    (["render", "/nonexistent/ws.yaml"], 1, ["/nonexistent/ws.yaml", "no such file"]),
    (["plan", "/dev/null"], 1, ["no Workspace in this file"]),
]


@pytest.mark.parametrize("argv, code, words", FLAGS, ids=[" ".join(f[0][:3]) for f in FLAGS])
def test_hostile_flags_and_files_are_refused_by_name(argv, code, words):
    rc, text = cli(*argv)
    assert rc == code, text
    for mark in CRASH_MARKS:
        assert mark not in text
    for word in words:
        assert word in text, f"{word!r} not in {text[-600:]}"


def test_a_binary_file_is_refused_as_text_it_cannot_read(tmp_path):
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"\xff\xfe\x00\x01" * 1000)
    rc, text = cli("plan", str(f))
    assert rc == 1 and "cannot read" in text and "utf-8" in text
