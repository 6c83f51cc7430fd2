"""The errors every OCI operation raises: one line for people, naming the reference and the fix."""

from __future__ import annotations

from kaito_core.errors import KaitoError


class OCIError(KaitoError, RuntimeError):
    """Pulling or pushing an artifact failed; the message names the reference, the cause and the fix."""


class VerificationError(OCIError):
    """What the registry sent does not match its digest or size, or is over the size cap."""


class UnsafeArchiveError(OCIError):
    """A layer's tar would write outside the target (traversal, absolute path, outside link, device)."""
