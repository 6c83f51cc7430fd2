"""A real HTTP front for the test registry that behaves like ACR / ghcr / Docker Hub where it
matters to a client: Bearer token auth (``WWW-Authenticate: Bearer realm=...,service=...``,
basic credentials or an ``identitytoken`` refresh token exchanged at the realm), and blob reads
redirected to a storage host that rejects an ``Authorization`` header (Azure Blob with a SAS URL
answers 400 to one). Optionally the first blob read is cut halfway (a flaky network)."""

from __future__ import annotations

import base64
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import requests

TOKEN = "tok-123"
REFRESH = "refresh-abc"


class TokenFront:
    def __init__(self, upstream: str, user: str, password: str, *, cut_first_blob: bool = False):
        self.upstream, self.user, self.password = upstream, user, password
        self.cut_first_blob = cut_first_blob
        self.log: list[str] = []
        self.scopes: list[str] = []
        self.front = ThreadingHTTPServer(("127.0.0.1", 0), self._handler(self._front))
        self.storage = ThreadingHTTPServer(("127.0.0.1", 0), self._handler(self._storage))
        for srv in (self.front, self.storage):
            threading.Thread(target=srv.serve_forever, daemon=True).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.front.server_address[1]}"

    def stop(self) -> None:
        for srv in (self.front, self.storage):
            srv.shutdown()
            srv.server_close()

    def _handler(self, fn):
        class H(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                fn(self)

            do_HEAD = do_POST = do_PUT = do_PATCH = do_GET

            def log_message(self, *args):
                pass
        return H

    @staticmethod
    def _reply(h, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)

    def _token(self, h) -> None:
        url = urlparse(h.path)
        form = parse_qs(url.query)
        if h.command == "POST":
            form = parse_qs(h.rfile.read(int(h.headers.get("Content-Length", 0))).decode())
        self.scopes.append(form.get("scope", [""])[0])
        good_basic = "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        ok = h.headers.get("Authorization") == good_basic or (
            form.get("grant_type") == ["refresh_token"] and form.get("refresh_token") == [REFRESH])
        if not ok:
            return self._reply(h, 401, b'{"errors":[{"code":"UNAUTHORIZED"}]}')
        self._reply(h, 200, b'{"token": "%s"}' % TOKEN.encode(), {"Content-Type": "application/json"})

    def _front(self, h) -> None:
        self.log.append(f"{h.command} {h.path}")
        if h.path.startswith("/token"):
            return self._token(h)
        if h.headers.get("Authorization") != f"Bearer {TOKEN}":
            realm = f'Bearer realm="http://{self.host}/token",service="test-registry"'
            return self._reply(h, 401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', {"WWW-Authenticate": realm})
        if h.command == "GET" and "/blobs/sha256:" in h.path:
            # like ACR: blobs come from another host, with the grant in the URL instead of a header
            return self._reply(h, 307, headers={"Location": f"http://localhost:{self.storage.server_address[1]}"
                                                            f"{h.path}?sig=granted"})
        body = h.rfile.read(int(h.headers.get("Content-Length", 0))) if h.headers.get("Content-Length") else None
        headers = {k: v for k, v in h.headers.items() if k.lower() in ("accept", "content-type")}
        resp = requests.request(h.command, f"http://{self.upstream}{h.path}", data=body, headers=headers,
                                allow_redirects=False, timeout=10)
        out = {k: v.replace(f"http://{self.upstream}", f"http://{self.host}") for k, v in resp.headers.items()
               if k.lower() in ("content-type", "docker-content-digest", "location", "docker-upload-uuid")}
        self._reply(h, resp.status_code, resp.content, out)

    def _storage(self, h) -> None:
        self.log.append(f"storage {h.command} {h.path}")
        if h.headers.get("Authorization"):
            return self._reply(h, 400, b"a SAS URL must not carry an Authorization header")
        if "sig=granted" not in h.path:
            return self._reply(h, 403, b"no grant")
        data = requests.get(f"http://{self.upstream}{h.path.split('?')[0]}", timeout=10).content
        rng = h.headers.get("Range", "")
        self.log.append(f"storage range {rng or '-'}")
        if rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[6:-1])
            return self._reply(h, 206, data[start:], {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"})
        if self.cut_first_blob:
            self.cut_first_blob = False
            h.send_response(200)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data[: len(data) // 2])
            h.wfile.flush()
            h.close_connection = True
            return
        self._reply(h, 200, data, {"Content-Type": "application/octet-stream"})
