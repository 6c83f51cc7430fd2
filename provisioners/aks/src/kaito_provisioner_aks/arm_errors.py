"""ARM errors -> Workspace condition reasons a user can act on.

Quota errors that stayed invisible were one of upstream's most reported problems
(kaito-project/kaito#344); the AKS API words them several ways (``QuotaExceeded``,
``ErrCode_InsufficientVCPUQuota``, ``OperationNotAllowed ... exceeding approved ... quota``).
Each cause gets one reason; ``transient`` causes (throttling, a concurrent operation on the
pool, a network error) are reported but not marked failed, because the next pass retries them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Cause:
    reason: str
    message: str
    failed: bool = True


_RULES: tuple[tuple[str, bool, re.Pattern[str]], ...] = (
    ("QuotaExceeded", True, re.compile(r"quota|QuotaExceeded|InsufficientVCPU|SubscriptionQuotaReached", re.I)),
    ("SKUNotAvailable", True, re.compile(
        r"SKUNotAvailable|SkuNotAvailable|VMSizeNotSupported|UnsupportedSku|"
        r"not (allowed|available|supported) in (your subscription|the location|location|region|this region)", re.I)),
    ("InsufficientCapacity", True, re.compile(
        r"AllocationFailed|ZonalAllocationFailed|OverconstrainedAllocationRequest|InsufficientCapacity", re.I)),
    ("AuthorizationFailed", True, re.compile(
        r"AuthorizationFailed|InvalidAuthenticationToken|AuthenticationFailed|LinkedAuthorizationFailed|"
        r"does not have authorization|CredentialUnavailable", re.I)),
)


def _code_message(exc: Any) -> tuple[int | None, str, str]:
    status = getattr(exc, "status_code", None)
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None) or ""
    message = getattr(error, "message", None) or getattr(exc, "message", None) or str(exc)
    return status, str(code), str(message)


def classify(exc: BaseException) -> Cause:
    """What an exception from the SDK (or the credential) means for the user."""
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError

    status, code, message = _code_message(exc)
    text = f"{code}: {message}" if code and code not in message else message
    if isinstance(exc, ClientAuthenticationError) or status in (401, 403):
        return Cause("AuthorizationFailed", text)
    if isinstance(exc, HttpResponseError) or code:
        return classify_error(code, message, status)
    if isinstance(exc, ServiceRequestError):
        return Cause("ARMUnreachable", f"cannot reach Azure Resource Manager: {message}", failed=False)
    return Cause("LaunchFailed", f"{type(exc).__name__}: {message}")


def classify_error(code: str, message: str, status: int | None = None) -> Cause:
    """An ARM error body (``{"error": {"code", "message"}}``) or an agent pool's provisioningError."""
    text = f"{code}: {message}" if code and code not in message else message
    for reason, failed, pattern in _RULES:
        if pattern.search(f"{code} {message}"):
            return Cause(reason, text, failed)
    if status == 429 or code == "TooManyRequests":
        return Cause("Throttled", text, failed=False)
    if status == 409 or code in ("OperationNotAllowed", "Conflict", "AnotherOperationInProgress",
                                 "OperationPreempted"):
        return Cause("OperationInProgress", text, failed=False)
    if status == 404 or code in ("ResourceNotFound", "ParentResourceNotFound", "ResourceGroupNotFound",
                                 "NotFound"):
        return Cause("ClusterNotFound", f"{text} (check ARM_SUBSCRIPTION_ID, ARM_RESOURCE_GROUP and "
                                        "AZURE_CLUSTER_NAME)")
    return Cause("LaunchFailed", text)
