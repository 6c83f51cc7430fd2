"""Pull an OCI artifact (model weights, a LoRA adapter, training data) into a directory.

    python -m kaito_core.artifacts pull REF DIR [--docker-config PATH]... [--insecure]

What the operator's init containers run (in the runtime image) for every image reference a
Workspace names: a preset's weights (``<registry>/models/<preset>:<tag>``, pushed by
``images/models/pack.py``), ``inference.adapters[].source.image`` and ``tuning.input.image``.
Those references are ORAS artifacts (one layer per file, titled with the file name), not
runnable images, so upstream KAITO pulls them the same way (``oras pull``). The files land
directly under ``DIR`` as they were pushed.

Credentials: each ``--docker-config`` (a ``config.json``/``.dockerconfigjson`` file or a mounted
Secret's directory), then ``$DOCKER_CONFIG/config.json``, then ``~/.docker/config.json``.
Plain HTTP for loopback registries, ``--insecure``, or registries listed in
``KAITO_INSECURE_REGISTRIES`` (comma-separated ``host[:port]``). oras-py is imported only when
pulling.
"""

from __future__ import annotations

import argparse
import base64
import ipaddress
import json
import os
import re
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Sequence

from kaito_core.errors import KaitoError

INSECURE_ENV = "KAITO_INSECURE_REGISTRIES"
_REF = re.compile(r"^(?P<registry>[A-Za-z0-9.-]+(:[0-9]+)?|\[[0-9a-fA-F:]+\](:[0-9]+)?)/"
                  r"(?P<repo>[a-z0-9]+(?:[._/-][a-z0-9]+)*)"
                  r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9._-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$")


class ArtifactError(KaitoError, RuntimeError):
    """Pulling failed; the message names the reference, the cause and the fix."""


def registry_of(ref: str) -> str:
    """The ``host[:port]`` of ``ref``; raises :class:`ArtifactError` for a malformed reference."""
    m = _REF.match(ref.strip())
    host = m.group("registry") if m else ""
    if not m or not ("." in host or ":" in host or host == "localhost"):
        raise ArtifactError(f"{ref!r} is not an OCI reference: expected REGISTRY/REPOSITORY[:TAG][@sha256:DIGEST] "
                            "with the registry named, e.g. myregistry.azurecr.io/adapters/phi3:0.0.1")
    return host


def is_insecure(registry: str, insecure: bool = False) -> bool:
    """Plain HTTP: asked for, listed in KAITO_INSECURE_REGISTRIES, or a loopback registry (as Docker does)."""
    if insecure:
        return True
    listed = {r.strip() for r in os.environ.get(INSECURE_ENV, "").split(",") if r.strip()}
    host = registry.rsplit(":", 1)[0] if registry.count(":") == 1 or registry.startswith("[") else registry
    host = host.strip("[]")
    if registry in listed or host in listed or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read_config(path: Path) -> dict[str, Any]:
    if path.is_dir():
        for name in (".dockerconfigjson", "config.json"):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise ArtifactError(f"docker config {str(path)!r}: the directory holds no .dockerconfigjson or config.json")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ArtifactError(f"docker config {str(path)!r}: cannot read it ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise ArtifactError(f"docker config {str(path)!r} is not JSON ({exc}); expected a docker config.json "
                            "or a kubernetes.io/dockerconfigjson Secret's .dockerconfigjson") from None
    return data if "auths" in data else {"auths": data}


def credentials(registry: str, docker_configs: Sequence[str | Path] = ()) -> tuple[str, str] | None:
    """User and password for ``registry`` from the first docker config that has an entry."""
    paths = [Path(p) for p in docker_configs]
    if os.environ.get("DOCKER_CONFIG"):
        paths.append(Path(os.environ["DOCKER_CONFIG"]) / "config.json")
    # expanduser, not Path.home(): a non-root pod's uid may have no passwd entry and no HOME
    paths.append(Path(os.path.expanduser("~/.docker/config.json")))
    for i, path in enumerate(paths):
        if i >= len(docker_configs) and not path.is_file():
            continue  # the defaults are optional; the ones given must exist
        for key, entry in (_read_config(path).get("auths") or {}).items():
            if key.split("://", 1)[-1].split("/", 1)[0] != registry or not isinstance(entry, dict):
                continue
            if entry.get("username") and entry.get("password"):
                return str(entry["username"]), str(entry["password"])
            if entry.get("auth"):
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
                return user, password
    return None


def _probe(registry: str, scheme: str, ref: str) -> str:
    """Ask ``/v2/`` first (short timeout): oras-py retries with long sleeps, and we want
    "unreachable" said at once. Returns the auth scheme the registry asks for."""
    url = f"{scheme}://{registry}/v2/"
    try:
        with urllib.request.urlopen(url, timeout=10):
            return "basic"
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            return "token" if exc.headers.get("WWW-Authenticate", "").lower().startswith("bearer") else "basic"
        raise ArtifactError(f"cannot pull {ref}: registry {registry} answered HTTP {exc.code} on {url}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        hint = "" if scheme == "http" else f", or list it in {INSECURE_ENV} (or pass --insecure) if it serves plain HTTP"
        raise ArtifactError(f"cannot pull {ref}: registry {registry} is not reachable over {scheme} ({reason}); "
                            f"check the reference and that the registry is up{hint}") from None


def pull(ref: str, dest: str | Path, *, docker_configs: Sequence[str | Path] = (), insecure: bool = False) -> list[Path]:
    """Pull every titled layer of ``ref`` into ``dest`` (created); return the files written."""
    registry = registry_of(ref)
    plain = is_insecure(registry, insecure)
    backend = _probe(registry, "http" if plain else "https", ref)
    creds = credentials(registry, docker_configs)
    try:
        import oras.provider
    except ImportError:  # pragma: no cover - oras is in the runtime and operator images
        raise ArtifactError("oras-py is not installed: pip install oras") from None
    client = oras.provider.Registry(hostname=registry, insecure=plain, auth_backend=backend)
    if creds:
        client.auth.set_basic_auth(*creds)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".kaito-pull-", dir=dest))
    try:
        try:
            files = client.pull(target=ref.strip(), outdir=str(tmp))
        except Exception as exc:  # noqa: BLE001 - oras raises ValueError/requests errors; say it plainly
            text = str(exc) or type(exc).__name__
            hint = ""
            if "401" in text or "nauthorized" in text:
                hint = ("; the registry wants credentials: give a docker config with an entry for "
                        f"{registry!r} (imagePullSecrets on the Workspace)")
            elif "404" in text or "not found" in text.lower() or "MANIFEST_UNKNOWN" in text:
                hint = "; check the repository and tag (was the artifact pushed?)"
            raise ArtifactError(f"cannot pull {ref}: {text}{hint}") from None
        if not files:
            raise ArtifactError(f"cannot pull {ref}: the artifact has no titled layers "
                                "(push files with 'oras push REF file...' so each layer carries its file name)")
        out = []
        for f in sorted(Path(p) for p in files):
            target = dest / f.relative_to(tmp)
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_dir() and not f.is_dir():
                shutil.rmtree(target)
            os.replace(f, target)
            out.append(target)
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kaito_core.artifacts",
                                     description="Pull OCI artifacts (model weights, adapters, data) with oras-py.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pull", help="pull REF's files into DIR")
    p.add_argument("ref", help="REGISTRY/REPOSITORY[:TAG][@sha256:DIGEST]")
    p.add_argument("dir", help="directory to write the files to (created)")
    p.add_argument("--docker-config", action="append", default=[], metavar="PATH",
                   help="docker config.json, .dockerconfigjson, or a mounted Secret's directory (repeatable)")
    p.add_argument("--insecure", action="store_true", help="plain HTTP (automatic for loopback registries)")
    args = parser.parse_args(argv)
    import logging

    logging.getLogger("oras").setLevel(logging.WARNING)
    try:
        files = pull(args.ref, args.dir, docker_configs=args.docker_config, insecure=args.insecure)
    except ArtifactError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    size = sum(f.stat().st_size for f in files if f.is_file())
    print(f"pulled {args.ref} -> {args.dir}: {len(files)} files, {size} bytes", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
