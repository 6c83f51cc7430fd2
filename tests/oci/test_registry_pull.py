"""Verified pulls from a real registry (Debian's docker-registry): upstream KAITO's adapter
images, docker-built data images, ORAS artifacts; tampered blobs, pins and the size cap."""

from __future__ import annotations

import json
import os
import platform

import pytest

from kaito_core import oci
from kaito_core.oci import OCIError, VerificationError
from tests.oci import images
from tests.oci.images import M, tar

ADAPTER_CONFIG = json.dumps({"peft_type": "LORA", "r": 8, "target_modules": ["q_proj", "v_proj"]}).encode()


@pytest.fixture(scope="module")
def upstream_adapter(oci_registry):
    weights = os.urandom(40_000)
    images.push_upstream_adapter(oci_registry.host, "adapters/upstream", "0.0.1", ADAPTER_CONFIG, weights)
    return f"{oci_registry.host}/adapters/upstream:0.0.1", weights


def test_upstream_adapter_image_lands_as_adapter_files(upstream_adapter, tmp_path):
    ref, weights = upstream_adapter
    result = oci.pull(ref, tmp_path / "adapter")
    assert result.layout == "image" and result.digest.startswith("sha256:")
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == ["adapter_config.json",
                                                                        "adapter_model.safetensors"]
    assert (tmp_path / "adapter/adapter_model.safetensors").read_bytes() == weights


def test_docker_built_data_image_with_a_base_layer_and_whiteouts(oci_registry, tmp_path):
    """FROM busybox; COPY data /data; RUN rm /data/draft.jsonl -> three docker v2 layers."""
    host = oci_registry.host
    base = tar([M("bin", kind="dir"), M("bin/busybox", b"\x7fELF"), M("bin/sh", kind="symlink", link="/bin/busybox"),
                M("dev", kind="dir"), M("etc/passwd", b"root:x:0:0::/root:/bin/sh\n")])
    data = tar([M("data", kind="dir"), M("data/train.jsonl", b'{"messages": []}\n'), M("data/draft.jsonl", b"x")])
    rm = tar([M("data/.wh.draft.jsonl")])
    images.push_image(host, "data/faq", "1", [base, data, rm], docker=True)
    result = oci.pull(f"{host}/data/faq:1", tmp_path / "data")
    assert result.layout == "image"
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["train.jsonl"]


def test_an_image_index_resolves_to_this_platform(oci_registry, tmp_path):
    host = oci_registry.host
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    other = "s390x" if arch != "s390x" else "amd64"
    mine = images.push_image(host, "data/multi", "mine", [tar([M("data/which", arch.encode())])])
    theirs = images.push_image(host, "data/multi", "theirs", [tar([M("data/which", other.encode())])])
    images.push_index(host, "data/multi", "1", [(theirs, "linux", other), (mine, "linux", arch)])
    oci.pull(f"{host}/data/multi:1", tmp_path / "m")
    assert (tmp_path / "m/which").read_bytes() == arch.encode()
    images.push_index(host, "data/multi", "2", [(theirs, "linux", other), (theirs, "windows", other)])
    with pytest.raises(OCIError, match=f"no linux/{arch} entry"):
        oci.pull(f"{host}/data/multi:2", tmp_path / "m2")


def test_an_image_without_a_data_folder_is_explained(oci_registry, tmp_path):
    images.push_image(oci_registry.host, "data/nodata", "1", [tar([M("app/x", b"1")])])
    with pytest.raises(OCIError, match="the image has no /data folder"):
        oci.pull(f"{oci_registry.host}/data/nodata:1", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_oras_artifacts_one_file_per_layer_stay_readable(oci_registry, tmp_path):
    import oras.provider

    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text('{"model_type": "llama"}')
    (src / "model.safetensors").write_bytes(os.urandom(3000))
    ref = f"{oci_registry.host}/models/tiny:0.1"
    oras.provider.Registry(hostname=oci_registry.host, insecure=True).push(
        target=ref, files=[f"{p}:application/vnd.kaito.model.file.v1" for p in sorted(src.iterdir())],
        disable_path_validation=True, quiet=True)
    result = oci.pull(ref, tmp_path / "out")
    assert result.layout == "files"
    for name in ("config.json", "model.safetensors"):
        assert (tmp_path / "out" / name).read_bytes() == (src / name).read_bytes()


def test_a_tampered_blob_is_refused_and_nothing_is_left(oci_registry, tmp_path):
    host = oci_registry.host
    layer = tar([M("data/adapter_config.json", ADAPTER_CONFIG), M("data/adapter_model.safetensors", os.urandom(5000))])
    images.push_image(host, "adapters/tampered", "1", [layer])
    desc = images.manifest(host, "adapters/tampered", "1")["layers"][0]
    blob = oci_registry.blob_path(desc["digest"])
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same length, one byte flipped: only the digest can tell
    blob.write_bytes(bytes(data))
    target = tmp_path / "pulled"
    with pytest.raises(VerificationError) as err:
        oci.pull(f"{host}/adapters/tampered:1", target)
    assert desc["digest"] in str(err.value) and "does not match its digest" in str(err.value)
    assert not target.exists()
    existing = tmp_path / "existing"  # a restarted init container's volume: left as it was
    existing.mkdir()
    (existing / "keep").write_text("1")
    with pytest.raises(VerificationError):
        oci.pull(f"{host}/adapters/tampered:1", existing)
    assert [p.name for p in existing.iterdir()] == ["keep"]


def test_sha256_pins_are_honoured(oci_registry, upstream_adapter, tmp_path):
    host = oci_registry.host
    ref, _ = upstream_adapter
    pinned = images.push_image(host, "adapters/pinned", "1", [tar([M("data/v", b"one")])])
    images.push_image(host, "adapters/pinned", "1", [tar([M("data/v", b"two")])])  # the tag moves on
    oci.pull(f"{host}/adapters/pinned:1@{pinned}", tmp_path / "a")
    assert (tmp_path / "a/v").read_bytes() == b"one"  # the pin wins over the tag
    manifest_blob = oci_registry.blob_path(pinned)
    body = json.loads(manifest_blob.read_bytes())
    body["annotations"] = {"evil": "1"}
    manifest_blob.write_bytes(json.dumps(body).encode())
    with pytest.raises(VerificationError, match=f"not {pinned}"):
        oci.pull(f"{host}/adapters/pinned@{pinned}", tmp_path / "b")
    missing = "sha256:" + "0" * 64
    with pytest.raises(OCIError, match="was not found"):
        oci.pull(f"{host}/adapters/pinned@{missing}", tmp_path / "c")


def test_the_size_cap(oci_registry, upstream_adapter, tmp_path, monkeypatch):
    ref, _ = upstream_adapter
    monkeypatch.setenv("KAITO_OCI_MAX_BYTES", "10Ki")
    with pytest.raises(VerificationError, match="over the size cap of 10240 bytes"):
        oci.pull(ref, tmp_path / "a")
    monkeypatch.delenv("KAITO_OCI_MAX_BYTES")
    with pytest.raises(VerificationError, match="over the size cap of 1000 bytes"):
        oci.pull(ref, tmp_path / "b", max_bytes=1000)
    bomb = tar([M("data/zeros", b"\0" * 3_000_000)])  # 3 KB on the wire, 3 MB unpacked
    images.push_image(oci_registry.host, "data/bomb", "1", [bomb])
    with pytest.raises(VerificationError, match="'data/zeros' .*over the size cap of 1048576"):
        oci.pull(f"{oci_registry.host}/data/bomb:1", tmp_path / "c", max_bytes="1Mi")
    assert not any((tmp_path / n).exists() for n in "abc")


def test_a_hostile_layer_in_the_registry_writes_nothing_outside(oci_registry, tmp_path):
    layer = tar([M("data", kind="dir"), M("data/escape", kind="symlink", link="../../../.."),
                 M("data/escape/tmp/pwned", b"x")])
    images.push_image(oci_registry.host, "data/hostile", "1", [layer])
    with pytest.raises(oci.UnsafeArchiveError, match="symlink 'data/escape'"):
        oci.pull(f"{oci_registry.host}/data/hostile:1", tmp_path / "h")
    assert not (tmp_path / "h").exists()


def test_a_killed_pull_leaves_no_lasting_debris(upstream_adapter, tmp_path):
    ref, _ = upstream_adapter
    dest = tmp_path / "adapter"
    (dest / ".kaito-pull-killed").mkdir(parents=True)  # what SIGKILL mid-pull leaves
    (dest / ".kaito-pull-killed" / "half.safetensors").write_bytes(b"x")
    oci.pull(ref, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]


def test_the_runtime_reads_every_adapter_layout(oci_registry, upstream_adapter, tmp_path):
    """Upstream's image, ORAS one-file-per-layer (kaito's older push) and an ORAS directory layer
    all leave adapter_config.json directly under the adapter's directory."""
    import oras.provider

    from kaito_core.runtime.oci import OCIError as RuntimeOCIError
    from kaito_core.runtime.oci import pull_adapter

    ref, weights = upstream_adapter
    assert (pull_adapter(ref, tmp_path / "up") / "adapter_model.safetensors").read_bytes() == weights
    src = tmp_path / "poet"
    src.mkdir()
    (src / "adapter_config.json").write_bytes(ADAPTER_CONFIG)
    (src / "adapter_model.safetensors").write_bytes(weights)
    client = oras.provider.Registry(hostname=oci_registry.host, insecure=True)
    client.push(target=f"{oci_registry.host}/adapters/files:1", disable_path_validation=True, quiet=True,
                files=[f"{p}:application/octet-stream" for p in sorted(src.iterdir())])
    client.push(target=f"{oci_registry.host}/adapters/dir:1", files=[str(src)], disable_path_validation=True,
                quiet=True)
    for name in ("files", "dir"):
        out = pull_adapter(f"{oci_registry.host}/adapters/{name}:1", tmp_path / name)
        assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    images.push_image(oci_registry.host, "adapters/not-one", "1", [tar([M("data/readme.md", b"hi")])])
    with pytest.raises(RuntimeOCIError, match=r"holds no adapter_config.json \(files: \['readme.md'\]\)"):
        pull_adapter(f"{oci_registry.host}/adapters/not-one:1", tmp_path / "not-one")
    assert not (tmp_path / "not-one").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
