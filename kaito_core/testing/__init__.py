"""Test kit for third-party kaito plugins (a pytest plugin): fixtures and conformance suites.

- :mod:`kaito_core.testing.kube` — :class:`FakeKube`, an in-memory Kubernetes API.
- :mod:`kaito_core.testing.factories` — Workspaces and sizing requirements built from the real types.
- :mod:`kaito_core.testing.conformance` — :class:`ProvisionerConformance`, the suite a provisioner
  plugin subclasses in its own tests.
- :mod:`kaito_core.testing.pytest_plugin` — the ``kaito_*`` fixtures (loaded automatically by pytest).
- :mod:`kaito_core.testing.presets` — :func:`check_preset_plugin`, the checks a preset plugin runs
  on its installed entry point (every preset validates, sizes and renders).
- :mod:`kaito_core.testing.tiny_models` — tiny random-weight models for runtime and tuning tests.

Importing this package is cheap; the suite (which imports pytest) loads only when asked for.
"""

from kaito_core.testing.factories import make_node_requests, make_requirement, make_workspace, workspace_labels
from kaito_core.testing.kube import AlreadyExists, FakeKube

__all__ = ["FakeKube", "AlreadyExists", "make_workspace", "make_requirement", "make_node_requests",
           "workspace_labels"]
