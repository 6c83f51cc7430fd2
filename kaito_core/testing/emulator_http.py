"""The API emulator's HTTP face (aiohttp): discovery, the REST verbs with kube-apiserver's
preconditions, admission, status-subresource and validation rules, and watch streams with
resourceVersion, 410 Gone, bookmarks and server-side timeouts.
"""

from __future__ import annotations

import base64
import collections
import contextvars
import json
import uuid
from dataclasses import dataclass
from typing import Any

from kaito_core.testing import emulator_admission as admission, emulator_defaults as defaults
from kaito_core.testing.emulator_rules import (ApiStatus, apply_patch, event_causes, fields_match, immutable_causes,
                                               invalid, labels_match, metadata_causes, parse_field_selector,
                                               parse_label_selector, prepare_create, prepare_update, spec_changed)
from kaito_core.testing.emulator_store import NO_GENERATION, ResourceType, Store, conflict
from kaito_core.testing.emulator_crds import crd_types, discovery, not_served
from kaito_core.testing.emulator_schema import field_warnings
from kaito_core.testing.emulator_watch import watch

SYSTEM_META = ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation")
# this request's ?fieldValidation= and the warnings it is answered with (one aiohttp task each)
_FIELDS: contextvars.ContextVar[tuple[str, list[str]]] = contextvars.ContextVar("field_validation")
_AGENT: contextvars.ContextVar[str] = contextvars.ContextVar("user_agent", default="")


@dataclass
class Fault:
    """An injected answer: the next ``times`` requests matching (verb, plural, subresource)."""

    verb: str
    plural: str
    subresource: str | None
    code: int
    times: int
    reason: str = ""


class ApiServer:
    def __init__(self, store: Store):
        self.store = store
        self.counts: dict[tuple[str, str], int] = collections.Counter()  # (verb, plural) -> requests
        self.calls: dict[tuple[str, str, str, str], int] = collections.Counter()  # verb, group, resource, user-agent
        self.refusals: list[tuple[str, str, str, int, str, str]] = []  # method, path, user-agent, code, reason, message
        self.warnings: list[tuple[str, str, str, str]] = []  # method, path, user-agent, warning
        self.authorizer: Any = None  # emulator_rbac.Authorizer: see Emulator(rbac=...)
        self.failing: set[str] = set()
        self.faults: list[Fault] = []
        self.webhook_calls: list[tuple[str, str]] = []
        self.bookmark_interval = 5.0
        self.max_watch_seconds: float | None = None
        self.session: Any = None
        self.watches_open: Any = None  # asyncio.Event: cleared while watches are held (Emulator.hold_watches)

    # -- routing ----------------------------------------------------------------------------

    async def handle(self, request: Any) -> Any:
        from aiohttp import web

        warned: list[str] = []
        _FIELDS.set((request.query.get("fieldValidation", "Warn"), warned))
        _AGENT.set(request.headers.get("User-Agent", ""))
        try:
            response = await self._route(request)
            for text in dict.fromkeys(warned):  # kube-apiserver's warning headers (RFC 7234, code 299)
                self.warnings.append((request.method, request.path, request.headers.get("User-Agent", ""), text))
                response.headers.add("Warning", '299 - "%s"' % text.replace('"', '\\"'))
            return response
        except ApiStatus as exc:
            self.refusals.append((request.method, request.path, request.headers.get("User-Agent", ""), exc.code,
                                  exc.reason, exc.message[:300]))
            # API Priority and Fairness answers 429 with Retry-After (clients back off by it)
            headers = {"Retry-After": "1"} if exc.code == 429 else None
            return web.json_response(exc.body(), status=exc.code, headers=headers)
        except ValueError as exc:  # a body that is not JSON, a malformed number or selector
            return web.json_response(ApiStatus(400, "BadRequest", f"bad request: {exc}").body(), status=400)
        except (KeyError, TypeError, AttributeError, IndexError) as exc:  # a body of the wrong shape, or our bug
            body = ApiStatus(500, "InternalError", f"Internal error occurred: {type(exc).__name__}: {exc}").body()
            return web.json_response(body, status=500)

    def _parse(self, path: str) -> tuple[str, str, list[str]] | None:
        parts = [p for p in path.split("/") if p]
        if parts[:1] == ["api"] and len(parts) >= 2:
            return "", parts[1], parts[2:]
        if parts[:1] == ["apis"] and len(parts) >= 3:
            return parts[1], parts[2], parts[3:]
        return None

    async def _route(self, request: Any) -> Any:
        from aiohttp import web

        path = request.path
        parsed = self._parse(path)
        if parsed is None or not parsed[2]:
            return web.json_response(discovery(self.store.types.values(), path))
        group, version, rest = parsed
        ns, rt, name, sub = self._target(group, version, rest)
        verb = self._verb(request.method, name, request.query)
        self.counts[(verb, rt.plural)] += 1
        self.calls[(verb, group, rt.plural + (f"/{sub}" if sub else ""), request.headers.get("User-Agent", ""))] += 1
        if self.authorizer is not None:
            self.authorizer.check(_AGENT.get(), verb, group, rt.plural + (f"/{sub}" if sub else ""), ns, name)
        self._inject(verb, rt.plural, sub)
        if verb == "watch":
            return await watch(self, request, rt, ns)
        if verb == "list":
            return web.json_response(self.list(rt, ns, request.query))
        if verb == "get":
            obj = self.store.get(rt, ns, name)
            if sub and sub != "status":
                raise not_served()
            return web.json_response(self.out(rt, obj))
        if verb == "delete":
            return await self.delete(request, rt, ns, name)
        if verb == "deletecollection":
            gone = []
            for obj in self.store.list(rt, ns, self._matcher(request.query)):
                meta = obj["metadata"]
                await self._admit("validating", rt, None, "DELETE", None, self.out(rt, obj))
                gone.append(self.out(rt, self.store.delete(rt, meta.get("namespace"), meta["name"], {})))
            return web.json_response({"kind": f"{rt.kind}List", "apiVersion": rt.api_version,
                                      "metadata": {"resourceVersion": str(self.store.rv)}, "items": gone})
        ctype = request.headers.get("Content-Type", "application/json")
        if verb == "patch" and "apply-patch" in ctype:
            apply_patch({}, ctype, None)  # 415: kaito's operator never uses server-side apply
        body = await request.json()
        if verb == "create":
            return web.json_response(self.out(rt, await self.create(rt, ns, body)), status=201)
        obj = await self.update(rt, ns, name, sub, body, None if verb == "update" else ctype)
        return web.json_response(self.out(rt, obj))

    def _target(self, group: str, version: str, rest: list[str]) -> tuple[str | None, ResourceType, str, str | None]:
        ns = None
        if rest[0] == "namespaces" and len(rest) >= 3 and (group, version, rest[2]) in self.store.types:
            ns, rest = rest[1], rest[2:]
        rt = self.store.types.get((group, version, rest[0]))
        if rt is None or len(rest) > 3 or (ns is not None and not rt.namespaced):
            raise not_served()
        name = rest[1] if len(rest) > 1 else ""
        sub = rest[2] if len(rest) > 2 else None
        if sub and not (sub == "status" and rt.status):
            raise not_served()
        return ns, rt, name, sub

    @staticmethod
    def _verb(method: str, name: str, query: Any) -> str:
        if method == "GET":
            return "get" if name else ("watch" if query.get("watch") in ("true", "1") else "list")
        verbs = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
        if method not in verbs or (method == "POST" and name) or (method in ("PUT", "PATCH") and not name):
            raise ApiStatus(405, "MethodNotAllowed", f"the server does not allow this method on the requested "
                                                     f"resource ({method})")
        return "deletecollection" if method == "DELETE" and not name else verbs[method]

    def _inject(self, verb: str, plural: str, sub: str | None) -> None:
        if plural in self.failing:
            raise ApiStatus(500, "InternalError", f"Internal error occurred: {plural} is failing (injected)")
        for fault in self.faults:
            if fault.times > 0 and fault.verb in (verb, "*") and fault.plural in (plural, "*") \
                    and fault.subresource == sub:
                fault.times -= 1
                reason = fault.reason or {409: "Conflict", 410: "Expired", 429: "TooManyRequests"}.get(
                    fault.code, "InternalError")
                raise ApiStatus(fault.code, reason, f"injected {fault.code} for {verb} {plural}"
                                                    f"{'/' + sub if sub else ''}: the object has been modified; "
                                                    f"please apply your changes to the latest version and try again")

    @staticmethod
    def out(rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        return {**obj, "apiVersion": rt.api_version, "kind": rt.kind}

    # -- reads ------------------------------------------------------------------------------

    @staticmethod
    def _matcher(query: Any) -> Any:
        labels = parse_label_selector(query.get("labelSelector", ""))
        fields = parse_field_selector(query.get("fieldSelector", ""))
        return lambda o: labels_match(o["metadata"].get("labels"), labels) and fields_match(o, fields)

    def list(self, rt: ResourceType, ns: str | None, query: Any) -> dict[str, Any]:
        items = self.store.list(rt, ns, self._matcher(query))
        meta: dict[str, Any] = {"resourceVersion": str(self.store.rv)}
        start = 0
        if query.get("continue"):
            token = json.loads(base64.b64decode(query["continue"]))
            if token["rv"] < self.store.compacted:
                raise ApiStatus(410, "Expired", "The provided continue parameter is too old to display a "
                                                "consistent list result. You can start a new list without the "
                                                "continue parameter.")
            start = token["start"]
            meta["resourceVersion"] = str(token["rv"])
        limit = int(query.get("limit") or 0)
        if limit and start + limit < len(items):
            meta["continue"] = base64.b64encode(json.dumps({"rv": int(meta["resourceVersion"]),
                                                            "start": start + limit}).encode()).decode()
            meta["remainingItemCount"] = len(items) - start - limit
            items = items[start:start + limit]
        else:
            items = items[start:]
        return {"kind": f"{rt.kind}List", "apiVersion": rt.api_version, "metadata": meta,
                "items": [self.out(rt, o) for o in items]}

    # -- writes -----------------------------------------------------------------------------

    def _owner_references(self, rt: ResourceType, ns: str | None, obj: dict[str, Any], old: Any) -> None:
        """OwnerReferencesPermissionEnforcement admission, when the emulator enforces it."""
        if self.authorizer is None:
            return

        def plural_of(api_version: str, kind: str) -> str | None:
            group, _, version = api_version.rpartition("/")
            return next((t.plural for t in self.store.types.values()
                         if (t.group, t.version, t.kind) == (group, version, kind)), None)

        self.authorizer.check_owner_references(_AGENT.get(), plural_of, rt.group, rt.plural, ns, obj, old)

    @staticmethod
    def _check_fields(rt: ResourceType, obj: dict[str, Any]) -> None:
        mode, warned = _FIELDS.get(("Warn", []))
        warned.extend(field_warnings(rt.schema, obj, mode))

    def _prepare(self, rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        return rt.schema.prepare(obj) if rt.schema is not None else obj

    def _validate(self, rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        causes = metadata_causes(obj.get("metadata") or {})
        if rt.kind == "Event" and not rt.group:
            causes += event_causes(obj)
        if rt.schema is not None:
            causes += rt.schema.causes(obj, old)
        if old is not None:
            causes += immutable_causes(rt.kind, old, obj)
        if causes:
            raise invalid(rt.kind, rt.group, (obj.get("metadata") or {}).get("name", ""), causes)

    async def _admit(self, kind: str, rt: ResourceType, sub: str | None, op: str, obj: Any, old: Any) -> Any:
        if self.session is None:
            return obj
        return await admission.admit(self.store, self.session, kind=kind, rt=rt, subresource=sub, operation=op,
                                     obj=obj, old=old, calls=self.webhook_calls)

    async def create(self, rt: ResourceType, ns: str | None, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiStatus(400, "BadRequest", "the body must be a JSON object")
        obj = dict(body, apiVersion=rt.api_version, kind=rt.kind)
        meta = dict(obj.get("metadata") or {})
        if rt.namespaced:
            if ns is None or meta.get("namespace", ns) != ns:
                raise ApiStatus(400, "BadRequest", "the namespace of the provided object does not match the "
                                                   "namespace sent on the request")
            meta["namespace"] = ns
            self._namespace_accepts(ns)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        obj["metadata"] = meta
        uid = str(uuid.uuid4())  # FillObjectMetaSystemFields: before the Job strategy's selector
        if not rt.crd:
            defaults.apply(rt.kind, obj, created_uid=uid)
        prepare_create(rt.kind, obj, rt.status)
        self._check_fields(rt, obj)
        obj = self._prepare(rt, obj)
        obj = self._prepare(rt, await self._admit("mutating", rt, None, "CREATE", obj, None))
        self._owner_references(rt, ns, obj, None)
        self._validate(rt, obj, None)
        await self._admit("validating", rt, None, "CREATE", obj, None)
        if (obj.get("metadata") or {}).get("resourceVersion"):
            # etcd3 store.Create returns storage.ErrResourceVersionSetOnCreate, not a Status:
            # ErrorToAPIStatus makes it a 500 with reason Unknown (""). An object read back and
            # posted again must drop its version.
            raise ApiStatus(500, "", "resourceVersion should not be set on objects to be created")
        stored = self.store.create(rt, obj, uid=uid)
        if rt.kind == "CustomResourceDefinition":
            stored = self._crd_changed(rt, stored)
        return stored

    def _namespace_accepts(self, ns: str) -> None:
        """NamespaceLifecycle admission: nothing new in a Terminating namespace (403), nor in a
        namespace that does not exist (404)."""
        phase = self.store.namespace_phase(ns)
        if phase == "Terminating":
            raise ApiStatus(403, "Forbidden", f"unable to create new content in namespace {ns} because it is being "
                                              f"terminated", {"name": ns, "kind": "namespaces"})
        if phase is None:
            raise ApiStatus(404, "NotFound", f'namespaces "{ns}" not found', {"name": ns, "kind": "namespaces"})

    async def update(self, rt: ResourceType, ns: str | None, name: str, sub: str | None, body: Any,
                     patch_type: str | None) -> dict[str, Any]:
        """PUT (``patch_type`` None) or PATCH; retried when the object changes meanwhile and the
        caller set no resourceVersion (apiserver's GuaranteedUpdate)."""
        if rt.crd and patch_type and patch_type.startswith("application/strategic-merge-patch"):
            # custom resources have no patch strategies (apiextensions-apiserver answers 415)
            raise ApiStatus(415, "UnsupportedMediaType", "the body of the request was in an unknown format - "
                                                         "accepted media types include: application/json-patch+json, "
                                                         "application/merge-patch+json, application/apply-patch+yaml")
        for _ in range(10):
            current = self.store.get(rt, ns, name)
            new = apply_patch(self.out(rt, current), patch_type, body) if patch_type else body
            if not isinstance(new, dict) or not isinstance(new.get("metadata", {}), dict):
                raise ApiStatus(400, "BadRequest", "the body must be a JSON object with a metadata object")
            new = dict(new, apiVersion=rt.api_version, kind=rt.kind)
            meta = dict(new.get("metadata") or {})
            wanted = meta.get("resourceVersion")
            if patch_type and wanted == current["metadata"]["resourceVersion"]:
                wanted = None  # a patch carries the stored version along: only a changed one is a precondition
            if wanted and wanted != current["metadata"]["resourceVersion"]:
                raise conflict(rt, name, "the object has been modified; please apply your changes to the latest "
                                         "version and try again")
            if meta.get("uid") and meta["uid"] != current["metadata"]["uid"]:  # rest.BeforeUpdate
                raise conflict(rt, name, f"Precondition failed: UID in precondition: {meta['uid']}, UID in object "
                                         f"meta: {current['metadata']['uid']}")
            if not wanted and patch_type is None and rt.crd:
                raise invalid(rt.kind, rt.group, name, [("FieldValueInvalid", "metadata.resourceVersion",
                                                         "Invalid value: 0x0: must be specified for an update")])
            if meta.get("name", name) != name or (rt.namespaced and meta.get("namespace", ns) != ns):
                raise ApiStatus(400, "BadRequest", f"the name/namespace of the object ({meta.get('name')}) does "
                                                   f"not match the request ({name})")
            new["metadata"] = self._system_meta(rt, current, meta)
            if not rt.crd:
                defaults.apply(rt.kind, new)  # the request is decoded (and defaulted) first
            new = prepare_update(current, new, subresource=sub, has_status=rt.status)
            self._check_fields(rt, new)
            new = self._prepare(rt, new)
            if sub != "status" and rt.kind not in NO_GENERATION and spec_changed(current, new):
                new["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
            new = self._prepare(rt, await self._admit("mutating", rt, sub, "UPDATE", new, self.out(rt, current)))
            self._owner_references(rt, ns, new, current)
            self._validate(rt, new, current)
            await self._admit("validating", rt, sub, "UPDATE", new, self.out(rt, current))
            if self.store.objects.get(self.store.key(rt, ns, name)) is not current:
                if wanted:
                    raise conflict(rt, name, "the object has been modified; please apply your changes to the "
                                             "latest version and try again")
                continue
            if {**new, "metadata": {**new["metadata"], "resourceVersion": None}} == \
                    {**self.out(rt, current), "metadata": {**current["metadata"], "resourceVersion": None}}:
                return current  # a no-op write: no new resourceVersion, no watch event
            stored = self.store.replace(rt, current, new)
            if rt.kind == "CustomResourceDefinition":
                stored = self._crd_changed(rt, stored)
            return stored
        raise conflict(rt, name, "the object kept changing; try again")

    def _system_meta(self, rt: ResourceType, current: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
        """uid, creationTimestamp, generation and deletion fields are the server's; finalizers
        cannot be added to an object being deleted."""
        old = current["metadata"]
        for key in SYSTEM_META:
            if key in old:
                meta[key] = old[key]
            else:
                meta.pop(key, None)
        if old.get("deletionTimestamp"):
            added = set(meta.get("finalizers") or []) - set(old.get("finalizers") or [])
            if added:
                raise invalid(rt.kind, rt.group, old["name"], [(
                    "FieldValueForbidden", "metadata.finalizers",
                    f"Forbidden: no new finalizers can be added if the object is being deleted, found new "
                    f"finalizers {sorted(added)}")])
        return meta

    async def delete(self, request: Any, rt: ResourceType, ns: str | None, name: str) -> Any:
        from aiohttp import web

        raw = await request.read()
        options = json.loads(raw) if raw else {}
        if request.query.get("propagationPolicy"):
            options["propagationPolicy"] = request.query["propagationPolicy"]
        current = self.store.get(rt, ns, name)
        await self._admit("validating", rt, None, "DELETE", None, self.out(rt, current))
        result = self.store.delete(rt, ns, name, options)
        if rt.kind == "CustomResourceDefinition" and self.store.key(rt, ns, name) not in self.store.objects:
            self.store.unregister_crd(name)
        pending = self.store.key(rt, ns, name) in self.store.objects
        return web.json_response(self.out(rt, result), status=202 if pending else 200)

    def _crd_changed(self, rt: ResourceType, crd: dict[str, Any]) -> dict[str, Any]:
        """Serve what a CRD declares (the apiextensions controller), and report it Established."""
        name = crd["metadata"]["name"]
        self.store.drop_types(name)
        for new in crd_types(crd):
            self.store.register(new)
        conds = [{"type": t, "status": "True", "reason": t, "message": "emulated",
                  "lastTransitionTime": crd["metadata"]["creationTimestamp"]} for t in ("NamesAccepted", "Established")]
        status = {"conditions": conds, "acceptedNames": crd["spec"]["names"],
                  "storedVersions": [v["name"] for v in crd["spec"]["versions"] if v.get("storage")]}
        if crd.get("status") == status:
            return crd
        return self.store.replace(rt, crd, {**crd, "status": status})
