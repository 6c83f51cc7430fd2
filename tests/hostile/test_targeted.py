"""Hand-picked hostile values, each with the field and the words its refusal must carry, through
`kaito plan` (in process) and the admission webhook: names failing DNS-1123, bad quantities,
label selector operators, preset names with path tricks, URLs with credentials or file://,
adapters with bad strength or source, tuning with bad method or config, wrong apiVersion/kind,
NUL and surrogates, 10 MB values."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kaito_core.plugins import get_registry

from tests.hostile.check import CRASH_MARKS, cli, review, surrogate_line, write
from tests.hostile.corpus import names_path

BASE = {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "ws"},
        "resource": {"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {"matchLabels": {"apps": "x"}}},
        "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}}}
TUNE = {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "t"},
        "resource": {"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {"matchLabels": {"apps": "t"}}},
        "tuning": {"preset": {"name": "phi-3-mini-4k-instruct"}, "method": "qlora",
                   "input": {"urls": ["https://example.com/data.parquet"]},
                   "output": {"image": "registry.example.com/adapters/phi:1", "imagePushSecret": "push"}}}
HUGE = 10_000_000


def ws(base: dict, **edits: Any) -> dict:
    """``base`` with ``a__b__c=value`` edits (``__`` separates keys; digits index lists)."""
    out = copy.deepcopy(base)
    for key, value in edits.items():
        *parents, last = key.split("__")
        obj: Any = out
        for part in parents:
            obj = obj[int(part)] if part.isdigit() else obj.setdefault(part, {})
        obj[last] = value
    return out


def template(container: dict) -> dict:
    return {"template": {"spec": {"containers": [{"name": "c", "image": "r.io/c:1", **container}]}}}


def adapter(**source: Any) -> list:
    strength = source.pop("strength", None)
    item: dict = {"source": {"name": "ad", **source}}
    if strength is not None:
        item["strength"] = strength
    return [item]


# (id, object, field path the error names, words the message carries)
CASES = [
    ("api-version-unknown", ws(BASE, apiVersion="kaito.sh/v1"), "apiVersion", ["v1beta1", "'kaito.sh/v1'"]),
    ("api-version-int", ws(BASE, apiVersion=1), "apiVersion", ["v1beta1", "got 1"]),
    ("kind-plural", ws(BASE, kind="Workspaces"), "kind", ["'Workspaces'"]),
    ("kind-lowercase", ws(BASE, kind="workspace"), "kind", ["'workspace'"]),
    ("name-dots", ws(BASE, metadata={"name": "a.b"}), "metadata.name", ["DNS-1123", "'a.b'"]),
    ("name-leading-dash", ws(BASE, metadata={"name": "-ws"}), "metadata.name", ["DNS-1123", "'-ws'"]),
    ("name-64", ws(BASE, metadata={"name": "a" * 64}), "metadata.name", ["63 characters"]),
    ("name-unicode", ws(BASE, metadata={"name": "wörk"}), "metadata.name", ["DNS-1123", "'wörk'"]),
    ("name-rtl-override", ws(BASE, metadata={"name": "ws\u202egpj"}), "metadata.name", ["DNS-1123"]),
    ("name-nul", ws(BASE, metadata={"name": "ws\x00x"}), "metadata.name", ["NUL", "'ws\\x00x'"]),
    ("name-surrogate", ws(BASE, metadata={"name": "ws\ud800"}), "metadata.name", ["surrogate"]),
    ("annotation-key-surrogate", ws(BASE, metadata={"name": "ws", "annotations": {"a\udfff": "x"}}),
     "metadata.annotations", ["surrogate"]),
    ("namespace-upper", ws(BASE, metadata={"name": "ws", "namespace": "Prod"}), "metadata.namespace",
     ["DNS-1123", "'Prod'"]),
    ("metadata-label-bad", ws(BASE, metadata={"name": "ws", "labels": {"team": "a b"}}), "metadata.labels.team",
     ["label value", "'a b'"]),
    ("metadata-unknown-field", ws(BASE, metadata={"name": "ws", "nmae": "x"}), "metadata.nmae",
     ["unknown field", "did you mean 'name'"]),
    ("count-float", ws(BASE, resource__count=1.0), "resource.count", ["integer", "1.0"]),
    ("count-bool", ws(BASE, resource__count=True), "resource.count", ["integer", "True"]),
    ("count-string", ws(BASE, resource__count="2"), "resource.count", ["integer", "'2'"]),
    ("count-negative", ws(BASE, resource__count=-5), "resource.count", ["at least 1", "-5"]),
    ("count-huge", ws(BASE, resource__count=10**30), "resource.count", ["at most 100", "1" + "0" * 30]),
    ("selector-operator-lowercase",
     ws(BASE, resource__labelSelector={"matchExpressions": [{"key": "a", "operator": "in", "values": ["x"]}]}),
     "resource.labelSelector.matchExpressions[0].operator", ["'In'", "'in'"]),
    ("selector-operator-gt",
     ws(BASE, resource__labelSelector={"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}),
     "resource.labelSelector.matchExpressions[0].operator", ["'Gt'"]),
    ("selector-exists-with-values",
     ws(BASE, resource__labelSelector={"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["1"]}]}),
     "resource.labelSelector.matchExpressions[0].values", ["must be empty"]),
    ("selector-values-string",
     ws(BASE, resource__labelSelector={"matchExpressions": [{"key": "a", "operator": "In", "values": "x"}]}),
     "resource.labelSelector.matchExpressions[0].values", ["list", "'x'"]),
    ("selector-value-bad",
     ws(BASE, resource__labelSelector={"matchExpressions": [{"key": "a", "operator": "In", "values": ["a b"]}]}),
     "resource.labelSelector.matchExpressions[0].values[0]", ["label value", "'a b'"]),
    ("selector-key-bad",
     ws(BASE, resource__labelSelector={"matchExpressions": [{"key": "-a", "operator": "Exists"}]}),
     "resource.labelSelector.matchExpressions[0].key", ["label key", "'-a'"]),
    ("selector-huge-key", ws(BASE, resource__labelSelector={"matchLabels": {"k" * HUGE: "x"}}),
     "resource.labelSelector.matchLabels", ["label key", "..."]),
    ("partition-mode", ws(BASE, resource__partition={"mode": "magic"}), "resource.partition.mode",
     ["mig", "'magic'"]),
    ("quantity-gb", ws(BASE, inference=template({"resources": {"limits": {"memory": "1gb"}}})),
     "inference.template.spec.containers[0].resources.limits[memory]", ["quantity", "'1gb'"]),
    ("quantity-space", ws(BASE, inference=template({"resources": {"requests": {"cpu": "1 k"}}})),
     "inference.template.spec.containers[0].resources.requests[cpu]", ["quantity", "'1 k'"]),
    ("quantity-fraction-gpu", ws(BASE, inference=template({"resources": {"limits": {"nvidia.com/gpu": "0.5"}}})),
     "inference.template.spec.containers[0].resources.limits[nvidia.com/gpu]", ["whole number", "'0.5'"]),
    ("template-args-numbers", ws(BASE, inference=template({"args": ["--port", 80]})),
     "inference.template.spec.containers[0].args", ["list of strings"]),
    ("template-containers-map", ws(BASE, inference={"template": {"spec": {"containers": {"name": "c"}}}}),
     "inference.template.spec.containers", ["non-empty list"]),
    ("template-env-value-int", ws(BASE, inference=template({"env": [{"name": "A", "value": 1}]})),
     "inference.template.spec.containers[0].env[0].value", ["string", "got 1"]),
    ("preset-dotdot", ws(BASE, inference__preset__name="../../etc/passwd"), "inference.preset.name",
     ["not a known preset", "'../../etc/passwd'"]),
    ("preset-absolute", ws(BASE, inference__preset__name="/etc/passwd"), "inference.preset.name",
     ["not a known preset", "'/etc/passwd'"]),
    ("preset-org-dotdot", ws(BASE, inference__preset__name="org/../../x"), "inference.preset.name",
     ["not a known preset", "'org/../../x'"]),
    ("preset-file-url", ws(BASE, inference__preset__name="file:///etc/passwd"), "inference.preset.name",
     ["not a known preset", "'file:///etc/passwd'"]),
    ("preset-home", ws(BASE, inference__preset__name="~root/.ssh"), "inference.preset.name",
     ["not a known preset", "'~root/.ssh'"]),
    ("preset-huge", ws(BASE, inference__preset__name="x" * HUGE), "inference.preset.name",
     ["at most 253 characters", f"{HUGE} characters"]),
    ("preset-image-credentials", ws(BASE, inference__preset__presetOptions={"image": "u:p@r.io/x:1"}),
     "inference.preset.presetOptions.image", ["image reference", "'u:p@r.io/x:1'"]),
    ("adapter-url-file", ws(BASE, inference__adapters=adapter(urls=["file:///etc/passwd"])),
     "inference.adapters[0].source.urls[0]", ["http or https", "'file:///etc/passwd'"]),
    ("adapter-url-credentials", ws(BASE, inference__adapters=adapter(urls=["https://u:p@example.com/a"])),
     "inference.adapters[0].source.urls[0]", ["credentials"]),
    ("adapter-strength-nan", ws(BASE, inference__adapters=adapter(image="r.io/a:1", strength="nan")),
     "inference.adapters[0].strength", ["between 0 and 1", "'nan'"]),
    ("adapter-strength-inf", ws(BASE, inference__adapters=adapter(image="r.io/a:1", strength="-inf")),
     "inference.adapters[0].strength", ["between 0 and 1", "'-inf'"]),
    ("adapter-strength-number", ws(BASE, inference__adapters=adapter(image="r.io/a:1", strength=0.5)),
     "inference.adapters[0].strength", ["string", "0.5"]),
    ("adapter-source-string", ws(BASE, inference__adapters=[{"source": "r.io/a:1"}]),
     "inference.adapters[0].source", ["mapping", "'r.io/a:1'"]),
    ("adapter-two-sources", ws(BASE, inference__adapters=adapter(image="r.io/a:1", urls=["https://e.com/a"])),
     "inference.adapters[0].source", ["exactly one"]),
    ("adapter-volume-hostpath-many", ws(BASE, inference__adapters=adapter(volumeSource={"hostPath": {}, "nfs": {}})),
     "inference.adapters[0].source.volumeSource", ["exactly one volume type"]),
    ("tuning-method-full", ws(TUNE, tuning__method="full"), "tuning.method", ["'lora' or 'qlora'", "'full'"]),
    ("tuning-method-int", ws(TUNE, tuning__method=4), "tuning.method", ["string", "got 4"]),
    ("tuning-config-path", ws(TUNE, tuning__config="../x"), "tuning.config", ["ConfigMap name", "'../x'"]),
    ("tuning-url-file", ws(TUNE, tuning__input={"urls": ["file:///etc/passwd"]}), "tuning.input.urls[0]",
     ["http or https", "'file:///etc/passwd'"]),
    ("tuning-url-credentials", ws(TUNE, tuning__input={"urls": ["https://user@example.com/x"]}),
     "tuning.input.urls[0]", ["credentials"]),
    ("tuning-url-huge", ws(TUNE, tuning__input={"urls": ["https://e.com/" + "a" * HUGE]}), "tuning.input.urls[0]",
     ["at most 2048 characters"]),
    ("tuning-output-digest", ws(TUNE, tuning__output={"image": "r.io/a@sha256:" + "a" * 64, "imagePushSecret": "p"}),
     "tuning.output.image", ["digest"]),
    ("annotations-huge", ws(BASE, metadata={"name": "ws", "annotations": {"note": "v" * HUGE}}),
     "metadata.annotations", ["at most 262144 bytes"]),
    ("runtime-annotation-path", ws(BASE, metadata={"name": "ws", "annotations": {"kaito.sh/runtime": "../vllm"}}),
     "metadata.annotations[kaito.sh/runtime]", ["transformers", "'../vllm'"]),
    ("local-weights-path", ws(BASE, metadata={"name": "ws", "annotations": {"kaito.sh/use-local-weights": "/etc"}}),
     "metadata.annotations[kaito.sh/use-local-weights]", ["true, false", "'/etc'"]),
]


def test_every_kind_of_hostile_value_the_issue_names_is_here():
    ids = " ".join(c[0] for c in CASES)
    for word in ("api-version", "kind", "name-", "quantity", "selector-operator", "preset-dotdot", "file-url",
                 "credentials", "adapter-strength", "adapter-source", "tuning-method", "tuning-config",
                 "nul", "surrogate", "huge"):
        assert word in ids, word
    assert len({c[0] for c in CASES}) == len(CASES)


def _check(text: str, path: str, words: list[str]) -> list[str]:
    bad = [f"crashed: {text[-500:]}" for mark in CRASH_MARKS if mark in text]
    if not names_path(text, path):
        bad.append(f"does not name {path}: {text[-500:]}")
    bad += [f"{w!r} missing: {text[-500:]}" for w in words if w not in text]
    if len(text) > 20_000:
        bad.append(f"{len(text)} characters of output")
    return bad


@pytest.mark.parametrize("name, obj, path, words", CASES, ids=[c[0] for c in CASES])
def test_kaito_plan_refuses_naming_field_and_value(name, obj, path, words, tmp_path):
    f = write(tmp_path, [obj])
    rc, text = cli("plan", str(f))
    assert rc == 1
    line = surrogate_line(f)
    if line is not None:  # libyaml refuses a surrogate escape itself, naming the line
        assert f"not valid YAML at line {line}," in text and "Traceback" not in text
        return
    assert _check(text, path, words) == []




@pytest.mark.parametrize("name, obj, path, words", CASES, ids=[c[0] for c in CASES])
def test_admission_refuses_naming_field_and_value(name, obj, path, words):
    refused, message = review(obj, get_registry())
    assert refused
    assert _check(message, path, words) == []


@pytest.mark.parametrize("metadata", ["x", ["x"], 5])
def test_admission_names_metadata_that_is_not_a_mapping(metadata):
    refused, message = review(ws(BASE, metadata=metadata), get_registry())
    assert refused and message.count("metadata: must be a mapping") == 1


@pytest.mark.parametrize("metadata", ["x", ["x"], 5])
def test_kaito_plan_names_metadata_that_is_not_a_mapping(metadata, tmp_path):
    rc, text = cli("plan", str(write(tmp_path, [ws(BASE, metadata=metadata)])))
    assert rc == 1 and _check(text, "metadata", ["must be a mapping", repr(metadata)]) == []


# -- the ConfigMaps a Workspace names -------------------------------------------------------

WITH_CONFIG = ("apiVersion: kaito.sh/v1beta1\nkind: Workspace\nmetadata: {name: ws}\n"
               "resource: {instanceType: Standard_NC24ads_A100_v4, labelSelector: {matchLabels: {apps: x}}}\n"
               "inference: {preset: {name: phi-3-mini-4k-instruct}, config: cfg}\n---\n"
               "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\n")
LAUGHS = "vllm:\n  l0: &l0 [1,1,1,1,1,1,1,1,1]\n" + "".join(
    f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 8)) + "  max-num-seqs: *l7\n"
CONFIGS = [
    # (id, the ConfigMap's data as YAML, field path, words)
    ("data-not-string", "data: {inference_config.yaml: 5}\n", "data.inference_config.yaml", ["string", "got 5"]),
    ("data-not-mapping", "data: [1]\n", "data", ["mapping"]),
    ("key-missing", "data: {other: x}\n", "inference.config", ["no key 'inference_config.yaml'"]),
    ("not-yaml", "data: {inference_config.yaml: 'vllm: [x'}\n", "inference.config", ["not valid YAML"]),
    ("vllm-not-mapping", "data: {inference_config.yaml: 'vllm: [1, 2]'}\n", "inference.config", ["mapping"]),
    ("tp-word", "data: {inference_config.yaml: 'vllm: {tensor-parallel-size: two}'}\n", "inference.config",
     ["vllm.tensor-parallel-size is 'two'", "integer from 1 to 1024"]),
    ("tp-huge", "data: {inference_config.yaml: 'vllm: {tensor-parallel-size: 100000000000000000000}'}\n",
     "inference.config", ["vllm.tensor-parallel-size is 100000000000000000000"]),
    ("tp-bool", "data: {inference_config.yaml: 'vllm: {tensor-parallel-size: true}'}\n", "inference.config",
     ["vllm.tensor-parallel-size is True"]),
    ("max-model-len-negative", "data: {inference_config.yaml: 'vllm: {max-model-len: -5}'}\n", "inference.config",
     ["vllm.max-model-len is -5"]),
    ("alias-bomb", "data:\n  inference_config.yaml: |\n" + "".join(f"    {line}\n" for line in LAUGHS.splitlines()),
     "inference.config", ["aliases", "bomb"]),
    ("duplicate-key", "data:\n  inference_config.yaml: |\n    vllm: {a: 1}\n    vllm: {b: 2}\n", "inference.config",
     ["duplicate key 'vllm'"]),
    ("nul", 'data: {inference_config.yaml: "vllm: {}\\0"}\n', "data.inference_config.yaml", ["NUL"]),
]


@pytest.mark.parametrize("name, data, path, words", CONFIGS, ids=[c[0] for c in CONFIGS])
@pytest.mark.parametrize("command", ["plan", "render", "validate"])
def test_a_hostile_configmap_is_refused_naming_its_key(name, data, path, words, command, tmp_path):
    f = tmp_path / "ws.yaml"
    f.write_text(WITH_CONFIG + data)
    rc, text = cli(command, str(f))
    assert rc == 1
    assert _check(text, path, words) == []


def test_admission_with_the_default_policy_names_a_template_spec_that_is_not_a_mapping():
    from kaito_core.operator import admission

    body = ws(BASE, inference={"template": {"spec": "x"}})
    with pytest.raises(admission.Rejection, match=r"inference\.template\.spec: must be a mapping"):
        admission.review(body, old=None, registry=get_registry(), policy=admission.Policy())


@pytest.mark.parametrize("value, tokens", [("2k", 2000), ("2K", 2048), ("'2048'", 2048), (2048, 2048)])
def test_vllm_reads_human_readable_context_lengths_and_so_does_the_planner(value, tokens, tmp_path):
    """vLLM's --max-model-len takes "2k" (2,000) and "2K" (2,048) (arg_utils.human_readable_int):
    accepted, and sized with the number vLLM will use, not refused or silently ignored."""
    f = tmp_path / "ws.yaml"
    f.write_text(WITH_CONFIG + f"data:\n  inference_config.yaml: |\n    vllm:\n      max-model-len: {value}\n")
    rc, text = cli("plan", str(f))
    assert rc == 0, text
    assert f"max-model-len {tokens} from the workspace's config" in text


def test_what_kubectl_get_prints_plans_as_the_workspace_it_holds(tmp_path):
    """`kubectl get workspace x -o json` (status, managedFields, escaped '/') and `-o yaml` of
    several objects (a v1 List) are read as the Workspaces they hold."""
    import json

    import yaml

    obj = ws(BASE, metadata={"name": "ws", "uid": "0b1c", "resourceVersion": "7", "generation": 2,
                             "creationTimestamp": "2026-01-01T00:00:00Z",
                             "managedFields": [{"manager": "kubectl", "operation": "Update"}]},
             status={"conditions": [{"type": "Ready", "status": "True", "reason": "x", "message": "y",
                                     "lastTransitionTime": "2026-01-01T00:00:00Z"}]})
    as_json = tmp_path / "get.json"
    as_json.write_text(json.dumps(obj).replace("/", "\\/"))
    as_list = tmp_path / "list.yaml"
    as_list.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [obj, ws(TUNE)]}))
    for f, names in ((as_json, ["ws"]), (as_list, ["ws", "t"])):
        rc, text = cli("plan", "-o", "json", str(f))
        assert rc == 0, text
        assert [row["name"] for row in json.loads(text)] == names


TRAINING = ("apiVersion: kaito.sh/v1beta1\nkind: Workspace\nmetadata: {name: t}\n"
            "resource: {instanceType: Standard_NC24ads_A100_v4, labelSelector: {matchLabels: {apps: t}}}\n"
            "tuning: {preset: {name: phi-3-mini-4k-instruct}, method: lora, config: tc,\n"
            "  input: {urls: ['https://example.com/d.csv']}, output: {volumeSource: {emptyDir: {}}}}\n---\n"
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: tc}\ndata:\n  training_config.yaml: |\n"
            "    training_config:\n")
TRAININGS = [
    ("rank-huge", "      LoraConfig: {r: 1000000000000000000000}\n", "training_config.LoraConfig.r", "at most 4096"),
    ("rank-bool", "      LoraConfig: {r: true}\n", "training_config.LoraConfig.r", "must be an integer (got True)"),
    ("epochs-huge", "      TrainingArguments: {num_train_epochs: 1000000000000}\n",
     "training_config.TrainingArguments.num_train_epochs", "at most 10000"),
    ("epochs-inf", "      TrainingArguments: {num_train_epochs: .inf}\n",
     "training_config.TrainingArguments.num_train_epochs", "positive number"),
    ("batch-huge", "      TrainingArguments: {per_device_train_batch_size: 1000000000000}\n",
     "training_config.TrainingArguments.per_device_train_batch_size", "at most 4096"),
    ("learning-rate-word", "      TrainingArguments: {learning_rate: fast}\n",
     "training_config.TrainingArguments.learning_rate", "number"),
    ("section-list", "      LoraConfig: [1]\n", "training_config.LoraConfig", "mapping"),
]


@pytest.mark.parametrize("name, body, key, words", TRAININGS, ids=[t[0] for t in TRAININGS])
@pytest.mark.parametrize("command", ["plan", "validate"])
def test_a_hostile_training_config_is_refused_naming_its_key(name, body, key, words, command, tmp_path):
    f = tmp_path / "tune.yaml"
    f.write_text(TRAINING + body)
    rc, text = cli(command, str(f))
    assert rc == 1
    assert _check(text, "tuning.config", [key, words]) == []


@pytest.mark.parametrize("depth", [150, 5000])
def test_admission_refuses_json_nested_deeper_than_any_workspace(depth):
    """The API server's JSON has no YAML reader in front: the depth is bounded by parsing too."""
    deep: list = []
    cur = deep
    for _ in range(depth):
        cur.append([])
        cur = cur[0]
    refused, message = review(ws(BASE, inference=template({"args": ["a"]}), spare=deep), get_registry())
    assert refused and "nested more than 100 levels deep" in message and "spare[0][0]" in message
    refused, message = review(ws(BASE, inference={"template": {"spec": {"containers": [{"name": "c"}], "x": deep}}}),
                              get_registry())
    assert refused and "inference.template.spec.x[0]" in message and len(message) < 2000
