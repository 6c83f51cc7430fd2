"""Protocol hygiene over real sockets: slow or silent clients are cut off at the configured
timeouts, a client hanging up mid-upload is not a server error, API keys stay out of ps and
out of the access log, and /chat keeps upstream's error key."""

from __future__ import annotations

import argparse
import logging
import socket
import time

import httpx
import pytest

from kaito_core.runtime.http import RedactSecrets, redact
from kaito_core.runtime.options import OptionsError, build_parser, options_from_args


def _closed_after(sock: socket.socket, limit: float) -> float | None:
    """Seconds until the server closes ``sock`` (recv returns b''), or None within ``limit``."""
    sock.settimeout(limit)
    start = time.monotonic()
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return time.monotonic() - start
    except socket.timeout:
        return None
    except ConnectionResetError:
        return time.monotonic() - start


@pytest.fixture(scope="module")
def strict_server(tiny_models):
    from tests.runtime.conftest import start_server

    srv = start_server(model=str(tiny_models["llama"]), served_model_name="tiny-llama", timeout_header=1.0,
                       timeout_body=1.0, timeout_keep_alive=1.0)
    yield srv
    srv.stop()


def test_half_open_request_head_is_closed_within_the_header_timeout(strict_server):
    conns = []
    for partial in (b"", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n", b"GET /hea"):
        s = socket.create_connection(("127.0.0.1", strict_server.port))
        s.sendall(partial)
        conns.append(s)
    # timeout 1 s; the slack only absorbs a loaded 2-core machine (uvicorn alone never closed them)
    took = [_closed_after(s, 6.0) for s in conns]
    for s in conns:
        s.close()
    assert all(t is not None and t < 6.0 for t in took), took
    assert httpx.get(strict_server.url + "/health").status_code == 200


def test_a_stalled_body_gets_408(strict_server):
    s = socket.create_connection(("127.0.0.1", strict_server.port))
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: 100\r\n\r\n{\"prompt\": ")
    s.settimeout(8)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    assert data.startswith(b"HTTP/1.1 408"), data[:200]


def test_a_disconnect_during_upload_is_not_a_server_error(strict_server):
    errors: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.ERROR:
                errors.append(record)

    handler = Collect()
    loggers = [logging.getLogger(n) for n in ("uvicorn.error", "kaito")]
    for lg in loggers:
        lg.addHandler(handler)
    try:
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", strict_server.port))
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 5000\r\n\r\n{\"messages\": [")
            time.sleep(0.1)
            s.close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and 'kaito_client_disconnects_total{route="/v1/chat/completions"} 3.0' \
                not in httpx.get(strict_server.url + "/metrics").text:
            time.sleep(0.05)
    finally:
        for lg in loggers:
            lg.removeHandler(handler)
    metrics = httpx.get(strict_server.url + "/metrics").text
    assert 'kaito_client_disconnects_total{route="/v1/chat/completions"} 3.0' in metrics
    assert 'code="500"' not in metrics and 'type="server"' not in metrics
    assert not errors, [r.getMessage() for r in errors]


def test_query_string_keys_are_redacted_in_the_access_log(tiny_models):
    from kaito_core.runtime.server import create_app
    from tests.runtime.conftest import ThreadServer

    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    app = create_app(model=str(tiny_models["llama"]), api_key="k")
    srv = ThreadServer(app, log_level="info").start()
    access = logging.getLogger("uvicorn.access")
    handler = Collect()
    access.addHandler(handler)
    try:
        httpx.get(srv.url + "/v1/models?api_key=topsecret-123&x=1")
        httpx.get(srv.url + "/health?token=abc.def")
    finally:
        access.removeHandler(handler)
        srv.stop()
    text = "\n".join(lines)
    assert "/v1/models?api_key=REDACTED&x=1" in text, text
    assert "token=REDACTED" in text
    assert "topsecret" not in text and "abc.def" not in text


def test_redact_unit():
    assert redact("/x?key=1&api-key=2&other=3") == "/x?key=REDACTED&api-key=REDACTED&other=3"
    rec = logging.LogRecord("uvicorn.access", 20, "", 0, '%s - "%s %s"', ("1.2.3.4", "GET", "/a?api_key=s"), None)
    RedactSecrets().filter(rec)
    assert "s\"" not in rec.getMessage() and "REDACTED" in rec.getMessage()


def _opts(argv, monkeypatch, env=None):
    for k in ("KAITO_API_KEY", "KAITO_API_KEY_FILE"):
        monkeypatch.delenv(k, raising=False)
    for k, v in (env or {}).items():
        monkeypatch.setenv(k, v)
    return options_from_args(build_parser().parse_args(["--model", "m", *argv]))


def test_api_key_from_file_env_and_flag(tmp_path, monkeypatch, caplog):
    key = tmp_path / "key"
    key.write_text("from-file\n")
    assert _opts(["--api-key-file", str(key)], monkeypatch).api_key == "from-file"
    assert _opts([], monkeypatch, {"KAITO_API_KEY_FILE": str(key)}).api_key == "from-file"
    assert _opts([], monkeypatch, {"KAITO_API_KEY": "from-env"}).api_key == "from-env"
    with caplog.at_level(logging.WARNING):
        assert _opts(["--api-key", "on-cmdline"], monkeypatch).api_key == "on-cmdline"
    assert "visible" in caplog.text and "--api-key-file" in caplog.text
    with pytest.raises(OptionsError, match="--api-key-file"):
        _opts(["--api-key-file", str(tmp_path / "missing")], monkeypatch)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(OptionsError, match="empty"):
        _opts(["--api-key-file", str(tmp_path / "empty")], monkeypatch)


def test_timeout_flags(monkeypatch):
    o = _opts(["--timeout-header", "2.5", "--timeout-body", "3", "--timeout-keep-alive", "4"], monkeypatch)
    assert (o.timeout_header, o.timeout_body, o.timeout_keep_alive) == (2.5, 3.0, 4.0)
    with pytest.raises(OptionsError, match="--timeout-body"):
        _opts(["--timeout-body", "-1"], monkeypatch)
    assert isinstance(build_parser(), argparse.ArgumentParser)


def test_kaito_chat_ignores_an_unknown_model_and_keeps_detail(server):
    r = httpx.post(server.url + "/chat", json={"prompt": "Hello", "model": "gpt-17",
                                               "generate_kwargs": {"max_new_tokens": 3}}, timeout=60)
    assert r.status_code == 200 and "Result" in r.json()
    r = httpx.post(server.url + "/chat", json={"prompt": "x", "generate_kwargs": {"num_beams": 4}})
    assert r.status_code == 400
    body = r.json()
    assert body["detail"] == body["error"]["message"] and "num_beams" in body["detail"]
    # OpenAI routes keep vLLM's 404 for an unknown model
    r = httpx.post(server.url + "/v1/completions", json={"prompt": "x", "model": "gpt-17"})
    assert r.status_code == 404 and r.json()["error"]["param"] == "model"
