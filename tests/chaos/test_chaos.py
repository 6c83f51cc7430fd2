"""SIGKILL the operator while Workspaces reconcile (small CI variant of tests/chaos/chaos.py)."""

from __future__ import annotations

from tests.chaos.chaos import run


def test_kills_leave_no_duplicates_or_orphans(tmp_path):
    c = run(workspaces=10, kills=5, seed=7, log_dir=str(tmp_path), settle=60)
    print(f"chaos counts: {c}")
    assert c["kills"] == 5
    assert c["operator_exit"] is None, c  # the operator that had to converge was still running
    assert c["duplicates"] == 0, c
    assert c["orphans"] == 0, c
    assert c["missing"] == 0, c
    assert c["deleted_still_present"] == 0, c
    assert c["refused"] == 0, c  # no request a real API server refuses
    assert c["ready"] == c["workspaces"] == 8, c


def test_watch_outages_with_deletions_converge(tmp_path):
    """Issue 16: watch cuts (410 Gone after compaction) followed by deletions of NodeClaims,
    Nodes and StatefulSets; the same operator process restores every Workspace (resync 30 s:
    only the re-list can see the deletions)."""
    c = run(workspaces=6, kills=1, seed=3, log_dir=str(tmp_path), settle=60, cuts=2)
    print(f"chaos counts: {c}")
    assert c["cut_deleted"] > 0, c
    assert c["operator_exit"] is None, c
    assert c["duplicates"] == 0 and c["orphans"] == 0 and c["missing"] == 0, c
    assert c["ready"] == c["workspaces"], c
    assert c["refused"] == 0, c
