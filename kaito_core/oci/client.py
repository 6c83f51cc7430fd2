"""A small OCI distribution-spec client over ``requests``: auth, bounded retries, verified reads.

Why not oras-py's transfer code: it retries with long sleeps (an unreachable registry took 131 s
to fail in the runtime's admin adapter load), checks no blob digest and honours no size cap.
This client asks with a connect timeout, retries a bounded number of times (connection errors,
429, 5xx), checks every byte it reads against its digest, and says what went wrong in one line.
Auth follows the distribution spec's token flow (``WWW-Authenticate: Bearer realm=...``, with
``identitytoken`` as an OAuth2 refresh token, as ACR does) or HTTP basic.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urljoin

from kaito_core.oci import settings
from kaito_core.oci.credentials import Credential
from kaito_core.oci.errors import OCIError, VerificationError
from kaito_core.oci.reference import Reference

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
ACCEPT = ", ".join((OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST))
RETRY_STATUS = (429, 500, 502, 503, 504)
CHUNK = 1 << 20
_PARAM = re.compile(r'(\w+)="([^"]*)"')
_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)")


def sha256_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _why(exc: Exception, lim: settings.Limits) -> str:
    import requests

    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return f"no connection within {lim.connect_timeout:g} s"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return f"no answer within {lim.read_timeout:g} s"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS handshake failed"
    m = _ERRNO.search(str(exc))
    return m.group(1).strip().lower() if m else type(exc).__name__


class Registry:
    """One repository on one registry, for one action (``pull`` or ``push``)."""

    def __init__(self, ref: Reference, *, credential: Credential | None = None, insecure: bool = False,
                 limits: settings.Limits | None = None, push: bool = False, fix_credentials: str = ""):
        import requests

        self.ref = ref
        self.credential = credential
        self.insecure = insecure
        self.limits = limits or settings.limits()
        self.action = "push to" if push else "pull"
        self.scope = f"repository:{ref.repository}:{'pull,push' if push else 'pull'}"
        self.base = f"{'http' if insecure else 'https'}://{ref.api_host}"
        self.fix_credentials = fix_credentials or "give a docker config (imagePullSecrets) with an entry for it"
        self.session = requests.Session()
        self._auth: str | None = None

    # -- errors -----------------------------------------------------------------------------

    def fail(self, why: str, cls: type[OCIError] = OCIError) -> OCIError:
        return cls(f"cannot {self.action} {self.ref.text}: {why}")

    def _unreachable(self, why: str, attempts: int) -> OCIError:
        scheme = "http" if self.insecure else "https"
        hint = "" if self.insecure else (f", or list it in {settings.INSECURE_ENV} if it serves plain HTTP")
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        return self.fail(f"registry {self.ref.registry} is not reachable over {scheme} ({why}){tries}; "
                         f"check the reference and that the registry is up{hint}")

    # -- auth -------------------------------------------------------------------------------

    def _authenticate(self, challenge: str) -> None:
        import requests

        kind, _, rest = challenge.partition(" ")
        params = dict(_PARAM.findall(rest))
        cred = self.credential
        if kind.lower() == "basic":
            if cred is None or cred.identity_token:
                raise self.fail(f"registry {self.ref.registry} requires credentials (HTTP 401 Unauthorized) "
                                f"and none were found for it; {self.fix_credentials}")
            pair = f"{cred.username}:{cred.password}".encode()
            self._auth = "Basic " + base64.b64encode(pair).decode()
            return
        if kind.lower() != "bearer" or "realm" not in params:
            raise self.fail(f"registry {self.ref.registry} asks for {challenge!r}, an auth scheme kaito does not speak")
        query = {"scope": self.scope, **({"service": params["service"]} if "service" in params else {})}
        timeout = (self.limits.connect_timeout, self.limits.read_timeout)
        try:
            if cred and cred.identity_token:
                resp = self.session.post(params["realm"], data={**query, "grant_type": "refresh_token",
                                                               "refresh_token": cred.identity_token}, timeout=timeout)
            else:
                resp = self.session.get(params["realm"], params=query, timeout=timeout,
                                        auth=cred.pair() if cred else None)
        except requests.RequestException as exc:
            raise self.fail(f"the token service {params['realm']} is not reachable ({_why(exc, self.limits)})") from None
        if resp.status_code in (401, 403):
            raise self._refused()
        if resp.status_code != 200:
            raise self.fail(f"the token service {params['realm']} answered HTTP {resp.status_code}")
        body = resp.json() if resp.content else {}
        token = body.get("token") or body.get("access_token")
        if not token:
            raise self.fail(f"the token service {params['realm']} gave no token")
        self._auth = f"Bearer {token}"

    def _refused(self) -> OCIError:
        cred = self.credential
        if cred is None:
            return self.fail(f"registry {self.ref.registry} requires credentials (HTTP 401 Unauthorized) and none "
                             f"were found for it; {self.fix_credentials}")
        return self.fail(f"registry {self.ref.registry} refused the credentials of user {cred.username!r} from "
                         f"{cred.source or 'the docker config'} (HTTP 401 Unauthorized); check them")

    # -- requests ---------------------------------------------------------------------------

    def request(self, method: str, path_or_url: str, *, ok: tuple[int, ...] = (200,), stream: bool = False,
                headers: dict[str, str] | None = None, body: Callable[[], Any] | None = None,
                params: dict[str, str] | None = None) -> Any:
        """One request with auth and bounded retries; returns the response when its status is in
        ``ok`` (or 404, for the caller to explain), raises :class:`OCIError` otherwise."""
        import requests

        url = urljoin(self.base + "/", path_or_url.lstrip("/")) if "://" not in path_or_url else path_or_url
        attempts, authed, last = self.limits.retries + 1, False, ""
        attempt = 0
        while attempt < attempts:
            hdrs = dict(headers or {})
            if self._auth:
                hdrs["Authorization"] = self._auth
            data = body() if body else None
            try:
                resp = self.session.request(method, url, headers=hdrs, stream=stream, params=params, data=data,
                                            timeout=(self.limits.connect_timeout, self.limits.read_timeout))
            except requests.RequestException as exc:
                last = _why(exc, self.limits)
                attempt += 1
                if attempt < attempts:
                    time.sleep(0.5 * 2 ** (attempt - 1))
                continue
            finally:
                if hasattr(data, "close"):
                    data.close()  # a file opened by the body factory, for this attempt only
            if resp.status_code == 401 and not authed:
                authed = True
                resp.close()
                self._authenticate(resp.headers.get("WWW-Authenticate", "Basic"))
                continue  # the retry with credentials is not counted as a failed attempt
            if resp.status_code == 401:
                raise self._refused()
            if resp.status_code == 403:
                raise self.fail(f"registry {self.ref.registry} denied access to {self.ref.repository} (HTTP 403); "
                                f"the credentials lack {self.action.split()[0]} permission")
            if resp.status_code in ok or resp.status_code == 404:
                return resp
            if resp.status_code in RETRY_STATUS and attempt + 1 < attempts:
                resp.close()
                attempt += 1
                time.sleep(0.5 * 2 ** (attempt - 1))
                continue
            raw = resp.raw.read(300, decode_content=True) if stream else resp.content[:300]
            text = raw.decode("utf-8", "replace").strip().replace("\n", " ")
            raise self.fail(f"registry {self.ref.registry} answered HTTP {resp.status_code} on {method} {url}"
                            + (f": {text}" if text else ""))
        raise self._unreachable(last, attempts)

    def check(self) -> None:
        """Reachable, and the credentials (if any are needed) accepted: ``GET /v2/``."""
        resp = self.request("GET", "/v2/")
        if resp.status_code == 404:
            raise self.fail(f"{self.base}/v2/ is not an OCI registry (HTTP 404)")

    # -- reads ------------------------------------------------------------------------------

    def manifest(self, target: str | None = None) -> tuple[dict[str, Any], str, str]:
        """``(manifest, media type, digest)`` of ``target`` (default: the reference's pin or tag),
        its bytes checked against the pinned digest or the registry's ``Docker-Content-Digest``."""
        target = target or self.ref.target
        resp = self.request("GET", f"/v2/{self.ref.repository}/manifests/{target}", stream=True,
                            headers={"Accept": ACCEPT})
        if resp.status_code == 404:
            raise self.fail(f"{self.ref.repository}:{target} was not found on {self.ref.registry} (HTTP 404); "
                            "check the repository and tag (was the artifact pushed?)")
        data = resp.raw.read(settings.MAX_MANIFEST_BYTES + 1, decode_content=True)
        resp.close()
        if len(data) > settings.MAX_MANIFEST_BYTES:
            raise self.fail(f"the manifest is over {settings.MAX_MANIFEST_BYTES} bytes", VerificationError)
        digest = sha256_of(data)
        expected = target if target.startswith("sha256:") else resp.headers.get("Docker-Content-Digest", "")
        if expected.startswith("sha256:") and expected != digest:
            raise self.fail(f"the manifest's bytes hash to {digest}, not {expected}: the registry sent a different "
                            "manifest than the one pinned; refusing it", VerificationError)
        try:
            doc = json.loads(data)
        except ValueError:
            raise self.fail("the manifest is not JSON") from None
        media = doc.get("mediaType") or resp.headers.get("Content-Type", "").split(";")[0]
        return doc, media, digest

    def fetch_blob(self, digest: str, size: int, dest: Path) -> None:
        """Stream blob ``digest`` into ``dest``; refuse it unless it is exactly ``size`` bytes
        hashing to ``digest``. A read cut off is resumed with a ``Range`` request (bounded
        retries), so a dropped connection late in a large weights file does not start it over."""
        import requests

        if not re.fullmatch(r"sha256:[0-9a-f]{64}", str(digest)):
            raise self.fail(f"a layer has digest {digest!r}; only sha256 digests are accepted", VerificationError)
        h, n = hashlib.sha256(), 0
        try:
            out = open(dest, "wb")
        except OSError as exc:
            raise self.fail(f"cannot write {dest} ({exc.strerror or exc})") from None
        with out:
            for attempt in range(self.limits.retries + 1):
                resp = self.request("GET", f"/v2/{self.ref.repository}/blobs/{digest}", stream=True, ok=(200, 206),
                                    headers={"Range": f"bytes={n}-"} if n else None)
                if resp.status_code == 404:
                    raise self.fail(f"blob {digest} is missing from {self.ref.registry} (HTTP 404)")
                if n and resp.status_code == 200:  # the server ignored the Range: start over
                    h, n = hashlib.sha256(), 0
                    out.seek(0)
                    out.truncate()
                try:
                    for chunk in resp.iter_content(CHUNK):
                        n += len(chunk)
                        if n > size:
                            raise self.fail(f"blob {digest} is longer than the {size} bytes its manifest says; "
                                            "refusing it", VerificationError)
                        h.update(chunk)
                        out.write(chunk)
                except requests.RequestException as exc:
                    if attempt == self.limits.retries:
                        raise self.fail(f"downloading blob {digest} failed after {attempt + 1} attempts "
                                        f"({_why(exc, self.limits)})") from None
                    continue
                except OSError as exc:
                    raise self.fail(f"cannot write {dest} ({exc.strerror or exc})") from None
                finally:
                    resp.close()
                break
        got = "sha256:" + h.hexdigest()
        if n != size or got != digest:
            raise self.fail(f"blob {digest} does not match its digest (got {got}, {n} of {size} bytes): the "
                            "registry's copy is corrupt or was tampered with; refusing it", VerificationError)

    # -- writes -----------------------------------------------------------------------------

    def push_blob(self, digest: str, size: int, body: Callable[[], Any]) -> None:
        repo = self.ref.repository
        if self.request("HEAD", f"/v2/{repo}/blobs/{digest}").status_code == 200:
            return  # already there (content-addressed)
        start = self.request("POST", f"/v2/{repo}/blobs/uploads/", ok=(202,))
        if start.status_code == 404:
            raise self.fail(f"registry {self.ref.registry} refused an upload to {repo} (HTTP 404)")
        location = urljoin(self.base + "/", start.headers["Location"])
        sep = "&" if "?" in location else "?"
        done = self.request("PUT", f"{location}{sep}digest={digest}", ok=(201,), body=body,
                            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)})
        if done.status_code != 201:
            raise self.fail(f"uploading blob {digest} failed (HTTP {done.status_code})")

    def put_manifest(self, manifest: bytes, media_type: str, tag: str) -> str:
        resp = self.request("PUT", f"/v2/{self.ref.repository}/manifests/{tag}", ok=(201,),
                            body=lambda: manifest, headers={"Content-Type": media_type})
        if resp.status_code != 201:
            raise self.fail(f"the registry did not accept the manifest (HTTP {resp.status_code})")
        return sha256_of(manifest)
