"""Pull an OCI artifact (model weights, a LoRA adapter, training data) into a directory.

    python -m kaito_core.artifacts pull REF DIR [--docker-config PATH]... [--insecure] [--max-bytes N]
    python -m kaito_core.artifacts push DIR REF [--docker-config PATH]... [--insecure]

What the operator's init containers run (in the runtime image) for every image reference a
Workspace names: a preset's weights (``<registry>/models/<preset>:<tag>``, pushed by
``images/models/pack.py``), ``inference.adapters[].source.image`` and ``tuning.input.image``.
Two layouts are read (see :mod:`kaito_core.oci.layout`): ORAS artifacts (one titled layer per
file; the files land under ``DIR`` as pushed) and images with a ``/data`` folder (upstream
KAITO's adapter images and ``docker build`` data images; the folder's contents land under
``DIR``, as upstream's puller moves ``/data`` to the volume). ``push`` writes DIR's files as
such an image (upstream's adapter layout), e.g. an adapter or a training data set.

Every blob is checked against its digest, ``@sha256:`` pins are honoured, the total is capped
(``--max-bytes`` / ``KAITO_OCI_MAX_BYTES``), tar layers cannot write outside ``DIR``, and a
failed pull leaves nothing behind. Credentials and plain-HTTP rules: :mod:`kaito_core.oci`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from kaito_core.oci import OCIError, parse_reference
from kaito_core.oci import credentials as _credentials
from kaito_core.oci import pull as _pull
from kaito_core.oci import push_data_image
from kaito_core.oci import settings
from kaito_core.oci.settings import INSECURE_ENV  # noqa: F401 - re-exported for callers

# One error type for every OCI failure; the old name stays for callers and tests.
ArtifactError = OCIError


def registry_of(ref: str) -> str:
    """The ``host[:port]`` of ``ref``; raises :class:`ArtifactError` for a malformed reference."""
    return parse_reference(ref).registry


def is_insecure(registry: str, insecure: bool = False) -> bool:
    """Plain HTTP: asked for, listed in KAITO_INSECURE_REGISTRIES, or a loopback registry (as Docker does)."""
    return settings.is_insecure(registry, insecure or None)


def credentials(registry: str, docker_configs: Sequence[str | Path] = ()) -> tuple[str, str] | None:
    """User and password for ``registry`` (see :mod:`kaito_core.oci.credentials` for the order)."""
    found = _credentials.find(registry, list(docker_configs))
    return found.pair() if found else None


def pull(ref: str, dest: str | Path, *, docker_configs: Sequence[str | Path] = (), insecure: bool = False,
         max_bytes: int | str | None = None) -> list[Path]:
    """Pull ``ref`` into ``dest`` (created); return the files written."""
    return _pull(ref, dest, docker_configs=list(docker_configs), insecure=insecure or None,
                 max_bytes=max_bytes).files()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m kaito_core.artifacts",
                                     description="Pull and push OCI artifacts (model weights, adapters, data), verified.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pull", help="pull REF's files into DIR")
    p.add_argument("ref", help="REGISTRY/REPOSITORY[:TAG][@sha256:DIGEST]")
    p.add_argument("dir", help="directory to write the files to (created)")
    p.add_argument("--max-bytes", default=None, metavar="SIZE",
                   help=f"refuse artifacts larger than SIZE (e.g. 20Gi; default ${settings.MAX_BYTES_ENV} or 256Gi)")
    q = sub.add_parser("push", help="push DIR's files as an image with a /data folder (upstream's adapter layout)")
    q.add_argument("dir", help="directory whose files to push")
    q.add_argument("ref", help="REGISTRY/REPOSITORY:TAG")
    for cmd in (p, q):
        cmd.add_argument("--docker-config", action="append", default=[], metavar="PATH",
                         help="docker config.json, .dockerconfigjson, or a mounted Secret's directory (repeatable)")
        cmd.add_argument("--insecure", action="store_true", help="plain HTTP (automatic for loopback registries)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "push":
            digest = push_data_image(args.dir, args.ref, docker_configs=args.docker_config,
                                     insecure=args.insecure or None)
            print(f"pushed {args.dir} -> {args.ref} ({digest})", flush=True)
            return 0
        cap = settings.parse_size(args.max_bytes, "--max-bytes") if args.max_bytes is not None else None
        result = _pull(args.ref, args.dir, docker_configs=args.docker_config, insecure=args.insecure or None,
                       max_bytes=cap)
    except OCIError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    files = result.files()
    size = sum(f.stat().st_size for f in files)
    print(f"pulled {args.ref} ({result.digest}, {result.layout} layout) -> {args.dir}: "
          f"{len(files)} files, {size} bytes", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
