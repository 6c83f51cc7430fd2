"""Prometheus metrics of the server (``GET /metrics``), in a registry of their own per app.

Two families side by side:

- ``kaito_*``: ours, unchanged names (dashboards already read them);
- ``vllm:*`` with a ``model_name`` label: the names vLLM's OpenAI server exports
  (vllm/v1/metrics/loggers.py), so upstream KAITO's KEDA autoscaler (it scales on
  ``vllm:num_requests_waiting``) and vLLM's Grafana dashboards work with the transformers
  backend unchanged. Aborted requests count as finished with ``finished_reason="abort"``, as vLLM
  counts them.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
TOKEN_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
TOKEN_COUNT_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000)
FINISH_REASONS = ("stop", "length", "abort", "error")


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, model_name: str = "") -> None:
        self.model_name = model_name
        self.registry = r = CollectorRegistry()
        self.requests = Counter("kaito_requests", "HTTP requests answered, by route and status code",
                                ["route", "code"], registry=r)
        self.errors = Counter("kaito_request_errors", "Requests answered with an error, by status code and type",
                              ["code", "type"], registry=r)
        self.disconnects = Counter("kaito_client_disconnects", "Clients that went away before the answer, by route",
                                   ["route"], registry=r)
        self.prompt_tokens = Counter("kaito_prompt_tokens", "Prompt tokens processed", ["model"], registry=r)
        self.generation_tokens = Counter("kaito_generation_tokens", "Tokens generated", ["model"], registry=r)
        self.ttft = Histogram("kaito_time_to_first_token_seconds", "Arrival to first generated token",
                              buckets=LATENCY_BUCKETS, registry=r)
        self.itl = Histogram("kaito_inter_token_latency_seconds", "Time between two tokens of one request",
                             buckets=TOKEN_LATENCY_BUCKETS, registry=r)
        self.e2e = Histogram("kaito_request_duration_seconds", "Generation request duration, arrival to last token",
                             buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("kaito_queue_depth", "Requests waiting to join the batch", registry=r)
        self.running = Gauge("kaito_running_requests", "Requests being generated", registry=r)
        self.batch_size = Histogram("kaito_batch_size", "Sequences per decode step", buckets=BATCH_BUCKETS,
                                    registry=r)
        self.adapter_requests = Counter("kaito_adapter_requests", "Generation requests by adapter ('' = base)",
                                        ["adapter"], registry=r)
        self.finished = Counter("kaito_finished_requests", "Generations by finish reason", ["reason"], registry=r)
        self.loaded = Gauge("kaito_model_loaded", "1 once the model is loaded and serving", registry=r)
        self._vllm(r)

    def _vllm(self, r: CollectorRegistry) -> None:
        """vLLM's names (V1 engine), each with ``model_name``; the deprecated
        ``vllm:gpu_cache_usage_perc`` too, which older KAITO autoscaling examples read."""
        lab = ["model_name"]
        m = self.model_name
        self.v_running = Gauge("vllm:num_requests_running", "Requests in the model execution batch", lab,
                               registry=r).labels(m)
        self.v_waiting = Gauge("vllm:num_requests_waiting", "Requests waiting to be processed", lab,
                               registry=r).labels(m)
        self.v_kv = Gauge("vllm:kv_cache_usage_perc", "KV-cache usage, 1 = full", lab, registry=r).labels(m)
        self.v_gpu_kv = Gauge("vllm:gpu_cache_usage_perc", "KV-cache usage, 1 = full (deprecated name)", lab,
                              registry=r).labels(m)
        self.v_preempt = Counter("vllm:num_preemptions", "Preemptions (this engine never preempts)", lab,
                                 registry=r).labels(m)
        self.v_prompt = Counter("vllm:prompt_tokens", "Prefill tokens processed", lab, registry=r).labels(m)
        self.v_gen = Counter("vllm:generation_tokens", "Generation tokens processed", lab, registry=r).labels(m)
        self.v_success = Counter("vllm:request_success", "Finished requests by finish reason",
                                 ["model_name", "finished_reason"], registry=r)
        for reason in FINISH_REASONS:
            self.v_success.labels(m, reason)  # present at 0, so rate() works from the start
        self.v_ttft = Histogram("vllm:time_to_first_token_seconds", "Time to first token", lab,
                                buckets=LATENCY_BUCKETS, registry=r).labels(m)
        self.v_itl = Histogram("vllm:inter_token_latency_seconds", "Time between two output tokens", lab,
                               buckets=TOKEN_LATENCY_BUCKETS, registry=r).labels(m)
        self.v_tpot = Histogram("vllm:time_per_output_token_seconds", "Time per output token (same as ITL)", lab,
                                buckets=TOKEN_LATENCY_BUCKETS, registry=r).labels(m)
        self.v_e2e = Histogram("vllm:e2e_request_latency_seconds", "End-to-end request latency", lab,
                               buckets=LATENCY_BUCKETS, registry=r).labels(m)
        self.v_queue = Histogram("vllm:request_queue_time_seconds", "Time spent waiting to join the batch", lab,
                                 buckets=LATENCY_BUCKETS, registry=r).labels(m)
        self.v_req_prompt = Histogram("vllm:request_prompt_tokens", "Prompt tokens per request", lab,
                                      buckets=TOKEN_COUNT_BUCKETS, registry=r).labels(m)
        self.v_req_gen = Histogram("vllm:request_generation_tokens", "Generation tokens per request", lab,
                                   buckets=TOKEN_COUNT_BUCKETS, registry=r).labels(m)

    # -- what the engine reports (engine thread) -------------------------------------------

    def set_load(self, *, running: int, waiting: int, kv_usage: float | None = None) -> None:
        self.queue_depth.set(waiting)
        self.v_running.set(running)
        self.v_waiting.set(waiting)
        if kv_usage is not None:
            self.v_kv.set(kv_usage)
            self.v_gpu_kv.set(kv_usage)

    def observe_admitted(self, seq: Any) -> None:
        n = len(seq.prompt_ids)
        self.prompt_tokens.labels(seq.model_id).inc(n)
        self.v_prompt.inc(n)
        self.v_req_prompt.observe(n)
        self.v_queue.observe(time.monotonic() - seq.arrived)

    def observe_step(self, batch: int) -> None:
        self.batch_size.observe(batch)

    def observe_first_token(self, seconds: float) -> None:
        self.ttft.observe(seconds)
        self.v_ttft.observe(seconds)

    def observe_token_gap(self, seconds: float) -> None:
        self.itl.observe(seconds)
        self.v_itl.observe(seconds)
        self.v_tpot.observe(seconds)

    def observe_finished(self, seq: Any, reason: str) -> None:
        n = len(seq.output_ids)
        self.generation_tokens.labels(seq.model_id).inc(n)
        self.v_gen.inc(n)
        self.v_req_gen.observe(n)
        self.finished.labels(reason).inc()
        self.v_success.labels(self.model_name, reason).inc()
        elapsed = time.monotonic() - seq.arrived
        self.e2e.observe(elapsed)
        self.v_e2e.observe(elapsed)

    def render(self) -> bytes:
        return generate_latest(self.registry)
