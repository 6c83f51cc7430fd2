"""Bearer-token registries (ACR, ghcr, Docker Hub): the token flow with basic credentials or an
identitytoken, blobs redirected to a storage host without our Authorization header, and a blob
read cut halfway resumed with a Range request."""

from __future__ import annotations

import base64
import os

import pytest

from kaito_core import oci
from kaito_core.oci import OCIError
from tests.oci import images
from tests.oci.tokenfront import REFRESH, TokenFront


@pytest.fixture
def front(oci_registry):
    f = TokenFront(oci_registry.host, "bot", "s3cret")
    yield f
    f.stop()


def _cfg(front, entry):
    return {"auths": {front.host: entry}}


def test_token_flow_push_and_pull(front, tmp_path):
    src = tmp_path / "adapter"
    src.mkdir()
    (src / "adapter_config.json").write_text('{"r": 2}')
    (src / "adapter_model.safetensors").write_bytes(os.urandom(10_000))
    cfg = _cfg(front, {"auth": base64.b64encode(b"bot:s3cret").decode()})
    ref = f"{front.host}/adapters/token:1"
    oci.push_data_image(src, ref, docker_configs=[cfg])
    assert "repository:adapters/token:pull,push" in front.scopes
    result = oci.pull(ref, tmp_path / "out", docker_configs=[cfg])
    assert (tmp_path / "out/adapter_model.safetensors").read_bytes() == (src / "adapter_model.safetensors").read_bytes()
    assert result.layout == "image"
    assert any(line.startswith("storage GET") for line in front.log)  # blobs came through the redirect


def test_identity_token_is_exchanged_at_the_realm(front, oci_registry, tmp_path):
    images.push_image(oci_registry.host, "data/idtok", "1", [images.tar([images.M("data/x", b"1")])])
    cfg = _cfg(front, {"auth": base64.b64encode(b"00000000-0000-0000-0000-000000000000:").decode(),
                       "identitytoken": REFRESH})
    oci.pull(f"{front.host}/data/idtok:1", tmp_path / "o", docker_configs=[cfg])
    assert (tmp_path / "o/x").read_bytes() == b"1" and front.scopes == ["repository:data/idtok:pull"]


def test_refused_and_missing_credentials(front, oci_registry, tmp_path):
    images.push_image(oci_registry.host, "data/tok", "1", [images.tar([images.M("data/x", b"1")])])
    ref = f"{front.host}/data/tok:1"
    with pytest.raises(OCIError, match="requires credentials"):
        oci.pull(ref, tmp_path / "a")
    bad = _cfg(front, {"username": "bot", "password": "wrong"})
    with pytest.raises(OCIError, match="refused the credentials of user 'bot'"):
        oci.pull(ref, tmp_path / "b", docker_configs=[bad])


def test_a_blob_read_cut_halfway_is_resumed(oci_registry, tmp_path):
    front = TokenFront(oci_registry.host, "bot", "s3cret", cut_first_blob=True)
    try:
        payload = os.urandom(3_000_000)  # cut at 1.5 MB: past the first 1 MiB read
        images.push_image(oci_registry.host, "data/flaky", "1", [images.tar([images.M("data/big", payload)])])
        cfg = _cfg(front, {"username": "bot", "password": "s3cret"})
        oci.pull(f"{front.host}/data/flaky:1", tmp_path / "o", docker_configs=[cfg])
        assert (tmp_path / "o/big").read_bytes() == payload
        assert sum(line.startswith("storage GET") for line in front.log) == 2
        ranges = [line for line in front.log if line.startswith("storage range")]
        assert ranges[0] == "storage range -" and ranges[1].startswith("storage range bytes=")  # resumed
        assert ranges[1] != "storage range bytes=0-"
    finally:
        front.stop()
