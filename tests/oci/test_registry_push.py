"""Pushes to a real registry: upstream's adapter layout (a plain ``tar`` unpacks it), ORAS
files, credentials from a mounted Secret or the environment, refusals explained."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess

import pytest
import requests

from kaito_core import oci
from kaito_core.oci import OCIError
from tests.oci import images
from tests.oci.conftest import PASSWORD, USER


@pytest.fixture
def adapter(tmp_path):
    src = tmp_path / "adapter"
    src.mkdir()
    (src / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
    (src / "adapter_model.safetensors").write_bytes(os.urandom(20_000))
    return src


def test_our_adapter_unpacks_with_plain_tar_into_upstreams_layout(oci_registry, adapter, tmp_path):
    ref = f"{oci_registry.host}/adapters/ours:1"
    digest = oci.push_data_image(adapter, ref, labels={"sh.kaito.method": "lora"})
    manifest = images.manifest(oci_registry.host, "adapters/ours", "1")
    raw = requests.get(f"http://{oci_registry.host}/v2/adapters/ours/manifests/1", timeout=10,
                       headers={"Accept": images.OCI_MANIFEST}).content
    assert digest == images.digest(raw)
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    blob = requests.get(f"http://{oci_registry.host}/v2/adapters/ours/blobs/{layer['digest']}", timeout=10).content
    config = requests.get(f"http://{oci_registry.host}/v2/adapters/ours/blobs/{manifest['config']['digest']}",
                          timeout=10).json()
    # containerd needs rootfs.diff_ids = the digest of the uncompressed tar (upstream's image README)
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest()]
    assert "os" not in config and "architecture" not in config and "manifests" not in manifest
    (tmp_path / "layer.tar.gz").write_bytes(blob)
    out = tmp_path / "untarred"
    out.mkdir()
    subprocess.run(["tar", "xzf", str(tmp_path / "layer.tar.gz"), "-C", str(out)], check=True)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == \
        ["data", "data/adapter_config.json", "data/adapter_model.safetensors"]
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (out / "data" / name).read_bytes() == (adapter / name).read_bytes()
    again = oci.push_data_image(adapter, f"{oci_registry.host}/adapters/ours:2", labels={"sh.kaito.method": "lora"})
    assert again == digest  # no timestamps or owners in the layer: same files, same digest


def test_oras_py_reads_our_adapter_as_upstream_does(oci_registry, adapter, tmp_path):
    """``oras pull`` (oras-py here) of our image gives data/adapter_config.json, as of upstream's."""
    import oras.provider

    ref = f"{oci_registry.host}/adapters/ours-oras:1"
    oci.push_data_image(adapter, ref)
    files = oras.provider.Registry(hostname=oci_registry.host, insecure=True).pull(target=ref, outdir=str(tmp_path))
    assert files and (tmp_path / "data/adapter_config.json").read_bytes() == (adapter / "adapter_config.json").read_bytes()


def test_push_files_is_what_oras_push_writes(oci_registry, adapter, tmp_path):
    ref = f"{oci_registry.host}/models/files:1"
    oci.push_files([(adapter / "adapter_config.json", "application/json")], ref, annotations={"a": "b"})
    manifest = images.manifest(oci_registry.host, "models/files", "1")
    assert manifest["layers"][0]["annotations"] == {"org.opencontainers.image.title": "adapter_config.json"}
    assert manifest["annotations"] == {"a": "b"}
    result = oci.pull(ref, tmp_path / "back")
    assert result.layout == "files" and [p.name for p in result.files()] == ["adapter_config.json"]


def test_credentials_from_a_mounted_secret_and_the_environment(oci_auth_registry, adapter, tmp_path, monkeypatch):
    host = oci_auth_registry.host
    ref = f"{host}/adapters/private:1"
    with pytest.raises(OCIError, match=f"registry {host} requires credentials .*none were found"):
        oci.push_data_image(adapter, ref)
    wrong = oci_auth_registry.docker_config(tmp_path / "wrong.json", USER, "nope")
    with pytest.raises(OCIError, match=f"refused the credentials of user '{USER}' from '.*wrong.json'"):
        oci.push_data_image(adapter, ref, docker_configs=[wrong])
    secret = tmp_path / "secret"
    secret.mkdir()
    oci_auth_registry.docker_config(secret / ".dockerconfigjson", USER, PASSWORD)
    digest = oci.push_data_image(adapter, ref, docker_configs=[secret])
    with pytest.raises(OCIError, match="requires credentials"):
        oci.pull(ref, tmp_path / "anon")
    monkeypatch.setenv("KAITO_OCI_USERNAME", USER)
    monkeypatch.setenv("KAITO_OCI_PASSWORD", PASSWORD)
    assert oci.pull(ref, tmp_path / "env").digest == digest


def test_pushing_to_a_digest_is_refused(oci_registry, adapter):
    with pytest.raises(OCIError, match="push to a tag, not a digest"):
        oci.push_data_image(adapter, f"{oci_registry.host}/a/b@sha256:" + "1" * 64)
