"""The fake ``ray`` Python package the launcher's cluster query imports (``ray.nodes()``,
``ray.cluster_resources()``), answering from the fake ``ray`` command's state."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))

from fakes import state  # noqa: E402

_connected = False


def init(address: str | None = None, **_kwargs) -> None:
    global _connected
    if not any(m["kind"] == "head" and m["node"] == state.node() for m in state.members()):
        raise ConnectionError("Could not find any running Ray instance (fake ray: no head on this node)")
    _connected = True


def nodes() -> list[dict]:
    return [{"Alive": True, "NodeManagerAddress": m["node"], "Resources": {"GPU": float(m["gpus"])}}
            for m in state.members()]


def cluster_resources() -> dict[str, float]:
    return {"GPU": float(sum(m["gpus"] for m in state.members())), "CPU": 16.0}
