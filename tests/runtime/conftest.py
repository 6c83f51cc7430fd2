"""Fixtures for the runtime tests: tiny real models, LoRA adapters, real servers on 127.0.0.1,
a real OCI registry (Debian's docker-registry), and the OpenAI schemas to validate answers."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "data" / "reference" / "openai-openapi-subset.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0, ok=(200,)) -> httpx.Response:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            r = httpx.get(url, timeout=2)
            if r.status_code in ok:
                return r
            last = r
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.05)
    raise AssertionError(f"{url} did not answer {ok} within {timeout}s (last: {last!r})")


class ThreadServer:
    """uvicorn serving an app in a thread of this process; ``stop()`` shuts it down."""

    def __init__(self, app: Any, log_level: str = "warning"):
        import uvicorn

        from kaito_core.runtime.listener import uvicorn_config

        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        opts = getattr(getattr(app, "state", None), "options", None)
        timeouts = {} if opts is None else {"header_timeout": opts.timeout_header,
                                            "keep_alive_timeout": opts.timeout_keep_alive}
        self.server = uvicorn.Server(uvicorn_config(app, host="127.0.0.1", port=self.port, log_level=log_level,
                                                    timeout_graceful_shutdown=2, **timeouts))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self, health: bool = True) -> "ThreadServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if health:
            service = getattr(self.app.state, "service", None)
            deadline = time.monotonic() + 60
            while service is not None and service.state == "loading" and time.monotonic() < deadline:
                time.sleep(0.02)
            if service is not None and service.state == "failed":
                self.stop()
                raise AssertionError(f"the model failed to load: {service.error}")
            wait_http(self.url + "/health")
        return self

    @property
    def service(self) -> Any:
        return self.app.state.service

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def start_server(wait_healthy: bool = True, **kwargs: Any) -> ThreadServer:
    from kaito_core.runtime.server import create_app

    return ThreadServer(create_app(**kwargs)).start(health=wait_healthy)


# -- models and adapters ---------------------------------------------------------------------


class Collector:
    """An engine request's sink: every Output, when it arrived, and an Event set when it finished."""

    def __init__(self):
        self.outs: list = []
        self.done = threading.Event()
        self.times: list[float] = []

    def __call__(self, out: Any) -> None:
        self.outs.append(out)
        self.times.append(time.monotonic())
        if out.finished:
            self.done.set()


@pytest.fixture(scope="module")
def loaded(tiny_models):
    """The tiny Llama, Phi-3 and Falcon loaded in float32 (model, tokenizer), once per module
    (tests may patch a model's config)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = {}
    for arch in ("llama", "phi3", "falcon"):
        model = AutoModelForCausalLM.from_pretrained(tiny_models[arch], dtype=torch.float32).eval()
        out[arch] = (model, AutoTokenizer.from_pretrained(tiny_models[arch]))
    return out


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread; two threads spin against each other on a busy
    2-core machine (measured: 0.7 ms vs 17 ms per step). Restored after the session."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    from kaito_core.testing.tiny_models import build_tiny_model

    root = tmp_path_factory.mktemp("models")
    return {arch: build_tiny_model(root / arch, arch) for arch in ("llama", "phi3", "falcon")}


def make_adapter(base: Path, dest: Path, *, seed: int, targets=("q_proj", "v_proj"), r: int = 4) -> Path:
    """A LoRA adapter with random A and B (B nonzero, so it changes the output), saved as safetensors."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    cfg = LoraConfig(r=r, lora_alpha=2 * r, target_modules=list(targets), init_lora_weights=False,
                     task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, cfg)
    with torch.no_grad():  # make the delta large enough to flip greedy choices of a random model
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.mul_(20.0)
    peft_model.save_pretrained(dest, safe_serialization=True)
    assert (dest / "adapter_model.safetensors").exists()
    return dest


@pytest.fixture(scope="session")
def adapters(tiny_models, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapter")  # the /mnt/adapter/<name> layout
    return {"sql": make_adapter(tiny_models["llama"], root / "sql", seed=1),
            "poet": make_adapter(tiny_models["llama"], root / "poet", seed=2)}


# -- servers -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def server(tiny_models, adapters) -> Iterator[ThreadServer]:
    """The tiny Llama with two adapters (sql at full strength, poet at 0.5), no API key."""
    from kaito_core.runtime.options import AdapterSpec

    srv = start_server(model=str(tiny_models["llama"]), served_model_name="tiny-llama", max_batch=8,
                       max_body_bytes=64 * 1024,
                       adapters=[AdapterSpec("sql", str(adapters["sql"])),
                                 AdapterSpec("poet", str(adapters["poet"]), 0.5)])
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def keyed_server(tiny_models) -> Iterator[ThreadServer]:
    srv = start_server(model=str(tiny_models["llama"]), served_model_name="tiny-llama", api_key="s3cret")
    yield srv
    srv.stop()


# -- OCI registry ----------------------------------------------------------------------------


# -- OpenAI schemas ---------------------------------------------------------------------------


def _nullable_to_2020(node: Any) -> Any:
    """The subset is an OpenAPI document: ``nullable: true`` (OpenAPI 3.0) means 'or null'."""
    if isinstance(node, dict):
        node = {k: _nullable_to_2020(v) for k, v in node.items()}
        if node.pop("nullable", False) is True:
            return {"anyOf": [node, {"type": "null"}]}
        return node
    if isinstance(node, list):
        return [_nullable_to_2020(v) for v in node]
    return node


@pytest.fixture(scope="session")
def openai_schema():
    """``validate(obj, "CreateChatCompletionResponse")`` against the reference subset."""
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    doc = _nullable_to_2020(json.loads(SCHEMA_FILE.read_text()))
    uri = "urn:openai-subset"
    reg = Registry().with_resource(uri, Resource.from_contents(doc, default_specification=DRAFT202012))

    def validate(obj: Any, name: str) -> None:
        assert name in doc["components"]["schemas"], name
        schema = {"$ref": f"{uri}#/components/schemas/{name}"}
        errors = sorted(Draft202012Validator(schema, registry=reg).iter_errors(obj), key=str)
        assert not errors, f"{name}: " + "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5])

    return validate


@pytest.fixture
def make_server():
    """Start servers for one test (``make_server(model=..., ...)``); all stopped afterwards."""
    started: list[ThreadServer] = []

    def make(wait_healthy: bool = True, **kwargs: Any) -> ThreadServer:
        srv = start_server(wait_healthy, **kwargs)
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()


@pytest.fixture(scope="session")
def adapter_maker():
    """``adapter_maker(base_dir, dest, seed=..., targets=(...))`` -> a saved LoRA adapter."""
    return make_adapter


@pytest.fixture
def serve_app():
    """``serve_app(app, wait_healthy=True, timeout=60)``: any ASGI app on a free port, for one test."""
    started: list[ThreadServer] = []

    def serve(app: Any, wait_healthy: bool = True, timeout: float = 60.0) -> ThreadServer:
        srv = ThreadServer(app).start(health=False)
        started.append(srv)
        if wait_healthy:
            wait_http(srv.url + "/health", timeout=timeout)
        return srv

    yield serve
    for srv in started:
        srv.stop()


@pytest.fixture
def unused_port():
    return free_port
