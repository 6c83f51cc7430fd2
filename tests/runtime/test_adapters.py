"""LoRA adapters: selection by model name, strength, mixed batches, admin load/unload behind the
API key, pickle refusal, and adapters pulled from a real OCI registry."""

from __future__ import annotations

import concurrent.futures as cf
import shutil

import httpx
import openai
import pytest

from kaito_core.runtime import pull_adapter, push_adapter


def greedy(url, model, prompt="The operator reconciles", n=16, headers=None):
    r = httpx.post(url + "/v1/completions", json={"model": model, "prompt": prompt, "max_tokens": n,
                                                  "temperature": 0, "ignore_eos": True},
                   headers=headers or {}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["text"]


def test_adapter_selected_by_model_name_changes_output(server):
    base = greedy(server.url, "tiny-llama")
    sql = greedy(server.url, "sql")
    poet = greedy(server.url, "poet")
    assert sql != base and poet != base and sql != poet
    assert greedy(server.url, "sql") == sql  # and is stable


def test_mixed_adapters_in_one_batch_match_alone(server):
    models = ["tiny-llama", "sql", "poet", "sql", "tiny-llama", "poet"]
    alone = {m: greedy(server.url, m) for m in set(models)}
    engine = server.service.engine
    with cf.ThreadPoolExecutor(len(models)) as pool:
        together = list(pool.map(lambda m: greedy(server.url, m), models))
    assert together == [alone[m] for m in models]
    assert engine.max_batch_seen >= 2


def test_strength_zero_is_the_base_model_and_half_differs(keyed_server, adapters):
    url, key = keyed_server.url, {"Authorization": "Bearer s3cret"}
    for name, strength in (("zero", 0.0), ("half", 0.5), ("full", 1.0)):
        r = httpx.post(url + "/admin/adapters", json={"name": name, "source": str(adapters["sql"]),
                                                      "strength": strength}, headers=key)
        assert r.status_code == 201, r.text
        assert r.json()["strength"] == strength
    try:
        base = greedy(url, "tiny-llama", headers=key)
        assert greedy(url, "zero", headers=key) == base
        half, full = greedy(url, "half", headers=key), greedy(url, "full", headers=key)
        assert half != full and half != base
    finally:
        for name in ("zero", "half", "full"):
            assert httpx.delete(url + f"/admin/adapters/{name}", headers=key).status_code == 200


def test_admin_routes_need_the_api_key(keyed_server, server, adapters):
    url = keyed_server.url
    body = {"lora_name": "x1", "lora_path": str(adapters["poet"])}
    assert httpx.post(url + "/v1/load_lora_adapter", json=body).status_code == 401
    assert httpx.post(url + "/v1/load_lora_adapter", json=body,
                      headers={"Authorization": "Bearer wrong"}).status_code == 401
    # a server without a key refuses admin routes altogether
    r = httpx.post(server.url + "/v1/load_lora_adapter", json=body)
    assert r.status_code == 403 and "--api-key" in r.json()["error"]["message"]


def test_load_use_unload_through_vllm_style_routes(keyed_server, adapters):
    url, key = keyed_server.url, {"Authorization": "Bearer s3cret"}
    client = openai.OpenAI(base_url=url + "/v1", api_key="s3cret", max_retries=0)
    r = httpx.post(url + "/v1/load_lora_adapter", json={"lora_name": "poet2", "lora_path": str(adapters["poet"])},
                   headers=key)
    assert r.status_code == 200, r.text
    assert "poet2" in [m.id for m in client.models.list()]
    out = client.completions.create(model="poet2", prompt="Hi", max_tokens=3, extra_body={"ignore_eos": True})
    assert out.model == "poet2" and out.usage.completion_tokens == 3
    again = httpx.post(url + "/v1/load_lora_adapter", json={"lora_name": "poet2", "lora_path": str(adapters["poet"])},
                       headers=key)
    assert again.status_code == 409
    assert httpx.post(url + "/v1/unload_lora_adapter", json={"lora_name": "poet2"}, headers=key).status_code == 200
    assert "poet2" not in [m.id for m in client.models.list()]
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="poet2", prompt="Hi", max_tokens=3)
    missing = httpx.post(url + "/v1/unload_lora_adapter", json={"lora_name": "poet2"}, headers=key)
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "lora_name"


@pytest.mark.parametrize("body,param", [
    ({"name": "bad name!", "source": "/tmp"}, "name"),
    ({"name": "ok"}, "source"),
    ({"name": "ok", "source": "/definitely/not/here"}, "source"),
    ({"name": "ok", "source": "/tmp", "strength": 3}, "strength"),
    ({"source": "/tmp"}, "name"),
])
def test_admin_bad_input(keyed_server, body, param):
    r = httpx.post(keyed_server.url + "/admin/adapters", json=body, headers={"Authorization": "Bearer s3cret"})
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["error"]["param"] == param


def test_adapter_for_another_architecture_is_refused(keyed_server, tiny_models, tmp_path, adapter_maker):
    path = adapter_maker(tiny_models["phi3"], tmp_path / "phi", seed=3, targets=("qkv_proj", "o_proj"))
    r = httpx.post(keyed_server.url + "/admin/adapters", json={"name": "phi", "source": str(path)},
                   headers={"Authorization": "Bearer s3cret"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "adapter_load_failed", r.text
    assert greedy(keyed_server.url, "tiny-llama", headers={"Authorization": "Bearer s3cret"})  # still serving


def test_pickle_adapter_refused_unless_allowed(keyed_server, adapters, tmp_path):
    import torch
    from safetensors.torch import load_file

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(adapters["sql"] / "adapter_config.json", pickled)
    torch.save(load_file(adapters["sql"] / "adapter_model.safetensors"), pickled / "adapter_model.bin")
    r = httpx.post(keyed_server.url + "/admin/adapters", json={"name": "pk", "source": str(pickled)},
                   headers={"Authorization": "Bearer s3cret"})
    assert r.status_code == 400 and "pickle" in r.json()["error"]["message"]


def test_adapters_dir_layout_with_env_strength(tiny_models, adapters, make_server, monkeypatch):
    """Upstream's /mnt/adapter/<name> layout; strength from --adapter-strength, else from an env
    var named like the adapter (upstream's transformers server), else 1."""
    monkeypatch.setenv("poet", "0.0")
    monkeypatch.setenv("sql", "0.0")
    srv = make_server(model=str(tiny_models["llama"]), adapters_dir=str(adapters["sql"].parent),
                      adapter_strengths={"sql": 1.0})
    ids = [m["id"] for m in httpx.get(srv.url + "/v1/models").json()["data"]]
    assert set(ids) >= {"poet", "sql"}
    base = greedy(srv.url, ids[0])
    assert greedy(srv.url, "poet") == base  # strength 0 from the environment
    assert greedy(srv.url, "sql") != base   # the flag wins over the environment


def test_oci_adapter_push_pull_and_serve_by_reference(registry, adapters, tiny_models, make_server, tmp_path,
                                                      server):
    ref = f"{registry}/adapters/sql:v1"
    digest = push_adapter(adapters["sql"], ref)
    assert digest.startswith("sha256:")
    pulled = pull_adapter(ref, tmp_path / "pulled")
    assert (pulled / "adapter_config.json").is_file() and (pulled / "adapter_model.safetensors").is_file()
    weights = "adapter_model.safetensors"
    assert (pulled / weights).read_bytes() == (adapters["sql"] / weights).read_bytes()

    from kaito_core.runtime.options import AdapterSpec

    srv = make_server(model=str(tiny_models["llama"]), served_model_name="tiny-llama",
                      adapters=[AdapterSpec("sql-oci", ref)])
    assert "sql-oci" in [m["id"] for m in httpx.get(srv.url + "/v1/models").json()["data"]]
    assert greedy(srv.url, "sql-oci") == greedy(server.url, "sql")


def test_oci_pull_of_a_directory_layer(registry, adapters, tmp_path):
    """Artifacts pushed as one directory layer (``oras push ref dir/``) unpack to the same files."""
    import oras.client

    client = oras.client.OrasClient(hostname=registry, insecure=True)
    ref = f"{registry}/adapters/poet-dir:v1"
    client.push(target=ref, files=[str(adapters["poet"])], disable_path_validation=True)
    pulled = pull_adapter(ref, tmp_path / "poet")
    assert (pulled / "adapter_config.json").is_file()


def test_oci_missing_reference_is_a_clear_error(registry, keyed_server):
    r = httpx.post(keyed_server.url + "/admin/adapters",
                   json={"name": "ghost", "source": f"{registry}/adapters/ghost:v9"},
                   headers={"Authorization": "Bearer s3cret"})
    assert r.status_code == 400
    assert "adapters/ghost:v9" in r.json()["error"]["message"]


def test_unloading_an_adapter_in_use_is_409(keyed_server, adapters):
    import threading
    import time

    url, key = keyed_server.url, {"Authorization": "Bearer s3cret"}
    engine = keyed_server.service.engine
    assert httpx.post(url + "/admin/adapters", json={"name": "busy", "source": str(adapters["sql"])},
                      headers=key).status_code == 201
    gate = threading.Event()
    blocker = threading.Thread(target=engine.call, args=(lambda: gate.wait(30),))
    blocker.start()  # hold the engine between steps so the request is still waiting when we unload
    with cf.ThreadPoolExecutor(2) as pool:
        use = pool.submit(greedy, url, "busy", "Hi", 4, key)
        deadline = time.monotonic() + 10
        while not engine.waiting and time.monotonic() < deadline:
            time.sleep(0.01)
        unload = pool.submit(httpx.delete, url + "/admin/adapters/busy", headers=key, timeout=30)
        while not engine.commands and time.monotonic() < deadline:  # the unload is queued behind us
            time.sleep(0.01)
        gate.set()
        refused = unload.result()
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["code"] == "adapter_in_use"
        assert use.result()  # the request that held the adapter was served
    blocker.join(5)
    assert httpx.delete(url + "/admin/adapters/busy", headers=key).status_code == 200


def test_an_unreachable_adapter_registry_does_not_hold_the_admin_lock(tiny_models, adapters, make_server):
    """A registry that accepts connections and never answers: the pull gives up at
    --adapter-fetch-timeout (504), and other admin calls go through meanwhile."""
    import socket
    import threading
    import time

    black_hole = socket.socket()
    black_hole.bind(("127.0.0.1", 0))
    black_hole.listen(16)
    port = black_hole.getsockname()[1]
    srv = make_server(model=str(tiny_models["llama"]), api_key="k", adapter_fetch_timeout=2.0)
    key = {"Authorization": "Bearer k"}
    result: dict = {}

    def pull() -> None:
        t0 = time.monotonic()
        r = httpx.post(srv.url + "/admin/adapters", headers=key, timeout=60,
                       json={"name": "remote", "source": f"127.0.0.1:{port}/adapters/remote:v1"})
        result.update(status=r.status_code, body=r.json(), took=time.monotonic() - t0, done=time.monotonic())

    try:
        t = threading.Thread(target=pull)
        t.start()
        time.sleep(0.3)  # the pull is now waiting on the black hole
        r = httpx.post(srv.url + "/admin/adapters", headers=key, timeout=60,
                       json={"name": "sql", "source": str(adapters["sql"])})
        local_done = time.monotonic()
        assert r.status_code == 201, r.text
        dup = httpx.post(srv.url + "/admin/adapters", headers=key, timeout=60,
                         json={"name": "remote", "source": str(adapters["sql"])})
        assert dup.status_code == 409  # the name is reserved while its pull runs
        t.join(60)
    finally:
        black_hole.close()
    assert local_done < result["done"], "the local load waited for the unreachable pull"
    assert result["status"] == 504 and result["body"]["error"]["code"] == "adapter_fetch_timeout", result
    assert result["took"] < 30
    assert "remote" not in httpx.get(srv.url + "/admin/adapters", headers=key).text
