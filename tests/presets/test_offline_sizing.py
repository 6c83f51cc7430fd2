"""Every installed preset is sized from its own facts: no network, no config.json, no hub."""

from __future__ import annotations

import socket

import pytest

from kaito_core import hints, sizing
from kaito_core.plugins import get_registry


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access during sizing: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def _family_presets():
    reg = get_registry()
    return [reg.presets[n] for f in hints.FAMILIES for n in reg.plugins[f.entry].registered["presets"]]


@pytest.mark.parametrize("preset", _family_presets(), ids=lambda p: p.name)
def test_sizes_offline_on_the_catalog(preset, no_network):
    reg = get_registry()
    assert reg.get_preset(preset.name) is preset
    best = sizing.place(preset, reg.instance_types)
    assert best.ok, best.errors
    assert best.per_gpu_required_gib <= best.per_gpu_usable_gib and best.disk_gib >= preset.weight_gib + 80
    for it in reg.instance_types:  # every type gets an answer: a placement or errors that name a fix
        req = sizing.place(preset, reg.instance_types, instance_type=it)
        assert req.ok or req.errors


def test_mixture_of_experts_weights_dominate_and_their_kv_stays_small(no_network):
    reg = get_registry()
    for name, weights_gib in (("deepseek-r1-0528", 641.3), ("mistral-large-3-675b-instruct", 634.7),
                              ("gpt-oss-120b", 60.77)):
        est = sizing.estimate(reg.get_preset(name), max_model_len=32768)
        assert est.weights_gib == pytest.approx(weights_gib, abs=0.01)
        assert est.kv_cache_gib < 0.04 * est.weights_gib, (name, est.kv_cache_gib)
