"""A real OCI registry on this machine: Debian's ``docker-registry`` (distribution 2.8).

Local mode pushes tuned adapters to it (``kaito demo``), and the tests use it for every OCI
round trip (adapters, weights artifacts, training data). It binds 127.0.0.1 on a free port,
optionally behind htpasswd auth, and is stopped by its pid.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from kaito_core.errors import KaitoError

INSTALL_HINT = "install it with `apt-get install -y docker-registry` (or run `make tools`)"


class RegistryError(KaitoError, RuntimeError):
    """docker-registry is missing or did not start."""


def find_binary() -> str | None:
    return shutil.which("docker-registry") or (
        "/usr/bin/docker-registry" if Path("/usr/bin/docker-registry").exists() else None)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalRegistry:
    """``docker-registry serve`` on ``127.0.0.1:<free port>`` with its data under ``root``.

    :param htpasswd: an htpasswd line (bcrypt, the only hash docker-registry accepts) to put
        the registry behind basic auth; ``None`` for an open registry.
    """

    def __init__(self, root: str | Path, *, htpasswd: str | None = None, log_level: str = "error"):
        self.root = Path(root)
        self.htpasswd = htpasswd
        self.log_level = log_level
        self.port = 0
        self.proc: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.root / "registry.log"

    def start(self, timeout: float = 15.0) -> "LocalRegistry":
        binary = find_binary()
        if binary is None:
            raise RegistryError(f"docker-registry is not installed: {INSTALL_HINT}")
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        config: dict = {"version": 0.1, "log": {"level": self.log_level},
                        "storage": {"filesystem": {"rootdirectory": str(self.root / "data")},
                                    "delete": {"enabled": True}},
                        "http": {"addr": self.host, "secret": "kaito-local"}}
        if self.htpasswd:
            (self.root / "htpasswd").write_text(self.htpasswd)
            config["auth"] = {"htpasswd": {"realm": "kaito", "path": str(self.root / "htpasswd")}}
        (self.root / "config.yml").write_text(json.dumps(config))  # JSON is YAML
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([binary, "serve", str(self.root / "config.yml")],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         close_fds=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1)  # noqa: S310 - loopback
                return self
            except urllib.error.HTTPError:
                return self  # 401: up, and asking for credentials
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RegistryError(f"docker-registry did not start on {self.host}: "
                                        f"{self.log_path.read_text(errors='replace')[-2000:]}") from None
                time.sleep(0.05)

    def docker_config(self, path: str | Path, user: str, password: str) -> Path:
        """Write a docker ``config.json`` with credentials for this registry."""
        auth = base64.b64encode(f"{user}:{password}".encode()).decode()
        path = Path(path)
        path.write_text(json.dumps({"auths": {self.host: {"auth": auth}}}))
        return path

    def blob_path(self, digest: str) -> Path:
        """Where the filesystem driver keeps blob (or manifest) ``digest``: tests tamper with it
        to prove that pulls verify what they read."""
        algo, _, hexd = digest.partition(":")
        return self.root / "data" / "docker/registry/v2/blobs" / algo / hexd[:2] / hexd / "data"

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> "LocalRegistry":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
