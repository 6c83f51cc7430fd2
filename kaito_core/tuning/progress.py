"""Training progress: a bar on a terminal, one structured log line per step otherwise, and
Prometheus metrics (step, loss, tokens/s) on a port while training."""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

log = logging.getLogger("kaito.tuning")


@dataclass
class StepInfo:
    step: int
    max_steps: int
    loss: float | None
    grad_norm: float | None
    learning_rate: float | None
    tokens_seen: int
    tokens_per_s: float
    elapsed_s: float
    epoch: float | None
    eta_s: float | None = None  # seconds left at this run's pace (steps since it started or resumed)


@dataclass
class History:
    losses: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)
    steps: int = 0
    max_steps: int = 0
    tokens_seen: int = 0
    tokens_this_run: int = 0  # since this process started or resumed
    eval_loss: float | None = None
    train_seconds: float = 0.0


class Metrics:
    """Gauges in their own registry, served on ``port`` while training (0 = any free port)."""

    def __init__(self, port: int, addr: str = "0.0.0.0"):
        from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

        self.registry = CollectorRegistry()
        self.step = Gauge("kaito_tuning_step", "Optimizer steps done", registry=self.registry)
        self.max_steps = Gauge("kaito_tuning_max_steps", "Optimizer steps planned", registry=self.registry)
        self.loss = Gauge("kaito_tuning_loss", "Training loss at the last logged step", registry=self.registry)
        self.tps = Gauge("kaito_tuning_tokens_per_second", "Training tokens per second", registry=self.registry)
        self.tokens = Counter("kaito_tuning_tokens", "Training tokens seen", registry=self.registry)
        try:
            self.server, self.thread = start_http_server(port, addr=addr, registry=self.registry)
        except (OSError, OverflowError) as exc:  # in use, not allowed, out of range
            from kaito_core.api.training.errors import TuningError

            raise TuningError(f"metrics port {port} (--metrics-port / KAITO_TUNING_METRICS_PORT): cannot serve "
                              f"there ({getattr(exc, 'strerror', None) or exc}); choose a free port from 1 to "
                              "65535, or 0 for any free port") from None
        self.port = self.server.server_port

    def update(self, info: StepInfo, new_tokens: int) -> None:
        self.step.set(info.step)
        self.max_steps.set(info.max_steps)
        if info.loss is not None:
            self.loss.set(info.loss)
        self.tps.set(info.tokens_per_s)
        if new_tokens > 0:
            self.tokens.inc(new_tokens)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def choose_mode(mode: str | None) -> str:
    if mode in (None, "auto"):
        return "bar" if sys.stderr.isatty() else "log"
    if mode not in ("bar", "log", "none"):
        raise ValueError(f"progress {mode!r}: expected auto, bar, log or none")
    return mode


def make_callback(*, mode: str, history: History, metrics: Metrics | None,
                  on_step: Callable[[StepInfo], None] | None):
    """A transformers TrainerCallback bound to our progress outputs (built lazily: imports transformers)."""
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def __init__(self) -> None:
            self.bar = None
            self.t0 = 0.0
            self.last_tokens = 0
            self.first_step: int | None = None
            self.first_tokens = 0

        def on_step_begin(self, args, state, control, **_):
            if self.first_step is None:  # after a resume, global_step starts at the checkpoint's step
                self.first_step = state.global_step
                self.first_tokens = int(getattr(state, "num_input_tokens_seen", 0) or 0)
                self.t0 = time.monotonic()

        def on_train_begin(self, args, state, control, **_):
            self.t0 = time.monotonic()
            history.max_steps = state.max_steps
            if mode == "bar":
                from tqdm.auto import tqdm

                self.bar = tqdm(total=state.max_steps, desc="tuning", unit="step", file=sys.stderr)

        def on_log(self, args, state, control, logs=None, **_):
            logs = logs or {}
            if "eval_loss" in logs:
                history.eval_loss = float(logs["eval_loss"])
                return
            if "loss" not in logs:
                return
            elapsed = time.monotonic() - self.t0
            tokens = int(getattr(state, "num_input_tokens_seen", 0) or 0)
            loss = float(logs["loss"])
            gn = logs.get("grad_norm")
            history.losses.append(loss)
            if gn is not None:
                history.grad_norms.append(float(gn))
            history.steps, history.tokens_seen = state.global_step, tokens
            history.tokens_this_run = tokens - self.first_tokens
            done = state.global_step - (self.first_step or 0)
            eta = elapsed / done * max(0, state.max_steps - state.global_step) if done > 0 else None
            info = StepInfo(step=state.global_step, max_steps=state.max_steps, loss=loss,
                            grad_norm=float(gn) if gn is not None else None,
                            learning_rate=logs.get("learning_rate"), tokens_seen=tokens,
                            tokens_per_s=(tokens - self.first_tokens) / elapsed if elapsed > 0 else 0.0,
                            elapsed_s=elapsed,
                            epoch=logs.get("epoch"), eta_s=None if eta is None else round(eta, 1))
            if metrics is not None:
                metrics.update(info, tokens - self.last_tokens)
            self.last_tokens = tokens
            if self.bar is not None:
                self.bar.n = state.global_step
                self.bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{info.tokens_per_s:.0f}", refresh=True)
                self.bar.n = state.global_step
            elif mode == "log":
                log.info("step %s", json.dumps({
                    "event": "step", "step": info.step, "max_steps": info.max_steps, "loss": round(loss, 6),
                    "grad_norm": None if gn is None else round(float(gn), 6),
                    "learning_rate": info.learning_rate, "tokens_seen": tokens,
                    "tokens_per_s": round(info.tokens_per_s, 1), "epoch": info.epoch, "eta_s": info.eta_s}))
            if on_step is not None:
                on_step(info)

        def on_train_end(self, args, state, control, **_):
            history.train_seconds = time.monotonic() - self.t0
            history.steps = state.global_step
            if self.bar is not None:
                self.bar.close()

    return Progress()


def remove_printer(trainer: Any) -> None:
    """Trainer prints raw log dicts when its tqdm is off; our callback says it better."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)


# --- downloads -------------------------------------------------------------------------------

DOWNLOAD_LOG_INTERVAL_S = 2.0


class DownloadProgress:
    """One ``download {...}`` JSON log line every few seconds (and at the end) while data or
    model files arrive: bytes so far, total when known, rate and ETA."""

    def __init__(self, what: str, name: str, total: int | None, unit: str = "bytes"):
        self.what, self.name, self.total, self.unit = what, name, total, unit
        self.done = 0
        self.t0 = self.last = time.monotonic()

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= DOWNLOAD_LOG_INTERVAL_S:
            self.last = now
            self._emit(now, final=False)

    def finish(self) -> None:
        self._emit(time.monotonic(), final=True)

    def _emit(self, now: float, *, final: bool) -> None:
        elapsed = max(now - self.t0, 1e-9)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if self.total and rate > 0 else None
        log.info("download %s", json.dumps({
            "event": "download", "what": self.what, "name": self.name, self.unit: self.done, "total": self.total,
            "percent": round(100 * self.done / self.total, 1) if self.total else None,
            f"{self.unit}_per_s": round(rate, 1), "eta_s": None if left is None else round(max(left, 0.0), 1),
            "done": final}))


def hub_tqdm_class(what: str, name: str):
    """A tqdm class for huggingface_hub's ``snapshot_download`` that reports through
    :class:`DownloadProgress` instead of drawing a bar (built lazily: imports tqdm)."""
    from tqdm.auto import tqdm

    class LogTqdm(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True  # no bar on stderr; our log line instead
            super().__init__(*args, **kwargs)
            self._kaito = DownloadProgress(what, name, kwargs.get("total"), unit="files")

        def update(self, n=1):
            self._kaito.update(int(n or 0))
            return super().update(n)

        def close(self):
            if getattr(self, "_kaito", None) is not None:
                self._kaito.finish()
                self._kaito = None
            super().close()

    return LogTqdm
