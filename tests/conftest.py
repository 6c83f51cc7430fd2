"""Fixtures shared by every core test suite."""

from __future__ import annotations

from typing import Iterator

import pytest


@pytest.fixture(scope="session")
def registry(tmp_path_factory) -> Iterator[str]:
    """Debian's docker-registry (distribution 2.8) on a free loopback port; yields 'host:port'."""
    from kaito_core.local.registry import LocalRegistry, RegistryError

    try:
        reg = LocalRegistry(tmp_path_factory.mktemp("registry")).start()
    except RegistryError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield reg.host
    finally:
        reg.stop()
