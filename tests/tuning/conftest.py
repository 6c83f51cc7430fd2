"""Fixtures for the tuning tests: tiny real models, learnable data, a local HTTP server and real
OCI registries (Debian's ``docker-registry``, one open and one behind htpasswd auth)."""

from __future__ import annotations

import json
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from kaito_core.local.registry import LocalRegistry, find_binary
from tests.tuning.helpers import FAST_CONFIG, chat_rows

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


class Registry(LocalRegistry):
    """The local registry, with this suite's test credentials as defaults."""

    def __init__(self, root: Path, auth: bool):
        super().__init__(root, htpasswd=REGISTRY_HTPASSWD if auth else None)
        self.start()

    def docker_config(self, path: Path, user: str = REGISTRY_USER, password: str = REGISTRY_PASSWORD) -> Path:
        return super().docker_config(path, user, password)


def _registry(tmp_path_factory, auth: bool):
    if find_binary() is None:
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
