"""Fixtures for the vLLM launcher tests: fake ``vllm`` and ``ray`` commands on PATH (they record
argv and env and enforce what the real ones would), and pods started from rendered objects."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.vllm.harness import FakeTools, Pod, stop_pods


@pytest.fixture
def fake_tools(tmp_path: Path) -> Iterator[FakeTools]:
    tools = FakeTools(tmp_path / "fakes")
    yield tools
    tools.kill_leftovers()  # a fake Ray head outlives `ray start`, like Ray's; never leave one behind


@pytest.fixture
def pods() -> Iterator[list[Pod]]:
    """Pods a test starts; whatever is still running at the end is stopped (SIGTERM, then kill)."""
    started: list[Pod] = []
    yield started
    stop_pods(started, timeout=20)
