"""SIGKILL the operator while Workspaces reconcile (small CI variant of tests/chaos/chaos.py)."""

from __future__ import annotations

from tests.chaos.chaos import run


def test_kills_leave_no_duplicates_or_orphans(tmp_path):
    c = run(workspaces=10, kills=5, seed=7, log_dir=str(tmp_path), settle=60)
    print(f"chaos counts: {c}")
    assert c["kills"] == 5
    assert c["duplicates"] == 0, c
    assert c["orphans"] == 0, c
    assert c["missing"] == 0, c
    assert c["deleted_still_present"] == 0, c
    assert c["ready"] == c["workspaces"] == 8, c
