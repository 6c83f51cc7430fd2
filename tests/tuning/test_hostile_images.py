"""Adapter and data images as other tools push them, and broken ones, each pinned after it was
found mishandled: oras-pushed adapter tarballs, plain tar layers, docker manifest lists,
zstd layers, digest-pinned outputs, dangling hard links and layers damaged before the push."""

from __future__ import annotations

import json

import pytest

from kaito_core.api.training.errors import FetchError, OutputError
from kaito_core.tuning import run
from tests.tuning.helpers import chat_rows


def test_an_adapter_tarball_pushed_with_oras_pulls_as_an_adapter(registry, tmp_path):
    """Upstream's layer (data/adapter_config.json, data/adapter_model.safetensors) pushed by
    `oras push REF layer.tar.gz` with an artifact config unpacked to dest/data/... and the
    adapter check failed, leaving the directory behind."""
    from tests.oci.images import OCI_MANIFEST, OCI_TGZ, M, push_blob, put_manifest, tar

    from kaito_core.tuning.oci import pull_adapter

    layer = tar([M("data", kind="dir"), M("data/adapter_config.json", b'{"peft_type": "LORA"}'),
                 M("data/adapter_model.safetensors", b"weights")])
    repo = "adapters/oras-tarball"
    put_manifest(registry.host, repo, "1", {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.unknown.artifact.v1",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", **push_blob(registry.host, repo, b"{}")},
        "layers": [{"mediaType": OCI_TGZ, **push_blob(registry.host, repo, layer),
                    "annotations": {"org.opencontainers.image.title": "layer.tar.gz"}}]}, OCI_MANIFEST)
    pulled = pull_adapter(f"{registry.host}/{repo}:1", tmp_path / "adapter")
    assert sorted(p.name for p in pulled.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]

    data_only = tar([M("data/train.jsonl", b"{}\n")])
    put_manifest(registry.host, "adapters/not-one", "1", {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", **push_blob(registry.host, "adapters/not-one", b"{}")},
        "layers": [{"mediaType": OCI_TGZ, **push_blob(registry.host, "adapters/not-one", data_only),
                    "annotations": {"org.opencontainers.image.title": "layer.tar.gz"}}]}, OCI_MANIFEST)
    with pytest.raises(FetchError, match=r"no adapter_config.json, adapter_model.safetensors in it \(it holds "
                                         r"train.jsonl\)"):
        pull_adapter(f"{registry.host}/adapters/not-one:1", tmp_path / "not-one")
    assert not (tmp_path / "not-one").exists()


def test_zstd_layers_are_named(registry, tmp_path):
    from tests.oci.images import OCI_CONFIG, OCI_MANIFEST, push_blob, put_manifest

    from kaito_core.tuning.oci import pull

    repo = "data/zstd"
    put_manifest(registry.host, repo, "1", {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, **push_blob(registry.host, repo, b'{"rootfs": {}}')},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd",
                    **push_blob(registry.host, repo, b"\x28\xb5\x2f\xfd-not-really")}]}, OCI_MANIFEST)
    with pytest.raises(FetchError, match="its layers are zstd-compressed .*push them as tar or tar\\+gzip"):
        pull(f"{registry.host}/{repo}:1", tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_data_images_in_the_formats_other_tools_push(registry, tiny_models, tmp_path):
    """Uncompressed tar layers, './'-prefixed members and a whiteout (docker build), and a
    docker manifest list whose entries are two architectures plus an attestation."""
    import platform

    import requests

    from tests.oci.images import DOCKER_MANIFEST, OCI_CONFIG, OCI_MANIFEST, M, digest, push_blob, push_image, \
        put_manifest, tar

    from kaito_core.tuning.oci import pull

    host, rows = registry.host, "".join(json.dumps(r) + "\n" for r in chat_rows()).encode()
    plain = tar([M("data", kind="dir"), M("data/train.jsonl", rows)], gz=False)
    put_manifest(host, "data/plain", "1", {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, **push_blob(host, "data/plain", json.dumps(
            {"rootfs": {"type": "layers", "diff_ids": [digest(plain)]}}).encode())},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **push_blob(host, "data/plain", plain)}]},
        OCI_MANIFEST)
    assert [p.name for p in pull(f"{host}/data/plain:1", tmp_path / "plain")] == ["train.jsonl"]

    first = tar([M("./", kind="dir"), M("./data/", kind="dir"), M("./data/train.jsonl", rows),
                 M("./data/draft.jsonl", b"not json")])
    ours = push_image(host, "data/multi", "amd64", [first, tar([M("./data/.wh.draft.jsonl")])], docker=True)
    other = push_image(host, "data/multi", "other", [tar([M("data/other.jsonl", rows)])], docker=True)
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())

    def entry(d, os_, architecture):
        size = len(requests.get(f"http://{host}/v2/data/multi/manifests/{d}", headers={"Accept": DOCKER_MANIFEST},
                                timeout=10).content)
        return {"mediaType": DOCKER_MANIFEST, "digest": d, "size": size,
                "platform": {"os": os_, "architecture": architecture}}

    media = "application/vnd.docker.distribution.manifest.list.v2+json"
    put_manifest(host, "data/multi", "1", {"schemaVersion": 2, "mediaType": media, "manifests": [
        entry(other, "linux", "s390x"), entry(ours, "linux", arch), entry(other, "unknown", "unknown")]}, media)
    assert [p.name for p in pull(f"{host}/data/multi:1", tmp_path / "multi")] == ["train.jsonl"]
    result = run(model_dir=str(tiny_models["llama"]), input_image=f"{host}/data/multi:1",
                 config={"training_config": {"TrainingArguments": {"max_steps": 1}}},
                 output=str(tmp_path / "adapter"), progress="none")
    assert result.summary["data"]["rows_used"] == len(chat_rows())


def test_an_output_image_pinned_to_a_digest_is_refused_before_training(registry, tiny_models, chat_jsonl, tmp_path):
    """The check before training let `repo@sha256:...` through; the push refused it after the run."""
    ref = f"{registry.host}/adapters/pinned:1@sha256:" + "0" * 64
    with pytest.raises(OutputError, match="pushed to a tag, not a digest .*drop the @sha256"):
        run(model_dir=str(tiny_models["llama"]), data=[str(chat_jsonl)], output_image=ref, progress="none",
            on_step=lambda info: pytest.fail("trained before refusing the reference"))


def test_a_hard_link_to_nothing_earlier_in_the_layer_is_a_damaged_layer(registry, tmp_path):
    """tarfile raised a bare KeyError ("linkname ... not found") for a hard link whose target
    is missing or comes later in the archive: an internal error instead of a refused layer."""
    from tests.oci.images import M, push_image, tar

    from kaito_core.tuning.oci import pull

    layer = tar([M("data", kind="dir"), M("data/train.jsonl", kind="hardlink", link="data/later.jsonl"),
                 M("data/later.jsonl", b"{}\n")])
    push_image(registry.host, "data/dangling", "1", [layer])
    with pytest.raises(FetchError, match=r"hard link 'data/train.jsonl' -> 'data/later.jsonl' names no earlier "
                                         r"member of the layer; the layer is damaged"):
        pull(f"{registry.host}/data/dangling:1", tmp_path / "data")
    assert not (tmp_path / "data").exists()
    ok = tar([M("data", kind="dir"), M("data/a.jsonl", b"{}\n"), M("data/b.jsonl", kind="hardlink", link="data/a.jsonl")])
    push_image(registry.host, "data/linked", "1", [ok])
    assert sorted(p.name for p in pull(f"{registry.host}/data/linked:1", tmp_path / "linked")) == ["a.jsonl", "b.jsonl"]


def test_a_layer_damaged_before_it_was_pushed_is_refused(registry, tmp_path):
    """Its digest matches (the pusher hashed the damaged bytes), but gzip's CRC does not: tarfile
    never reads the end of the stream, so the files were written and used."""
    from tests.oci.images import OCI_CONFIG, OCI_MANIFEST, OCI_TGZ, M, push_blob, put_manifest, tar

    from kaito_core.tuning.oci import pull

    good = tar([M("data", kind="dir"), M("data/train.jsonl", b'{"text": "hello"}\n' * 5000)])
    crc_flipped = good[:-8] + bytes(b ^ 0xFF for b in good[-8:-4]) + good[-4:]
    host = registry.host
    put_manifest(host, "data/crc", "1", {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, **push_blob(host, "data/crc", b'{"rootfs": {"type": "layers"}}')},
        "layers": [{"mediaType": OCI_TGZ, **push_blob(host, "data/crc", crc_flipped)}]}, OCI_MANIFEST)
    with pytest.raises(FetchError, match="is a damaged tar archive .*CRC check failed"):
        pull(f"{registry.host}/data/crc:1", tmp_path / "data")
    assert not (tmp_path / "data").exists()
