"""Registry credentials, looked up in one order everywhere (init containers, runtime, tuning):

1. the docker configs the caller names (each must exist): a ``config.json``, a
   ``kubernetes.io/dockerconfigjson`` Secret's ``.dockerconfigjson`` file, a directory holding
   either (a Secret mounted in a pod), a Secret manifest (YAML/JSON, base64 ``data``), or a dict;
2. ``KAITO_OCI_USERNAME`` / ``KAITO_OCI_PASSWORD`` (both set);
3. ``$DOCKER_CONFIG/config.json``, then ``~/.docker/config.json`` (as docker and oras read them).

Entries are matched on the registry's ``host[:port]``; ``auth`` (base64 user:password),
``username``/``password`` and ``identitytoken`` (an OAuth2 refresh token, what ``az acr login``
writes) are understood. Credential helpers (``credsStore``) are not run.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Union

from kaito_core.oci.errors import OCIError

USERNAME_ENV = "KAITO_OCI_USERNAME"
PASSWORD_ENV = "KAITO_OCI_PASSWORD"
DockerConfig = Union[str, os.PathLike, dict]
_HUB_KEYS = ("docker.io", "index.docker.io", "registry-1.docker.io")


@dataclass(frozen=True)
class Credential:
    username: str
    password: str = ""
    identity_token: str | None = None   # OAuth2 refresh token for the registry's token service
    source: str = ""                    # where it came from, for error messages (never the secret)

    def pair(self) -> tuple[str, str]:
        return self.username, self.password


def _decode_secret(data: dict, path: str) -> dict:
    blob = (data.get("data") or {}).get(".dockerconfigjson")
    if blob is not None:
        try:
            return json.loads(base64.b64decode(blob))
        except (binascii.Error, ValueError):
            raise OCIError(f"docker config {path}: the Secret's .dockerconfigjson is not base64 JSON") from None
    plain = (data.get("stringData") or {}).get(".dockerconfigjson")
    if plain is None:
        raise OCIError(f"docker config {path}: the Secret has no .dockerconfigjson key (a Secret of type "
                       "kubernetes.io/dockerconfigjson is expected)")
    return json.loads(plain)


def load_docker_config(path: DockerConfig) -> dict[str, Any]:
    """One docker config as ``{"auths": {...}}``; :class:`OCIError` names the file and the fix."""
    if isinstance(path, dict):
        return path if "auths" in path else {"auths": path}
    p = Path(path)
    if p.is_dir():
        for name in (".dockerconfigjson", "config.json", ".dockercfg"):
            if (p / name).is_file():
                p = p / name
                break
        else:
            raise OCIError(f"docker config {str(path)!r}: the directory holds no .dockerconfigjson or config.json")
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise OCIError(f"docker config {str(path)!r}: cannot read it ({exc.strerror or exc})") from None
    try:
        data = json.loads(text)
    except ValueError:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            data = None
    if isinstance(data, dict) and data.get("kind") == "Secret":
        data = _decode_secret(data, str(path))
    if not isinstance(data, dict):
        raise OCIError(f"docker config {str(path)!r} is not a docker config ({{\"auths\": {{...}}}}); give a "
                       "config.json or a kubernetes.io/dockerconfigjson Secret's .dockerconfigjson")
    if "auths" not in data and data and all(isinstance(v, dict) for v in data.values()):
        data = {"auths": data}  # the legacy .dockercfg layout
    return data


def _key_host(key: str) -> str:
    return key.split("://", 1)[-1].split("/", 1)[0]


def _entry_credential(entry: dict, source: str) -> Credential | None:
    token = entry.get("identitytoken") or entry.get("identityToken")
    user, password = entry.get("username"), entry.get("password")
    if entry.get("auth"):
        try:
            user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise OCIError(f"docker config {source}: an 'auth' entry is not base64 of user:password") from None
    if token:
        return Credential(str(user or "<token>"), "", str(token), source)
    if user and password:
        return Credential(str(user), str(password), None, source)
    return None


def from_config(config: dict[str, Any], registry: str, source: str = "docker config") -> Credential | None:
    """The entry of ``config`` for ``registry`` (``host[:port]``), if any."""
    wanted = {registry} | (set(_HUB_KEYS) if registry in _HUB_KEYS else set())
    for key, entry in (config.get("auths") or {}).items():
        if _key_host(str(key)) in wanted and isinstance(entry, dict):
            found = _entry_credential(entry, source)
            if found:
                return found
    return None


def default_docker_configs() -> list[Path]:
    """``$DOCKER_CONFIG/config.json`` and ``~/.docker/config.json`` that exist."""
    out = []
    env = os.environ.get("DOCKER_CONFIG")
    if env:
        out.append(Path(env) / "config.json")
    # expanduser, not Path.home(): a non-root pod's uid may have no passwd entry
    out.append(Path(os.path.expanduser("~/.docker/config.json")))
    return [p for p in out if p.is_file()]


def find(registry: str, docker_configs: Iterable[DockerConfig] | DockerConfig | None = ()) -> Credential | None:
    """Credentials for ``registry`` in the documented order, or ``None`` (anonymous)."""
    if docker_configs is None:
        docker_configs = ()
    elif isinstance(docker_configs, (str, os.PathLike, dict)):
        docker_configs = [docker_configs]
    for cfg in docker_configs:
        label = "given docker config" if isinstance(cfg, dict) else repr(str(cfg))
        found = from_config(load_docker_config(cfg), registry, label)
        if found:
            return found
    user, password = os.environ.get(USERNAME_ENV), os.environ.get(PASSWORD_ENV)
    if user and password:
        return Credential(user, password, None, f"${USERNAME_ENV}/${PASSWORD_ENV}")
    for path in default_docker_configs():
        found = from_config(load_docker_config(path), registry, repr(str(path)))
        if found:
            return found
    return None
