"""Built-in ``local`` provisioner: this machine is the one node (``kaito up``, local mode).

No cluster is involved: the single node request is always ready, named after this host.
"""

from __future__ import annotations

import socket
from typing import Any, Sequence

from kaito_core.hookspecs import hookimpl
from kaito_core.types import NodeRequest, NodeState, ProvisionerContext


class LocalProvisioner:
    """``local``: one node, this host; ensure/observe/release never do I/O."""

    name = "local"
    creates_nodes = False  # this machine is the node, whatever the plan's instance type

    def desired_objects(self, *, requests: Sequence[NodeRequest]) -> list[dict]:
        return []

    def ensure(self, *, requests: Sequence[NodeRequest], ctx: ProvisionerContext) -> Sequence[NodeState]:
        return self.observe(requests=requests, ctx=ctx)

    def observe(self, *, requests: Sequence[NodeRequest], ctx: ProvisionerContext) -> Sequence[NodeState]:
        host = socket.gethostname()
        return [NodeState(name=r.name, ready=True, node_name=host) for r in requests]

    def release(self, *, workspace: Any, ctx: ProvisionerContext) -> None:
        return None


PROVISIONER = LocalProvisioner()


@hookimpl
def kaito_register_provisioners(register):
    register(PROVISIONER)
