"""Prometheus metrics of the server (``GET /metrics``), in a registry of their own per app.

Names are prefixed ``kaito_``; histograms use buckets suited to LLM latencies (ms to minutes).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
TOKEN_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("kaito_requests", "HTTP requests answered, by route and status code",
                                ["route", "code"], registry=r)
        self.errors = Counter("kaito_request_errors", "Requests answered with an error, by status code and type",
                              ["code", "type"], registry=r)
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

    def render(self) -> bytes:
        return generate_latest(self.registry)
