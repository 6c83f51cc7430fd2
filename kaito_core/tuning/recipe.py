"""One tuning run, end to end: config -> data -> fresh model + LoRA -> train -> adapter out.

This is what the tuning Job's container runs, what ``kaito tune`` runs, and what local mode
(``kaito up``) calls. Nothing is published until training finished and passed its checks;
failures leave no adapter that looks complete (see :mod:`kaito_core.tuning.output`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

from kaito_core.errors import MISSING, FieldError
from kaito_core.tuning import config as config_mod
from kaito_core.tuning import data as data_mod
from kaito_core.tuning import output as out_mod
from kaito_core.tuning.errors import (DataError, OutputError, TrainingFailed, TuningConfigError, TuningError)

log = logging.getLogger("kaito.tuning")

# Where upstream's tuning image finds the weights when the Workspace names a preset.
UPSTREAM_WEIGHTS_DIR = "/workspace/tfs/weights"
METRICS_PORT_ENV = "KAITO_TUNING_METRICS_PORT"
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


def progress_mode(mode: str | None) -> str:
    from kaito_core.tuning.progress import choose_mode

    return choose_mode(mode)


def read_config_argument(value: Any) -> tuple[Any, str]:
    """``config`` as given: a mapping, YAML text, or a path to a YAML file (ConfigMap or plain)."""
    if value is None:
        return None, "defaults"
    if isinstance(value, Mapping):
        return dict(value), "training_config"
    text = str(value)
    if "\n" not in text and Path(text).exists():
        try:
            return Path(text).read_text(encoding="utf-8"), text
        except OSError as exc:
            raise TuningConfigError(text, [FieldError("config", text, f"cannot be read: {exc.strerror}")]) from None
    if "\n" not in text and text.endswith((".yaml", ".yml", ".json")):
        raise TuningConfigError(text, [FieldError("--config", text, "no such file")])
    return text, "training_config.yaml"


class _Run:
    def __init__(self, req: TuneRequest):
        self.req = req
        self.notes: list[str] = []
        self.started = datetime.now(timezone.utc)
        self.t0 = time.monotonic()
        self.work: Path | None = None
        self.own_work = False

    # -- steps ---------------------------------------------------------------------------

    def execute(self) -> TuneResult:
        req = self.req
        if not req.output and not req.output_image:
            raise TuningError("no output: give an output directory (--output DIR / tuning.output.volumeSource) "
                              "or an image (--output-image REF / tuning.output.image)")
        preset = self._preset()
        cfg = self._config(preset)
        dest = Path(req.output).resolve() if req.output else None
        if dest is not None:
            out_mod.prepare_destination(dest, overwrite=req.overwrite)
        if req.output_image:
            from kaito_core.tuning import oci

            # Fail before training when the registry is unreachable or refuses the credentials.
            oci._client(oci.parse_reference(req.output_image, "tuning.output.image"),
                        docker_config=req.push_secret, insecure=req.insecure_registries,
                        error=OutputError, action="push to")
        self.work = Path(req.work_dir) if req.work_dir else Path(tempfile.mkdtemp(prefix="kaito-tune-"))
        self.own_work = req.work_dir is None
        self.work.mkdir(parents=True, exist_ok=True)
        from transformers.utils import logging as hf_logging

        bars = hf_logging.is_progress_bar_enabled()
        if bars and progress_mode(req.progress) != "bar":
            hf_logging.disable_progress_bar()  # "Loading weights" bars would break the log lines
        try:
            return self._train_and_publish(preset, cfg, dest)
        finally:
            if bars:
                hf_logging.enable_progress_bar()
            if self.own_work:
                shutil.rmtree(self.work, ignore_errors=True)
            else:
                shutil.rmtree(self.work / "checkpoints", ignore_errors=True)

    def _preset(self):
        if not self.req.preset:
            return None
        from kaito_core.plugins import get_registry

        return get_registry().get_preset(self.req.preset)

    def _config(self, preset) -> config_mod.TrainingConfig:
        import torch

        doc, source = read_config_argument(self.req.config)
        user = config_mod.parse_training_config(doc, source) if doc is not None else {}
        cuda = torch.cuda.is_available()
        bf16 = cuda and torch.cuda.is_bf16_supported()
        recipe = preset.tuning if preset is not None else None
        if recipe is None and self.req.model_dir:
            recipe = _recipe_for_model_dir(Path(self.req.model_dir))
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
        from kaito_core.tuning import fetch

        req = self.req
        paths: list[Path] = []
        downloads = self.work / "data"
        for i, item in enumerate(req.data):
            if str(item).startswith(("http://", "https://")) or "://" in str(item):
                paths.append(fetch.download(str(item), downloads, index=i, allow_private=req.allow_private_urls,
                                            max_bytes=req.max_download_bytes))
            else:
                paths.append(Path(item))
        if req.input_image:
            from kaito_core.tuning import oci

            target = self.work / "image-data"
            oci.pull(req.input_image, target, docker_config=req.pull_secret, insecure=req.insecure_registries,
                     what="tuning.input.image")
            paths.append(target)
        if not paths:
            raise DataError("no training data: give --data (URLs, files or directories) or tuning.input "
                            "(urls, image or volumeSource)")
        return data_mod.find_data_files(paths, dataset_path=cfg.dataset.get("dataset_path"))

    def _model_source(self, cfg, preset) -> str:
        if self.req.model_dir:
            p = Path(self.req.model_dir)
            if p.is_dir():
                if not (p / "config.json").is_file():
                    raise TuningError(f"--model-dir {p}: no config.json there; give the directory holding the "
                                      "model's weights and tokenizer")
                return str(p)
            if HF_ID.match(self.req.model_dir) and not p.exists():
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
        from kaito_core.tuning import encode as enc_mod
        from kaito_core.tuning import model as model_mod

        req = self.req
        files = self._inputs(cfg)
        examples, dsum = data_mod.load_examples(files, cfg.dataset)
        train_ex, eval_ex = data_mod.shuffle_and_split(examples, cfg.dataset, dsum)
        source = self._model_source(cfg, preset)
        log.info("tuning %s with %s: %d training rows, %d held out, from %d file(s)",
                 preset.name if preset else source, cfg.method, len(train_ex), len(eval_ex), len(files))

        tok, tok_changed = model_mod.load_tokenizer(source, cfg)
        template, origin = enc_mod.resolve_chat_template(cfg.model.get("chat_template"), tok,
                                                         preset.chat_template if preset else None)
        if template is not None:
            tok.chat_template = template
            tok_changed.append(f"chat template from {origin}")
        max_len = int(cfg.dataset.get("max_seq_length") or 1024)
        encoder = enc_mod.Encoder(tok, max_len)
        train_rows = encoder.encode_all(train_ex)
        eval_rows = encoder.encode_all(eval_ex)
        for reason, n in encoder.skipped.items():
            dsum.skipped[reason] += n
        dsum.first_skipped.extend(encoder.first_skipped[: max(0, 5 - len(dsum.first_skipped))])
        dsum.rows_used -= sum(encoder.skipped.values())
        if encoder.truncated:
            self.notes.append(f"{encoder.truncated} rows were longer than max_seq_length={max_len} tokens "
                              "and were truncated")
        if not train_rows:
            raise DataError(f"the training data set is empty after tokenizing: all {len(train_ex)} training rows "
                            f"were skipped ({dict(encoder.skipped)}); e.g. {encoder.first_skipped[:1]}")
        if dsum.rows_skipped:
            log.warning("skipped %d of %d rows: %s; first: %s", dsum.rows_skipped, dsum.rows_total,
                        dict(dsum.skipped), "; ".join(dsum.first_skipped[:3]))
        log.info("data: %d rows read, %d used (%d train, %d eval), %d skipped", dsum.rows_total, dsum.rows_used,
                 len(train_rows), len(eval_rows), dsum.rows_skipped)

        loaded = model_mod.load_model(source, cfg)
        loaded.tokenizer = tok
        self.notes.extend(loaded.notes)
        for note in self.notes:
            log.warning("%s", note)
        need = int(loaded.trainable_params * 4 * 1.1) + 2**20
        if dest is not None:
            out_mod.check_free_space(dest, need)

        history = self._train(loaded, cfg, train_rows, eval_rows, tok)

        summary = self._summary(preset, cfg, source, loaded, history, dsum, tok_changed)
        staging_parent = dest if dest is not None else self.work
        staging = out_mod.new_staging(staging_parent)
        try:
            self._save(loaded, staging, source, preset, tok, tok_changed, summary, need)
            published: Path | None = None
            if dest is not None:
                out_mod.publish(staging, dest)
                published = dest
                log.info("adapter written to %s", dest)
            digest = None
            if req.output_image:
                from kaito_core.tuning import oci

                digest = oci.push_adapter(
                    published or staging, req.output_image, docker_config=req.push_secret,
                    insecure=req.insecure_registries, annotations=_annotations(summary),
                    config={"base_model": summary["base_model"], "method": cfg.method,
                            "preset": summary["preset"], "target_modules": loaded.target_modules})
                summary["output"]["digest"] = digest
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log.info("tuning summary %s", json.dumps({k: summary[k] for k in (
            "method", "steps", "final_loss", "duration_s", "tokens_seen")} | {"output": summary["output"]}))
        return TuneResult(summary=summary, output_dir=dest, image=req.output_image, digest=digest)

    def _train(self, loaded, cfg, train_rows, eval_rows, tok):
        import torch
        from transformers import Trainer, TrainingArguments

        from kaito_core.tuning import progress
        from kaito_core.tuning.encode import PadCollator

        req = self.req
        targs = dict(cfg.training)
        targs.update(output_dir=str(self.work / "checkpoints"), disable_tqdm=True,
                     use_cpu=not torch.cuda.is_available(), remove_unused_columns=False)
        try:
            args = TrainingArguments(**targs)
        except (TypeError, ValueError) as exc:
            raise TuningConfigError("training_config.TrainingArguments",
                                    [FieldError("training_config.TrainingArguments", MISSING,
                                                f"rejected by transformers: {exc}")]) from None
        mode = progress.choose_mode(req.progress)
        history = progress.History()
        port = req.metrics_port
        if port is None and os.environ.get(METRICS_PORT_ENV, "").strip().isdigit():
            port = int(os.environ[METRICS_PORT_ENV])
        metrics = progress.Metrics(port) if port is not None else None
        if metrics is not None:
            log.info("training metrics on http://0.0.0.0:%d/metrics", metrics.port)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        callback = progress.make_callback(mode=mode, history=history, metrics=metrics, on_step=req.on_step)
        trainer = Trainer(model=loaded.model, args=args, train_dataset=train_rows,
                          eval_dataset=eval_rows or None,
                          data_collator=PadCollator(pad, cfg.collator.get("pad_to_multiple_of")),
                          callbacks=[callback])
        progress.remove_printer(trainer)
        try:
            trainer.train()
            if eval_rows:
                history.eval_loss = float(trainer.evaluate().get("eval_loss", float("nan")))
        finally:
            if metrics is not None:
                metrics.close()
        if not history.losses:
            raise TrainingFailed("training ran no logged step: check num_train_epochs / max_steps and the data size")
        if any(math.isnan(x) or math.isinf(x) for x in history.losses[-3:]):
            raise TrainingFailed(f"the loss became {history.losses[-1]} (diverged); lower "
                                 "TrainingArguments.learning_rate or check the data")
        if history.grad_norms and max(history.grad_norms) == 0.0:
            raise TrainingFailed(
                "every step had a gradient norm of 0: the adapter learned nothing. With QLoRA on CPU this "
                "happens when the 4-bit model ran inference before training in the same process "
                "(bitsandbytes repacks the weights); start from a freshly loaded model")
        return history

    def _summary(self, preset, cfg, source, loaded, history, dsum, tok_changed) -> dict[str, Any]:
        from importlib.metadata import PackageNotFoundError, version

        try:
            kv = version("kaito-core")
        except PackageNotFoundError:
            kv = "unknown"
        duration = time.monotonic() - self.t0
        return {
            "status": "succeeded",
            "method": cfg.method,
            "preset": preset.name if preset else None,
            "base_model": preset.hf_repo if preset else source,
            "model_source": source,
            "steps": history.steps,
            "max_steps": history.max_steps,
            "first_loss": history.losses[0],
            "final_loss": history.losses[-1],
            "eval_loss": history.eval_loss,
            "grad_norm_max": max(history.grad_norms) if history.grad_norms else None,
            "tokens_seen": history.tokens_seen,
            "tokens_per_s": round(history.tokens_seen / history.train_seconds, 2) if history.train_seconds else None,
            "train_seconds": round(history.train_seconds, 3),
            "duration_s": round(duration, 3),
            "trainable_params": loaded.trainable_params,
            "total_params": loaded.total_params,
            "linear_layers": loaded.linear_layers,
            "quantized_linear_layers": loaded.quantized_layers if cfg.method == "qlora" else 0,
            "target_modules": loaded.target_modules,
            "tokenizer_changed": tok_changed,
            "data": dsum.to_dict(),
            "notes": list(self.notes),
            "output": {"dir": self.req.output and str(Path(self.req.output).resolve()),
                       "image": self.req.output_image, "digest": None},
            "started_at": self.started.isoformat(timespec="seconds"),
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "kaito_version": kv,
            "config": cfg.to_dict(),
        }

    def _save(self, loaded, staging: Path, source, preset, tok, tok_changed, summary, need) -> None:
        try:
            # "auto" would ask the hub whether the vocabulary changed; we know whether it did.
            loaded.model.save_pretrained(str(staging), safe_serialization=True,
                                         save_embedding_layers=bool(tok_changed))
            (staging / "README.md").unlink(missing_ok=True)  # peft's empty model card
            cfg_path = staging / out_mod.ADAPTER_CONFIG
            adapter_cfg = json.loads(cfg_path.read_text())
            adapter_cfg["base_model_name_or_path"] = preset.hf_repo if preset else str(source)
            if preset is not None:
                adapter_cfg["revision"] = preset.revision
            out_mod.write_json(cfg_path, adapter_cfg)
            if tok_changed:
                tok.save_pretrained(str(staging))
            out_mod.write_json(staging / out_mod.SUMMARY, summary)
            (staging / out_mod.MARKER).write_text(
                f"Fine-Tuning completed at {summary['finished_at']}\n", encoding="utf-8")
            out_mod.fsync_tree(staging)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise out_mod.explain_write_error(exc, staging.parent, need) from None
        missing = [f for f in (out_mod.ADAPTER_CONFIG, out_mod.ADAPTER_WEIGHTS) if not (staging / f).is_file()]
        if missing:
            raise OutputError(f"peft did not write {missing}; nothing was published")


def _annotations(summary: Mapping[str, Any]) -> dict[str, str]:
    from kaito_core.tuning.oci import ANNOTATION_PREFIX

    ann = {
        "org.opencontainers.image.created": summary["finished_at"],
        "org.opencontainers.image.description": f"LoRA adapter ({summary['method']}) for {summary['base_model']}",
        f"{ANNOTATION_PREFIX}.adapter.base-model": str(summary["base_model"]),
        f"{ANNOTATION_PREFIX}.tuning.method": summary["method"],
        f"{ANNOTATION_PREFIX}.tuning.steps": str(summary["steps"]),
        f"{ANNOTATION_PREFIX}.tuning.final-loss": f"{summary['final_loss']:.6g}",
    }
    if summary.get("preset"):
        ann[f"{ANNOTATION_PREFIX}.adapter.preset"] = summary["preset"]
    return ann


def _recipe_for_model_dir(model_dir: Path):
    """Default LoRA targets for a bare model directory: a registered preset of the same
    architecture first, else the per-architecture table."""
    from kaito_core.tuning.model import TARGETS_BY_MODEL_TYPE, read_model_type
    from kaito_core.types import TuningRecipe

    try:
        cfg = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    arch = (cfg.get("architectures") or [None])[0]
    try:
        from kaito_core.plugins import get_registry

        for p in get_registry().presets.values():
            if p.architecture == arch and p.tuning is not None:
                return p.tuning
    except Exception:  # noqa: BLE001 - a broken plugin must not stop a run on a bare directory
        pass
    targets = TARGETS_BY_MODEL_TYPE.get(read_model_type(model_dir) or "")
    return TuningRecipe(target_modules=targets) if targets else None
