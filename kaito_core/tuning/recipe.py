"""One tuning run, end to end: config -> data -> fresh model + LoRA -> train -> adapter out.

This is what the tuning Job's container runs, what ``kaito tune`` runs, and what local mode
(``kaito up``) calls. Nothing is published until training finished and passed its checks;
failures leave no adapter that looks complete (see :mod:`kaito_core.tuning.output`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

from kaito_core.errors import FieldError
from kaito_core.api.training import config as config_mod
from kaito_core.tuning import data as data_mod
from kaito_core.tuning import output as out_mod
from kaito_core.tuning import train as train_mod
from kaito_core.api.training.errors import DataError, OutputError, TuningConfigError, TuningError

log = logging.getLogger("kaito.tuning")

# Where upstream's tuning image finds the weights when the Workspace names a preset.
UPSTREAM_WEIGHTS_DIR = "/workspace/tfs/weights"
METRICS_PORT_ENV = "KAITO_TUNING_METRICS_PORT"
WORK_DIR_ENV = "KAITO_TUNING_WORK_DIR"
HF_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class TuneRequest:
    """Everything a run needs. ``data`` items are http(s) URLs, files or directories."""

    model_dir: str | None = None
    preset: str | None = None
    method: str | None = None
    data: list[str] = field(default_factory=list)
    input_image: str | None = None
    pull_secret: str | None = None
    config: Any = None  # path to training_config.yaml / a ConfigMap file, YAML text, or a mapping
    output: str | None = None
    output_image: str | None = None
    push_secret: str | None = None
    overwrite: bool = False
    work_dir: str | None = None
    allow_private_urls: bool | None = None
    insecure_registries: list[str] = field(default_factory=list)
    max_download_bytes: int | None = None
    metrics_port: int | None = None
    progress: str = "auto"
    skip_malformed: bool = False
    max_steps: int | None = None
    base_model: str | None = None  # the model id the adapter records (default: the preset's id)
    on_step: Callable[[Any], None] | None = None


@dataclass
class TuneResult:
    summary: dict[str, Any]
    output_dir: Path | None
    image: str | None
    digest: str | None


def run(request: TuneRequest | None = None, **kwargs: Any) -> TuneResult:
    """Run one tuning job (see :class:`TuneRequest` for the arguments)."""
    req = request or TuneRequest(**kwargs)
    return _Run(req).execute()


def read_config_argument(value: Any) -> tuple[Any, str]:
    """``config`` as given: a mapping, YAML text, or a path to a YAML file (ConfigMap or plain)."""
    if value is None:
        return None, "defaults"
    if isinstance(value, Mapping):
        return dict(value), "training_config"
    text = str(value)
    if "\n" not in text and Path(text).exists():
        try:
            return Path(text).read_text(encoding="utf-8-sig"), text
        except (OSError, UnicodeDecodeError) as exc:
            why = f"not UTF-8 text (byte {exc.start})" if isinstance(exc, UnicodeDecodeError) else exc.strerror or exc
            raise TuningConfigError(text, [FieldError("config", text, f"cannot be read: {why}")]) from None
    if "\n" not in text and text.endswith((".yaml", ".yml", ".json")):
        raise TuningConfigError(text, [FieldError("--config", text, "no such file")])
    return text, "training_config.yaml"


def _drop_if_empty(dest: Path | None, created: bool) -> None:  # a failed run leaves no empty output dir
    if created and dest is not None and train_mod.is_main_process() and dest.is_dir() and not any(dest.iterdir()):
        dest.rmdir()


class _Run:
    def __init__(self, req: TuneRequest):
        self.req = req
        self.notes: list[str] = []
        self.started = datetime.now(timezone.utc)
        self.t0 = time.monotonic()
        self.work: Path | None = None
        self.own_work = False
        self.inputs: Any = None  # kaito_core.tuning.inputs.Inputs, once the work dir is known
        self.lock: Any = None  # the work dir's lock file while the run holds it
        self.packing: dict[str, Any] | None = None
        self.resumed_from: str | None = None
        self.shard: list[int] = []

    # -- steps ---------------------------------------------------------------------------

    def execute(self) -> TuneResult:
        req = self.req
        if not req.output and not req.output_image:
            raise TuningError("no output: give an output directory (--output DIR / tuning.output.volumeSource) "
                              "or an image (--output-image REF / tuning.output.image)")
        preset = self._preset()
        cfg = self._config(preset)
        dest = Path(req.output).resolve() if req.output else None
        created = dest is not None and not dest.exists()
        if dest is not None and train_mod.is_main_process():
            out_mod.prepare_destination(dest, overwrite=req.overwrite, workspace=os.environ.get("KAITO_WORKSPACE"))
        try:
            if req.output_image and train_mod.is_main_process():
                from kaito_core.tuning import oci

                # Fail before training when the registry is unreachable or refuses the credentials.
                oci.check_push_access(req.output_image, docker_config=req.push_secret,
                                      insecure=req.insecure_registries)
            work_dir = req.work_dir or os.environ.get(WORK_DIR_ENV) or None
            self.work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="kaito-tune-"))
            self.own_work = work_dir is None
            out_mod.prepare_work_dir(self.work, f"--work-dir / {WORK_DIR_ENV}")
            self.lock = out_mod.lock_work_dir(self.work) if train_mod.is_main_process() else None
        except BaseException:
            _drop_if_empty(dest, created)
            raise
        from transformers.utils import logging as hf_logging

        bars = hf_logging.is_progress_bar_enabled()
        from kaito_core.tuning.progress import choose_mode

        if bars and choose_mode(req.progress) != "bar":
            hf_logging.disable_progress_bar()  # "Loading weights" bars would break the log lines
        interrupted = False
        try:
            with train_mod.OutsideTraining():
                return self._train_and_publish(preset, cfg, dest)
        except train_mod.Interrupted:
            interrupted = True
            raise
        finally:
            if self.lock is not None:
                self.lock.close()
            if bars:
                hf_logging.enable_progress_bar()
            # Checkpoints stay in a work dir the user named (to resume, or to look at); a
            # temporary one goes, unless the run was interrupted and can still be resumed.
            if self.own_work and not interrupted:
                shutil.rmtree(self.work, ignore_errors=True)
            elif self.inputs is not None:
                self.inputs.cleanup()  # downloads only: the work dir may be the user's own directory
            _drop_if_empty(dest, created)

    def _preset(self):
        if not self.req.preset:
            return None
        from kaito_core.plugins import get_registry

        return get_registry().get_preset(self.req.preset)

    def _config(self, preset) -> config_mod.TrainingConfig:
        import torch

        doc, source = read_config_argument(self.req.config)
        user = config_mod.parse_training_config(doc, source) if doc is not None else None
        cuda = torch.cuda.is_available()
        bf16 = cuda and torch.cuda.is_bf16_supported()
        recipe = preset.tuning if preset is not None else None
        if recipe is None and self.req.model_dir:
            from kaito_core.tuning.model import recipe_for_model_dir

            recipe = recipe_for_model_dir(Path(self.req.model_dir))
        cfg = config_mod.resolve(user, recipe=recipe, method=self.req.method, cuda=cuda, bf16_ok=bf16, source=source)
        if self.req.skip_malformed:
            cfg.dataset["skip_malformed_rows"] = True
        if self.req.max_steps is not None:
            cfg.training["max_steps"] = int(self.req.max_steps)
        if cfg.collator.get("mlm"):
            # Upstream does the same when the tokenizer has no mask token: causal LMs have none.
            cfg.notes.append("DataCollator.mlm is true, but a causal language model learns next-token "
                             "prediction: using mlm=false")
            cfg.collator["mlm"] = False
        self.notes.extend(cfg.notes)
        return cfg

    def _inputs(self, cfg) -> list[Path]:
        from kaito_core.tuning.inputs import Inputs

        self.inputs = Inputs(self.work)
        return self.inputs.gather(self.req, cfg.dataset)

    def _model_source(self, cfg, preset) -> str:
        source = self._find_model(cfg, preset)
        if not Path(source).exists() and not cfg.model.get("local_files_only"):
            from kaito_core.tuning.model import hub_reachable

            if not hub_reachable():
                # HF_HUB_OFFLINE-style: only the local cache, so a missing model fails at once.
                cfg.model["local_files_only"] = True
                self.notes.append("the Hugging Face hub cannot be reached: using the local cache only")
        return source

    def _find_model(self, cfg, preset) -> str:
        if self.req.model_dir:
            p = Path(self.req.model_dir)
            if p.is_dir():
                if not (p / "config.json").is_file():
                    raise TuningError(f"--model-dir {p}: no config.json there; give the directory holding the "
                                      "model's weights and tokenizer")
                return str(p)
            if HF_ID.fullmatch(self.req.model_dir) and not p.exists():
                return self.req.model_dir  # downloaded by transformers (ModelConfig.local_files_only: false)
            raise TuningError(f"--model-dir {self.req.model_dir!r}: no such directory; give the directory holding "
                              "the model's weights, or a Hugging Face id 'org/model'")
        configured = cfg.model.get("pretrained_model_name_or_path")
        if configured:
            return str(configured)
        if Path(UPSTREAM_WEIGHTS_DIR, "config.json").is_file():
            return UPSTREAM_WEIGHTS_DIR
        if preset is not None:
            return preset.hf_repo
        raise TuningError("no model: give --model-dir DIR or --preset NAME")

    def _train_and_publish(self, preset, cfg, dest: Path | None) -> TuneResult:
        from kaito_core.tuning import model as model_mod

        files = self._inputs(cfg)
        dsum = data_mod.scan(files, cfg.dataset)  # every row checked before a model is loaded
        source = self._model_source(cfg, preset)
        # A hub id is fetched first (with progress lines); the adapter still records the id.
        load_from = source if Path(source).exists() else model_mod.download_model(source, cfg)
        tok, tok_changed = model_mod.load_tokenizer(load_from, cfg)
        train_rows, eval_rows = self._encode(cfg, preset, tok, tok_changed, files, dsum, source)
        loaded = model_mod.load_model(load_from, cfg)
        loaded.tokenizer = tok
        self.notes.extend(loaded.notes)
        for note in self.notes:
            log.warning("%s", note)
        need = int(loaded.trainable_params * 4 * 1.1) + 2**20
        if dest is not None:
            out_mod.check_free_space(dest, need)

        history = self._train(loaded, cfg, train_rows, eval_rows, tok, files, source)

        summary = out_mod.build_summary(self, preset, cfg, source, loaded, history, dsum, tok_changed)
        rank, world_size = train_mod.world()
        if world_size > 1:
            summary["distributed"] = {"rank": rank, "world_size": world_size, "rows_this_rank": len(self.shard)}
            out_mod.write_shard(self.work, rank, self.shard)
            if rank != 0:  # one adapter: rank 0 writes and pushes it
                return TuneResult(summary=summary, output_dir=None, image=None, digest=None)
        digest = self._publish(loaded, cfg, preset, source, tok, tok_changed, summary, need, dest)
        log.info("tuning summary %s", json.dumps({k: summary[k] for k in (
            "method", "steps", "final_loss", "duration_s", "tokens_seen")} | {"output": summary["output"]}))
        return TuneResult(summary=summary, output_dir=dest, image=self.req.output_image, digest=digest)

    def _encode(self, cfg, preset, tok, tok_changed, files, dsum, source) -> tuple[list, list]:
        """Chat template, then the second (streamed) pass over the data: token ids only."""
        from kaito_core.tuning import encode as enc_mod

        template, origin = enc_mod.resolve_chat_template(cfg.model.get("chat_template"), tok,
                                                         preset.chat_template if preset else None)
        if template is not None:
            tok.chat_template = template
            tok_changed.append(f"chat template from {origin}")
        max_len = int(cfg.dataset.get("max_seq_length") or 1024)
        encoder = enc_mod.Encoder(tok, max_len, skip_malformed=bool(cfg.dataset.get("skip_malformed_rows")))
        rows = encoder.encode_all(data_mod.iter_examples(files, cfg.dataset, data_mod.DataSummary()))
        train_rows, eval_rows = data_mod.shuffle_and_split(rows, cfg.dataset, dsum)
        del rows
        log.info("tuning %s with %s: %d training rows, %d held out, from %d file(s)",
                 preset.name if preset else source, cfg.method, len(train_rows), len(eval_rows), len(files))
        skipped = sum(encoder.skipped.values())
        for reason, n in encoder.skipped.items():
            dsum.skipped[reason] += n
        dsum.first_skipped.extend(encoder.first_skipped[: max(0, 5 - len(dsum.first_skipped))])
        dsum.rows_used -= skipped
        if encoder.truncated:
            self.notes.append(f"{encoder.truncated} rows were longer than max_seq_length={max_len} tokens "
                              "and were truncated")
        if not train_rows:
            raise DataError(f"the training data set is empty after tokenizing: all {dsum.rows_used + skipped} rows "
                            f"were skipped ({dict(encoder.skipped)}); e.g. {encoder.first_skipped[:1]}")
        if dsum.rows_skipped:
            log.warning("skipped %d of %d rows: %s; first: %s", dsum.rows_skipped, dsum.rows_total,
                        dict(dsum.skipped), "; ".join(dsum.first_skipped[:3]))
        log.info("data: %d rows read, %d used (%d train, %d eval), %d skipped", dsum.rows_total, dsum.rows_used,
                 len(train_rows), len(eval_rows), dsum.rows_skipped)
        return train_rows, eval_rows

    def _publish(self, loaded, cfg, preset, source, tok, tok_changed, summary, need, dest) -> str | None:
        """Stage the adapter, move it into the output directory, push it; returns the digest."""
        req = self.req
        staging = out_mod.new_staging(dest if dest is not None else self.work)
        digest = None
        try:
            out_mod.save_adapter(loaded, staging, source, preset, tok, tok_changed, summary, need)
            published: Path | None = None
            if dest is not None:
                out_mod.publish(staging, dest)
                published = dest
                log.info("adapter written to %s", dest)
            if req.output_image:
                from kaito_core.tuning import oci

                try:
                    digest = oci.push_adapter(
                        published or staging, req.output_image, docker_config=req.push_secret,
                        insecure=req.insecure_registries, annotations=out_mod.annotations(summary),
                        config={"base_model": summary["base_model"], "method": cfg.method,
                                "preset": summary["preset"], "target_modules": loaded.target_modules})
                except OutputError as exc:
                    if published is None:
                        raise
                    raise OutputError(f"{exc}. The adapter itself is complete in {published}: run again with "
                                      "--overwrite to train and push again") from None
                summary["output"]["digest"] = digest
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return digest

    def _train(self, loaded, cfg, train_rows, eval_rows, tok, files, source):
        from kaito_core.tuning import checkpoints, progress
        from kaito_core.tuning import train as train_mod
        from kaito_core.tuning.attention import use_packed_attention

        req = self.req
        ckpt_dir = self.work / "checkpoints"
        fp = train_mod.fingerprint(cfg, files, source)
        resume = train_mod.resume_point(ckpt_dir, cfg, fp, self.notes)
        rows, self.packing = train_mod.prepare_rows(train_rows, cfg, self.notes)
        args = train_mod.training_arguments(cfg, ckpt_dir)
        mode = progress.choose_mode(req.progress) if train_mod.is_main_process() else "none"
        history = progress.History()
        port = req.metrics_port
        if port is None and os.environ.get(METRICS_PORT_ENV, "").strip().isdigit():
            port = int(os.environ[METRICS_PORT_ENV])
        metrics = progress.Metrics(port) if port is not None and train_mod.is_main_process() else None
        if metrics is not None:
            log.info("training metrics on http://0.0.0.0:%d/metrics", metrics.port)
        stop = train_mod.StopSignal()
        callbacks = [progress.make_callback(mode=mode, history=history, metrics=metrics, on_step=req.on_step),
                     train_mod.stop_callback(stop)]
        dataset = train_mod.RecordingDataset(rows)
        data_collator = train_mod.collator(cfg, loaded, tok, self.packing is not None)
        if self.packing is not None:
            self.packing["attention"] = data_collator.isolation
        trainer = train_mod.make_trainer(
            model=loaded.model, args=args, train_dataset=dataset, eval_dataset=eval_rows or None,
            data_collator=data_collator, callbacks=callbacks)
        progress.remove_printer(trainer)
        train_mod.write_fingerprint(ckpt_dir, fp)
        self.resumed_from = resume
        try:
            with stop, use_packed_attention(loaded.model, getattr(data_collator, "varlen", False)):
                try:
                    trainer.train(resume_from_checkpoint=resume)
                except Exception as exc:  # noqa: BLE001 - only a failed checkpoint write is turned into one line
                    failure = checkpoints.write_error(exc, ckpt_dir)
                    if failure is None:
                        raise
                    raise failure from None
            if stop.signum is not None:
                raise train_mod.interrupted_error(stop, trainer.state, ckpt_dir)
            if eval_rows:
                with use_packed_attention(loaded.model, getattr(data_collator, "varlen", False)):
                    history.eval_loss = float(trainer.evaluate().get("eval_loss", float("nan")))
        finally:
            if metrics is not None:
                metrics.close()
            self.shard = sorted(dataset.seen)
        train_mod.write_fingerprint(ckpt_dir, fp, completed=True)
        train_mod.check_history(history)
        return history
