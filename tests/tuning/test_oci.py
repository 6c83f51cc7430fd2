"""Adapters to a real OCI registry (Debian's docker-registry): push, pull back by reference, serve
through the runtime; credentials from a docker-config secret; unauthorized pushes refused."""

from __future__ import annotations

import json

import pytest

from kaito_core.tuning import OutputError, run
from kaito_core.tuning.oci import pull_adapter
from tests.tuning.helpers import ThreadServer, greedy, logits_for

PROMPT = "<|system|>\nAnswer briefly.<|end|>\n<|user|>\nWhat is the capital of Peru?<|end|>\n<|assistant|>\n"


@pytest.fixture(scope="module")
def pushed(registry, tiny_models, chat_jsonl, tmp_path_factory):
    """A LoRA adapter trained on the tiny Llama and pushed to the open registry (image output only)."""
    from tests.tuning.helpers import FAST_CONFIG

    ref = f"{registry.host}/adapters/capitals:0.0.1"
    result = run(model_dir=str(tiny_models["llama"]), method="lora", data=[str(chat_jsonl)], config=FAST_CONFIG,
                 output_image=ref, progress="none", work_dir=str(tmp_path_factory.mktemp("work")))
    return ref, result


def test_push_then_pull_back_by_reference(pushed, registry, tiny_models, tmp_path):
    """The adapter is pushed in upstream KAITO's image layout: one tar+gzip layer with data/...,
    an image config with rootfs.diff_ids and the run's facts as labels, the run's annotations."""
    import requests

    ref, result = pushed
    assert result.digest.startswith("sha256:") and result.output_dir is None
    base = f"http://{registry.host}/v2/adapters/capitals"
    manifest = requests.get(f"{base}/manifests/0.0.1",
                            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}, timeout=10).json()
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert [layer["mediaType"] for layer in manifest["layers"]] == ["application/vnd.oci.image.layer.v1.tar+gzip"]
    config = requests.get(f"{base}/blobs/{manifest['config']['digest']}", timeout=10).json()
    assert len(config["rootfs"]["diff_ids"]) == 1 and "architecture" not in config and "os" not in config
    assert config["config"]["Labels"]["sh.kaito.method"] == "lora"
    ann = manifest["annotations"]
    assert ann["sh.kaito.tuning.method"] == "lora" and ann["sh.kaito.tuning.steps"] == "20"
    assert "org.opencontainers.image.created" in ann

    pulled = pull_adapter(ref, tmp_path / "pulled")
    summary = json.loads((pulled / "kaito-tuning-summary.json").read_text())
    assert summary["output"]["image"] == ref and summary["steps"] == 20
    base = logits_for(tiny_models["llama"], None)
    assert (logits_for(tiny_models["llama"], pulled) - base).abs().max().item() > 1e-3


def test_the_runtime_serves_the_pushed_adapter_by_reference(pushed, tiny_models):
    from kaito_core.runtime.options import AdapterSpec
    from kaito_core.runtime.server import create_app

    ref, _ = pushed
    app = create_app(model=str(tiny_models["llama"]), served_model_name="tiny-llama",
                     adapters=[AdapterSpec("capitals", ref)])
    srv = ThreadServer(app).start()
    try:
        base = greedy(srv.url, "tiny-llama", PROMPT)
        tuned = greedy(srv.url, "capitals", PROMPT)
    finally:
        srv.stop()
    assert tuned != base


def test_registry_with_auth_needs_the_push_secret(auth_registry, tiny_models, chat_jsonl, fast_config, tmp_path):
    ref = f"{auth_registry.host}/adapters/private:1"
    kwargs = dict(model_dir=str(tiny_models["llama"]), data=[str(chat_jsonl)], config=fast_config,
                  output_image=ref, progress="none")
    with pytest.raises(OutputError) as err:
        run(**kwargs)  # refused before any training
    assert "requires credentials (HTTP 401 Unauthorized)" in str(err.value) and auth_registry.host in str(err.value)
    wrong = auth_registry.docker_config(tmp_path / "wrong.json", password="nope")
    with pytest.raises(OutputError, match="refused the credentials of user 'kaito'"):
        run(**kwargs, push_secret=str(wrong))
    fast_config["training_config"]["TrainingArguments"]["max_steps"] = 2
    good = auth_registry.docker_config(tmp_path / "config.json")
    result = run(**{**kwargs, "config": fast_config}, push_secret=str(good), output=str(tmp_path / "also-here"))
    assert result.digest.startswith("sha256:") and (tmp_path / "also-here" / "adapter_config.json").is_file()
    pulled = pull_adapter(ref, tmp_path / "pulled", docker_config=str(good))
    assert (pulled / "adapter_model.safetensors").read_bytes() == \
        (tmp_path / "also-here" / "adapter_model.safetensors").read_bytes()


def test_training_data_from_an_oci_artifact(registry, tiny_models, chat_jsonl, fast_config, tmp_path):
    import shutil

    import oras.client

    staged = tmp_path / "stage"
    staged.mkdir()
    shutil.copy(chat_jsonl, staged / "faq.jsonl")
    ref = f"{registry.host}/data/faq:1"
    oras.client.OrasClient(hostname=registry.host, insecure=True).push(
        target=ref, files=[str(staged / "faq.jsonl")], disable_path_validation=True)
    fast_config["training_config"]["TrainingArguments"]["max_steps"] = 2
    result = run(model_dir=str(tiny_models["llama"]), input_image=ref, config=fast_config,
                 output=str(tmp_path / "out"), progress="none")
    assert result.summary["data"]["rows_used"] == 16
    assert result.summary["data"]["files"][0].endswith("faq.jsonl")
    with pytest.raises(Exception, match="pulling .*data/missing:1 failed"):
        run(model_dir=str(tiny_models["llama"]), input_image=f"{registry.host}/data/missing:1",
            output=str(tmp_path / "out2"), progress="none")


def test_our_pushed_adapter_unpacks_with_plain_tar(pushed, registry, tmp_path):
    """Upstream's puller (skopeo copy + tar x of each layer + mv rootfs/data) reads what we push."""
    import subprocess

    import requests

    ref, _ = pushed
    base = f"http://{registry.host}/v2/adapters/capitals"
    manifest = requests.get(f"{base}/manifests/0.0.1", timeout=10,
                            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}).json()
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    for layer in manifest["layers"]:
        (tmp_path / "layer").write_bytes(requests.get(f"{base}/blobs/{layer['digest']}", timeout=10).content)
        subprocess.run(["tar", "xzf", str(tmp_path / "layer"), "-C", str(rootfs)], check=True)
    names = {p.name for p in (rootfs / "data").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= names


def test_an_upstream_format_adapter_image_is_pulled_and_used(pushed, registry, tiny_models, tmp_path):
    from tests.oci.images import push_upstream_adapter

    ref, _ = pushed
    ours = pull_adapter(ref, tmp_path / "ours")
    up_ref = f"{registry.host}/adapters/upstream-capitals:0.0.1"
    push_upstream_adapter(registry.host, "adapters/upstream-capitals", "0.0.1",
                          (ours / "adapter_config.json").read_bytes(),
                          (ours / "adapter_model.safetensors").read_bytes())
    pulled = pull_adapter(up_ref, tmp_path / "upstream")
    base = logits_for(tiny_models["llama"], None)
    tuned = logits_for(tiny_models["llama"], pulled)
    assert (tuned - base).abs().max().item() > 1e-3
    assert (tuned - logits_for(tiny_models["llama"], ours)).abs().max().item() == 0


def test_training_data_from_a_docker_built_data_image(registry, tiny_models, chat_jsonl, fast_config, tmp_path):
    """FROM busybox + COPY faq.jsonl /data/: docker v2 layers, the data under /data (upstream's input image)."""
    from tests.oci.images import M, push_image, tar

    base = tar([M("bin", kind="dir"), M("bin/sh", kind="symlink", link="/bin/busybox"), M("etc/group", b"root:x:0:\n")])
    data = tar([M("data", kind="dir"), M("data/faq.jsonl", chat_jsonl.read_bytes())])
    push_image(registry.host, "data/faq-docker", "1", [base, data], docker=True)
    fast_config["training_config"]["TrainingArguments"]["max_steps"] = 2
    result = run(model_dir=str(tiny_models["llama"]), input_image=f"{registry.host}/data/faq-docker:1",
                 config=fast_config, output=str(tmp_path / "out"), progress="none")
    assert result.summary["data"]["rows_used"] == 16
    assert result.summary["data"]["files"][0].endswith("faq.jsonl")


def test_push_access_is_checked_before_training(auth_registry, tmp_path):
    from kaito_core.tuning.oci import check_push_access

    ref = f"{auth_registry.host}/adapters/check:1"
    with pytest.raises(OutputError, match="requires credentials .*tuning.output.imagePushSecret"):
        check_push_access(ref)
    check_push_access(ref, docker_config=str(auth_registry.docker_config(tmp_path / "config.json")))
    with pytest.raises(OutputError, match="not reachable over http"):
        check_push_access("127.0.0.1:9/adapters/x:1")
