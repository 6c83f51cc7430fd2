"""Fixtures for the image tests: parsed Dockerfiles and bake file, a real OCI registry."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "images"
DOCKERFILES = {name: IMAGES / name / "Dockerfile" for name in ("operator", "runtime", "runtime-vllm")}


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [arg for kw, arg in self.instructions if kw == keyword]


def parse_dockerfile(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages): instructions with continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = rest.split()
            base = parts[0]
            for key, value in args.items():
                base = base.replace("${" + key + "}", value)
            stages.append(Stage(base, parts[2] if len(parts) > 2 and parts[1].upper() == "AS" else None))
        elif not stages and keyword == "ARG":
            key, _, value = rest.partition("=")
            args[key] = value.strip('"')
        elif stages:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


@pytest.fixture(scope="session")
def dockerfiles() -> dict[str, list[Stage]]:
    return {name: parse_dockerfile(path)[1] for name, path in DOCKERFILES.items()}


def bake_images() -> dict[str, dict]:
    """target -> {tags, dockerfile} from images/docker-bake.json, variables at their defaults."""
    bake = json.loads((IMAGES / "docker-bake.json").read_text())
    defaults = {k: v["default"] for k, v in bake["variable"].items()}

    def sub(text: str) -> str:
        for key, value in defaults.items():
            text = text.replace("${" + key + "}", value)
        return text

    return {name: {"tags": [sub(t) for t in t_["tags"]], "dockerfile": t_["dockerfile"], "context": t_["context"]}
            for name, t_ in bake["target"].items()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


