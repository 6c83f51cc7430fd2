"""An unreachable or failing registry fails fast, with bounded retries, in one line."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from kaito_core import oci
from kaito_core.oci import OCIError


@pytest.fixture
def silent_port():
    """Accepts TCP connections (the kernel's backlog) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture
def closed_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture
def failing_registry():
    """A real HTTP server that answers every request with 503 and counts them."""
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            seen.append(self.path)
            self.send_response(503)
            self.send_header("Content-Length", "4")
            self.end_headers()
            self.wfile.write(b"busy")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], seen
    server.shutdown()
    server.server_close()


def test_a_registry_that_never_answers(silent_port, tmp_path, monkeypatch):
    monkeypatch.setenv("KAITO_OCI_READ_TIMEOUT", "0.2")
    monkeypatch.setenv("KAITO_OCI_RETRIES", "1")
    with pytest.raises(OCIError) as err:
        oci.pull(f"127.0.0.1:{silent_port}/adapters/x:1", tmp_path / "x")
    msg = str(err.value)
    assert "\n" not in msg and f"127.0.0.1:{silent_port} is not reachable over http" in msg
    assert "no answer within 0.2 s" in msg and "after 2 attempts" in msg
    assert not (tmp_path / "x").exists()


def test_a_refused_connection(closed_port, tmp_path):
    with pytest.raises(OCIError, match=r"connection refused\) after 3 attempts; check the reference"):
        oci.pull(f"127.0.0.1:{closed_port}/adapters/x:1", tmp_path / "x")


def test_server_errors_are_retried_a_bounded_number_of_times(failing_registry, tmp_path, monkeypatch):
    port, seen = failing_registry
    with pytest.raises(OCIError, match=f"answered HTTP 503 on GET http://127.0.0.1:{port}/v2/a/manifests/1: busy"):
        oci.pull(f"127.0.0.1:{port}/a:1", tmp_path / "x")
    assert seen == ["/v2/a/manifests/1"] * 3  # 1 + KAITO_OCI_RETRIES (2)
    monkeypatch.setenv("KAITO_OCI_RETRIES", "0")
    seen.clear()
    with pytest.raises(OCIError):
        oci.pull(f"127.0.0.1:{port}/a:1", tmp_path / "x")
    assert len(seen) == 1


def test_the_init_container_command_says_it_in_one_line(closed_port, tmp_path):
    res = subprocess.run([sys.executable, "-m", "kaito_core.artifacts", "pull", f"127.0.0.1:{closed_port}/m/x:1",
                          str(tmp_path / "w")], capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KAITO_OCI_RETRIES": "0"})
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: cannot pull 127.0.0.1:")


def test_the_runtime_adapter_pull_fails_fast_too(silent_port, tmp_path, monkeypatch):
    """The admin adapter load used oras-py's retries and took 131 s to fail; now the same limits apply."""
    from kaito_core.runtime.oci import OCIError as RuntimeOCIError
    from kaito_core.runtime.oci import pull_adapter

    monkeypatch.setenv("KAITO_OCI_READ_TIMEOUT", "0.2")
    monkeypatch.setenv("KAITO_OCI_RETRIES", "0")
    with pytest.raises(RuntimeOCIError, match="no answer within 0.2 s"):
        pull_adapter(f"127.0.0.1:{silent_port}/adapters/x:1", tmp_path / "a")
    assert not (tmp_path / "a").exists() and list(tmp_path.iterdir()) == []
