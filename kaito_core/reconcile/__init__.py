"""The pure reconciler: Workspace + preset + sizing + observed state -> desired objects + status.

Imports neither kopf nor kubernetes nor torch (a test checks it): the operator applies the
:class:`Plan`, ``kaito render`` prints it, local mode realises it on this machine.
"""

from kaito_core.reconcile.names import FINALIZER, node_request_name  # noqa: F401
from kaito_core.reconcile.nodes import standard_node_requests, target_node_count  # noqa: F401
from kaito_core.reconcile.observed import Observed, fake_node  # noqa: F401
from kaito_core.reconcile.plan import Plan, invalid, plan, plan_workspace  # noqa: F401
from kaito_core.reconcile.status import Event  # noqa: F401
