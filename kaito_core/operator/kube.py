"""A small synchronous Kubernetes REST client: the :class:`~kaito_core.types.KubeAPI` the
operator hands to provisioners, and what it applies Plans with.

Standard library only (``http.client`` + ``ssl``), one keep-alive connection per thread, so
the operator's image stays small and starts fast. Authentication comes from kopf's login
(:class:`kopf.ConnectionInfo`: server, CA, bearer token or client certificate), so kopf and
this client always talk to the same API server as the same identity.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
import tempfile
import threading
import urllib.parse
from typing import Any, Mapping

from kaito_core.errors import KaitoError

# Kinds whose plural is not the lowercase kind + "s" (or "es"/"ies").
PLURALS = {"Endpoints": "endpoints", "NetworkPolicy": "networkpolicies"}


class ApiError(KaitoError):
    """An API server answer other than 2xx. ``status`` is the HTTP code (404, 409, 422...)."""

    def __init__(self, status: int, method: str, path: str, body: Any):
        self.status = status
        self.method, self.path, self.body = method, path, body
        message = body.get("message") if isinstance(body, dict) else str(body)[:300]
        self.reason = body.get("reason") if isinstance(body, dict) else None
        super().__init__(f"{method} {path}: HTTP {status}: {message}")


def plural(kind: str) -> str:
    if kind in PLURALS:
        return PLURALS[kind]
    low = kind.lower()
    if low.endswith(("s", "x", "ch", "sh")):
        return low + "es"
    if low.endswith("y") and low[-2:-1] not in "aeiou":
        return low[:-1] + "ies"
    return low + "s"


def resource_path(api_version: str, kind: str, namespace: str | None = None, name: str | None = None) -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    if namespace:
        base += f"/namespaces/{namespace}"
    base += f"/{plural(kind)}"
    if name:
        base += f"/{name}"
    return base


def matches(labels: Mapping[str, str] | None, selector: Mapping[str, str] | None) -> bool:
    have = labels or {}
    return all(have.get(k) == v for k, v in (selector or {}).items())


class KubeClient:
    """Verbs on any resource by ``apiVersion`` + ``kind``; namespaced when a namespace is given."""

    def __init__(self, server: str, *, token: str | None = None, ca_path: str | None = None,
                 ca_data: bytes | None = None, insecure: bool = False, cert_path: str | None = None,
                 key_path: str | None = None, timeout: float = 30.0, username: str | None = None,
                 password: str | None = None):
        url = urllib.parse.urlsplit(server.rstrip("/"))
        self.scheme, self.host, self.port = url.scheme or "https", url.hostname or "127.0.0.1", url.port
        self.prefix = url.path
        self.timeout = timeout
        self.headers = {"Accept": "application/json", "User-Agent": "kaito-operator"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        elif username and password:
            self.headers["Authorization"] = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        self.context: ssl.SSLContext | None = None
        if self.scheme == "https":
            ctx = ssl.create_default_context(cafile=ca_path, cadata=ca_data.decode() if ca_data else None)
            if insecure:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            if cert_path:
                ctx.load_cert_chain(cert_path, key_path)
            self.context = ctx
        self._local = threading.local()
        self.calls = 0

    @classmethod
    def from_connection_info(cls, info: Any) -> "KubeClient":
        """Build from a :class:`kopf.ConnectionInfo` (what the login handler returned)."""
        ca_data = getattr(info, "ca_data", None)
        cert_path = getattr(info, "certificate_path", None)
        key_path = getattr(info, "private_key_path", None)
        cert_data = getattr(info, "certificate_data", None)
        key_data = getattr(info, "private_key_data", None)
        if cert_data and key_data and not cert_path:
            cert_path, key_path = _write_temp(cert_data), _write_temp(key_data)
        return cls(str(info.server), token=getattr(info, "token", None), ca_path=getattr(info, "ca_path", None),
                   ca_data=ca_data, insecure=bool(getattr(info, "insecure", False)), cert_path=cert_path,
                   key_path=key_path, username=getattr(info, "username", None),
                   password=getattr(info, "password", None))

    # -- transport ------------------------------------------------------------------------

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self.scheme == "https":
                conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=self.context)
            else:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def request(self, method: str, path: str, body: Any = None, *, query: Mapping[str, str] | None = None,
                content_type: str = "application/json") -> Any:
        url = self.prefix + path + (("?" + urllib.parse.urlencode(query)) if query else "")
        data = json.dumps(body).encode() if body is not None else None
        headers = dict(self.headers)
        if data is not None:
            headers["Content-Type"] = content_type
        for attempt in (0, 1):
            conn = self._conn()
            try:
                conn.request(method, url, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
                break
            except (http.client.HTTPException, ConnectionError, OSError):
                conn.close()
                self._local.conn = None
                if attempt:
                    raise
        self.calls += 1
        try:
            payload = json.loads(raw) if raw else {}
        except ValueError:
            payload = raw.decode(errors="replace")
        if resp.status >= 400:
            raise ApiError(resp.status, method, path, payload)
        return payload

    # -- the KubeAPI protocol --------------------------------------------------------------

    def get(self, *, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict | None:
        try:
            return self.request("GET", resource_path(api_version, kind, namespace, name))
        except ApiError as exc:
            if exc.status == 404 and _object_missing(exc):
                return None
            raise

    def list(self, *, api_version: str, kind: str, namespace: str | None = None,
             labels: Mapping[str, str] | None = None) -> list[dict]:
        query = {"labelSelector": ",".join(f"{k}={v}" for k, v in sorted(labels.items()))} if labels else None
        out = self.request("GET", resource_path(api_version, kind, namespace), query=query)
        items = out.get("items") or [] if isinstance(out, dict) else []
        # Filter here too: some servers (and test emulators) ignore labelSelector.
        return [i for i in items if matches((i.get("metadata") or {}).get("labels"), labels)
                and (namespace is None or (i.get("metadata") or {}).get("namespace") in (None, namespace))]

    def create(self, obj: dict) -> dict:
        meta = obj.get("metadata") or {}
        return self.request("POST", resource_path(obj["apiVersion"], obj["kind"], meta.get("namespace")), obj)

    def delete(self, *, api_version: str, kind: str, name: str, namespace: str | None = None,
               propagation: str | None = "Background") -> bool:
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation} if propagation else None
        try:
            self.request("DELETE", resource_path(api_version, kind, namespace, name), body)
            return True
        except ApiError as exc:
            if exc.status == 404 and _object_missing(exc):
                return False
            raise

    # -- extras the operator uses ---------------------------------------------------------

    def patch(self, *, api_version: str, kind: str, name: str, namespace: str | None = None,
              patch: Mapping[str, Any], subresource: str | None = None) -> dict:
        path = resource_path(api_version, kind, namespace, name) + (f"/{subresource}" if subresource else "")
        return self.request("PATCH", path, dict(patch), content_type="application/merge-patch+json")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def _object_missing(exc: ApiError) -> bool:
    """404 because the object is absent (True) vs because the resource type is not served
    (False: e.g. Karpenter's CRDs are not installed, "the server could not find the requested
    resource"). Callers treat the first as "None"/"False" and let the second raise."""
    body = exc.body
    if not isinstance(body, dict):
        return False
    message = str(body.get("message", ""))
    if "could not find the requested resource" in message or body.get("reason") == "Resource Not Found":
        return False
    details = body.get("details") or {}
    return bool(details.get("name") or details.get("kind")) or body.get("reason") in ("NotFound", "Object Not Found")


def _write_temp(data: bytes) -> str:
    fd, path = tempfile.mkstemp(prefix="kaito-kube-")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return path
