"""The AKS provisioner: one agent pool (a one-node VM scale set) per GPU node, through ARM.

``ensure`` PUTs the missing pools and returns once ARM has accepted them: the SDK's poller
follows each long-running operation in the background (``Azure-AsyncOperation``, honouring
``Retry-After``, else ``AKS_POLL_INTERVAL_S``), and ``observe`` reads the pool's
``provisioningState``. A pool that exists is adopted, never PUT twice, so a retry after a
crash or a timeout cannot make a second pool; a pool that failed is re-tried after
``AKS_RETRY_BACKOFF_S``. ARM's refusals (quota, SKU, capacity, authorisation) become
NodeState reasons. A collector deletes pools tagged for a Workspace that no longer exists.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from kaito_core.types import NodeRequest, NodeState, ProvisionerContext

from kaito_provisioner_aks import builders
from kaito_provisioner_aks.arm_errors import Cause, classify, classify_error
from kaito_provisioner_aks.settings import AKSSettings

log = logging.getLogger("kaito.provisioner.aks")

WORKSPACE_API_VERSION = "kaito.sh/v1beta1"
AGENTPOOL_NODE_LABEL = "kubernetes.azure.com/agentpool"
# GC recognises the pools a live Workspace may own by recomputing their names; no Workspace
# needs more nodes than this (sizing caps multi-node placements far lower).
MAX_NODES_PER_WORKSPACE = 64
IN_PROGRESS = ("Creating", "Updating", "Scaling", "Upgrading", "Deleting", "Starting", "Stopping")


@dataclass
class _Failure:
    at: float
    cause: Cause


def _expected_names(workspace: Mapping[str, Any]) -> set[str]:
    meta = workspace.get("metadata") or {}
    seed = meta.get("uid") or f"{meta.get('namespace') or 'default'}/{meta.get('name')}"
    return {"ws" + hashlib.sha256(f"{seed}/{i}".encode()).hexdigest()[:9] for i in range(MAX_NODES_PER_WORKSPACE)}


def default_credential() -> Any:
    """Workload identity in the cluster (AZURE_CLIENT_ID + AZURE_FEDERATED_TOKEN_FILE), as
    upstream's gpu-provisioner; DefaultAzureCredential also covers a managed identity and a
    developer's ``az login``."""
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


class AKSProvisioner:
    """``aks``: GPU nodes as AKS agent pools (upstream's gpu-provisioner, without NodeClaims)."""

    name = "aks"
    cloud = "azure"  # placement picks only Azure VM sizes for this provisioner

    def __init__(self, settings: Mapping[str, str] | None = None, *, credential: Any = None) -> None:
        self._base = dict(settings or {})
        self.settings = AKSSettings.from_mapping(self._base)
        self._credential = credential
        self._lock = threading.RLock()
        self._clients: dict[tuple, Any] = {}
        self._ops: dict[str, Any] = {}  # pool -> create poller still ours to watch
        self._failures: dict[str, _Failure] = {}
        self._gc_thread: threading.Thread | None = None
        self._gc_stop = threading.Event()

    def configured(self, *, settings: Mapping[str, str] | None = None, credential: Any = None) -> "AKSProvisioner":
        """A copy with other settings or another credential (tests, several clusters)."""
        return AKSProvisioner({**self._base, **dict(settings or {})},
                              credential=credential if credential is not None else self._credential)

    # -- pure ----------------------------------------------------------------------------

    def desired_objects(self, *, requests: Sequence[NodeRequest]) -> list[dict]:
        return builders.desired_objects(requests, self.settings)

    # -- plumbing ------------------------------------------------------------------------

    def _settings(self, ctx: ProvisionerContext | None) -> AKSSettings:
        if ctx is None or not ctx.settings:
            return self.settings
        return AKSSettings.from_mapping({**self._base, **dict(ctx.settings)})

    def _client(self, s: AKSSettings) -> Any:
        s.require_cluster()
        with self._lock:
            client = self._clients.get(s.client_key)
            if client is None:
                from azure.mgmt.containerservice import ContainerServiceClient

                if self._credential is None:
                    self._credential = default_credential()
                kwargs: dict[str, Any] = {"credential_scopes": [s.scope], "polling_interval": s.poll_interval_s,
                                          "retry_total": s.retry_total}
                if s.ca_bundle:
                    kwargs["connection_verify"] = s.ca_bundle
                client = ContainerServiceClient(self._credential, s.subscription_id, base_url=s.arm_endpoint,
                                                **kwargs)
                self._clients[s.client_key] = client
            return client

    def _get_pool(self, client: Any, s: AKSSettings, name: str) -> dict | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return dict(client.agent_pools.get(s.resource_group, s.cluster_name, name))
        except ResourceNotFoundError:
            return None

    def _list_pools(self, client: Any, s: AKSSettings) -> list[dict]:
        return [dict(p) for p in client.agent_pools.list(s.resource_group, s.cluster_name)]

    def _retry_due(self, name: str, s: AKSSettings) -> bool:
        failure = self._failures.get(name)
        return failure is None or time.monotonic() - failure.at >= s.retry_backoff_s

    # -- I/O -----------------------------------------------------------------------------

    def ensure(self, *, requests: Sequence[NodeRequest], ctx: ProvisionerContext) -> Sequence[NodeState]:
        s = self._settings(ctx)
        client = self._client(s)
        self._start_gc(ctx, s)
        return [self._ensure_one(client, s, r, ctx) for r in requests]

    def _ensure_one(self, client: Any, s: AKSSettings, request: NodeRequest, ctx: ProvisionerContext) -> NodeState:
        try:
            pool = self._get_pool(client, s, request.name)
        except Exception as exc:  # noqa: BLE001 - reported as the node's state
            return self._from_cause(request.name, classify(exc))
        if pool is not None:
            state = (pool.get("properties") or {}).get("provisioningState")
            if state != "Failed" or not self._retry_due(request.name, s):
                return self._pool_state(request, pool, ctx)  # adopt, whatever created it
            log.info("re-creating failed agent pool %s after %.0fs", request.name, s.retry_backoff_s)
        else:
            with self._lock:
                op = self._ops.get(request.name)
            if op is not None and not op.done():
                # ARM accepted the PUT but the pool is not listed yet: wait, do not PUT again
                return NodeState(name=request.name, ready=False, reason="PoolCreating",
                                 message=f"agent pool {request.name} is being created")
            if not self._retry_due(request.name, s):
                return self._from_cause(request.name, self._failures[request.name].cause)
        try:
            poller = client.agent_pools.begin_create_or_update(
                s.resource_group, s.cluster_name, request.name, builders.agent_pool(request, s))
        except Exception as exc:  # noqa: BLE001
            cause = classify(exc)
            if cause.failed:
                with self._lock:
                    self._failures[request.name] = _Failure(time.monotonic(), cause)
            log.warning("agent pool %s: %s: %s", request.name, cause.reason, cause.message)
            return self._from_cause(request.name, cause)
        with self._lock:
            self._ops[request.name] = poller
            self._failures.pop(request.name, None)
        log.info("creating agent pool %s (%s) for %s/%s", request.name, request.instance_type,
                 request.namespace, request.workspace)
        return NodeState(name=request.name, ready=False, reason="PoolCreating",
                         message=f"agent pool {request.name} ({request.instance_type}) is being created")

    def observe(self, *, requests: Sequence[NodeRequest], ctx: ProvisionerContext) -> Sequence[NodeState]:
        s = self._settings(ctx)
        client = self._client(s)
        self._start_gc(ctx, s)
        return [self._state(client, s, r, ctx) for r in requests]

    def _state(self, client: Any, s: AKSSettings, request: NodeRequest, ctx: ProvisionerContext) -> NodeState:
        try:
            pool = self._get_pool(client, s, request.name)
        except Exception as exc:  # noqa: BLE001
            return self._from_cause(request.name, classify(exc))
        if pool is None:
            failure = self._failures.get(request.name)
            if failure is not None:
                return self._from_cause(request.name, failure.cause)
            return NodeState(name=request.name, ready=False, message=f"agent pool {request.name} does not exist yet")
        return self._pool_state(request, pool, ctx)

    def _pool_state(self, request: NodeRequest, pool: Mapping[str, Any], ctx: ProvisionerContext) -> NodeState:
        props = pool.get("properties") or {}
        state = props.get("provisioningState") or "Unknown"
        name = request.name
        if state == "Succeeded":
            return self._node_state(name, ctx)
        if state in ("Failed", "Canceled"):
            cause = self._failure_cause(name, props, state)
            with self._lock:
                if name not in self._failures:
                    self._failures[name] = _Failure(time.monotonic(), cause)
            return self._from_cause(name, cause)
        return NodeState(name=name, ready=False, reason=f"Pool{state}" if state in IN_PROGRESS else "PoolPending",
                         message=f"agent pool {name} is {state}")

    def _failure_cause(self, name: str, props: Mapping[str, Any], state: str) -> Cause:
        error = (props.get("status") or {}).get("provisioningError") or {}
        if error.get("code") or error.get("message"):
            return classify_error(error.get("code") or "", error.get("message") or "")
        with self._lock:
            op = self._ops.get(name)
        if op is not None and op.done():
            try:
                op.result(timeout=0)
            except Exception as exc:  # noqa: BLE001 - the operation's error is what we report
                return classify(exc)
        return Cause("LaunchFailed", f"agent pool {name} is {state} (no error detail from ARM)")

    def _node_state(self, name: str, ctx: ProvisionerContext) -> NodeState:
        """The pool is up; when the cluster shows its node, that node must be Ready too."""
        nodes: list[dict] = []
        if ctx is not None and ctx.kube is not None:
            try:
                nodes = ctx.kube.list(api_version="v1", kind="Node", labels={AGENTPOOL_NODE_LABEL: name})
            except Exception:  # noqa: BLE001 - Node visibility is a bonus, ARM is the authority
                nodes = []
        if not nodes:
            return NodeState(name=name, ready=True)
        node = nodes[0]
        node_name = node["metadata"]["name"]
        ready = next((c for c in (node.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), {})
        if ready.get("status") == "True":
            return NodeState(name=name, ready=True, node_name=node_name)
        return NodeState(name=name, ready=False, node_name=node_name, reason="NodeNotReady",
                         message=ready.get("message") or f"node {node_name} of agent pool {name} is not Ready")

    @staticmethod
    def _from_cause(name: str, cause: Cause) -> NodeState:
        return NodeState(name=name, ready=False, reason=cause.reason, message=cause.message, failed=cause.failed)

    # -- release and garbage collection --------------------------------------------------

    def release(self, *, workspace: Any, ctx: ProvisionerContext) -> None:
        """Delete every pool tagged for this Workspace (started, not awaited: ARM finishes it)."""
        s = self._settings(ctx)
        try:
            s.require_cluster()
        except ValueError as exc:
            # Without a cluster to talk to, no pool of ours can exist; never block a delete on it.
            log.warning("release of %s/%s skipped: %s", workspace.metadata.namespace, workspace.metadata.name, exc)
            return
        client = self._client(s)
        want = builders.workspace_tags(workspace.metadata.name, workspace.metadata.namespace or "default")
        for pool in self._list_pools(client, s):
            tags = (pool.get("properties") or {}).get("tags") or pool.get("tags") or {}
            if all(tags.get(k) == v for k, v in want.items()):
                self._delete(client, s, pool)

    def _delete(self, client: Any, s: AKSSettings, pool: Mapping[str, Any]) -> bool:
        from azure.core.exceptions import ResourceNotFoundError

        name = pool["name"]
        with self._lock:
            self._ops.pop(name, None)
            self._failures.pop(name, None)
        if (pool.get("properties") or {}).get("provisioningState") == "Deleting":
            return False
        try:
            client.agent_pools.begin_delete(s.resource_group, s.cluster_name, name)
        except ResourceNotFoundError:
            return False
        log.info("deleting agent pool %s", name)
        return True

    def collect_garbage(self, *, ctx: ProvisionerContext) -> list[str]:
        """Delete kaito's pools whose Workspace is gone (or was re-created: new uid, new names).

        Only pools tagged ``kaito-creator: kaito`` are considered; a pool whose Workspace cannot
        be read (API error) is kept: the collector never deletes on doubt.
        """
        if ctx is None or ctx.kube is None:
            return []
        s = self._settings(ctx)
        client = self._client(s)
        deleted = []
        for pool in self._list_pools(client, s):
            tags = (pool.get("properties") or {}).get("tags") or {}
            if tags.get(builders.TAG_CREATOR) != builders.CREATOR or not tags.get(builders.TAG_WORKSPACE):
                continue
            try:
                ws = ctx.kube.get(api_version=WORKSPACE_API_VERSION, kind="Workspace",
                                  name=tags[builders.TAG_WORKSPACE], namespace=tags.get(builders.TAG_NAMESPACE))
            except Exception as exc:  # noqa: BLE001
                log.warning("GC keeps agent pool %s: cannot read its Workspace: %s", pool.get("name"), exc)
                continue
            if ws is None or pool["name"] not in _expected_names(ws):
                if self._delete(client, s, pool):
                    deleted.append(pool["name"])
        return deleted

    def _start_gc(self, ctx: ProvisionerContext, s: AKSSettings) -> None:
        if s.gc_interval_s <= 0 or ctx is None or ctx.kube is None:
            return
        with self._lock:
            if self._gc_thread is not None and self._gc_thread.is_alive():
                return
            self._gc_stop.clear()
            self._gc_thread = threading.Thread(target=self._gc_loop, args=(ctx, s.gc_interval_s),
                                               name="kaito-aks-gc", daemon=True)
            self._gc_thread.start()

    def _gc_loop(self, ctx: ProvisionerContext, interval: float) -> None:
        while not self._gc_stop.wait(interval):
            try:
                gone = self.collect_garbage(ctx=ctx)
                if gone:
                    log.info("GC deleted orphaned agent pools: %s", ", ".join(gone))
            except Exception as exc:  # noqa: BLE001 - the next round tries again
                log.warning("agent pool GC failed: %s", exc)

    def stop_gc(self) -> None:
        self._gc_stop.set()
        thread = self._gc_thread
        if thread is not None:
            thread.join(timeout=5)
