"""References (with @sha256 pins), the plain-HTTP rule, and the size/timeout settings."""

from __future__ import annotations

import pytest

from kaito_core.oci import OCIError, is_insecure, limits, looks_like_reference, parse_reference
from kaito_core.oci.settings import DEFAULT_MAX_BYTES, parse_size

PIN = "sha256:" + "ab" * 32


@pytest.mark.parametrize("text, registry, repo, tag, digest", [
    ("myregistry.azurecr.io/adapters/phi3:0.0.1", "myregistry.azurecr.io", "adapters/phi3", "0.0.1", None),
    ("127.0.0.1:5000/a/b", "127.0.0.1:5000", "a/b", "latest", None),
    (f"localhost/x@{PIN}", "localhost", "x", None, PIN),
    (f"reg.io/x/y:1.0@{PIN}", "reg.io", "x/y", "1.0", PIN),
    ("[::1]:5000/m/tiny:0.1", "[::1]:5000", "m/tiny", "0.1", None),
])
def test_references_parse(text, registry, repo, tag, digest):
    r = parse_reference(text)
    assert (r.registry, r.repository, r.tag, r.digest) == (registry, repo, tag, digest)
    assert r.target == (digest or tag)  # a pin wins over the tag
    assert looks_like_reference(text)


@pytest.mark.parametrize("text, needle", [
    ("phi3:0.0.1", "name the registry first"),
    ("https://reg.io/a:1", "without a scheme"),
    ("reg.io/Adapters/x:1", "must be lowercase"),
    ("reg.io/a@sha256:xyz", "64 lowercase hex"),
    ("reg.io/a@md5:" + "0" * 32, "must be sha256"),
    ("reg.io/a:bad!tag", "the tag 'bad!tag'"),
])
def test_bad_references_name_the_field_and_the_fix(text, needle):
    with pytest.raises(OCIError) as err:
        parse_reference(text, "inference.adapters[0].source.image")
    msg = str(err.value)
    assert needle in msg and "inference.adapters[0].source.image" in msg and repr(text) in msg
    assert "e.g. myregistry.azurecr.io" in msg
    assert not looks_like_reference(text)


def test_docker_hub_names():
    r = parse_reference("docker.io/busybox:1.36")
    assert (r.repository, r.api_host) == ("library/busybox", "registry-1.docker.io")
    assert parse_reference("docker.io/kaito/data:1").repository == "kaito/data"


def test_local_paths_are_not_references():
    for path in ("/mnt/adapter/x", "./adapters/x", "adapters/sql", "~/x"):
        assert not looks_like_reference(path)


def test_insecure_rules_in_one_place(monkeypatch):
    assert is_insecure("127.0.0.1:5000") and is_insecure("localhost:5000") and is_insecure("[::1]:5000")
    assert not is_insecure("reg.example.com") and not is_insecure("10.0.0.7:5000")
    assert is_insecure("reg.example.com", True)
    assert is_insecure("reg.example.com:80", ["reg.example.com:80"]) and not is_insecure("reg.example.com", ["other"])
    monkeypatch.setenv("KAITO_INSECURE_REGISTRIES", "a.example.com, b.example.com:5000")
    assert is_insecure("a.example.com:443") and is_insecure("b.example.com:5000") and not is_insecure("c.example.com")
    monkeypatch.setenv("KAITO_OCI_INSECURE", "1")
    assert is_insecure("c.example.com")


def test_size_cap_and_timeouts_from_the_environment(monkeypatch):
    assert limits().max_bytes == DEFAULT_MAX_BYTES and limits().connect_timeout == 5 and limits().retries == 2
    assert parse_size("500Mi") == 500 << 20 and parse_size("20G") == 20 * 10**9 and parse_size("1024") == 1024
    monkeypatch.setenv("KAITO_OCI_MAX_BYTES", "1Gi")
    monkeypatch.setenv("KAITO_OCI_CONNECT_TIMEOUT", "0.5")
    monkeypatch.setenv("KAITO_OCI_RETRIES", "0")
    lim = limits()
    assert (lim.max_bytes, lim.connect_timeout, lim.retries) == (1 << 30, 0.5, 0)
    assert limits(max_bytes="10Mi").max_bytes == 10 << 20  # the caller's cap wins
    monkeypatch.setenv("KAITO_OCI_MAX_BYTES", "lots")
    with pytest.raises(OCIError, match=r"KAITO_OCI_MAX_BYTES='lots' is not a size.*500Mi"):
        limits()
    monkeypatch.setenv("KAITO_OCI_MAX_BYTES", "0")
    with pytest.raises(OCIError, match="must be more than 0 bytes"):
        limits()
    monkeypatch.delenv("KAITO_OCI_MAX_BYTES")
    monkeypatch.setenv("KAITO_OCI_READ_TIMEOUT", "-3")
    with pytest.raises(OCIError, match=r"KAITO_OCI_READ_TIMEOUT='-3' is not a number of seconds > 0"):
        limits()
