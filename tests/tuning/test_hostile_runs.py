"""Hostile conditions around a run, each pinned after it was found broken: half-written
checkpoints, data edited in place, unusable work dirs, full disks, --overwrite, registries that
refuse or fail a push, and the tuning Job's data-fetch init container against private addresses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kaito_core.api.training.errors import FetchError, OutputError, TuningConfigError
from kaito_core.tuning import checkpoints, run
from tests.tuning.helpers import chat_rows

MESSAGES = [{"role": "user", "content": "What is the capital of Peru?"},
            {"role": "assistant", "content": "Lima."}]
SAVE_EVERY_2 = {"training_config": {
    "TrainingArguments": {"max_steps": 4, "save_strategy": "steps", "save_steps": 2,
                          "per_device_train_batch_size": 2},
    "DatasetConfig": {"train_test_split": 1, "max_seq_length": 64}}}


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
             "resume_from_checkpoint": "checkpoint-4"}  # the work dir's, by name
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


def test_two_runs_never_share_a_work_dir(tiny_models, chat_jsonl, tmp_path):
    """Two runs with one --work-dir wrote each other's checkpoints (and one could resume the
    other's); the second is now refused while the first holds the work dir's lock."""
    import fcntl

    from kaito_core.tuning.output import lock_work_dir

    work = tmp_path / "work"
    work.mkdir()
    held = lock_work_dir(work)
    assert held is not None and f"pid {os.getpid()}" in (work / ".kaito-lock").read_text()
    try:
        with pytest.raises(OutputError, match=rf"work dir {work} is in use by pid {os.getpid()} on .*own --work-dir"):
            run(model_dir=str(tiny_models["llama"]), data=[str(chat_jsonl)], work_dir=str(work),
                output=str(tmp_path / "adapter"), progress="none")
        assert not (tmp_path / "adapter").exists()
    finally:
        held.close()
    result = run(model_dir=str(tiny_models["llama"]), data=[str(chat_jsonl)], work_dir=str(work), progress="none",
                 output=str(tmp_path / "adapter"), config={"training_config": {"TrainingArguments": {"max_steps": 1}}})
    assert result.summary["steps"] == 1
    with open(work / ".kaito-lock") as f:  # released when the run ended
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
