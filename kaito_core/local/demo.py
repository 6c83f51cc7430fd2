"""``kaito demo``: the whole flow on this machine, offline, in about a minute.

1. build a tiny phi-3 model with RANDOM weights (no download; its answers are noise);
2. ``kaito up`` an inference Workspace on it and ask a question with the OpenAI client;
3. ``kaito up`` a tuning Workspace: LoRA on a small FAQ, the adapter pushed to a local OCI
   registry (Debian's ``docker-registry``, started on a free loopback port) or, without it,
   written to a directory;
4. ``kaito up`` an inference Workspace serving base + adapter, ask both, show both answers;
5. ``kaito down`` everything and check that no process is left.

The Workspaces are the files in ``examples/local/``; the demo only points their weights,
data and output at its work directory (and the registry), and prints each command it runs.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from kaito_core.errors import KaitoError
from kaito_core.local import processes, state
from kaito_core.local.registry import LocalRegistry, RegistryError, find_binary
from kaito_core.local.up import Printer, UpOptions, up
from kaito_core.local.workspaces import NotRunning, down, get

QUESTION = "What is KAITO?"
REGISTRY_REPO = "kaito-demo/phi-3-faq"
NAMES = ("phi-3-mini", "phi-3-faq-tuning", "phi-3-mini-faq")


class DemoError(KaitoError):
    """The demo could not run; the message says which step and why."""


def examples_dir() -> Path:
    """``examples/local`` of the source checkout this kaito runs from."""
    root = Path(__file__).resolve().parents[2]
    path = root / "examples" / "local"
    if not (path / "phi-3-inference.yaml").is_file():
        raise DemoError(f"{path}: the demo's Workspaces are not there; `kaito demo` runs from a source checkout "
                        "(git clone ... && make demo)")
    return path


def start_registry(work: Path) -> LocalRegistry | None:
    """Start ``docker-registry`` on a free 127.0.0.1 port, or None when it is not installed."""
    if find_binary() is None:
        return None
    try:
        return LocalRegistry(work / "registry", log_level="warn").start()
    except RegistryError as exc:
        raise DemoError(str(exc)) from None


def ask(endpoint: str, model: str, question: str, max_tokens: int = 32) -> str:
    """One chat completion, greedy, through the OpenAI client (plain HTTP when it is not installed)."""
    messages = [{"role": "user", "content": question}]
    try:
        from openai import OpenAI
    except ImportError:
        body = json.dumps({"model": model, "messages": messages, "max_tokens": max_tokens,
                           "temperature": 0}).encode()
        req = urllib.request.Request(f"{endpoint}/v1/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310 - loopback
            return json.loads(resp.read())["choices"][0]["message"]["content"]
    client = OpenAI(base_url=f"{endpoint}/v1", api_key="unused-locally", timeout=60, max_retries=0)
    reply = client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens, temperature=0)
    return reply.choices[0].message.content or ""


def _yaml_docs(path: Path) -> list[dict[str, Any]]:
    import yaml

    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _write(path: Path, docs: list[dict[str, Any]]) -> Path:
    import yaml

    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


@dataclass
class Demo:
    work: Path
    out: TextIO | None = None
    use_registry: bool = True
    started: list[str] = field(default_factory=list)
    stopped_pids: list[int] = field(default_factory=list)
    answers: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.p = Printer(self.out)

    def step(self, title: str) -> None:
        self.p("")
        self.p(f"== {title}")

    def cmd(self, text: str) -> None:
        self.p(f"$ {text}")

    def up(self, path: Path, weights: Path, label: str) -> Any:
        self.cmd(f"kaito up {path} --weights {weights}")
        t0 = time.monotonic()
        result = up(UpOptions(file=str(path), weights=str(weights)), out=self.out)
        self.timings[label] = time.monotonic() - t0
        self.started.append(result.name)
        return result

    def down(self, name: str) -> None:
        self.cmd(f"kaito down {name}")
        try:
            pids = down(get(name))
        except NotRunning:
            return
        if name in self.started:
            self.started.remove(name)
        self.stopped_pids += pids
        self.p(f"{name}: stopped pid(s) {', '.join(map(str, pids)) or 'none (it had finished)'}; state removed")

    def run(self) -> int:
        t_start = time.monotonic()
        src = examples_dir()
        self.work.mkdir(parents=True, exist_ok=True)
        for name in NAMES:  # a previous demo that was interrupted
            try:
                down(get(name))
            except NotRunning:
                pass
        self.p("kaito demo: everything runs on this machine, offline (no cluster, no model download).")
        self.p(f"work directory: {self.work}")

        self.step("1. a tiny phi-3 model with RANDOM weights (its answers are meaningless text)")
        from transformers.utils import logging as hf_logging

        from kaito_core.testing.tiny_models import build_tiny_model

        hf_logging.disable_progress_bar()  # the model is under 1 MiB: no bar for writing it

        t0 = time.monotonic()
        weights = build_tiny_model(self.work / "phi-3-tiny-random", "phi3")
        self.timings["build model"] = time.monotonic() - t0
        self.p(f"built {weights} in {self.timings['build model']:.1f}s: Phi3ForCausalLM, hidden 64, 2 layers, "
               "random weights; it stands in for phi-3-mini-4k-instruct's 7.6 GB of weights")

        registry = start_registry(self.work) if self.use_registry else None
        try:
            return self._flow(src, weights, registry, t_start)
        finally:
            for name in list(self.started):
                try:
                    down(get(name))
                except (NotRunning, RuntimeError):
                    pass
            if registry is not None:
                registry.stop()

    def _flow(self, src: Path, weights: Path, registry: LocalRegistry | None, t_start: float) -> int:
        self.step("2. serve the model: kaito up an inference Workspace")
        inference = src / "phi-3-inference.yaml"
        base = self.up(inference, weights, "up inference")
        self.cmd(f"python: OpenAI(base_url='{base.endpoint}/v1').chat.completions.create(model='{base.model}', ...)")
        answer = ask(str(base.endpoint), str(base.model), QUESTION)
        self.answers["base (first run)"] = answer
        self.p(f"Q: {QUESTION}\nA ({base.model}, random weights): {answer!r}")
        self.cmd("kaito ps")
        self._ps()

        self.step("3. tune a LoRA adapter: kaito up a tuning Workspace")
        tuning_docs = _yaml_docs(src / "phi-3-tuning.yaml")
        ws = next(d for d in tuning_docs if d.get("kind") == "Workspace")
        ws["tuning"]["input"] = {"volumeSource": {"hostPath": {"path": str((src / "data" / "kaito-faq.jsonl").resolve())}}}
        adapter_dir = self.work / "adapters" / "phi-3-faq"
        if registry is not None:
            target = f"{registry.host}/{REGISTRY_REPO}:0.0.1"
            # The push Secret names the cluster's credentials; a loopback registry needs none.
            ws["tuning"]["output"] = {"image": target, "imagePushSecret": "unused-locally"}
            self.p(f"docker-registry is installed: the adapter goes to a local OCI registry at {registry.host} "
                   f"(pid {registry.proc.pid})")
            source: dict[str, Any] = {"name": "phi-3-faq", "image": target}
        else:
            target = str(adapter_dir)
            shutil.rmtree(adapter_dir, ignore_errors=True)
            ws["tuning"]["output"] = {"volumeSource": {"hostPath": {"path": target}}}
            why = ("--no-registry" if not self.use_registry else
                   "docker-registry is not installed (apt-get install docker-registry)")
            self.p(f"{why}: the adapter goes to a directory, {target}")
            source = {"name": "phi-3-faq", "volumeSource": {"hostPath": {"path": target}}}
        tuning_file = _write(self.work / "phi-3-tuning.yaml", tuning_docs)
        self.p(f"({tuning_file} is {src / 'phi-3-tuning.yaml'} with its data and output set for this machine)")
        tuned = self.up(tuning_file, weights, "tune")

        self.step("4. serve base + adapter and ask both")
        self.down(base.name)
        adapter_docs = _yaml_docs(src / "phi-3-with-adapter.yaml")
        aws = next(d for d in adapter_docs if d.get("kind") == "Workspace")
        aws["inference"]["adapters"][0]["source"] = source
        adapter_file = _write(self.work / "phi-3-with-adapter.yaml", adapter_docs)
        served = self.up(adapter_file, weights, "up inference + adapter")
        adapter_name = served.adapters[0]
        for model, label in ((str(served.model), "base model, random weights"),
                             (adapter_name, f"base + LoRA adapter from {tuned.output}")):
            self.cmd(f"python: client.chat.completions.create(model='{model}', messages=[...{QUESTION!r}])")
            self.answers[model] = ask(str(served.endpoint), model, QUESTION)
        self.p("")
        self.p(f"Q: {QUESTION}")
        self.p(f"A from {served.model} (base model, random weights): {self.answers[str(served.model)]!r}")
        self.p(f"A from {adapter_name} (base + the LoRA adapter tuned on {src / 'data' / 'kaito-faq.jsonl'}): "
               f"{self.answers[adapter_name]!r}")
        self.cmd("kaito ps")
        self._ps()

        self.step("5. clean up: kaito down")
        for name in list(self.started):
            self.down(name)
        left = [pid for pid in self.stopped_pids if processes.alive(pid)]
        if left:
            raise DemoError(f"processes still running after kaito down: {left}")
        self.p(f"no process is left running (checked pids {', '.join(map(str, self.stopped_pids))})")
        total = time.monotonic() - t_start
        self.timings["total"] = total
        self.p("")
        self.p("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items()))
        self.p("Next: docs/local.md (your own models with --weights), `kaito plan` for a cluster, docs for Helm.")
        return 0

    def _ps(self) -> None:
        from kaito_core.local.ps import ps_lines

        for line in ps_lines():
            self.p(line)


def default_workdir() -> Path:
    return state.state_root().parent / "demo"
