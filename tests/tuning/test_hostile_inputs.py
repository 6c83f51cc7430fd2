"""Hostile inputs a user or a cluster hands the tuning path, each pinned after it was found broken:
half-written checkpoints, data edited in place, unusable work dirs, YAML tricks in
training_config.yaml, BOMs and pretty-printed JSON, tool calls, adapter artifacts pushed with
oras, zstd layers, and data URLs that only resolve to private addresses (the Job's init container)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kaito_core.api.training.config import parse_training_config
from kaito_core.api.training.errors import DataError, FetchError, OutputError, TuningConfigError
from kaito_core.tuning import checkpoints, run
from kaito_core.tuning.data import find_data_files, load_examples, scan
from tests.tuning.helpers import chat_rows

MESSAGES = [{"role": "user", "content": "What is the capital of Peru?"},
            {"role": "assistant", "content": "Lima."}]
SAVE_EVERY_2 = {"training_config": {
    "TrainingArguments": {"max_steps": 4, "save_strategy": "steps", "save_steps": 2,
                          "per_device_train_batch_size": 2},
    "DatasetConfig": {"train_test_split": 1, "max_seq_length": 64}}}


# --- checkpoints a killed pod left half written ------------------------------------------------


@pytest.fixture(scope="module")
def interrupted_work(tiny_models, chat_jsonl, tmp_path_factory):
    """A work dir holding checkpoint-2 and checkpoint-4 of a run that is not marked completed
    (what a pod stopped before its last step leaves on the volume)."""
    work = tmp_path_factory.mktemp("work")
    run(model_dir=str(tiny_models["llama"]), data=[str(chat_jsonl)], config=SAVE_EVERY_2,
        output=str(work.parent / "first-adapter"), work_dir=str(work), progress="none")
    record = work / "checkpoints" / "kaito-run.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "completed": False}))
    return work


def _copy(work: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(work, tmp_path / "work"))


@pytest.mark.parametrize("damage, why", [
    (lambda c: (c / "trainer_state.json").write_text('{"global_st'), "trainer_state.json is unreadable"),
    (lambda c: os.truncate(c / "adapter_model.safetensors", (c / "adapter_model.safetensors").stat().st_size - 9),
     "adapter_model.safetensors is truncated"),
    (lambda c: os.truncate(c / "optimizer.pt", 100), "optimizer.pt is truncated or damaged"),
])
def test_a_damaged_checkpoint_is_named(interrupted_work, tmp_path, damage, why):
    work = _copy(interrupted_work, tmp_path)
    newest = work / "checkpoints" / "checkpoint-4"
    assert checkpoints.problem(newest) is None
    damage(newest)
    assert why in checkpoints.problem(newest)
    (work / "checkpoints" / "checkpoint-9").mkdir()  # a save that never got its first file
    found, broken = checkpoints.newest_whole(work / "checkpoints")
    assert found == work / "checkpoints" / "checkpoint-2"
    assert [p.name for p, _ in broken] == ["checkpoint-9", "checkpoint-4"]


def test_a_half_written_checkpoint_is_set_aside_and_the_run_resumes_from_a_whole_one(
        interrupted_work, tiny_models, chat_jsonl, tmp_path):
    """Before: Trainer.train(resume_from_checkpoint=) died with a JSON/safetensors/zip traceback
    on every retry of the Job. Now the newest whole checkpoint is resumed and the run finishes."""
    work = _copy(interrupted_work, tmp_path)
    os.truncate(work / "checkpoints" / "checkpoint-4" / "adapter_model.safetensors", 100)
    result = run(model_dir=str(tiny_models["llama"]), data=[str(chat_jsonl)], config=SAVE_EVERY_2,
                 output=str(tmp_path / "adapter"), work_dir=str(work), progress="none")
    assert result.summary["resumed_from"].endswith("checkpoint-2")
    assert result.summary["steps"] == 4
    assert any("checkpoint-4 is incomplete" in n for n in result.summary["notes"])

    asked = {**SAVE_EVERY_2["training_config"]["TrainingArguments"],
             "resume_from_checkpoint": str(work / "checkpoints" / "checkpoint-4")}
    (work / "checkpoints" / "checkpoint-4").mkdir(exist_ok=True)
    (work / "checkpoints" / "checkpoint-4" / "trainer_state.json").write_text("{")
    with pytest.raises(TuningConfigError, match="resume_from_checkpoint: cannot be resumed from: its "
                                                "trainer_state.json is unreadable"):
        run(model_dir=str(tiny_models["llama"]), data=[str(chat_jsonl)],
            config={"training_config": {**SAVE_EVERY_2["training_config"], "TrainingArguments": asked}},
            output=str(tmp_path / "adapter2"), work_dir=str(work), progress="none")
    assert not (tmp_path / "adapter2").exists()


def test_data_edited_in_place_is_other_data(tmp_path):
    """The resume fingerprint hashed name and size: a row fixed without changing the file's
    length resumed checkpoints trained on the old row. Now it hashes the bytes."""
    from kaito_core.api.training.config import resolve
    from kaito_core.tuning.train import fingerprint

    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({"messages": MESSAGES}) + "\n")
    cfg = resolve(None, recipe=None, method="lora")
    before = fingerprint(cfg, [data], "model")
    data.write_text(data.read_text().replace("Lima.", "Cuzco"))  # same length
    assert fingerprint(cfg, [data], "model") != before
    os.utime(data, (1, 1))  # a new download of the same bytes (another mtime) is the same data
    assert fingerprint(cfg, [data], "model") == fingerprint(cfg, [data], "model")


# --- work dir and output ---------------------------------------------------------------------


def test_an_unusable_work_dir_is_one_error_and_leaves_no_output_dir(tiny_models, chat_jsonl, tmp_path):
    not_a_dir = tmp_path / "work"
    not_a_dir.write_text("a file")
    with pytest.raises(OutputError, match=r"work dir .*work \(--work-dir / KAITO_TUNING_WORK_DIR\) cannot be "
                                          "used: it is not a directory"):
        run(model_dir=str(tiny_models["llama"]), data=[str(chat_jsonl)], output=str(tmp_path / "adapter"),
            work_dir=str(not_a_dir), progress="none")
    assert not (tmp_path / "adapter").exists()


def test_a_refused_push_leaves_no_output_dir(tiny_models, chat_jsonl, tmp_path):
    with pytest.raises(OutputError, match="not reachable"):
        run(model_dir=str(tiny_models["llama"]), data=[str(chat_jsonl)], output=str(tmp_path / "adapter"),
            output_image="127.0.0.1:9/adapters/x:1", progress="none")
    assert not (tmp_path / "adapter").exists()


def test_the_job_command_prints_one_line_for_an_internal_error(monkeypatch, capsys, tmp_path):
    """`python -m kaito_core.tuning` (the Job's command) let any exception that is not a
    KaitoError out as a traceback; `kaito tune` already printed one line."""
    from kaito_core.tuning import cli, recipe

    def broken(_req):
        raise RuntimeError("something kaito did not expect")

    monkeypatch.setattr(recipe, "run", broken)
    monkeypatch.delenv("KAITO_DEBUG", raising=False)
    code = cli.main(["--model", str(tmp_path), "--data", str(tmp_path), "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 3 and "Traceback" not in err
    assert "error: internal error in the tuning recipe: RuntimeError: something kaito did not expect" in err
    assert "KAITO_DEBUG=1" in err


# --- training_config.yaml ----------------------------------------------------------------------


@pytest.mark.parametrize("text, needle", [
    ("training_config:\n  TrainingArguments:\n    learning_rate: 1e-3\n    learning_rate: 2e-4\n",
     "line 4, column 5: found duplicate key 'learning_rate' (first at line 3)"),
    ("training_config:\n  LoraConfig: {r: 8}\n  LoraConfig: {r: 16}\n", "duplicate key 'LoraConfig'"),
    ("a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
     "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
     "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
     "training_config:\n  LoraConfig:\n    target_modules: *f\n", "billion laughs"),
    ("kind: ConfigMap\ndata: {training_config.yaml: 'training_config: {}'}\n---\n"
     "kind: ConfigMap\ndata: {training_config.yaml: 'training_config: {}'}\n",
     "2 YAML documents and 2 of them hold a training configuration"),
])
def test_yaml_tricks_in_the_training_config_are_refused(text, needle):
    with pytest.raises(TuningConfigError) as err:
        parse_training_config(text)
    assert needle in str(err.value)


def test_null_means_unset_and_a_workspace_file_gives_its_configmap():
    """`max_steps:` with no value reached TrainingArguments as None ("'>' not supported between
    NoneType and int"); a file with the Workspace and its ConfigMap was "not valid YAML"."""
    out = parse_training_config("training_config:\n  TrainingArguments:\n    max_steps:\n    save_steps: null\n"
                                "    learning_rate: '2e-4'\n    num_train_epochs: \"3\"\n")
    assert out == {"TrainingArguments": {"learning_rate": 2e-4, "num_train_epochs": 3.0}}
    both = ("apiVersion: kaito.sh/v1beta1\nkind: Workspace\nmetadata: {name: w}\n---\n"
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata:\n  training_config.yaml: |\n"
            "    training_config:\n      LoraConfig: {r: 4}\n---\n")
    assert parse_training_config(both) == {"LoraConfig": {"r": 4}}


# --- data files ---------------------------------------------------------------------------------


def _write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def test_files_written_by_windows_tools_and_pretty_printed_json(tmp_path):
    """A UTF-8 BOM made every jsonl/json file fail on line 1 ("Unexpected UTF-8 BOM"); a
    pretty-printed .json object was read as jsonl ("line 1: not valid JSON")."""
    row = json.dumps({"messages": MESSAGES})
    bom = b"\xef\xbb\xbf"
    files = [
        _write(tmp_path / "bom.jsonl", bom + f"{row}\r\n\r\n{row}\r\n".encode()),
        _write(tmp_path / "bom.json", bom + json.dumps([{"messages": MESSAGES}] * 2).encode()),
        _write(tmp_path / "pretty.json", json.dumps({"messages": MESSAGES}, indent=2)),
        _write(tmp_path / "pretty-records.json", json.dumps({"data": [{"messages": MESSAGES}] * 2}, indent=2)),
        _write(tmp_path / "download", bom + json.dumps({"messages": MESSAGES}, indent=2).encode()),
        _write(tmp_path / "bom.csv", bom + b"prompt,completion\r\n007,\"multi\r\nline\"\r\n"),
    ]
    counts = {}
    for f in files:
        examples, summary = load_examples(find_data_files([f]), {})
        counts[f.name] = summary.rows_used
        assert all(e.messages[-1]["content"] for e in examples)
    assert counts == {"bom.jsonl": 2, "bom.json": 2, "pretty.json": 1, "pretty-records.json": 2,
                      "download": 1, "bom.csv": 1}
    examples, _ = load_examples([files[-1]], {})
    assert examples[0].messages == [{"role": "user", "content": "007"},
                                    {"role": "assistant", "content": "multi\r\nline"}]


TOOL_ROW = {"messages": [
    {"role": "user", "content": [{"type": "text", "text": "Weather in "}, {"type": "text", "text": "Lima?"}]},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Lima\"}"}}]},
    {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    {"role": "assistant", "content": "It is sunny in Lima."}]}
TOOL_TEMPLATE = ("{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}{% for c in m.tool_calls or [] %}"
                 "[call {{ c.function.name }} {{ c.function.arguments }}]{% endfor %}<|end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


def test_tool_calls_reach_the_chat_template_and_are_learned(tiny_models, tmp_path):
    """The assistant's tool call was dropped (content None -> ''), so the model was trained to
    answer with an empty turn where it should call the tool."""
    from transformers import AutoTokenizer

    from kaito_core.tuning.encode import IGNORE, Encoder

    data = _write(tmp_path / "tools.jsonl", json.dumps(TOOL_ROW) + "\n")
    (example,), _ = load_examples([data], {})
    assert example.messages[1]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert example.messages[2]["tool_call_id"] == "c1"
    tok = AutoTokenizer.from_pretrained(tiny_models["llama"])
    with pytest.raises(DataError, match="the chat template does not render tool_calls .*'get_weather'"):
        Encoder(tok, 256).encode(example)  # the tiny model's template knows no tool calls
    tok.chat_template = TOOL_TEMPLATE
    row = Encoder(tok, 256).encode(example)
    learned = tok.decode([t for t in row["labels"] if t != IGNORE])
    assert "[call get_weather" in learned and "It is sunny in Lima." in learned
    assert "sunny<|end|>" not in learned.replace("It is sunny in Lima.", "")  # the tool's answer is not


def test_rows_without_anything_to_learn_are_named(tmp_path):
    rows = [{"messages": MESSAGES},
            {"messages": [{"role": "system", "content": "Only a system prompt."}]},
            {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": ""}]},
            {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": [{"type": "image_url"}]}]},
            {"messages": [{"role": "user", "content": "x", "tool_calls": [{"function": {"name": "f"}}]},
                          {"role": "assistant", "content": "y"}]}]
    data = _write(tmp_path / "bad.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    summary = scan([data], {"skip_malformed_rows": True})
    assert (summary.rows_used, summary.rows_skipped) == (1, 4)
    assert [s.split(": ", 1)[1] for s in summary.first_skipped] == [
        "no assistant message: nothing to learn from (add an assistant turn)"] * 2 + [
        "bad content: only text content parts can be trained on",
        "bad messages: message 0 has tool_calls; only an assistant message can, as a list of {type, function: "
        "{name, arguments}} objects"]


# --- OCI artifacts --------------------------------------------------------------------------------


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


# --- the Job's data-fetch init container ----------------------------------------------------------


def test_the_jobs_data_fetch_refuses_private_addresses_and_downloads_public_ones(http_server, tmp_path):
    """The init container ran urllib's urlretrieve: admission checks only the URL's text, so a
    public name resolving (or redirecting) to a private or metadata address was fetched in the
    cluster. It now runs kaito's guarded downloader, which `kaito tune --data URL` uses."""
    from kaito_core.api import parse_workspace
    from kaito_core.builtins.byo import PROVISIONER as BYO
    from kaito_core.plugins import get_registry
    from kaito_core.reconcile import Observed, plan
    from kaito_core.reconcile.inputs import resolve

    (http_server.root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chat_rows()))
    http_server.redirects["/public.jsonl"] = f"{http_server.url}/train.jsonl"
    ws = parse_workspace({
        "apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "fetch", "namespace": "default"},
        "resource": {"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {"matchLabels": {"a": "b"}}},
        "tuning": {"preset": {"name": "phi-3-mini-4k-instruct"}, "method": "lora",
                   "input": {"urls": ["https://data.example.com/public.jsonl"]},
                   "output": {"volumeSource": {"persistentVolumeClaim": {"claimName": "out"}}}}})
    inputs = resolve(ws, get_registry())
    first = plan(ws, inputs.preset, inputs.requirement, BYO)
    ready = Observed.nodes_ready(first.node_requests, inputs.requirement.gpus_per_node)
    pod = plan(ws, inputs.preset, inputs.requirement, BYO, ready).workload["spec"]["template"]["spec"]
    init = next(c for c in pod["initContainers"] if c["name"] == "data-fetch")
    assert init["command"][:3] == ["python", "-m", "kaito_core.tuning.fetch"]
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data")}
    env.pop("KAITO_ALLOW_PRIVATE_URLS", None)
    command = [sys.executable, *init["command"][1:]]
    # The rendered URL, pointed at the test server: the host 127.0.0.1 is a loopback address.
    url = f"{http_server.url}/public.jsonl"
    done = subprocess.run([*command, url], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "resolves to 127.0.0.1, a loopback address" in done.stderr
    assert not list((tmp_path / "data").glob("*"))
    done = subprocess.run([*command, url], env={**env, "KAITO_ALLOW_PRIVATE_URLS": "1"}, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "data" / "000-public.jsonl").read_text().count("\n") == len(chat_rows())


def test_csv_cells_with_newlines_stay_whole(tmp_path):
    """Quoted newlines as Python's csv module writes them (pyarrow's reader keeps them in the cell)."""
    path = tmp_path / "q.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([["prompt", "completion"], ["a\nb", "c\nd"]])
    examples, summary = load_examples([path], {})
    assert summary.rows_used == 1 and examples[0].messages[1]["content"] == "c\nd"


# --- full disks and replaced adapters -------------------------------------------------------------


class _FileSizeLimit:
    """RLIMIT_FSIZE: no file may grow past ``limit`` bytes (writes fail with EFBIG, as on a
    full disk, without root or a tmpfs); SIGXFSZ ignored so the write fails instead of the process."""

    def __init__(self, limit: int):
        self.limit = limit

    def __enter__(self):
        import resource
        import signal

        self.old = resource.getrlimit(resource.RLIMIT_FSIZE)
        self.old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.limit, self.old[1]))
        return self

    def __exit__(self, *exc):
        import resource
        import signal

        resource.setrlimit(resource.RLIMIT_FSIZE, self.old)
        signal.signal(signal.SIGXFSZ, self.old_handler)


def test_a_full_disk_while_downloading_is_one_line_without_retries(http_server, tmp_path):
    """Before: the write error was taken for a dropped connection, retried 4 times, and reported
    as 'connection broke after N bytes (OSError)'."""
    from kaito_core.tuning.fetch import download

    (http_server.root / "big.jsonl").write_bytes(b"x" * 300_000)
    with _FileSizeLimit(100_000), pytest.raises(FetchError) as err:
        download(f"{http_server.url}/big.jsonl", tmp_path / "data", allow_private=True, backoff=5.0)
    assert "cannot write the download to" in str(err.value) and "File too large" in str(err.value)
    assert "connection broke" not in str(err.value)
    assert list((tmp_path / "data").iterdir()) == []  # no .part file left


def test_a_checkpoint_torch_cannot_finish_is_the_disk_full_line(tiny_models, chat_jsonl, tmp_path):
    """torch.save reports a full disk as 'RuntimeError: [enforce fail at inline_container.cc]
    unexpected pos', which reached the user as an internal error."""
    config = {"training_config": {**SAVE_EVERY_2["training_config"],
                                  "TrainingArguments": {"max_steps": 2, "save_strategy": "steps", "save_steps": 1}}}
    # The adapter weights of a checkpoint (35 kB) fit; the optimizer state (twice that) does not.
    with _FileSizeLimit(50_000), pytest.raises(OutputError) as err:
        run(model_dir=str(tiny_models["llama"]), data=[str(chat_jsonl)], config=config,
            output=str(tmp_path / "adapter"), work_dir=str(tmp_path / "work"), progress="none")
    assert "writing a checkpoint under" in str(err.value) and "RuntimeError" in str(err.value)
    assert "resumes from the last whole checkpoint" in str(err.value)
    assert not (tmp_path / "adapter").exists()


def test_overwrite_replaces_the_whole_adapter_and_keeps_other_files(tiny_models, chat_jsonl, tmp_path):
    """--overwrite left the old run's tokenizer and chat template beside the new weights (a
    runtime would load them with the new adapter); the weights were written 0600."""
    out = tmp_path / "adapter"
    base = {"TrainingArguments": {"max_steps": 1}, "DatasetConfig": {"max_seq_length": 64}}
    template = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}"
    run(model_dir=str(tiny_models["llama"]), data=[str(chat_jsonl)], output=str(out), progress="none",
        config={"training_config": {**base, "ModelConfig": {"chat_template": template}}})
    assert (out / "tokenizer_config.json").is_file()
    (out / "my-notes.txt").write_text("mine")
    (out / ".kaito-work").mkdir()
    result = run(model_dir=str(tiny_models["llama"]), data=[str(chat_jsonl)], output=str(out), progress="none",
                 config={"training_config": base}, overwrite=True)
    assert result.summary["tokenizer_changed"] == []
    assert sorted(p.name for p in out.iterdir()) == [
        ".kaito-work", "adapter_config.json", "adapter_model.safetensors", "fine_tuning_completed.txt",
        "kaito-tuning-summary.json", "my-notes.txt"]
    assert {oct(p.stat().st_mode & 0o777) for p in out.iterdir() if p.is_file() and p.name != "my-notes.txt"} \
        == {"0o644"}


# --- kaito tune -f: the Workspace's ConfigMap and push Secret ------------------------------------

WORKSPACE = """apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata: {name: tune-a, namespace: team-a}
resource:
  instanceType: Standard_NC24ads_A100_v4
  labelSelector: {matchLabels: {app: t}}
tuning:
  preset: {name: phi-3-mini-4k-instruct}
  method: lora
  config: params
  input: {urls: ["https://example.com/train.jsonl"]}
  output: {image: "registry.example.com/adapters/a:1", imagePushSecret: push}
"""


def _configmap(namespace: str | None, steps: int) -> str:
    ns = f"  namespace: {namespace}\n" if namespace else ""
    return (f"---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: params\n{ns}data:\n"
            f"  training_config.yaml: 'training_config: {{TrainingArguments: {{max_steps: {steps}}}}}'\n")


def test_the_workspaces_configmap_is_the_one_in_its_namespace(tmp_path):
    """ConfigMaps were matched by name only: another team's `params` trained this Workspace."""
    from kaito_core.api.training.errors import TuningError
    from kaito_core.tuning.workspace import request_fields

    files = tmp_path / "all.yaml"
    files.write_text(WORKSPACE + _configmap("team-b", 1) + _configmap("team-a", 2))
    fields = request_fields([str(files)])
    assert fields["config"]["metadata"]["namespace"] == "team-a"
    files.write_text(WORKSPACE + _configmap(None, 3))  # applied with kubectl -n team-a
    assert "max_steps: 3" in request_fields([str(files)])["config"]["data"]["training_config.yaml"]
    files.write_text(WORKSPACE + _configmap("team-b", 1))
    with pytest.raises(TuningError, match="ConfigMap 'params', which is not in namespace team-a .*only in "
                                          "namespace team-b"):
        request_fields([str(files)])


@pytest.mark.parametrize("secret, needle", [
    ("data:\n  .dockerconfigjson: '!!!not-base64'", "data..dockerconfigjson is not a base64-encoded docker config"),
    ("stringData:\n  .dockerconfigjson: '{not json'", "stringData..dockerconfigjson is not a base64-encoded"),
    ("stringData:\n  .dockerconfigjson: '[1, 2]'", "must hold a JSON object with 'auths'"),
])
def test_a_broken_push_secret_is_named(tmp_path, secret, needle):
    """A Secret whose .dockerconfigjson was not base64 or not JSON ended `kaito tune` as an
    internal error (binascii.Error, JSONDecodeError)."""
    from kaito_core.api.training.errors import TuningError
    from kaito_core.tuning.workspace import request_fields

    files = tmp_path / "all.yaml"
    files.write_text(WORKSPACE + _configmap("team-a", 1) + "---\napiVersion: v1\nkind: Secret\nmetadata:\n"
                     "  name: push\n  namespace: team-a\ntype: kubernetes.io/dockerconfigjson\n" + secret + "\n")
    with pytest.raises(TuningError) as err:
        request_fields([str(files)])
    assert needle in str(err.value) and "Secret 'push'" in str(err.value)


def test_a_directory_of_mixed_files_reads_only_the_rows(tmp_path):
    """A Hugging Face dataset repo (README, .gitattributes, dataset_infos.json, data/*.parquet)
    failed on its metadata JSON; a DatasetDict saved one level down trained on every split."""
    import datasets

    root = tmp_path / "repo"
    (root / "data").mkdir(parents=True)
    ds = datasets.Dataset.from_list([{"messages": MESSAGES}] * 3)
    ds.to_parquet(str(root / "data" / "train-00000-of-00001.parquet"))
    (root / "README.md").write_text("---\nlicense: mit\n---\n# card\n")
    (root / ".gitattributes").write_text("*.parquet filter=lfs\n")
    (root / "dataset_infos.json").write_text(json.dumps({"default": {"features": {}}}))
    (root / "extra.csv").write_text("prompt,completion\na,b\n")
    datasets.DatasetDict({"train": ds.select(range(2)), "test": ds.select(range(1))}).save_to_disk(
        str(root / "saved"))
    files = find_data_files([root])
    names = [f.relative_to(root).as_posix() for f in files]
    assert names[0] == "data/train-00000-of-00001.parquet" and names[1] == "extra.csv"
    assert all(n.startswith("saved/train/") and n.endswith(".arrow") for n in names[2:]) and len(names) > 2
    assert scan(files, {}).rows_used == 3 + 1 + 2


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


@pytest.mark.parametrize("flag, value, needle", [
    ("--max-steps", "-3", "argument --max-steps: must be >= 1 (got -3)"),   # trained by epochs before
    ("--max-steps", "0", "argument --max-steps: must be >= 1 (got 0)"),     # was ignored before
    ("--metrics-port", "99999", "argument --metrics-port: must be between 0 and 65535 (got 99999)"),
    ("--max-download-bytes", "-1", "argument --max-download-bytes: must be >= 1 (got -1)"),
    ("--nproc-per-node", "two", "argument --nproc-per-node: must be an integer (got 'two')"),
])
def test_numeric_flags_out_of_range_are_refused_by_name(tmp_path, capsys, flag, value, needle):
    from kaito_core.tuning import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(["--model", str(tmp_path), "--data", str(tmp_path), "--output", str(tmp_path / "o"), flag, value])
    assert exit_.value.code == 2 and needle in capsys.readouterr().err


def test_a_metrics_port_that_cannot_be_served_is_one_line(tiny_models, chat_jsonl, tmp_path, monkeypatch):
    """KAITO_TUNING_METRICS_PORT=99999 (or a port in use) ended in OverflowError/OSError."""
    import socket

    from kaito_core.api.training.errors import TuningError

    monkeypatch.setenv("KAITO_TUNING_METRICS_PORT", "99999")
    kwargs = dict(model_dir=str(tiny_models["llama"]), data=[str(chat_jsonl)], progress="none",
                  config={"training_config": {"TrainingArguments": {"max_steps": 1}}})
    with pytest.raises(TuningError, match="metrics port 99999 .*cannot serve there"):
        run(**kwargs, output=str(tmp_path / "a"))
    monkeypatch.delenv("KAITO_TUNING_METRICS_PORT")
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        with pytest.raises(TuningError, match=f"metrics port {busy.getsockname()[1]} .*Address already in use"):
            run(**kwargs, output=str(tmp_path / "b"), metrics_port=busy.getsockname()[1])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize("section, key_values, needle", [
    ("TrainingArguments", {"eval_strategy": "steps", "eval_steps": 1},
     "no rows are held out for evaluation (DatasetConfig.train_test_split is 1"),
    ("LoraConfig", {"layers_to_transform": [99]}, "training_config.LoraConfig: Target modules"),
])
def test_keys_the_trainer_or_peft_refuse_are_config_errors(tiny_models, chat_jsonl, tmp_path, section, key_values,
                                                          needle):
    """Trainer(...) and get_peft_model raised ValueError (NoMatchingPeftModuleError) straight to
    the user as an internal error."""
    config = {"training_config": {"TrainingArguments": {"max_steps": 1}, "DatasetConfig": {"train_test_split": 1}}}
    config["training_config"].setdefault(section, {}).update(key_values)
    with pytest.raises(TuningConfigError) as err:
        run(model_dir=str(tiny_models["llama"]), data=[str(chat_jsonl)], config=config,
            output=str(tmp_path / "adapter"), progress="none")
    assert needle in str(err.value)
    assert not (tmp_path / "adapter").exists()


def test_a_chat_template_that_fails_or_refuses_a_conversation(tiny_models):
    """jinja2's TemplateSyntaxError and the TemplateError of raise_exception('...') (Llama 2 and
    Mistral templates refuse a system turn) reached the user as internal errors."""
    from transformers import AutoTokenizer

    from kaito_core.tuning.data import Example
    from kaito_core.tuning.encode import Encoder

    tok = AutoTokenizer.from_pretrained(tiny_models["llama"])
    with_system = Example("faq.jsonl line 7", messages=[{"role": "system", "content": "Be brief."}, *MESSAGES])
    tok.chat_template = "{% for m in messages %}{{ m.content }"
    with pytest.raises(DataError, match=r"the chat template is not valid Jinja \(line 1: unexpected '}'\)"):
        Encoder(tok, 64, skip_malformed=True).encode(with_system)
    tok.chat_template = ("{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('System role not "
                         "supported') }}{% endif %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}")
    with pytest.raises(DataError, match=r"faq.jsonl line 7: the chat template refused this conversation \(roles "
                                        r"system,user,assistant\): System role not supported. Fix the template"):
        Encoder(tok, 64).encode(with_system)
    encoder = Encoder(tok, 64, skip_malformed=True)
    assert encoder.encode(with_system) is None
    assert encoder.encode(Example("faq.jsonl line 8", messages=MESSAGES)) is not None
    assert encoder.first_skipped == ["faq.jsonl line 7: the chat template refused this conversation (roles "
                                     "system,user,assistant): System role not supported"]


def test_an_output_image_pinned_to_a_digest_is_refused_before_training(registry, tiny_models, chat_jsonl, tmp_path):
    """The check before training let `repo@sha256:...` through; the push refused it after the run."""
    ref = f"{registry.host}/adapters/pinned:1@sha256:" + "0" * 64
    with pytest.raises(OutputError, match="pushed to a tag, not a digest .*drop the @sha256"):
        run(model_dir=str(tiny_models["llama"]), data=[str(chat_jsonl)], output_image=ref, progress="none",
            on_step=lambda info: pytest.fail("trained before refusing the reference"))


def test_ctrl_c_while_the_data_is_read_leaves_no_output_dir(tiny_models, tmp_path):
    """The data is a pipe (`--data <(zcat train.jsonl.gz)`): it was opened several times (column
    probe, checking pass, tokenizing), so rows came out cut. It is now read once into the work
    dir. Once the writer's 2 MB are taken the run is inside that read (no timing guess), and
    Ctrl-C (SIGINT) must stop it there cleanly, even with the writer still silent."""
    import signal

    fifo = tmp_path / "train.jsonl"
    os.mkfifo(fifo)
    row = (json.dumps({"messages": MESSAGES}) + "\n").encode()
    proc = subprocess.Popen([sys.executable, "-m", "kaito_core.tuning", "--model", str(tiny_models["llama"]),
                             "--data", str(fifo), "--output", str(tmp_path / "adapter"), "--progress", "none"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        with open(fifo, "wb") as writer:
            writer.write(row * (2_000_000 // len(row)))
            writer.flush()  # returns once the reader took all but the pipe's buffer
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=120)
    finally:
        proc.kill() if proc.poll() is None else None
    assert proc.returncode == 75, err
    assert "interrupted: interrupted by SIGINT outside a training step: nothing was published" in err
    assert "Traceback" not in err
    assert not (tmp_path / "adapter").exists()


def test_a_pipe_is_read_once_and_trained_on(tiny_models, chat_jsonl, tmp_path):
    fifo = tmp_path / "stream"
    os.mkfifo(fifo)
    proc = subprocess.Popen([sys.executable, "-m", "kaito_core.tuning", "--model", str(tiny_models["llama"]),
                             "--data", str(fifo), "--output", str(tmp_path / "adapter"), "--progress", "none",
                             "--max-steps", "1", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        with open(fifo, "wb") as writer:
            writer.write(chat_jsonl.read_bytes())
        out, err = proc.communicate(timeout=300)
    finally:
        proc.kill() if proc.poll() is None else None
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert summary["data"]["rows_used"] == len(chat_rows()) and summary["data"]["files"][0].endswith("000-stream")


def test_downloads_never_touch_the_users_files_in_the_work_dir(http_server, tiny_models, chat_jsonl, tmp_path):
    """Downloads went to <work dir>/data, removed after the run: with --work-dir . and the
    user's own data/ folder there, their training file was deleted."""
    (http_server.root / "more.jsonl").write_bytes(chat_jsonl.read_bytes())
    project = tmp_path / "project"
    mine = project / "data" / "mine.jsonl"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(chat_jsonl.read_bytes())
    result = run(model_dir=str(tiny_models["llama"]), data=[str(mine), f"{http_server.url}/more.jsonl"],
                 work_dir=str(project), output=str(project / "adapter"), allow_private_urls=True,
                 config={"training_config": {"TrainingArguments": {"max_steps": 1}}}, progress="none")
    assert result.summary["data"]["rows_used"] == 2 * len(chat_rows())
    assert mine.read_bytes() == chat_jsonl.read_bytes()
    assert sorted(p.name for p in project.iterdir()) == ["adapter", "checkpoints", "data"]

def test_a_one_line_chat_template_with_escapes_keeps_its_unicode():
    """`chat_template: "<｜User｜>{{ m }}\\n"` (DeepSeek's tokens, "\\n" typed as two characters)
    came out as mojibake ("<ï½\\x9cUser...") and its special tokens never matched."""
    from kaito_core.tuning.encode import resolve_chat_template

    template, origin = resolve_chat_template("<｜User｜>{{ m.content }}\\n— café\\\\", None, None)
    assert template == "<｜User｜>{{ m.content }}\n— café\\" and origin == "ModelConfig.chat_template"


def test_a_push_that_fails_after_the_directory_was_written_says_where_the_adapter_is(
        tiny_models, chat_jsonl, tmp_path, monkeypatch):
    """A registry that answers /v2/ but fails every upload (HTTP 500): the error named the push
    only, though a complete adapter sat in --output (and a retry needs --overwrite)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Failing(BaseHTTPRequestHandler):
        def _answer(self, code: int, body: bytes = b"") -> None:
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):  # noqa: N802
            self._answer(200, b"{}") if self.path == "/v2/" else self._answer(500)

        def do_HEAD(self):  # noqa: N802
            self._answer(404)

        def do_POST(self):  # noqa: N802
            self._answer(500, b"storage backend down")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("KAITO_OCI_RETRIES", "0")
    try:
        with pytest.raises(OutputError) as err:
            run(model_dir=str(tiny_models["llama"]), data=[str(chat_jsonl)], output=str(tmp_path / "adapter"),
                output_image=f"127.0.0.1:{server.server_port}/adapters/a:1", progress="none",
                config={"training_config": {"TrainingArguments": {"max_steps": 1}}})
    finally:
        server.shutdown()
        server.server_close()
    assert "HTTP 500" in str(err.value) and "storage backend down" in str(err.value)
    assert f"The adapter itself is complete in {tmp_path / 'adapter'}" in str(err.value)
    assert (tmp_path / "adapter" / "fine_tuning_completed.txt").is_file()
