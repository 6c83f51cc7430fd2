"""Fixtures for the tuning tests: tiny real models, learnable data, a local HTTP server and real
OCI registries (Debian's ``docker-registry``, one open and one behind htpasswd auth)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.request
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.tuning.helpers import FAST_CONFIG, chat_rows, free_port

REGISTRY_BIN = shutil.which("docker-registry") or "/usr/bin/docker-registry"
REGISTRY_USER = "kaito"
REGISTRY_PASSWORD = "kaito-test-pass"
# bcrypt("kaito-test-pass"), the only hash docker-registry's htpasswd accepts (test-only secret).
REGISTRY_HTPASSWD = f"{REGISTRY_USER}:$2a$05$B4Gco4pZm5mdOqVHC3aCd.kr.YY.Bm3oXHMlZ3i82oJBANoJQcYv.\n"

@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    from kaito_core.testing.tiny_models import build_tiny_model

    root = tmp_path_factory.mktemp("tiny-models")
    return {arch: build_tiny_model(root / arch, arch) for arch in ("llama", "phi3", "falcon")}


@pytest.fixture(scope="session")
def chat_jsonl(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in chat_rows()))
    return path


@pytest.fixture
def fast_config() -> dict:
    return json.loads(json.dumps(FAST_CONFIG))


# --- a local HTTP server ---------------------------------------------------------------------


class _Handler(SimpleHTTPRequestHandler):
    fail_first: dict[str, int] = {}

    def do_GET(self):  # noqa: N802
        left = self.server.fail_first.get(self.path, 0)  # type: ignore[attr-defined]
        if left:
            self.server.fail_first[self.path] = left - 1  # type: ignore[attr-defined]
            self.send_error(503, "try again")
            return
        redirect = self.server.redirects.get(self.path)  # type: ignore[attr-defined]
        if redirect:
            self.send_response(302)
            self.send_header("Location", redirect)
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server(tmp_path):
    """Serves ``tmp_path/www`` on 127.0.0.1; ``.fail_first[path] = n`` answers 503 n times."""
    root = tmp_path / "www"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(root)))
    server.fail_first = {}  # type: ignore[attr-defined]
    server.redirects = {}  # type: ignore[attr-defined]
    server.root = root  # type: ignore[attr-defined]
    server.url = f"http://127.0.0.1:{server.server_port}"  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


# --- real OCI registries ---------------------------------------------------------------------


class Registry:
    def __init__(self, root: Path, auth: bool):
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.root = root
        config = {"version": 0.1, "log": {"level": "error"},
                  "storage": {"filesystem": {"rootdirectory": str(root / "data")}},
                  "http": {"addr": self.host, "secret": "kaito-test"}}
        if auth:
            (root / "htpasswd").write_text(REGISTRY_HTPASSWD)
            config["auth"] = {"htpasswd": {"realm": "kaito-test", "path": str(root / "htpasswd")}}
        (root / "config.yml").write_text(json.dumps(config))  # JSON is YAML
        self.log = open(root / "registry.log", "wb")
        self.proc = subprocess.Popen([REGISTRY_BIN, "serve", str(root / "config.yml")],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while True:
            try:
                urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1)
                break
            except urllib.error.HTTPError:
                break  # 401: up, and asking for credentials
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"docker-registry did not start: {(root / 'registry.log').read_text()}")
                time.sleep(0.05)

    def docker_config(self, path: Path, user: str = REGISTRY_USER, password: str = REGISTRY_PASSWORD) -> Path:
        auth = base64.b64encode(f"{user}:{password}".encode()).decode()
        path.write_text(json.dumps({"auths": {self.host: {"auth": auth}}}))
        return path

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def _registry(tmp_path_factory, auth: bool):
    if not os.path.exists(REGISTRY_BIN):
        pytest.fail("docker-registry is not installed: apt-get install -y docker-registry")
    reg = Registry(tmp_path_factory.mktemp("registry-auth" if auth else "registry"), auth)
    return reg


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    reg = _registry(tmp_path_factory, auth=False)
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory):
    reg = _registry(tmp_path_factory, auth=True)
    yield reg
    reg.stop()




@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tiny models train fastest on one thread on a busy 2-core machine; restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
