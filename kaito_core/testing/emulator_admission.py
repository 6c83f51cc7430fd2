"""Dynamic admission as kube-apiserver does it: the ValidatingWebhookConfiguration and
MutatingWebhookConfiguration objects stored in the emulator are matched against each write
(rules, namespaceSelector, objectSelector) and called over HTTPS with an ``admission.k8s.io/v1``
AdmissionReview, trusting only the configuration's ``caBundle``.

Upstream behaviour followed (k8s.io/apiserver/pkg/admission/plugin/webhook):
mutating webhooks run first, in name order, and their JSONPatch is applied; validating webhooks
then see the final object. A denial answers the webhook's status code (at least 400) with
``admission webhook "<name>" denied the request: <message>``. A webhook that cannot be called
(refused, TLS, timeout, bad answer) fails the request with 500 under ``failurePolicy: Fail`` (the
v1 default) and is skipped under ``Ignore``. Writes to the webhook configurations themselves are
never sent to webhooks.
"""

from __future__ import annotations

import base64
import json
import ssl
import uuid
from typing import Any

from kaito_core.testing.emulator_rules import ApiStatus, json_patch, selector_matches
from kaito_core.testing.emulator_store import ResourceType, Store

CONFIG_KINDS = {("admissionregistration.k8s.io", "validatingwebhookconfigurations"): "validating",
                ("admissionregistration.k8s.io", "mutatingwebhookconfigurations"): "mutating"}


def _rule_matches(rule: dict[str, Any], rt: ResourceType, subresource: str | None, operation: str,
                  namespaced: bool) -> bool:
    def has(values: Any, value: str) -> bool:
        return "*" in (values or []) or value in (values or [])

    ops = rule.get("operations") or []
    if "*" not in ops and operation not in ops:
        return False
    if not has(rule.get("apiGroups"), rt.group) or not has(rule.get("apiVersions"), rt.version):
        return False
    wanted = f"{rt.plural}/{subresource}" if subresource else rt.plural
    resources = rule.get("resources") or []
    ok = wanted in resources or "*/*" in resources or (not subresource and "*" in resources) or (
        subresource and f"*/{subresource}" in resources) or (subresource and f"{rt.plural}/*" in resources)
    scope = rule.get("scope") or "*"
    return bool(ok) and (scope == "*" or (scope == "Namespaced") == namespaced)


def matching(store: Store, kind: str, rt: ResourceType, subresource: str | None, operation: str,
             obj: dict[str, Any] | None, old: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The webhooks (with their configuration's name) that apply to this request."""
    if (rt.group, rt.plural) in CONFIG_KINDS:
        return []
    labels = ((obj or old or {}).get("metadata") or {}).get("labels") or {}
    namespace = ((obj or old or {}).get("metadata") or {}).get("namespace") or ""
    ns_obj = store.objects.get(("", "namespaces", "", namespace)) if namespace else None
    ns_labels = dict(((ns_obj or {}).get("metadata") or {}).get("labels") or {})
    if namespace:
        ns_labels.setdefault("kubernetes.io/metadata.name", namespace)
    out = []
    gk = next(gk for gk, k in CONFIG_KINDS.items() if k == kind)
    for (_, _, _, name), config in store.items(gk):  # cluster-scoped: key order is name order
        for hook in config.get("webhooks") or []:
            # matchPolicy Equivalent (the v1 default): a rule for another served version of the
            # same resource matches too, and the webhook sees the object in its version
            versions = [rt] + ([t for t in store.types.values() if t.gk == rt.gk and t.version != rt.version]
                               if hook.get("matchPolicy", "Equivalent") == "Equivalent" else [])
            seen_as = next((t for t in versions if any(_rule_matches(r, t, subresource, operation, rt.namespaced)
                                                       for r in hook.get("rules") or [])), None)
            if seen_as is None:
                continue
            if not selector_matches(hook.get("objectSelector"), labels):
                continue
            if namespace and not selector_matches(hook.get("namespaceSelector"), ns_labels):
                continue
            out.append({**hook, "_configuration": name, "_as": seen_as})
    return out


def _as_version(obj: Any, rt: ResourceType) -> Any:
    """Our CRDs' versions share one schema (conversion strategy None): only apiVersion changes."""
    return {**obj, "apiVersion": rt.api_version} if isinstance(obj, dict) else obj


def _review(rt: ResourceType, asked: ResourceType, kind: str, subresource: str | None, operation: str, obj: Any,
            old: Any, user: str) -> dict[str, Any]:
    meta = (obj or old or {}).get("metadata") or {}
    options = {"apiVersion": "meta.k8s.io/v1",
               "kind": {"CREATE": "CreateOptions", "UPDATE": "UpdateOptions", "DELETE": "DeleteOptions"}[operation]}
    request = {"uid": str(uuid.uuid4()), "kind": {"group": rt.group, "version": rt.version, "kind": kind},
               "requestKind": {"group": asked.group, "version": asked.version, "kind": kind},
               "resource": {"group": rt.group, "version": rt.version, "resource": rt.plural},
               "requestResource": {"group": asked.group, "version": asked.version, "resource": asked.plural},
               "name": meta.get("name", ""), "operation": operation, "userInfo": {"username": user},
               "object": obj, "oldObject": old, "dryRun": False, "options": options}
    if rt.namespaced:
        request["namespace"] = meta.get("namespace", "")
    if subresource:
        request["subResource"] = request["requestSubResource"] = subresource
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


async def _call(session: Any, hook: dict[str, Any], review: dict[str, Any]) -> dict[str, Any]:
    import aiohttp

    client = hook.get("clientConfig") or {}
    url = client.get("url")
    if not url:
        svc = client.get("service") or {}
        # No cluster DNS here: a service reference is dialled as 127.0.0.1:<port><path>.
        url = f"https://127.0.0.1:{svc.get('port', 443)}{svc.get('path') or '/'}"
    ctx = ssl.create_default_context()
    if client.get("caBundle"):
        ctx = ssl.create_default_context(cadata=base64.b64decode(client["caBundle"]).decode())
    timeout = aiohttp.ClientTimeout(total=float(hook.get("timeoutSeconds") or 10))
    async with session.post(url, json=review, ssl=ctx if url.startswith("https") else None,
                            timeout=timeout) as resp:
        if resp.status != 200:
            raise RuntimeError(f"expected webhook response status code 200, got {resp.status}")
        answer = json.loads(await resp.read())
    response = answer.get("response") if isinstance(answer, dict) else None
    if not isinstance(response, dict) or response.get("uid") != review["request"]["uid"]:
        raise RuntimeError("expected response.uid to match the request.uid")
    return response


def _denied(hook: dict[str, Any], response: dict[str, Any]) -> ApiStatus:
    status = response.get("status") or {}
    by = f'admission webhook "{hook["name"]}" denied the request'
    text = status.get("message") or status.get("reason")
    code = max(int(status.get("code") or 400), 400)
    message = f"{by}: {text}" if text else f"{by} without explanation"
    return ApiStatus(code, status.get("reason") or "BadRequest", message,
                     status.get("details") or {})


async def admit(store: Store, session: Any, *, kind: str, rt: ResourceType, subresource: str | None,
                operation: str, obj: dict[str, Any] | None, old: dict[str, Any] | None,
                user: str = "system:admin", warnings: list[str] | None = None,
                calls: list[tuple[str, str]] | None = None) -> dict[str, Any] | None:
    """Run the matching webhooks of ``kind`` ("mutating" or "validating"); returns the
    (possibly mutated) object or raises :class:`ApiStatus`."""
    for hook in matching(store, kind, rt, subresource, operation, obj, old):
        seen_as = hook["_as"]
        review = _review(seen_as, rt, rt.kind, subresource, operation, _as_version(obj, seen_as),
                         _as_version(old, seen_as), user)
        if calls is not None:
            calls.append((hook["name"], operation))
        try:
            response = await _call(session, hook, review)
        except Exception as exc:  # noqa: BLE001 - any failure to call: failurePolicy decides
            if (hook.get("failurePolicy") or "Fail") == "Ignore":
                continue
            raise ApiStatus(500, "InternalError", f'Internal error occurred: failed calling webhook "{hook["name"]}": '
                                                  f"failed to call webhook: {exc}") from None
        if warnings is not None:
            warnings.extend(response.get("warnings") or [])
        if not response.get("allowed"):
            raise _denied(hook, response)
        if kind == "mutating" and response.get("patch") and obj is not None:
            if response.get("patchType", "JSONPatch") != "JSONPatch":
                raise ApiStatus(500, "InternalError", f'webhook "{hook["name"]}": unsupported patchType '
                                                      f'{response.get("patchType")!r}')
            ops = json.loads(base64.b64decode(response["patch"]))
            obj = _as_version(json_patch(_as_version(obj, seen_as), ops), rt)
    return obj
