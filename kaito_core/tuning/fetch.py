"""Download training data over http(s): SSRF guard, retries, size limit, atomic files.

Upstream's webhook refuses input URLs that point at localhost, private, link-local or
metadata addresses; we check again where the download happens, on every redirect hop, and
connect to the address we checked (so a DNS answer that changes between the check and the
connection cannot send us elsewhere). An operator can allow private addresses with
``KAITO_ALLOW_PRIVATE_URLS=1`` (or ``allow_private=True``), e.g. for an in-cluster data server.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import re
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import unquote, urljoin, urlsplit

from kaito_core.api.training.errors import FetchError

log = logging.getLogger("kaito.tuning")

ALLOW_PRIVATE_ENV = "KAITO_ALLOW_PRIVATE_URLS"
MAX_BYTES_ENV = "KAITO_MAX_DOWNLOAD_BYTES"
DEFAULT_MAX_BYTES = 20 * 2**30
MAX_REDIRECTS = 5
RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}
# Cloud metadata services, named so the error says what was refused.
METADATA_ADDRESSES = {"169.254.169.254": "cloud instance metadata", "fd00:ec2::254": "AWS instance metadata",
                      "100.100.100.200": "Alibaba Cloud metadata", "169.254.170.2": "AWS ECS task metadata"}


def allow_private_from_env() -> bool:
    return os.environ.get(ALLOW_PRIVATE_ENV, "").strip().lower() in ("1", "true", "yes")


def _refusal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why ``ip`` must not be fetched from, or None when it is a public address."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return _refusal(ip.ipv4_mapped)
    text = str(ip)
    if text in METADATA_ADDRESSES:
        return f"a {METADATA_ADDRESSES[text]} address"
    for attr, word in (("is_unspecified", "an unspecified"), ("is_loopback", "a loopback"),
                       ("is_link_local", "a link-local"), ("is_multicast", "a multicast"),
                       ("is_private", "a private"), ("is_reserved", "a reserved")):
        if getattr(ip, attr):
            return f"{word} address"
    if not ip.is_global:
        return "a non-public address"
    return None


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    address: str
    path: str  # path + query, as sent


def check_url(url: str, *, allow_private: bool | None = None,
              resolver: Callable[[str, int], list[str]] | None = None) -> Target:
    """Refuse non-http(s) URLs and hosts that resolve to non-public addresses; return where to connect."""
    allow = allow_private_from_env() if allow_private is None else allow_private
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise FetchError(f"input URL {url!r}: scheme {parts.scheme or '(none)'!r} is not allowed; "
                         "use an http:// or https:// URL")
    if not parts.hostname:
        raise FetchError(f"input URL {url!r} has no host name")
    if parts.username or parts.password:
        raise FetchError(f"input URL {_redact(url)!r}: credentials in the URL are not allowed")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    resolve = resolver or _resolve
    try:
        addresses = resolve(parts.hostname, port)
    except OSError as exc:
        raise FetchError(f"input URL {url!r}: cannot resolve host {parts.hostname!r} ({exc})") from None
    if not addresses:
        raise FetchError(f"input URL {url!r}: host {parts.hostname!r} has no address")
    chosen = None
    for addr in addresses:
        why = _refusal(ipaddress.ip_address(addr.split("%")[0]))
        if why and not allow:
            raise FetchError(
                f"input URL {url!r} is refused: host {parts.hostname!r} resolves to {addr}, {why}. "
                f"Training data must come from a public address; an operator can allow private ones "
                f"with {ALLOW_PRIVATE_ENV}=1")
        chosen = chosen or addr
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(parts.scheme, parts.hostname, port, chosen, path)


def _resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[str] = []
    for info in infos:
        addr = str(info[4][0])
        if addr not in seen:
            seen.append(addr)
    return seen


def _redact(url: str) -> str:
    return re.sub(r"//[^/@]*@", "//***@", url)


def filename_for(url: str, index: int) -> str:
    name = unquote(Path(urlsplit(url).path).name)
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")
    return f"{index:03d}-{name or 'data'}"


def download(url: str, dest_dir: str | Path, *, index: int = 0, allow_private: bool | None = None,
             max_bytes: int | None = None, attempts: int = 4, timeout: float = 30.0,
             backoff: float = 0.5) -> Path:
    """Fetch ``url`` into ``dest_dir``; the file appears (atomically renamed) only when complete.

    A fragment ``#sha256=<hex>`` on the URL is checked against the downloaded bytes.
    """
    import urllib3

    if max_bytes is None:
        max_bytes = int(os.environ.get(MAX_BYTES_ENV, DEFAULT_MAX_BYTES))
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    expected_sha = None
    frag = urlsplit(url).fragment
    if frag.startswith("sha256="):
        expected_sha = frag.split("=", 1)[1].lower()
    final = dest_dir / filename_for(url, index)
    last_error = ""
    for attempt in range(1, attempts + 1):
        try:
            return _download_once(url, final, allow_private=allow_private, max_bytes=max_bytes,
                                  timeout=timeout, expected_sha=expected_sha, urllib3=urllib3)
        except _Retryable as exc:
            last_error = str(exc)
            if attempt < attempts:
                delay = backoff * 2 ** (attempt - 1)
                log.warning("download %s failed (%s); retry %d/%d in %.1fs", _redact(url), exc, attempt,
                            attempts - 1, delay)
                time.sleep(delay)
    raise FetchError(f"input URL {_redact(url)!r}: download failed after {attempts} attempts: {last_error}")


class _Retryable(Exception):
    pass


def _download_once(url: str, final: Path, *, allow_private: bool | None, max_bytes: int, timeout: float,
                   expected_sha: str | None, urllib3) -> Path:
    current = url
    for _hop in range(MAX_REDIRECTS + 1):
        target = check_url(current, allow_private=allow_private)
        host_header = target.host if target.port in (80, 443) else f"{target.host}:{target.port}"
        if ":" in target.host and not target.host.startswith("["):
            host_header = f"[{target.host}]" if target.port in (80, 443) else f"[{target.host}]:{target.port}"
        kwargs = dict(timeout=urllib3.Timeout(connect=min(timeout, 10.0), read=timeout), retries=False, maxsize=1)
        if target.scheme == "https":
            # Connect to the checked address, verify the certificate against the host name.
            pool = urllib3.HTTPSConnectionPool(target.address, target.port, server_hostname=target.host,
                                               assert_hostname=target.host, **kwargs)
        else:
            pool = urllib3.HTTPConnectionPool(target.address, target.port, **kwargs)
        try:
            resp = pool.urlopen("GET", target.path, headers={"Host": host_header, "User-Agent": "kaito-tuning"},
                                redirect=False, preload_content=False)
        except urllib3.exceptions.HTTPError as exc:
            pool.close()
            raise _Retryable(f"cannot connect to {target.host}:{target.port} ({type(exc).__name__})") from None
        try:
            if resp.status in (301, 302, 303, 307, 308):
                location = resp.headers.get("Location")
                if not location:
                    raise FetchError(f"input URL {_redact(current)!r}: redirect {resp.status} without Location")
                current = urljoin(current, location)
                continue
            if resp.status in RETRY_STATUSES:
                raise _Retryable(f"HTTP {resp.status} from {target.host}")
            if resp.status != 200:
                raise FetchError(f"input URL {_redact(current)!r}: HTTP {resp.status} {resp.reason or ''}".rstrip()
                                 + "; check the URL and that the file is public")
            length = resp.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise FetchError(f"input URL {_redact(current)!r}: {int(length)} bytes is over the limit of "
                                 f"{max_bytes} bytes (raise it with {MAX_BYTES_ENV})")
            return _stream_to_file(resp, final, max_bytes=max_bytes, url=current, expected_sha=expected_sha,
                                   expected_len=int(length) if length and length.isdigit() else None)
        finally:
            resp.release_conn()
            pool.close()
    raise FetchError(f"input URL {_redact(url)!r}: more than {MAX_REDIRECTS} redirects")


def _copy_body(resp, out, *, url: str, max_bytes: int, digest, progress, counted: list[int]) -> None:
    """Response body -> ``out``; ``counted[0]``: the bytes so far. A read error is _Retryable,
    a write error (OSError from ``out``) goes up as it is."""
    chunks = resp.stream(1 << 20)
    while True:
        try:
            chunk = next(chunks, None)
        except Exception as exc:  # urllib3 read errors: the connection dropped mid-way
            raise _Retryable(f"connection broke after {counted[0]} bytes ({type(exc).__name__})") from None
        if chunk is None:
            return
        counted[0] += len(chunk)
        if counted[0] > max_bytes:
            raise FetchError(f"input URL {_redact(url)!r}: more than {max_bytes} bytes, over the limit "
                             f"(raise it with {MAX_BYTES_ENV})")
        digest.update(chunk)
        out.write(chunk)
        progress.update(len(chunk))


def _write_error(url: str, final: Path, exc: OSError) -> FetchError:
    return FetchError(f"input URL {_redact(url)!r}: cannot write the download to {final.parent} "
                      f"({exc.strerror or exc}); free some space there or give a work dir with room "
                      "(--work-dir), or raise the volume's size")


def _stream_to_file(resp, final: Path, *, max_bytes: int, url: str, expected_sha: str | None,
                    expected_len: int | None) -> Path:
    from kaito_core.tuning.progress import DownloadProgress

    digest = hashlib.sha256()
    size, counted = 0, [0]
    progress = DownloadProgress("data", _redact(url), expected_len)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent)
    except OSError as exc:
        raise _write_error(url, final, exc) from None
    try:
        try:
            with os.fdopen(fd, "wb") as out:
                _copy_body(resp, out, url=url, max_bytes=max_bytes, digest=digest, progress=progress, counted=counted)
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:  # our disk, not the connection (those are _Retryable): retrying cannot help
            raise _write_error(url, final, exc) from None
        size = counted[0]
        if expected_len is not None and size != expected_len:
            raise _Retryable(f"got {size} of {expected_len} bytes")
        if expected_sha and digest.hexdigest() != expected_sha:
            raise FetchError(f"input URL {_redact(url)!r}: sha256 is {digest.hexdigest()}, the URL's "
                             f"#sha256= says {expected_sha}")
        os.replace(tmp, final)
        progress.finish()
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    log.info("downloaded %s -> %s (%d bytes, sha256 %s)", _redact(url), final.name, size, digest.hexdigest())
    return final


def main(argv: list[str] | None = None) -> int:
    """``python -m kaito_core.tuning.fetch URL...``: the tuning Job's data-fetch init container.
    Each URL lands in ``$DATA_DIR`` (default ``.``) as ``NNN-name``, with the guards above (a
    public name that resolves to a private or metadata address, or redirects to one, is refused;
    ``urllib.request.urlretrieve`` would have fetched it), retries and the size limit."""
    import sys

    from kaito_core.tuning.cli import setup_logging

    setup_logging()
    urls = list(sys.argv[1:] if argv is None else argv)
    if not urls:
        print("error: give the URLs to download (the Workspace's tuning.input.urls)", file=sys.stderr)
        return 2
    dest = os.environ.get("DATA_DIR") or "."
    try:
        for i, url in enumerate(urls):
            download(url, dest, index=i)
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
