"""The training loop around transformers' Trainer: packing, length grouping, checkpoints,
resume, SIGTERM/SIGINT, and one process per GPU.

- Checkpoints go to ``<work dir>/checkpoints`` with the run's save strategy (upstream's
  templates: ``save_strategy: epoch``). A run started again with the same work dir and the
  same configuration and data resumes from the newest checkpoint, so a restarted Job
  continues instead of starting over; ``TrainingArguments.resume_from_checkpoint`` (a path,
  or ``true`` for the newest) is honoured too (upstream accepts it and never passes it on).
- SIGTERM (a Job's pod being stopped) and SIGINT (Ctrl-C) finish the current step, save a
  checkpoint and stop; the run then raises :class:`Interrupted`, which the CLI turns into
  exit code 75 (``EX_TEMPFAIL``: try again) and one line saying where the checkpoint is.
- Launched by ``torchrun``/``accelerate launch`` (``WORLD_SIZE`` > 1), the Trainer runs
  distributed data parallel: each rank trains on its own shard (``DistributedSampler``),
  gradients are averaged, and only rank 0 writes the adapter. On CPU the backend is gloo.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import signal
import threading
from pathlib import Path
from typing import Any

from kaito_core.errors import MISSING, FieldError
from kaito_core.api.training.errors import TrainingFailed, TuningConfigError, TuningError

log = logging.getLogger("kaito.tuning")

EXIT_INTERRUPTED = 75  # EX_TEMPFAIL (sysexits.h): the run can be resumed
FINGERPRINT = "kaito-run.json"
# Keys kaito takes from TrainingArguments itself (TRL's SFTConfig names and transformers 4.x's
# group_by_length, which upstream's image accepted); the rest go to transformers as they are.
KAITO_TRAINING_KEYS = ("packing", "packing_strategy", "max_length", "group_by_length", "resume_from_checkpoint")


class Interrupted(TuningError):
    """SIGTERM/SIGINT: a checkpoint was saved; run again with the same work dir to resume."""

    exit_code = EXIT_INTERRUPTED


def world() -> tuple[int, int]:
    """(rank, world size) from the launcher's environment (torchrun / accelerate)."""
    return int(os.environ.get("RANK", "0") or 0), int(os.environ.get("WORLD_SIZE", "1") or 1)


def is_main_process() -> bool:
    return world()[0] == 0


def end_distributed() -> None:
    """Tear the process group down before the interpreter exits. Left to interpreter exit, a
    gloo rank sometimes aborted after a successful run ("terminate called without an active
    exception", exit -6), which the launcher reports as a failure; PyTorch asks for
    ``destroy_process_group()`` at the end of every distributed program."""
    if world()[1] <= 1:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# --- data ------------------------------------------------------------------------------------


class RecordingDataset:
    """The training rows; remembers which rows this process was given (its data-parallel shard)."""

    def __init__(self, rows: list[dict[str, Any]]):
        self.rows = rows
        self.seen: set[int] = set()

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        self.seen.add(int(i))
        return self.rows[i]


def prepare_rows(train_rows: list[dict], cfg, notes: list[str]) -> tuple[list[dict], dict[str, Any] | None]:
    """Pack the rows when ``TrainingArguments.packing`` is true; returns (rows, packing stats)."""
    from kaito_core.tuning import packing

    t = cfg.training
    if not t.get("packing"):
        return train_rows, None
    max_len = int(cfg.dataset.get("max_seq_length") or 1024)
    strategy = t.get("packing_strategy") or "bfd"
    packed = packing.pack(train_rows, max_len, strategy)
    st = packing.stats(packed, max_len) | {"strategy": strategy, "max_length": max_len}
    log.info("packing: %d samples in %d rows of up to %d tokens (%.0f%% full, %s)", st["samples"], st["rows"],
             max_len, 100 * st["fill"], strategy)
    if strategy == "wrapped":
        notes.append("TrainingArguments.packing_strategy 'wrapped' cuts samples at row borders; 'bfd' keeps "
                     "every sample whole")
    return packed, st


# --- checkpoints and resume ------------------------------------------------------------------


def fingerprint(cfg, files: list[Path], source: str) -> str:
    """What must be equal for a checkpoint to belong to this run."""
    h = hashlib.sha256()
    conf = cfg.to_dict()
    for k in ("resume_from_checkpoint", "max_steps"):
        conf["training_config"]["TrainingArguments"].pop(k, None)
    h.update(json.dumps(conf, sort_keys=True, default=str).encode())
    h.update(source.encode())
    for f in files:
        # The bytes, not the size or mtime: a row edited in place (same size) is other data, and
        # a URL downloaded again by the next pod (new mtime) is the same data.
        h.update(f"{f.name}:".encode())
        try:
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
        except OSError:
            h.update(str(f).encode())
    return h.hexdigest()[:16]


def resume_point(ckpt_dir: Path, cfg, fp: str, notes: list[str]) -> str | None:
    """The checkpoint to resume from, or None to start fresh (old checkpoints then removed).
    Checkpoints a killed pod left half written are set aside (:mod:`.checkpoints`)."""
    from kaito_core.tuning import checkpoints

    asked = cfg.training.get("resume_from_checkpoint")
    path = "training_config.TrainingArguments.resume_from_checkpoint"
    need_optimizer = not cfg.training.get("save_only_model")
    if isinstance(asked, str) and asked.lower() in ("true", "false"):
        asked = asked.lower() == "true"
    if isinstance(asked, str) and asked:
        p = Path(asked)
        if not p.is_absolute() and not p.exists() and (ckpt_dir / p).exists():
            p = ckpt_dir / p  # "checkpoint-12": the work dir's, not one in the current directory
        if not (p.is_dir() and any(p.glob("adapter_model.safetensors")) or (p / "trainer_state.json").is_file()):
            raise TuningConfigError(path, [FieldError(path, asked, "is not a checkpoint directory",
                                                      "give a checkpoint-N directory, or true for the newest one "
                                                      "in the work dir")])
        why = checkpoints.problem(p, need_optimizer=need_optimizer)
        if why:
            raise TuningConfigError(path, [FieldError(path, asked, f"cannot be resumed from: {why}",
                                                      "give an older checkpoint-N, or true for the newest whole "
                                                      "one in the work dir")])
        return str(p)
    last_path, broken = checkpoints.newest_whole(ckpt_dir, need_optimizer=need_optimizer)
    last = str(last_path) if last_path is not None else None
    for bad, why in broken:
        notes.append(f"{bad} is incomplete ({why}; a run stopped while saving it) and was removed")
        log.warning("%s", notes[-1])
        if is_main_process():
            shutil.rmtree(bad, ignore_errors=True)
    record = _read_json(ckpt_dir / FINGERPRINT)
    same = record.get("fingerprint") == fp and not record.get("completed")
    if asked is True:
        if last is None:
            raise TuningConfigError(path, [FieldError(path, True, f"no whole checkpoint in {ckpt_dir}",
                                                      "run with the work dir of the interrupted run (--work-dir)")])
        return last
    if last is not None and same and asked is not False:
        notes.append(f"resuming from {last} (same configuration and data in the work dir)")
        log.info("%s", notes[-1])
        return last
    if last is not None and is_main_process():
        why = "that run completed" if record.get("completed") else "they belong to another configuration or data"
        notes.append(f"checkpoints in {ckpt_dir} were not resumed ({why}); starting over")
        log.warning("%s", notes[-1])  # said now, not only in the summary at the end
        for old in ckpt_dir.glob("checkpoint-*"):
            shutil.rmtree(old, ignore_errors=True)
    return None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def write_fingerprint(ckpt_dir: Path, fp: str, *, completed: bool = False) -> None:
    if not is_main_process():
        return
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    (ckpt_dir / FINGERPRINT).write_text(json.dumps({"fingerprint": fp, "completed": completed}))


class _SignalScope:
    """While entered (on the main thread: the only one Python lets set handlers), SIGTERM and
    SIGINT go to ``self._handle``; the previous handlers come back on exit."""

    def __init__(self) -> None:
        self._old: dict[int, Any] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        raise NotImplementedError

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


class StopSignal(_SignalScope):
    """Turns SIGTERM/SIGINT into "save a checkpoint at the end of this step and stop"."""

    def __init__(self) -> None:
        super().__init__()
        self.signum: int | None = None

    def _handle(self, signum, frame) -> None:  # noqa: ARG002 - signal handler signature
        if self.signum is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        self.signum = signum
        log.warning("%s received: saving a checkpoint after this step, then stopping",
                    signal.Signals(signum).name)


class OutsideTraining(_SignalScope):
    """SIGTERM/SIGINT while preparing or publishing (not during a step): stop through the normal
    error path, so no empty output directory or half-staged adapter is left, and exit 75."""

    def _handle(self, signum, frame) -> None:  # noqa: ARG002 - signal handler signature
        # A BaseException, like KeyboardInterrupt: library code's `except Exception` (download
        # retries, model loaders) must not swallow it.
        raise _Stop(signum)

    def __exit__(self, exc_type, exc, tb) -> None:
        super().__exit__(exc_type, exc, tb)
        if exc_type is _Stop:
            name = signal.Signals(exc.args[0]).name
            raise Interrupted(f"interrupted by {name} outside a training step: nothing was published; run again "
                              "(with the same work dir, it resumes from its last checkpoint)") from None


class _Stop(BaseException):
    """SIGTERM/SIGINT outside a training step, on its way to :class:`Interrupted`."""


def stop_callback(stop: StopSignal):
    from transformers import TrainerCallback

    class StopOnSignal(TrainerCallback):
        def on_step_end(self, args, state, control, **_):
            # Always log the last step, whatever logging_steps says: the summary needs a loss.
            if state.global_step >= state.max_steps:
                control.should_log = True
            if _any_rank(stop.signum is not None, args):
                control.should_save = True
                control.should_log = True
                control.should_training_stop = True
            return control

    return StopOnSignal()


def _any_rank(flag: bool, args) -> bool:
    """Data parallel: every rank must stop at the same step (saving is collective), so one
    rank's signal stops them all; a MAX all-reduce of one number per step."""
    if world()[1] <= 1:
        return flag
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([1 if flag else 0], device=args.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


# --- the Trainer -----------------------------------------------------------------------------


def trainer_class():
    from transformers import Trainer

    class KaitoTrainer(Trainer):
        """Counts the real tokens of packed batches (their 4D mask would count L x L entries)."""

        def _track_num_input_tokens(self, inputs):
            import torch

            mask = inputs.get("attention_mask")
            counts = getattr(self.data_collator, "token_counts", None)
            if counts and (mask is None or mask.dim() == 4) and self.args.include_num_input_tokens_seen != "no":
                n = torch.as_tensor(counts.popleft(), device=self.args.device, dtype=torch.int64)
                self.state.num_input_tokens_seen += self.accelerator.gather(n).sum().item()
                return
            super()._track_num_input_tokens(inputs)

    return KaitoTrainer


def make_trainer(**kwargs: Any):
    """The Trainer; what it refuses of the TrainingArguments (an ``eval_strategy`` without held-out
    rows, a ``report_to`` integration that is not installed) is a config error, not a crash."""
    try:
        return trainer_class()(**kwargs)
    except (ValueError, RuntimeError, ImportError) as exc:
        why = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        hint = ""
        if kwargs.get("eval_dataset") is None and "eval_dataset" in str(exc):
            hint = ("; no rows are held out for evaluation (DatasetConfig.train_test_split is 1, or the data "
                    "is one row): set train_test_split below 1, or eval_strategy: no")
        raise TuningConfigError("training_config.TrainingArguments", [FieldError(
            "training_config.TrainingArguments", MISSING, f"rejected by transformers' Trainer: {why}{hint}")]) from None


def training_arguments(cfg, ckpt_dir: Path):
    import torch
    from transformers import TrainingArguments

    targs = {k: v for k, v in cfg.training.items() if k not in KAITO_TRAINING_KEYS}
    if cfg.training.get("group_by_length"):
        targs["train_sampling_strategy"] = "group_by_length"
    cuda = torch.cuda.is_available()
    targs.update(output_dir=str(ckpt_dir), disable_tqdm=True, use_cpu=not cuda, remove_unused_columns=False)
    if world()[1] > 1 and not cuda:
        targs.setdefault("ddp_backend", "gloo")
    if world()[1] > 1:
        targs.setdefault("ddp_find_unused_parameters", False)  # upstream's templates set it too
    try:
        return TrainingArguments(**targs)
    except (TypeError, ValueError) as exc:
        raise TuningConfigError("training_config.TrainingArguments",
                                [FieldError("training_config.TrainingArguments", MISSING,
                                            f"rejected by transformers: {exc}")]) from None


def collator(cfg, loaded, tok, packed: bool):
    from kaito_core.tuning.encode import PadCollator
    from kaito_core.tuning.packing import PackedCollator

    from kaito_core.tuning.attention import MODEL_TYPES, supported

    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    multiple = cfg.collator.get("pad_to_multiple_of")
    model_cfg = getattr(loaded.model, "config", None)
    # Logits only where a label is predicted: for the causal LMs whose loss takes shift_labels,
    # and not with label smoothing (the Trainer's smoother reads the full logits itself).
    label_only = (getattr(model_cfg, "model_type", None) in MODEL_TYPES
                  and not cfg.training.get("label_smoothing_factor"))
    if not packed:
        return PadCollator(pad, multiple, label_logits_only=label_only)
    attention = getattr(model_cfg, "_attn_implementation", None)
    # Per-sample attention (O(sum of sample²)) where the model allows it; else the 4D block mask.
    return PackedCollator(pad, attention, dtype=getattr(loaded.model, "dtype", None), pad_to_multiple_of=multiple,
                          varlen=supported(loaded.model), label_logits_only=label_only)


def check_history(history) -> None:
    if not history.losses:
        raise TrainingFailed("training ran no step: check num_train_epochs / max_steps and the data size")
    if any(math.isnan(x) or math.isinf(x) for x in history.losses[-3:]):
        raise TrainingFailed(f"the loss became {history.losses[-1]} (diverged); lower "
                             "TrainingArguments.learning_rate or check the data")
    if history.grad_norms and max(history.grad_norms) == 0.0:
        raise TrainingFailed(
            "every step had a gradient norm of 0: the adapter learned nothing. With QLoRA on CPU this "
            "happens when the 4-bit model ran inference before training in the same process "
            "(bitsandbytes repacks the weights); start from a freshly loaded model")


def interrupted_error(stop: StopSignal, state, ckpt_dir: Path) -> Interrupted:
    name = signal.Signals(stop.signum).name if stop.signum else "signal"
    where = ckpt_dir / f"checkpoint-{state.global_step}"
    return Interrupted(f"interrupted by {name} at step {state.global_step} of {state.max_steps}: checkpoint saved "
                       f"to {where}; run again with the same work dir ({ckpt_dir.parent}) to resume")
