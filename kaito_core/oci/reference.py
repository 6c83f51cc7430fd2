"""Image references: ``REGISTRY[:PORT]/REPOSITORY[:TAG][@sha256:DIGEST]``.

The registry is required (no Docker Hub default: a Workspace must say where its bytes come
from). A ``@sha256:`` pin wins over the tag, as in Docker and containerd: the manifest fetched is
the one with that digest, and its bytes are checked against it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kaito_core.oci.errors import OCIError

_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
                   r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")
_REPO = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
EXAMPLE = "myregistry.azurecr.io/adapters/phi3:0.0.1"


@dataclass(frozen=True)
class Reference:
    registry: str          # host[:port] as written
    repository: str
    tag: str | None        # "latest" when neither tag nor digest is given
    digest: str | None     # "sha256:<64 hex>" when pinned
    text: str              # the reference as given (stripped)

    @property
    def api_host(self) -> str:
        """Where the distribution API answers (Docker Hub's API host is not its name)."""
        return "registry-1.docker.io" if self.registry in ("docker.io", "index.docker.io") else self.registry

    @property
    def target(self) -> str:
        """What to ask ``/manifests/`` for: the pinned digest, else the tag."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        return self.text


def _bad(what: str, text: str, why: str) -> OCIError:
    return OCIError(f"{what} {text!r} is not an OCI reference: {why}; expected "
                    f"REGISTRY/REPOSITORY[:TAG][@sha256:DIGEST], e.g. {EXAMPLE}")


def parse_reference(ref: str, what: str = "image") -> Reference:
    """Parse ``ref``; :class:`OCIError` names ``what`` (the field it came from) and the fix."""
    text = str(ref).strip()
    if "://" in text:
        raise _bad(what, text, "write it without a scheme (no https://)")
    first, _, rest = text.partition("/")
    if not rest or not _HOST.fullmatch(first) or not ("." in first or ":" in first or first == "localhost"):
        raise _bad(what, text, "name the registry first (a host with a dot or a port, or localhost)")
    digest = None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not _DIGEST.fullmatch(digest):
            raise _bad(what, text, f"the digest {digest!r} must be sha256: and 64 lowercase hex digits")
    tag = None
    last = rest.rsplit("/", 1)[-1]
    if ":" in last:
        rest, tag = rest.rsplit(":", 1)
        if not _TAG.fullmatch(tag):
            raise _bad(what, text, f"the tag {tag!r} may hold only letters, digits, '_', '.', '-' (128 at most)")
    if not _REPO.fullmatch(rest):
        raise _bad(what, text, f"the repository {rest!r} must be lowercase path components "
                               "(letters, digits, separated by '.', '_' or '-')")
    if first in ("docker.io", "index.docker.io") and "/" not in rest:
        rest = f"library/{rest}"  # Docker Hub's official images, as docker names them
    return Reference(first, rest, tag if tag or digest else "latest", digest, text)


def looks_like_reference(text: str) -> bool:
    """True for a well-formed reference (used to tell references from local paths)."""
    try:
        parse_reference(text)
    except OCIError:
        return False
    return True
