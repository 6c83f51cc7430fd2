"""A local HTTPS server that answers like Azure Resource Manager for one AKS cluster's agentPools.

Enough of ARM for the real azure-mgmt-containerservice client: PUT/GET/LIST/DELETE of
``.../managedClusters/{cluster}/agentPools[/{pool}]`` with ``api-version``, bearer-token
checks (401), 201/202 + ``Azure-AsyncOperation`` long-running operations, list paging with
``nextLink``, and injected failures: a synchronous refusal of a PUT (quota, SKU), an
asynchronous failure of the operation (``provisioningError`` on the pool), 409 while an
operation runs on the pool, and 429 throttling with ``Retry-After``.
"""

from __future__ import annotations

import datetime
import ipaddress
import itertools
import json
import re
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

POOLS = re.compile(r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/"
                   r"Microsoft\.ContainerService/managedClusters/(?P<cluster>[^/]+)/agentPools(?:/(?P<pool>[^/]+))?$",
                   re.I)
OPERATION = re.compile(r"^/subscriptions/(?P<sub>[^/]+)/providers/Microsoft\.ContainerService/locations/"
                       r"(?P<loc>[^/]+)/operations/(?P<op>[^/]+)$", re.I)


def make_tls_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (the CA bundle the client verifies with is itself)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-arm.local")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "arm.pem", directory / "arm.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@dataclass
class Operation:
    id: str
    pool: str
    kind: str  # "create" | "delete"
    status: str = "InProgress"
    error: dict | None = None
    polls: int = 0


@dataclass
class FakeARM:
    """State and behaviour; ``serve()`` starts the HTTPS server on a free port."""

    subscription: str = "00000000-0000-0000-0000-000000000000"
    resource_group: str = "kaito-rg"
    cluster: str = "kaito-aks"
    location: str = "eastus"
    token: str = "test-token"
    hold_creates: bool = False    # creations wait for complete()/fail() instead of finishing by themselves
    polls_to_finish: int = 1      # operations not held finish after this many status polls
    page_size: int = 50
    pools: dict[str, dict] = field(default_factory=dict)
    operations: dict[str, Operation] = field(default_factory=dict)
    requests: list[tuple[str, str, int]] = field(default_factory=list)   # (method, path, status)
    put_failures: dict[str, tuple[int, str, str]] = field(default_factory=dict)  # vmSize -> (status, code, msg)
    throttle: int = 0             # answer the next N requests with 429
    url: str = ""

    def __post_init__(self) -> None:
        self.lock = threading.RLock()
        self._ids = itertools.count(1)

    # -- what a test does ----------------------------------------------------------------

    def complete(self, pool: str) -> None:
        with self.lock:
            for op in self.operations.values():
                if op.pool == pool and op.status == "InProgress":
                    self._finish(op)

    def fail(self, pool: str, code: str, message: str) -> None:
        with self.lock:
            for op in self.operations.values():
                if op.pool == pool and op.status == "InProgress":
                    op.status, op.error = "Failed", {"code": code, "message": message}
                    p = self.pools[pool]["properties"]
                    p["provisioningState"] = "Failed"
                    p["status"] = {"provisioningError": {"code": code, "message": message}}

    def add_pool(self, name: str, *, vm_size: str = "Standard_D4s_v5", tags: dict | None = None,
                 state: str = "Succeeded", mode: str = "System") -> None:
        with self.lock:
            self.pools[name] = self._resource(name, {"count": 1, "vmSize": vm_size, "mode": mode,
                                                     "osType": "Linux", "tags": tags or {}}, state)

    def count(self, method: str, pattern: str = "") -> int:
        return sum(1 for m, p, _ in self.requests if m == method and re.search(pattern, p))

    def live_pools(self) -> list[str]:
        with self.lock:
            return sorted(n for n, p in self.pools.items() if p["properties"]["provisioningState"] != "Deleting")

    # -- ARM semantics -------------------------------------------------------------------

    def _resource(self, name: str, props: dict, state: str) -> dict:
        base = (f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}/providers/"
                f"Microsoft.ContainerService/managedClusters/{self.cluster}")
        props = {**props, "provisioningState": state, "powerState": {"code": "Running"}}
        return {"id": f"{base}/agentPools/{name}", "name": name,
                "type": "Microsoft.ContainerService/managedClusters/agentPools", "properties": props}

    def _finish(self, op: Operation) -> None:
        op.status = "Succeeded"
        if op.kind == "delete":
            self.pools.pop(op.pool, None)
        elif op.pool in self.pools:
            self.pools[op.pool]["properties"]["provisioningState"] = "Succeeded"

    def _operation(self, pool: str, kind: str) -> Operation:
        op = Operation(id=f"op-{next(self._ids)}", pool=pool, kind=kind)
        self.operations[op.id] = op
        return op

    def _op_url(self, op: Operation) -> str:
        return (f"{self.url}/subscriptions/{self.subscription}/providers/Microsoft.ContainerService/locations/"
                f"{self.location}/operations/{op.id}?api-version=2017-08-31")

    def handle(self, method: str, path: str, query: dict, headers: Any, body: bytes) -> tuple[int, dict, Any]:
        if headers.get("Authorization") != f"Bearer {self.token}":
            return 401, {}, _err("InvalidAuthenticationToken", "The access token is invalid.")
        if self.throttle > 0:
            self.throttle -= 1
            return 429, {"Retry-After": "0.01"}, _err("TooManyRequests", "Too many requests, retry later.")
        if "api-version" not in query:
            return 400, {}, _err("MissingApiVersionParameter", "The api-version query parameter is required.")
        m = OPERATION.match(path)
        if m and method == "GET":
            op = self.operations.get(m["op"])
            if op is None:
                return 404, {}, _err("NotFound", f"operation {m['op']} not found")
            op.polls += 1
            if op.status == "InProgress" and not (self.hold_creates and op.kind == "create") \
                    and op.polls >= self.polls_to_finish:
                self._finish(op)
            out = {"name": op.id, "status": op.status, "startTime": "2026-01-01T00:00:00Z"}
            if op.error:
                out["error"] = op.error
            return 200, {}, out
        m = POOLS.match(path)
        if not m:
            return 404, {}, _err("InvalidResourceType", f"no route for {path}")
        if (m["sub"], m["rg"].lower(), m["cluster"].lower()) != (self.subscription, self.resource_group.lower(),
                                                                 self.cluster.lower()):
            return 404, {}, _err("ParentResourceNotFound",
                                 f"Can not perform requested operation on nested resource. Parent resource "
                                 f"'{m['cluster']}' not found.")
        name = m["pool"]
        if name is None:
            if method != "GET":
                return 405, {}, _err("MethodNotAllowed", method)
            names = sorted(self.pools)
            start = int(query.get("$skiptoken", ["0"])[0])
            page = [self.pools[n] for n in names[start:start + self.page_size]]
            out: dict[str, Any] = {"value": page}
            if start + self.page_size < len(names):
                out["nextLink"] = f"{self.url}{path}?api-version={query['api-version'][0]}&$skiptoken={start + self.page_size}"
            return 200, {}, out
        if method == "GET":
            if name not in self.pools:
                return 404, {}, _err("NotFound", f"Agent pool {name} not found.")
            return 200, {}, self.pools[name]
        if method == "PUT":
            return self._put(name, json.loads(body or b"{}"))
        if method == "DELETE":
            if name not in self.pools:
                return 204, {}, None
            if self._busy(name, "delete"):
                return 202, {}, None
            for o in self.operations.values():  # a delete preempts a running create, as AKS does
                if o.pool == name and o.kind == "create" and o.status == "InProgress":
                    o.status, o.error = "Canceled", {"code": "OperationPreempted",
                                                     "message": "the operation was preempted by a delete"}
            op = self._operation(name, "delete")
            self.pools[name]["properties"]["provisioningState"] = "Deleting"
            return 202, {"Azure-AsyncOperation": self._op_url(op)}, None
        return 405, {}, _err("MethodNotAllowed", method)

    def _busy(self, name: str, kind: str | None = None) -> bool:
        return any(o.pool == name and o.status == "InProgress" and (kind is None or o.kind == kind)
                   for o in self.operations.values())

    def _put(self, name: str, body: dict) -> tuple[int, dict, Any]:
        props = body.get("properties") or {}
        if not re.fullmatch(r"[a-z][a-z0-9]{0,11}", name):
            return 400, {}, _err("InvalidParameter", f"The agent pool name {name} is invalid: it must match "
                                                     "^[a-z][a-z0-9]{0,11}$.")
        for required in ("vmSize", "count"):
            if required not in props:
                return 400, {}, _err("InvalidParameter", f"properties.{required} is required")
        failure = self.put_failures.get(props["vmSize"])
        if failure is not None:
            status, code, message = failure
            return status, {}, _err(code, message)
        if self._busy(name):
            return 409, {}, _err("OperationNotAllowed", f"Operation is not allowed because there's an in progress "
                                                        f"operation on agent pool {name}.")
        existed = name in self.pools
        self.pools[name] = self._resource(name, props, "Updating" if existed else "Creating")
        op = self._operation(name, "create")
        return (200 if existed else 201), {"Azure-AsyncOperation": self._op_url(op)}, self.pools[name]

    # -- server --------------------------------------------------------------------------

    def serve(self, cert: Path, key: Path) -> "FakeARM":
        arm = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _do(self) -> None:
                parsed = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with arm.lock:
                    status, headers, payload = arm.handle(self.command, parsed.path, parse_qs(parsed.query),
                                                          self.headers, body)
                    arm.requests.append((self.command, parsed.path, status))
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("x-ms-request-id", "fake")
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_DELETE = _do

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fake-arm", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _err(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


class StaticToken:
    """A TokenCredential that hands out one fixed token (what workload identity would fetch)."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **_: Any) -> Any:
        from azure.core.credentials import AccessToken
        import time

        self.scopes.append(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)
