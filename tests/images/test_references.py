"""Every image a preset, a runtime or the chart references is built here (a bake target or a
weights artifact packed by images/models/pack.py), at the tag they reference."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from kaito_core import images
from kaito_core.plugins import get_registry
from tests.chart.conftest import CHART, find_helm
from tests.images.conftest import IMAGES, ROOT, bake_images

PACK = IMAGES / "models" / "pack.py"


def packed_artifacts() -> list[dict]:
    proc = subprocess.run([sys.executable, str(PACK), "--list"], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def chart_images() -> set[str]:
    proc = subprocess.run([find_helm(), "template", "kaito", str(CHART), "--set", "plugins.required={phi3}"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    found = set()
    for obj in yaml.safe_load_all(proc.stdout):
        if obj and obj["kind"] == "Deployment":
            spec = obj["spec"]["template"]["spec"]
            found |= {c["image"] for c in spec["containers"] + spec.get("initContainers", [])}
    return found


def referenced() -> dict[str, str]:
    """image -> who references it."""
    reg = get_registry()
    refs: dict[str, str] = {}
    for name, preset in reg.presets.items():
        if preset.image:
            refs.setdefault(preset.image, f"preset {name}")
        if preset.weights_source == "oci":
            refs[images.weights_image(name, preset.tag)] = f"preset {name} (weights)"
    for name, runtime in reg.runtimes.items():
        if runtime.image:
            refs.setdefault(runtime.image, f"runtime {name}")
    for image in chart_images():
        refs.setdefault(image, "charts/kaito")
    return refs


def test_every_referenced_image_is_built_here():
    built = {tag for target in bake_images().values() for tag in target["tags"]}
    built |= {a["reference"] for a in packed_artifacts()}
    refs = referenced()
    missing = {image: who for image, who in refs.items() if image not in built}
    assert not missing, f"referenced but built by no target in images/: {missing}"
    # The three images and at least one weights artifact are among the references.
    assert {images.operator_image(), images.runtime_image("transformers"), images.runtime_image("vllm")} <= set(refs)
    assert any("/models/" in image for image in refs)


def test_bake_targets_and_versions_agree():
    targets = bake_images()
    assert set(targets) == {"operator", "runtime", "runtime-vllm"}
    for name, target in targets.items():
        assert target["dockerfile"] == f"images/{name}/Dockerfile"
        assert (IMAGES / target["context"] / target["dockerfile"]).resolve().is_file()
    bake = json.loads((IMAGES / "docker-bake.json").read_text())
    assert bake["variable"]["VERSION"]["default"] == images.VERSION
    assert bake["variable"]["REGISTRY"]["default"] == images.DEFAULT_REGISTRY
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == images.VERSION
    assert yaml.safe_load((CHART / "values.yaml").read_text())["image"]["registry"] == images.DEFAULT_REGISTRY


def test_pack_lists_exactly_the_oci_weight_presets():
    reg = get_registry()
    listed = {a["preset"]: a for a in packed_artifacts()}
    oci = {name for name, p in reg.presets.items() if p.weights_source == "oci"}
    assert set(listed) == oci and oci
    for name, artifact in listed.items():
        preset = reg.presets[name]
        assert artifact["reference"] == images.weights_image(name, preset.tag)
        assert (artifact["hf_repo"], artifact["revision"]) == (preset.hf_repo, preset.revision)


def test_detects_an_image_nothing_builds():
    built = {tag for target in bake_images().values() for tag in target["tags"]}
    assert f"{images.DEFAULT_REGISTRY}/runtime-sglang:{images.VERSION}" not in built
    assert images.runtime_image("vllm", tag="9.9.9") not in built
