"""Safe layer extraction: tar (plain, gzip, bzip2, xz) into a directory that nothing escapes.

Refused, naming the layer and the member: absolute paths, ``..`` components, symlinks or
hardlinks whose target leaves the extraction root, device files and FIFOs. Python's own
``tarfile`` ``data`` filter runs as well (it re-checks the real paths on disk). OCI whiteouts
(``.wh.NAME`` deletes NAME from the layers below, ``.wh..wh..opq`` empties its directory) are
applied, as container runtimes do when they stack image layers.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tarfile
import zlib
from pathlib import Path

from kaito_core.oci.errors import OCIError, UnsafeArchiveError, VerificationError

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


class Budget:
    """Bytes one pull may still download and unpack (the size cap, shared by every layer)."""

    def __init__(self, cap: int, what: str):
        self.cap, self.used, self.what = cap, 0, what

    def take(self, n: int, item: str) -> None:
        self.used += n
        if self.used > self.cap:
            raise VerificationError(f"cannot pull {self.what}: {item} takes it over the size cap of {self.cap} "
                                    "bytes; raise KAITO_OCI_MAX_BYTES (e.g. 500Gi) if the artifact really is "
                                    "that large")


def _inside(path: str, base: str) -> bool:
    return base == "" or path == base or path.startswith(base + "/")


def _clean(name: str, layer: str) -> str:
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"{layer}: member {name!r} has an absolute path; refusing the layer")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"{layer}: member {name!r} climbs out with '..'; refusing the layer")
    return "/".join(parts)


def _check_link(member: tarfile.TarInfo, name: str, base: str, layer: str) -> None:
    target = member.linkname
    if member.issym():
        if target.startswith("/"):
            raise UnsafeArchiveError(f"{layer}: symlink {name!r} -> {target!r} points to an absolute path; "
                                     "refusing the layer")
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
    else:  # a hardlink names another member of the archive
        resolved = _clean(target, layer)
    if resolved == ".." or resolved.startswith("../") or not _inside(resolved, base):
        kind = "symlink" if member.issym() else "hardlink"
        raise UnsafeArchiveError(f"{layer}: {kind} {name!r} -> {target!r} points outside "
                                 f"{base + '/' if base else 'the artifact'}; refusing the layer")


def _affects(whiteout: str, only: str) -> bool:
    """Does this whiteout delete something in (or above) the folder being extracted?"""
    parent, base = posixpath.split(whiteout)
    victim = parent if base == OPAQUE else posixpath.join(parent, base[len(WHITEOUT):])
    return _inside(victim, only) or _inside(only, victim)


def _whiteout(root: Path, name: str) -> None:
    parent, base = posixpath.split(name)
    if base == OPAQUE:
        folder = root / parent
        if folder.is_dir() and not folder.is_symlink():
            for child in folder.iterdir():
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        return
    victim = root / parent / base[len(WHITEOUT):]
    if victim.is_dir() and not victim.is_symlink():
        shutil.rmtree(victim)
    elif os.path.lexists(victim):
        victim.unlink()


def _clear_for(target: Path, member: tarfile.TarInfo) -> None:
    """A later layer may replace a file with a directory or the other way round."""
    if not os.path.lexists(target):
        return
    if target.is_dir() and not target.is_symlink():
        if not member.isdir():
            shutil.rmtree(target)
    elif not member.isdir() or target.is_symlink():
        target.unlink()


def extract(archive: Path, root: Path, *, layer: str, budget: Budget, only: str = "") -> int:
    """Extract ``archive`` into ``root``; with ``only`` (e.g. ``"data"``), just that folder's
    members (an image's other files are never written). Returns the members written."""
    written = 0
    try:
        tf = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise OCIError(f"{layer} is not a tar archive ({exc}); zstd layers are not supported") from None
    with tf:
        try:
            for member in tf:
                name = _clean(member.name, layer)
                if posixpath.basename(name).startswith(WHITEOUT):
                    if _affects(name, only):
                        _whiteout(root, name)
                    continue
                if not name or not _inside(name, only):
                    continue
                if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
                    raise UnsafeArchiveError(f"{layer}: member {name!r} is a device file or FIFO; refusing the layer")
                if member.issym() or member.islnk():
                    _check_link(member, name, only, layer)
                if member.isreg():
                    budget.take(member.size, f"{name!r} ({member.size} bytes unpacked)")
                member.name = name
                if member.islnk():
                    member.linkname = _clean(member.linkname, layer)
                _clear_for(root / name, member)
                try:
                    tf.extract(member, root, set_attrs=False, filter="data")
                except tarfile.FilterError as exc:
                    raise UnsafeArchiveError(f"{layer}: member {name!r} refused ({exc})") from None
                except KeyError:  # tarfile: a hard link to a member that is not earlier in the archive
                    raise OCIError(f"{layer}: hard link {name!r} -> {member.linkname!r} names no earlier member "
                                   "of the layer; the layer is damaged") from None
                written += 1
            # gzip checks its CRC only at the end of the stream, which tarfile never reads past
            # the last member: read it, so a layer damaged before it was pushed is refused.
            while tf.fileobj is not None and tf.fileobj.read(1 << 20):
                pass
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            if isinstance(exc, OSError) and exc.errno is not None:
                raise OCIError(f"{layer}: cannot unpack into {root} ({exc.strerror or exc})") from None
            raise OCIError(f"{layer} is a damaged tar archive ({exc})") from None
    return written
