"""One credentials order for every caller: given docker configs, then KAITO_OCI_USERNAME/PASSWORD,
then $DOCKER_CONFIG/config.json, then ~/.docker/config.json."""

from __future__ import annotations

import base64
import json

import pytest
import yaml

from kaito_core.oci import OCIError, find_credentials, load_docker_config


def _auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def _config(path, registry: str, user: str, password: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"auths": {registry: {"auth": _auth(user, password)}}}))
    return path


def test_a_mounted_secret_directory_and_a_secret_manifest(tmp_path):
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / ".dockerconfigjson").write_text(json.dumps({"auths": {"https://reg.example.com": {
        "auth": _auth("bot", "s3cret")}}}))
    found = find_credentials("reg.example.com", [secret])
    assert found.pair() == ("bot", "s3cret") and "secret" in found.source
    assert find_credentials("other.example.com", [secret]) is None
    manifest = tmp_path / "secret.yaml"
    blob = base64.b64encode(json.dumps({"auths": {"reg.example.com:5000": {
        "username": "u", "password": "p"}}}).encode()).decode()
    manifest.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
                                        "data": {".dockerconfigjson": blob}}))
    assert find_credentials("reg.example.com:5000", [manifest]).pair() == ("u", "p")
    assert find_credentials("reg.example.com:5000", {"reg.example.com:5000": {"auth": _auth("d", "e")}}).pair() == \
        ("d", "e")  # a parsed mapping, legacy .dockercfg shape


def test_the_order_is_the_same_everywhere(tmp_path, monkeypatch):
    given = _config(tmp_path / "given.json", "reg.io", "given", "1")
    env_dir = tmp_path / "env"
    _config(env_dir / "config.json", "reg.io", "docker-config-env", "2")
    _config(tmp_path / "home" / ".docker" / "config.json", "reg.io", "home", "3")
    assert find_credentials("reg.io").username == "home"
    monkeypatch.setenv("DOCKER_CONFIG", str(env_dir))
    assert find_credentials("reg.io").username == "docker-config-env"
    monkeypatch.setenv("KAITO_OCI_USERNAME", "from-env")
    monkeypatch.setenv("KAITO_OCI_PASSWORD", "4")
    assert find_credentials("reg.io").pair() == ("from-env", "4")
    assert find_credentials("reg.io", [given]).pair() == ("given", "1")


def test_identity_tokens_are_kept_for_the_token_service(tmp_path):
    cfg = {"auths": {"myacr.azurecr.io": {"auth": _auth("00000000-0000-0000-0000-000000000000", ""),
                                          "identitytoken": "refresh-me"}}}
    found = find_credentials("myacr.azurecr.io", [cfg])
    assert found.identity_token == "refresh-me" and found.username.startswith("0000")


@pytest.mark.parametrize("content, needle", [
    (None, "holds no .dockerconfigjson or config.json"),
    ("not json: [", "is not a docker config"),
    (yaml.safe_dump({"kind": "Secret", "data": {"other": "eA=="}}), "has no .dockerconfigjson key"),
])
def test_bad_docker_configs_are_explained(tmp_path, content, needle):
    target = tmp_path / "cfg"
    if content is None:
        target.mkdir()
    else:
        target.write_text(content)
    with pytest.raises(OCIError, match=needle):
        load_docker_config(target)
    with pytest.raises(OCIError, match="cannot read it"):
        find_credentials("reg.io", [tmp_path / "missing.json"])  # a config that was named must exist


def test_docker_hub_entries_match_under_any_of_its_names():
    cfg = {"auths": {"https://index.docker.io/v1/": {"auth": _auth("hubuser", "pw")}}}
    assert find_credentials("docker.io", [cfg]).pair() == ("hubuser", "pw")
    assert find_credentials("quay.io", [cfg]) is None
