"""pytest plugin entry point for kaito_core.testing (registered as pytest11 ``kaito``).

Loaded by every pytest run in an environment where kaito-core is installed, so it stays light:
no kopf, no kubernetes client, no torch. Fixtures are prefixed ``kaito_`` to stay out of the way
of a project's own fixtures.

Fixtures:

``kaito_kube``
    a fresh :class:`~kaito_core.testing.kube.FakeKube` (an in-memory Kubernetes API).
``kaito_workspace``
    a factory: ``kaito_workspace("name", "namespace", instance_type=..., match_labels=...)``.
``kaito_requirement``
    a factory: ``kaito_requirement("Standard_NC24ads_A100_v4", node_count=2, disk_gib=100)``.
``kaito_registry``
    a freshly built plugin registry (built-ins and installed entry points, not cached).
``kaito_context``
    a :class:`~kaito_core.types.ProvisionerContext` over ``kaito_kube`` with empty settings.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest

from kaito_core.testing.factories import make_requirement, make_workspace
from kaito_core.testing.kube import FakeKube
from kaito_core.types import ProvisionerContext


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kaito_conformance: a test of kaito's provisioner conformance suite")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    from kaito_core.testing.conformance import ProvisionerConformance

    for item in items:
        cls = getattr(item, "cls", None)
        if cls is not None and issubclass(cls, ProvisionerConformance):
            item.add_marker(pytest.mark.kaito_conformance)


@pytest.fixture
def kaito_kube() -> FakeKube:
    return FakeKube()


@pytest.fixture
def kaito_context(kaito_kube: FakeKube) -> ProvisionerContext:
    return ProvisionerContext(kube=kaito_kube, settings={})


@pytest.fixture
def kaito_workspace() -> Callable[..., Any]:
    return make_workspace


@pytest.fixture
def kaito_requirement() -> Callable[..., Any]:
    return make_requirement


@pytest.fixture
def kaito_registry() -> Any:
    from kaito_core.plugins import get_plugin_manager

    return get_plugin_manager(cached=False).registry
