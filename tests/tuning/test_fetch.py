"""Input URLs: SSRF guard, downloads from a real local server, retries, size limit, atomic files."""

from __future__ import annotations

import pytest

from kaito_core.api.training.errors import FetchError
from kaito_core.tuning.fetch import check_url, download


@pytest.mark.parametrize("url, why", [
    ("http://127.0.0.1:8080/data.jsonl", "loopback"),
    ("http://localhost/data.jsonl", "loopback"),
    ("http://10.1.2.3/data.parquet", "private"),
    ("http://192.168.0.10/data.csv", "private"),
    ("http://169.254.169.254/latest/meta-data/", "cloud instance metadata"),
    ("http://[::1]:9000/x.json", "loopback"),
    ("http://[::ffff:10.0.0.1]/x.json", "private"),
    ("http://0.0.0.0/x.json", "unspecified"),
])
def test_private_loopback_and_metadata_urls_are_refused(url, why, monkeypatch):
    monkeypatch.delenv("KAITO_ALLOW_PRIVATE_URLS", raising=False)
    with pytest.raises(FetchError) as err:
        check_url(url)
    msg = str(err.value)
    assert "is refused" in msg and why in msg and "KAITO_ALLOW_PRIVATE_URLS=1" in msg


def test_a_public_name_resolving_to_a_private_address_is_refused():
    with pytest.raises(FetchError, match="resolves to 10.0.0.7, a private address"):
        check_url("https://data.example.com/train.parquet", resolver=lambda host, port: ["10.0.0.7"])
    target = check_url("https://data.example.com/a.parquet?download=true", resolver=lambda h, p: ["20.1.2.3"])
    assert (target.address, target.port, target.path) == ("20.1.2.3", 443, "/a.parquet?download=true")


@pytest.mark.parametrize("url, needle", [
    ("file:///etc/passwd", "scheme 'file' is not allowed"),
    ("ftp://example.com/x.csv", "scheme 'ftp' is not allowed"),
    ("https://user:pw@example.com/x.csv", "credentials in the URL"),
])
def test_other_schemes_and_credentials_are_refused(url, needle):
    with pytest.raises(FetchError, match=needle):
        check_url(url, allow_private=True)


def test_download_with_the_operator_setting(http_server, tmp_path, monkeypatch):
    (http_server.root / "train.jsonl").write_text('{"text": "hello"}\n')
    url = f"{http_server.url}/train.jsonl"
    with pytest.raises(FetchError, match="is refused"):
        download(url, tmp_path / "d1", allow_private=False)
    monkeypatch.setenv("KAITO_ALLOW_PRIVATE_URLS", "1")
    path = download(url, tmp_path / "d2", index=3)
    assert path.name == "003-train.jsonl" and path.read_text() == '{"text": "hello"}\n'
    assert [p.name for p in (tmp_path / "d2").iterdir()] == [path.name]  # no temp files left


def test_retries_then_succeeds_and_http_errors_are_named(http_server, tmp_path):
    (http_server.root / "d.csv").write_text("text\nhi\n")
    http_server.fail_first["/d.csv"] = 2
    path = download(f"{http_server.url}/d.csv", tmp_path, allow_private=True, backoff=0.01)
    assert path.read_text() == "text\nhi\n"
    http_server.fail_first["/d.csv"] = 10
    with pytest.raises(FetchError, match="failed after 3 attempts: HTTP 503"):
        download(f"{http_server.url}/d.csv", tmp_path / "x", allow_private=True, attempts=3, backoff=0.01)
    with pytest.raises(FetchError, match="HTTP 404"):
        download(f"{http_server.url}/missing.csv", tmp_path / "y", allow_private=True)
    assert not list((tmp_path / "x").iterdir()) and not list((tmp_path / "y").iterdir())


def test_size_limit_checksum_and_redirect_checks(http_server, tmp_path):
    (http_server.root / "big.jsonl").write_bytes(b"x" * 5000)
    with pytest.raises(FetchError, match="5000 bytes is over the limit of 1000"):
        download(f"{http_server.url}/big.jsonl", tmp_path / "a", allow_private=True, max_bytes=1000)
    assert not list((tmp_path / "a").iterdir())
    with pytest.raises(FetchError, match="sha256 is"):
        download(f"{http_server.url}/big.jsonl#sha256={'0' * 64}", tmp_path / "b", allow_private=True)
    assert not list((tmp_path / "b").iterdir())
    import hashlib

    digest = hashlib.sha256(b"x" * 5000).hexdigest()
    ok = download(f"{http_server.url}/big.jsonl#sha256={digest}", tmp_path / "c", allow_private=True)
    assert ok.stat().st_size == 5000
    # Every redirect hop is checked like the first URL.
    http_server.redirects["/moved.jsonl"] = "file:///etc/passwd"
    with pytest.raises(FetchError, match="scheme 'file' is not allowed"):
        download(f"{http_server.url}/moved.jsonl", tmp_path / "d", allow_private=True)
    http_server.redirects["/moved.jsonl"] = "/big.jsonl"
    assert download(f"{http_server.url}/moved.jsonl", tmp_path / "e", allow_private=True).stat().st_size == 5000


class _Lines:
    """The ``download {...}`` records of the kaito.tuning logger, whatever its propagation."""

    def __enter__(self):
        import logging

        self.records: list = []
        self.handler = logging.Handler()
        self.handler.emit = self.records.append
        self.logger = logging.getLogger("kaito.tuning")
        self.level = self.logger.level
        self.logger.addHandler(self.handler)
        self.logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.level)

    def lines(self) -> list[dict]:
        import json

        return [json.loads(r.getMessage().split("download ", 1)[1]) for r in self.records
                if r.getMessage().startswith("download {")]


def test_data_downloads_report_progress_with_an_eta(http_server, tmp_path, monkeypatch):
    from kaito_core.tuning import progress

    monkeypatch.setattr(progress, "DOWNLOAD_LOG_INTERVAL_S", 0.0)  # a line per chunk
    (http_server.root / "big.jsonl").write_bytes(b'{"text": "x"}\n' * (3 * 2**20 // 14))
    with _Lines() as got:
        download(f"{http_server.url}/big.jsonl", tmp_path / "dl", allow_private=True)
    lines = got.lines()
    assert len(lines) >= 3 and lines[-1]["done"] is True and lines[-1]["percent"] == 100.0
    assert lines[0]["what"] == "data" and lines[0]["total"] == (http_server.root / "big.jsonl").stat().st_size
    assert lines[0]["eta_s"] is not None and lines[0]["bytes"] < lines[-1]["bytes"]


def test_model_downloads_report_files_through_the_hub_progress_hook(monkeypatch):
    from kaito_core.tuning import progress

    monkeypatch.setattr(progress, "DOWNLOAD_LOG_INTERVAL_S", 0.0)
    with _Lines() as got:
        bar = progress.hub_tqdm_class("model", "org/model")(total=4, desc="Fetching 4 files")
        for _ in range(4):
            bar.update(1)
        bar.close()
    lines = got.lines()
    assert [ln["files"] for ln in lines] == [1, 2, 3, 4, 4] and lines[-1]["done"] is True
    assert lines[0]["name"] == "org/model" and lines[0]["total"] == 4
