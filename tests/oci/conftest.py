"""Real registries for the OCI tests (Debian's docker-registry): one open, one behind htpasswd.
The fixtures hand out the LocalRegistry itself: tamper tests reach into its storage."""

from __future__ import annotations

import pytest

from kaito_core.local.registry import LocalRegistry, RegistryError

USER, PASSWORD = "kaito", "kaito-test-pass"
# bcrypt("kaito-test-pass"), the only hash docker-registry's htpasswd accepts (test-only secret).
HTPASSWD = f"{USER}:$2a$05$B4Gco4pZm5mdOqVHC3aCd.kr.YY.Bm3oXHMlZ3i82oJBANoJQcYv.\n"


def _start(root, htpasswd=None) -> LocalRegistry:
    try:
        return LocalRegistry(root, htpasswd=htpasswd).start()
    except RegistryError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def oci_registry(tmp_path_factory):
    reg = _start(tmp_path_factory.mktemp("oci-registry"))
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def oci_auth_registry(tmp_path_factory):
    reg = _start(tmp_path_factory.mktemp("oci-registry-auth"), HTPASSWD)
    yield reg
    reg.stop()


@pytest.fixture(autouse=True)
def _clean_oci_env(monkeypatch, tmp_path):
    """No credentials or settings leak in from the machine running the tests."""
    for name in ("KAITO_OCI_USERNAME", "KAITO_OCI_PASSWORD", "KAITO_INSECURE_REGISTRIES", "KAITO_OCI_INSECURE",
                 "KAITO_OCI_MAX_BYTES", "KAITO_OCI_CONNECT_TIMEOUT", "KAITO_OCI_READ_TIMEOUT", "KAITO_OCI_RETRIES",
                 "DOCKER_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
