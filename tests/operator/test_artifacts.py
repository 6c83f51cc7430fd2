"""``python -m kaito_core.artifacts pull``: what the operator's init containers run to fetch
weights, adapters and data (ORAS artifacts, upstream /data images), verified - against a real registry."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import pytest

from kaito_core.artifacts import ArtifactError, credentials, is_insecure, registry_of


def pull(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kaito_core.artifacts", "pull", *args], capture_output=True,
                          text=True, timeout=60)


@pytest.fixture(scope="module")
def pushed(registry, tmp_path_factory):
    """A two-file artifact pushed the way images/models/pack.py pushes weights (a layer per file)."""
    import oras.provider

    src = tmp_path_factory.mktemp("artifact")
    (src / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (src / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    ref = f"{registry}/models/tiny:0.1"
    client = oras.provider.Registry(hostname=registry, insecure=True)
    client.push(target=ref, files=[f"{p}:application/vnd.kaito.model.file.v1" for p in sorted(src.iterdir())],
                disable_path_validation=True, quiet=True)
    return ref, src


def test_pull_writes_the_files_as_pushed(pushed, tmp_path):
    ref, src = pushed
    out = tmp_path / "weights"
    res = pull(ref, str(out))
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    for name in ("config.json", "model.safetensors"):
        assert (out / name).read_bytes() == (src / name).read_bytes()
    assert "2 files" in res.stdout
    # again into the same directory (a restarted init container): same files, no leftovers
    assert pull(ref, str(out)).returncode == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]


def test_missing_tag_and_unreachable_registry_are_explained(pushed, registry, tmp_path):
    ref, _ = pushed
    res = pull(ref.replace(":0.1", ":nope"), str(tmp_path / "a"))
    assert res.returncode == 1 and "check the repository and tag" in res.stderr, res.stderr
    res = pull("127.0.0.1:9/models/tiny:0.1", str(tmp_path / "b"))
    assert res.returncode == 1 and "not reachable" in res.stderr, res.stderr
    res = pull("tiny:0.1", str(tmp_path / "c"))
    assert res.returncode == 1 and "not an OCI reference" in res.stderr, res.stderr


def test_credentials_and_insecure_rules(tmp_path, monkeypatch):
    secret = tmp_path / "secret"
    secret.mkdir()
    auth = base64.b64encode(b"bot:s3cret").decode()
    (secret / ".dockerconfigjson").write_text(json.dumps({"auths": {"https://reg.example.com": {"auth": auth}}}))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    assert credentials("reg.example.com", [secret]) == ("bot", "s3cret")
    assert credentials("other.example.com", [secret]) is None
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ArtifactError, match="no .dockerconfigjson or config.json"):
        credentials("reg.example.com", [empty])
    assert is_insecure("127.0.0.1:5000") and is_insecure("localhost:5000") and not is_insecure("reg.example.com")
    monkeypatch.setenv("KAITO_INSECURE_REGISTRIES", "reg.example.com:80")
    assert is_insecure("reg.example.com:80")
    assert registry_of("reg.example.com/a/b:1") == "reg.example.com"


def test_upstream_adapter_and_docker_data_images_through_the_init_container(registry, tmp_path):
    """Upstream KAITO's adapter image (tar+gzip layer of data/...) and a docker-built data image
    (base layer + /data) land as plain files under DIR, as upstream's puller moves /data."""
    from tests.oci import images
    from tests.oci.images import M, tar

    images.push_upstream_adapter(registry, "adapters/up", "1", b'{"r": 8}', b"weights")
    res = pull(f"{registry}/adapters/up:1", str(tmp_path / "adapter"))
    assert res.returncode == 0 and "image layout" in res.stdout, res.stderr
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == ["adapter_config.json",
                                                                        "adapter_model.safetensors"]
    base = tar([M("bin/sh", kind="symlink", link="/bin/busybox"), M("etc/hostname", b"x")])
    images.push_image(registry, "data/docker", "1", [base, tar([M("data/train.jsonl", b"{}\n")])], docker=True)
    res = pull(f"{registry}/data/docker:1", str(tmp_path / "data"))
    assert res.returncode == 0, res.stderr
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["train.jsonl"]


@pytest.fixture(scope="module")
def own_registry(tmp_path_factory):
    """A registry whose storage this module can reach, to tamper with a stored blob."""
    from kaito_core.local.registry import LocalRegistry

    reg = LocalRegistry(tmp_path_factory.mktemp("own-registry")).start()
    yield reg
    reg.stop()


def test_a_tampered_layer_fails_the_init_container_and_leaves_nothing(own_registry, tmp_path):
    from tests.oci import images
    from tests.oci.images import M, tar

    host = own_registry.host
    digest = images.push_image(host, "models/tiny", "1", [tar([M("data/model.safetensors", bytes(range(256)) * 40)])])
    layer = images.manifest(host, "models/tiny", "1")["layers"][0]["digest"]
    blob = own_registry.blob_path(layer)
    data = bytearray(blob.read_bytes())
    data[-20] ^= 0x01
    blob.write_bytes(bytes(data))
    res = pull(f"{host}/models/tiny:1@{digest}", str(tmp_path / "weights"))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert f"blob {layer} does not match its digest" in res.stderr and res.stderr.count("\n") == 1
    assert not (tmp_path / "weights").exists()


def test_push_then_pull_with_the_command_and_a_bad_cap(registry, tmp_path):
    src = tmp_path / "dataset"
    src.mkdir()
    (src / "train.jsonl").write_text('{"messages": []}\n')
    ref = f"{registry}/data/pushed:1"
    res = subprocess.run([sys.executable, "-m", "kaito_core.artifacts", "push", str(src), ref], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0 and "sha256:" in res.stdout, res.stderr
    out = pull(ref, str(tmp_path / "back"))
    assert out.returncode == 0 and (tmp_path / "back" / "train.jsonl").read_text() == '{"messages": []}\n'
    res = pull(ref, str(tmp_path / "capped"), "--max-bytes", "lots")
    assert res.returncode == 1 and "--max-bytes='lots' is not a size" in res.stderr and "500Mi" in res.stderr
    res = pull(ref, str(tmp_path / "capped"), "--max-bytes", "10")
    assert res.returncode == 1 and "over the size cap of 10 bytes" in res.stderr
