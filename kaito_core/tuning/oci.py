"""Adapters and data as OCI artifacts (oras-py): push with docker-config credentials, pull.

Artifact layout (docs/tuning.md): the manifest config has media type
``application/vnd.kaito.adapter.config.v1+json`` (a small JSON: base model, method, preset);
one layer per file, each titled with its file name (``org.opencontainers.image.title``) so
``oras pull`` writes the files back: ``adapter_config.json``
(``application/vnd.kaito.adapter.lora.config.v1+json``), ``adapter_model.safetensors``
(``application/vnd.kaito.adapter.lora.weights.v1+safetensors``), and the run summary.

oras-py retries failed requests with long sleeps; we first ask the registry's ``/v2/``
endpoint ourselves (short timeout) so that "cannot connect" and "unauthorized" are reported
at once, with the registry and the fix named.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kaito_core.tuning.errors import FetchError, OutputError, TuningError

log = logging.getLogger("kaito.tuning")

ADAPTER_CONFIG_MEDIA_TYPE = "application/vnd.kaito.adapter.config.v1+json"
MEDIA_TYPES = {
    "adapter_config.json": "application/vnd.kaito.adapter.lora.config.v1+json",
    "adapter_model.safetensors": "application/vnd.kaito.adapter.lora.weights.v1+safetensors",
    "kaito-tuning-summary.json": "application/vnd.kaito.tuning.summary.v1+json",
}
DEFAULT_FILE_MEDIA_TYPE = "application/octet-stream"
INSECURE_ENV = "KAITO_INSECURE_REGISTRIES"
ANNOTATION_PREFIX = "sh.kaito"


@dataclass(frozen=True)
class Reference:
    registry: str
    repository: str
    tag: str | None
    digest: str | None
    text: str

    @property
    def host(self) -> str:
        return self.registry.rsplit(":", 1)[0] if self.registry.count(":") == 1 else self.registry


def parse_reference(ref: str, what: str = "image") -> Reference:
    """``registry[:port]/repo[:tag|@digest]``; the registry part is required (no Docker Hub default)."""
    text = ref.strip()
    if "://" in text:
        raise TuningError(f"{what} {ref!r}: write an image reference without a scheme, e.g. "
                          "myregistry.azurecr.io/adapters/phi3:0.0.1")
    first, _, rest = text.partition("/")
    if not rest or not ("." in first or ":" in first or first == "localhost"):
        raise TuningError(f"{what} {ref!r}: name the registry, e.g. myregistry.azurecr.io/{text}")
    digest = None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
    tag = None
    if ":" in rest.rsplit("/", 1)[-1]:
        rest, tag = rest.rsplit(":", 1)
    if not rest or rest != rest.lower():
        raise TuningError(f"{what} {ref!r}: the repository name must be lowercase")
    return Reference(first, rest, tag if tag or digest else "latest", digest, text)


def is_insecure(registry: str, insecure: list[str] | tuple[str, ...] | None = None) -> bool:
    """Plain http for loopback registries (as Docker does) and those listed by the operator."""
    listed = set(insecure or ()) | {r.strip() for r in os.environ.get(INSECURE_ENV, "").split(",") if r.strip()}
    if registry in listed:
        return True
    host = registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry
    if host.strip("[]") in listed or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# --- credentials -------------------------------------------------------------------------------


def load_docker_config(path: str | Path | dict | None) -> dict[str, Any]:
    """A docker config: ``config.json``, a Secret's ``.dockerconfigjson`` file, a directory
    holding either (a mounted Secret), a Secret manifest (YAML/JSON with base64 data), or the
    parsed mapping itself."""
    if path is None:
        path = default_docker_config()
        if path is None:
            return {}
    if isinstance(path, dict):
        return path if "auths" in path else {"auths": path}
    p = Path(path)
    if p.is_dir():
        for name in (".dockerconfigjson", "config.json", ".dockercfg"):
            if (p / name).is_file():
                p = p / name
                break
        else:
            raise TuningError(f"push secret {path}: the directory has no .dockerconfigjson or config.json")
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise TuningError(f"push secret {path}: cannot read it ({exc.strerror or exc})") from None
    try:
        data = json.loads(text)
    except ValueError:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            data = None
    if isinstance(data, dict) and data.get("kind") == "Secret":
        blob = (data.get("data") or {}).get(".dockerconfigjson")
        if blob is None:
            plain = (data.get("stringData") or {}).get(".dockerconfigjson")
            blob = base64.b64encode(plain.encode()).decode() if plain else None
        if blob is None:
            raise TuningError(f"push secret {path}: Secret has no .dockerconfigjson key (type "
                              "kubernetes.io/dockerconfigjson expected)")
        data = json.loads(base64.b64decode(blob))
    if not isinstance(data, dict):
        raise TuningError(f"push secret {path}: not a docker config JSON ({{\"auths\": {{...}}}})")
    if "auths" not in data and all(isinstance(v, dict) for v in data.values()):
        data = {"auths": data}  # the legacy .dockercfg layout
    return data


def default_docker_config() -> Path | None:
    """``$DOCKER_CONFIG/config.json`` (the tuning Job mounts the push secret there), else
    ``~/.docker/config.json``, as docker and oras do."""
    env = os.environ.get("DOCKER_CONFIG")
    for cand in ([Path(env) / "config.json"] if env else []) + [Path.home() / ".docker" / "config.json"]:
        if cand.is_file():
            return cand
    return None


def credentials_for(config: dict[str, Any], registry: str) -> tuple[str, str] | None:
    for key, entry in (config.get("auths") or {}).items():
        host = key.split("://", 1)[-1].split("/", 1)[0]
        if host != registry or not isinstance(entry, dict):
            continue
        if entry.get("username") and entry.get("password"):
            return str(entry["username"]), str(entry["password"])
        if entry.get("auth"):
            user, _, pw = base64.b64decode(entry["auth"]).decode().partition(":")
            return user, pw
    return None


# --- the registry ------------------------------------------------------------------------------


def _client(ref: Reference, *, docker_config: str | Path | dict | None, insecure: list[str] | None,
            error: type[TuningError], action: str):
    import requests
    import oras.provider

    insec = is_insecure(ref.registry, insecure)
    scheme = "http" if insec else "https"
    creds = credentials_for(load_docker_config(docker_config), ref.registry)
    url = f"{scheme}://{ref.registry}/v2/"
    try:
        resp = requests.get(url, timeout=10)
    except requests.RequestException as exc:
        raise error(f"cannot {action} {ref.text}: registry {ref.registry} is not reachable over {scheme} "
                    f"({type(exc).__name__}); check the name and that it is up"
                    + ("" if insec else f", or list it in {INSECURE_ENV} if it serves plain http")) from None
    challenge = resp.headers.get("WWW-Authenticate", "")
    backend = "token" if challenge.lower().startswith("bearer") else "basic"
    if resp.status_code == 401 and backend == "basic":
        if creds is None:
            raise error(f"cannot {action} {ref.text}: registry {ref.registry} requires credentials (HTTP 401 "
                        "Unauthorized) and none were found for it; give a docker-config secret "
                        "(tuning.output.imagePushSecret / --push-secret FILE) with an entry for "
                        f"{ref.registry!r}")
        check = requests.get(url, timeout=10, auth=creds)
        if check.status_code == 401:
            raise error(f"cannot {action} {ref.text}: registry {ref.registry} refused the credentials of "
                        f"user {creds[0]!r} (HTTP 401 Unauthorized); check the docker-config secret")
    client = oras.provider.Registry(hostname=ref.registry, insecure=insec, auth_backend=backend)
    if creds:
        client.auth.set_basic_auth(*creds)
    return client


def push_adapter(adapter_dir: str | Path, image: str, *, docker_config: str | Path | dict | None = None,
                 insecure: list[str] | None = None, annotations: dict[str, str] | None = None,
                 config: dict[str, Any] | None = None) -> str:
    """Push every file of ``adapter_dir`` as one layer each; return the manifest digest."""
    ref = parse_reference(image, "tuning.output.image")
    client = _client(ref, docker_config=docker_config, insecure=insecure, error=OutputError, action="push to")
    adapter_dir = Path(adapter_dir)
    files = [f"{p}:{MEDIA_TYPES.get(p.name, DEFAULT_FILE_MEDIA_TYPE)}"
             for p in sorted(adapter_dir.iterdir()) if p.is_file()]
    with tempfile.TemporaryDirectory(prefix="kaito-oci-") as tmp:
        cfg_path = Path(tmp) / "config.json"
        cfg_path.write_text(json.dumps(config or {}, sort_keys=True))
        try:
            resp = client.push(target=ref.text, files=files, disable_path_validation=True,
                               manifest_config=f"{cfg_path}:{ADAPTER_CONFIG_MEDIA_TYPE}",
                               manifest_annotations=annotations or None, quiet=True)
        except Exception as exc:  # noqa: BLE001 - oras raises ValueError/requests errors; say it plainly
            raise OutputError(f"pushing the adapter to {ref.text} failed: {exc}. The artifact was not "
                              "tagged (a registry only tags a manifest once every layer is uploaded)") from None
    digest = resp.headers.get("Docker-Content-Digest", "")
    log.info("pushed adapter to %s (%s)", ref.text, digest or "digest not reported")
    return digest


def pull(image: str, dest: str | Path, *, docker_config: str | Path | dict | None = None,
         insecure: list[str] | None = None, what: str = "image") -> list[Path]:
    """Pull every titled layer of ``image`` into ``dest`` (created; files appear when complete)."""
    ref = parse_reference(image, what)
    client = _client(ref, docker_config=docker_config, insecure=insecure, error=FetchError, action="pull")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".kaito-pull-", dir=dest))
    try:
        try:
            files = client.pull(target=ref.text, outdir=str(tmp))
        except Exception as exc:  # noqa: BLE001
            raise FetchError(f"pulling {ref.text} failed: {exc}") from None
        out = []
        # adapter_config.json last: a directory is an adapter only once its weights are there.
        for f in sorted(files, key=lambda f: Path(f).name == "adapter_config.json"):
            src = Path(f)
            target = dest / src.relative_to(tmp)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, target)
            out.append(target)
        if not out:
            raise FetchError(f"{ref.text} has no files (no titled layers)")
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def pull_adapter(image: str, dest: str | Path, **kwargs: Any) -> Path:
    """Pull an adapter artifact and check it holds ``adapter_config.json`` + weights."""
    from kaito_core.tuning.output import ADAPTER_CONFIG, ADAPTER_WEIGHTS

    dest = Path(dest)
    pull(image, dest, what="adapter image", **kwargs)
    missing = [f for f in (ADAPTER_CONFIG, ADAPTER_WEIGHTS) if not (dest / f).is_file()]
    if missing:
        raise FetchError(f"adapter image {image}: no {', '.join(missing)} in the artifact; is it a LoRA adapter?")
    return dest
