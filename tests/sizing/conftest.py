from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Real random-weight Llama / Phi-3 / Falcon directories (safetensors), built once."""
    from kaito_core.testing.tiny_models import build_tiny_model

    root = tmp_path_factory.mktemp("tiny")
    return {
        "llama": build_tiny_model(root / "llama", "llama", kv_heads=2, dtype="bfloat16"),
        "phi3": build_tiny_model(root / "phi3", "phi3"),
        "falcon": build_tiny_model(root / "falcon", "falcon", kv_heads=1),
    }
