"""images/models/pack.py against a real registry: a preset's model goes in as an OCI artifact
(one layer per file) and comes back byte for byte, as `oras pull REF -o DIR` would restore it."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys

import oras.client
import pytest

from kaito_core.plugins import get_registry
from tests.images.conftest import IMAGES, ROOT

PACK = IMAGES / "models" / "pack.py"
PRESET = "phi-3-mini-4k-instruct"  # Phi3ForCausalLM, weights_source oci


def _module():
    spec = importlib.util.spec_from_file_location("kaito_pack", PACK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_phi3(tmp_path_factory):
    from kaito_core.testing.tiny_models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "phi3", "phi3")


def run_pack(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PACK), *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_push_then_pull_restores_the_model(registry, tiny_phi3, tmp_path):
    proc = run_pack("--preset", PRESET, "--from-dir", str(tiny_phi3), "--registry", f"{registry}/kaito")
    assert proc.returncode == 0, proc.stderr
    preset = get_registry().presets[PRESET]
    ref = f"{registry}/kaito/models/{PRESET}:{preset.tag}"
    assert proc.stdout.startswith(f"pushed {ref} sha256:")

    client = oras.client.OrasClient(hostname=registry, insecure=True)
    manifest = client.get_manifest(ref)
    module = _module()
    assert manifest["config"]["mediaType"] == module.ARTIFACT_TYPE
    assert manifest["annotations"]["kaito.sh/preset"] == PRESET
    assert manifest["annotations"]["org.opencontainers.image.revision"] == preset.revision
    titles = sorted(layer["annotations"]["org.opencontainers.image.title"] for layer in manifest["layers"])
    expected = sorted(p.name for p in tiny_phi3.iterdir() if p.is_file() and not p.name.startswith("."))
    assert titles == expected and "model.safetensors" in titles
    assert {layer["mediaType"] for layer in manifest["layers"]} == {module.LAYER_MEDIA_TYPE}

    out = tmp_path / "weights"
    client.pull(target=ref, outdir=str(out))
    for name in expected:
        assert (out / name).read_bytes() == (tiny_phi3 / name).read_bytes(), name
    config = json.loads(client.get_blob(ref, manifest["config"]["digest"]).content)
    assert config == {"preset": PRESET, "hfRepo": preset.hf_repo, "revision": preset.revision,
                      "architecture": "Phi3ForCausalLM", "files": expected}


def test_refuses_the_wrong_model(tmp_path, tiny_phi3):
    other = tmp_path / "falcon-looking"
    shutil.copytree(tiny_phi3, other)
    config = json.loads((other / "config.json").read_text())
    config["architectures"] = ["FalconForCausalLM"]
    (other / "config.json").write_text(json.dumps(config))
    proc = run_pack("--preset", PRESET, "--from-dir", str(other), "--registry", "127.0.0.1:1", "--dry-run")
    assert proc.returncode == 1
    assert "FalconForCausalLM" in proc.stderr and "Phi3ForCausalLM" in proc.stderr and "wrong directory" in proc.stderr


def test_refuses_presets_without_oci_weights_and_unknown_names():
    runtime_download = next(n for n, p in get_registry().presets.items() if p.weights_source != "oci")
    proc = run_pack("--preset", runtime_download, "--dry-run")
    assert proc.returncode == 1 and "nothing to pack" in proc.stderr
    proc = run_pack("--preset", "phi-9", "--dry-run")
    assert proc.returncode == 1 and "'phi-9' is not an installed preset" in proc.stderr


def test_dry_run_checks_a_directory_without_pushing(tiny_phi3):
    proc = run_pack("--preset", PRESET, "--from-dir", str(tiny_phi3), "--registry", "127.0.0.1:1", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"would push 127.0.0.1:1/models/{PRESET}:") and "model.safetensors" in proc.stdout
