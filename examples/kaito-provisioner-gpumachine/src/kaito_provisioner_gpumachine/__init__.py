"""An example third-party kaito provisioner: one ``GPUMachine`` object per GPU node.

Many clusters already have a controller that turns a custom object into a machine (a bare-metal
inventory, a private cloud, Cluster API). This plugin asks for nodes by creating
``gpu.example.com/v1`` ``GPUMachine`` objects in the Workspace's namespace; that controller is
expected to set ``status.phase`` (``Pending`` -> ``Running``, or ``Failed`` with
``status.failureReason`` / ``status.failureMessage``) and ``status.nodeName``.

The whole plugin is this module and an entry point (pyproject.toml)::

    [project.entry-points.kaito]
    gpumachine = "kaito_provisioner_gpumachine"
"""

from __future__ import annotations

from typing import Any, Sequence

from kaito_core.hookspecs import hookimpl
from kaito_core.reconcile.names import LABEL_WORKSPACE as WORKSPACE_LABEL  # the core's labels module
from kaito_core.types import NodeRequest, NodeState, ProvisionerContext

API_VERSION = "gpu.example.com/v1"
KIND = "GPUMachine"


class GPUMachineProvisioner:
    name = "gpumachine"

    # The machine types the inventory controller can hand out: kaito's planner places
    # Workspaces only on these (docs/provisioners.md, "Your catalog").
    instance_types = ("Standard_NC24ads_A100_v4", "Standard_NC48ads_A100_v4", "Standard_NC96ads_A100_v4",
                      "Standard_NV36ads_A10_v5")

    # -- pure: the core's NodeRequests (names, count, labels) -> GPUMachine objects -----------

    def desired_objects(self, *, requests: Sequence[NodeRequest]) -> list[dict]:
        return [{"apiVersion": API_VERSION, "kind": KIND,
                 "metadata": {"name": r.name, "namespace": r.namespace, "labels": dict(r.labels)},
                 "spec": {"instanceType": r.instance_type, "gpus": r.gpu_count, "diskGiB": r.disk_gib}}
                for r in requests]

    # -- I/O: through the Kubernetes API the operator hands us ------------------------------

    def ensure(self, *, requests: Sequence[NodeRequest], ctx: ProvisionerContext) -> Sequence[NodeState]:
        for obj in self.desired_objects(requests=requests):
            meta = obj["metadata"]
            if ctx.kube.get(api_version=API_VERSION, kind=KIND, name=meta["name"], namespace=meta["namespace"]) is None:
                ctx.kube.create(obj)
        return self.observe(requests=requests, ctx=ctx)

    def observe(self, *, requests: Sequence[NodeRequest], ctx: ProvisionerContext) -> Sequence[NodeState]:
        states = []
        for r in requests:
            obj = ctx.kube.get(api_version=API_VERSION, kind=KIND, name=r.name, namespace=r.namespace)
            status = (obj or {}).get("status") or {}
            phase = status.get("phase")
            if phase == "Running":
                states.append(NodeState(name=r.name, ready=True, node_name=status.get("nodeName")))
            elif phase == "Failed":
                states.append(NodeState(name=r.name, ready=False, failed=True,
                                        reason=status.get("failureReason") or "MachineFailed",
                                        message=status.get("failureMessage") or "the machine failed"))
            else:
                states.append(NodeState(name=r.name, ready=False, message=f"GPUMachine is {phase or 'not created'}"))
        return states

    def release(self, *, workspace: Any, ctx: ProvisionerContext) -> None:
        meta = workspace.metadata
        for obj in ctx.kube.list(api_version=API_VERSION, kind=KIND, namespace=meta.namespace,
                                 labels={WORKSPACE_LABEL: meta.name}):
            ctx.kube.delete(api_version=API_VERSION, kind=KIND, name=obj["metadata"]["name"],
                            namespace=meta.namespace)


@hookimpl
def kaito_register_provisioners(register):
    register(GPUMachineProvisioner())
