"""A table of malformed Workspaces: each is refused with a message naming the right field."""

from __future__ import annotations

import copy

import pytest

from kaito_core.api import load_text, parse_workspace, validate_workspace
from kaito_core.errors import WorkspaceInvalid

INFERENCE = {
    "apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "ws-ok"},
    "resource": {"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {"matchLabels": {"apps": "x"}}},
    "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
}
TUNING = {
    "apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "tune-ok"},
    "resource": {"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {"matchLabels": {"apps": "t"}}},
    "tuning": {"preset": {"name": "phi-3-mini-4k-instruct"}, "method": "qlora",
               "input": {"urls": ["https://example.com/data.parquet"]},
               "output": {"image": "registry.example.com/adapters/phi:1", "imagePushSecret": "push"}},
}


def errors_of(obj: dict) -> list[str]:
    """Every problem found, as 'path: message' strings (parse errors and rule errors)."""
    try:
        ws = parse_workspace(obj)
    except WorkspaceInvalid as exc:
        return [str(e) for e in exc.errors]
    return [str(e) for e in validate_workspace(ws).errors]


def _set(obj, path, value):
    *parents, last = path
    for p in parents:
        obj = obj[p]
    if value is DELETE:
        del obj[last]
    else:
        obj[last] = value


DELETE = object()
ADAPTER = {"source": {"name": "ad", "image": "registry.example.com/ad:1"}, "strength": "0.5"}

# (id, base, [(path, value), ...], expected field path, a word the message must contain)
CASES = [
    ("name-missing", INFERENCE, [(("metadata", "name"), DELETE)], "metadata.name", "required"),
    ("name-uppercase", INFERENCE, [(("metadata", "name"), "My-WS")], "metadata.name", "DNS-1123"),
    ("name-too-long", INFERENCE, [(("metadata", "name"), "a" * 64)], "metadata.name", "63"),
    ("name-underscore", INFERENCE, [(("metadata", "name"), "my_ws")], "metadata.name", "DNS-1123"),
    ("namespace-bad", INFERENCE, [(("metadata", "namespace"), "Bad NS")], "metadata.namespace", "DNS-1123"),
    ("name-not-string", INFERENCE, [(("metadata", "name"), 12)], "metadata.name", "string"),
    ("wrong-api-version", INFERENCE, [(("apiVersion",), "kaito.sh/v1")], "apiVersion", "v1beta1"),
    ("neither-inference-nor-tuning", INFERENCE, [(("inference",), DELETE)], "<root>", "exactly one"),
    ("both-inference-and-tuning", INFERENCE, [(("tuning",), TUNING["tuning"])], "inference", "not both"),
    ("spec-wrapper", {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "x"},
                      "spec": {"inference": {}}}, [], "spec", "top level"),
    ("unknown-top-field", INFERENCE, [(("resources",), {})], "resources", "resource"),
    ("resource-missing", INFERENCE, [(("resource",), DELETE)], "resource", "required"),
    ("label-selector-missing", INFERENCE, [(("resource", "labelSelector"), DELETE)], "resource.labelSelector",
     "required"),
    ("label-selector-empty", INFERENCE, [(("resource", "labelSelector"), {})], "resource.labelSelector",
     "matchLabels"),
    ("label-value-bad", INFERENCE, [(("resource", "labelSelector", "matchLabels"), {"apps": "has space"})],
     "resource.labelSelector.matchLabels.apps", "label value"),
    ("label-key-bad", INFERENCE, [(("resource", "labelSelector", "matchLabels"), {"bad key!": "x"})],
     "resource.labelSelector.matchLabels.bad key!", "label key"),
    ("expression-in-without-values", INFERENCE,
     [(("resource", "labelSelector", "matchExpressions"), [{"key": "a", "operator": "In"}])],
     "resource.labelSelector.matchExpressions[0].values", "non-empty"),
    ("expression-bad-operator", INFERENCE,
     [(("resource", "labelSelector", "matchExpressions"), [{"key": "a", "operator": "Equals", "values": ["x"]}])],
     "resource.labelSelector.matchExpressions[0].operator", "In"),
    ("count-zero", INFERENCE, [(("resource", "count"), 0)], "resource.count", "at least 1"),
    ("count-string", INFERENCE, [(("resource", "count"), "two")], "resource.count", "integer"),
    ("instance-type-typo", INFERENCE, [(("resource", "instanceType"), "Standard_NC24ads_A100_v5")],
     "resource.instanceType", "did you mean"),
    ("instance-type-unknown", INFERENCE, [(("resource", "instanceType"), "m5.large")], "resource.instanceType",
     "not a known"),
    ("instance-too-small", INFERENCE, [(("resource", "instanceType"), "Standard_NC6s_v3"),
                                       (("inference", "preset", "name"), "llama-3.1-8b-instruct"),
                                       (("inference", "preset", "presetOptions"), {"modelAccessSecret": "hf"})],
     "resource.instanceType", "GiB"),
    ("preferred-node-bad", INFERENCE, [(("resource", "preferredNodes"), ["Node_1"])], "resource.preferredNodes[0]",
     "node name"),
    ("preset-missing-name", INFERENCE, [(("inference", "preset"), {})], "inference.preset.name", "required"),
    ("preset-unknown", INFERENCE, [(("inference", "preset", "name"), "no-such-model")], "inference.preset.name",
     "not a known preset"),
    ("preset-not-installed", INFERENCE, [(("inference", "preset", "name"), "no-such-model-7b")],
     "inference.preset.name", "is not a known preset"),
    ("preset-name-typo-field", INFERENCE, [(("inference", "preset"), {"nmae": "phi-3-mini-4k-instruct"})],
     "inference.preset.nmae", "did you mean 'name'"),
    ("gated-without-secret", INFERENCE, [(("inference", "preset", "name"), "llama-3.1-8b-instruct")],
     "inference.preset.presetOptions.modelAccessSecret", "HF_TOKEN"),
    ("access-mode-bad", INFERENCE, [(("inference", "preset", "accessMode"), "secret")],
     "inference.preset.accessMode", "public"),
    ("preset-and-template", INFERENCE, [(("inference", "template"), {"spec": {"containers": []}})], "inference",
     "not both"),
    ("template-without-spec", INFERENCE, [(("inference", "preset"), DELETE), (("inference", "template"), {"x": 1})],
     "inference.template.spec", "required"),
    ("config-name-bad", INFERENCE, [(("inference", "config"), "My Config")], "inference.config", "ConfigMap name"),
    ("too-many-adapters", INFERENCE,
     [(("inference", "adapters"), [{"source": {"name": f"a{i}", "image": "r.io/a:1"}} for i in range(11)])],
     "inference.adapters", "at most 10"),
    ("adapter-duplicate-name", INFERENCE, [(("inference", "adapters"), [ADAPTER, ADAPTER])],
     "inference.adapters[1].source.name", "unique"),
    ("adapter-strength-high", INFERENCE,
     [(("inference", "adapters"), [ADAPTER, {**ADAPTER, "source": {"name": "b", "image": "r.io/b:1"}, "strength": "1.5"}])],
     "inference.adapters[1].strength", "between 0 and 1"),
    ("adapter-strength-negative", INFERENCE, [(("inference", "adapters"), [{**ADAPTER, "strength": "-0.1"}])],
     "inference.adapters[0].strength", "between 0 and 1"),
    ("adapter-strength-word", INFERENCE, [(("inference", "adapters"), [{**ADAPTER, "strength": "full"}])],
     "inference.adapters[0].strength", "number"),
    ("adapter-strength-float", INFERENCE, [(("inference", "adapters"), [{**ADAPTER, "strength": 0.5}])],
     "inference.adapters[0].strength", "string"),
    ("adapter-name-missing", INFERENCE, [(("inference", "adapters"), [{"source": {"image": "r.io/a:1"}}])],
     "inference.adapters[0].source.name", "required"),
    ("adapter-name-bad", INFERENCE, [(("inference", "adapters"), [{"source": {"name": "Bad_Name", "image": "r.io/a:1"}}])],
     "inference.adapters[0].source.name", "DNS-1123"),
    ("adapter-no-source", INFERENCE, [(("inference", "adapters"), [{"source": {"name": "a"}}])],
     "inference.adapters[0].source", "exactly one"),
    ("adapter-bad-image", INFERENCE, [(("inference", "adapters"), [{"source": {"name": "a", "image": "not an image"}}])],
     "inference.adapters[0].source.image", "image reference"),
    ("runtime-annotation-bad", INFERENCE, [(("metadata", "annotations"), {"kaito.sh/runtime": "tgi"})],
     "metadata.annotations[kaito.sh/runtime]", "transformers"),
    ("annotations-not-strings", INFERENCE, [(("metadata", "annotations"), {"kaito.sh/enablelb": True})],
     "metadata.annotations.kaito.sh/enablelb", "string"),
    ("tuning-method-bad", TUNING, [(("tuning", "method"), "full")], "tuning.method", "lora"),
    ("tuning-method-missing", TUNING, [(("tuning", "method"), DELETE)], "tuning.method", "required"),
    ("tuning-preset-missing", TUNING, [(("tuning", "preset"), DELETE)], "tuning.preset", "required"),
    ("tuning-count-two", TUNING, [(("resource", "count"), 2)], "resource.count", "must be 1"),
    ("tuning-no-input", TUNING, [(("tuning", "input"), DELETE)], "tuning.input", "required"),
    ("tuning-two-inputs", TUNING, [(("tuning", "input", "image"), "r.io/data:1")], "tuning.input", "exactly one"),
    ("tuning-empty-input", TUNING, [(("tuning", "input"), {})], "tuning.input", "exactly one"),
    ("tuning-url-ftp", TUNING, [(("tuning", "input", "urls"), ["ftp://example.com/d.csv"])], "tuning.input.urls[0]",
     "http"),
    ("tuning-url-loopback", TUNING, [(("tuning", "input", "urls"), ["http://127.0.0.1:8080/d.csv"])],
     "tuning.input.urls[0]", "loopback"),
    ("tuning-url-localhost", TUNING, [(("tuning", "input", "urls"), ["http://localhost/d.csv"])],
     "tuning.input.urls[0]", "loopback"),
    ("tuning-url-private", TUNING, [(("tuning", "input", "urls"), ["https://10.0.0.5/d.csv"])],
     "tuning.input.urls[0]", "private"),
    ("tuning-url-metadata", TUNING, [(("tuning", "input", "urls"), ["http://169.254.169.254/latest"])],
     "tuning.input.urls[0]", "metadata"),
    ("tuning-url-link-local", TUNING, [(("tuning", "input", "urls"), ["http://169.254.10.1/x"])],
     "tuning.input.urls[0]", "link-local"),
    ("tuning-url-ipv6-loopback", TUNING, [(("tuning", "input", "urls"), ["http://[::1]/x"])],
     "tuning.input.urls[0]", "loopback"),
    ("tuning-url-decimal-ip", TUNING, [(("tuning", "input", "urls"), ["http://2130706433/x"])],
     "tuning.input.urls[0]", "loopback"),
    ("tuning-url-cluster-service", TUNING, [(("tuning", "input", "urls"), ["http://api.default.svc.cluster.local/x"])],
     "tuning.input.urls[0]", "in-cluster"),
    ("tuning-no-output", TUNING, [(("tuning", "output"), DELETE)], "tuning.output", "required"),
    ("tuning-two-outputs", TUNING, [(("tuning", "output", "volumeSource"), {"emptyDir": {}})], "tuning.output",
     "exactly one"),
    ("tuning-image-without-secret", TUNING, [(("tuning", "output", "imagePushSecret"), DELETE)],
     "tuning.output.imagePushSecret", "required"),
    ("tuning-urls-not-list", TUNING, [(("tuning", "input", "urls"), "https://example.com/d.csv")],
     "tuning.input.urls", "list"),
    ("tuning-unknown-field", TUNING, [(("tuning", "epochs"), 3)], "tuning.epochs", "unknown field"),
    # regexes match the whole value: "^...$" with re.match accepted a trailing newline
    ("name-trailing-newline", INFERENCE, [(("metadata", "name"), "ws-ok\n")], "metadata.name", "DNS-1123"),
    ("label-value-trailing-newline", INFERENCE, [(("resource", "labelSelector", "matchLabels"), {"apps": "x\n"})],
     "resource.labelSelector.matchLabels.apps", "label value"),
    ("config-name-trailing-newline", INFERENCE, [(("inference", "config"), "cfg\n")], "inference.config",
     "ConfigMap name"),
    ("image-trailing-newline", TUNING, [(("tuning", "output", "image"), "registry.example.com/a:1\n")],
     "tuning.output.image", "image reference"),
    # URL tricks refused at admission, not only by the downloader
    ("tuning-url-octal-loopback", TUNING, [(("tuning", "input", "urls"), ["http://0177.0.0.1/x"])],
     "tuning.input.urls[0]", "loopback"),
    ("tuning-url-short-loopback", TUNING, [(("tuning", "input", "urls"), ["http://127.1/x"])],
     "tuning.input.urls[0]", "loopback"),
    ("tuning-url-credentials", TUNING, [(("tuning", "input", "urls"), ["https://user:pw@example.com/x"])],
     "tuning.input.urls[0]", "credentials"),
    ("tuning-url-backslash", TUNING, [(("tuning", "input", "urls"), ["http://127.0.0.1\\@example.com/x"])],
     "tuning.input.urls[0]", "backslash"),
    ("tuning-url-bad-port", TUNING, [(("tuning", "input", "urls"), ["https://example.com:99999/x"])],
     "tuning.input.urls[0]", "port"),
    # references and pod security that used to pass unchecked (issue 16, finding 9)
    ("adapter-pull-secret-bad", INFERENCE, [(("inference", "adapters"), [
        {"source": {"name": "a", "image": "r.io/a:1", "imagePullSecrets": ["Bad Secret"]}}])],
     "inference.adapters[0].source.imagePullSecrets[0]", "Secret name"),
    ("adapter-url-metadata", INFERENCE, [(("inference", "adapters"), [
        {"source": {"name": "a", "urls": ["http://169.254.169.254/latest"]}}])],
     "inference.adapters[0].source.urls[0]", "metadata"),
    ("adapter-volume-two-types", INFERENCE, [(("inference", "adapters"), [
        {"source": {"name": "a", "volumeSource": {"emptyDir": {}, "secret": {"secretName": "s"}}}}])],
     "inference.adapters[0].source.volumeSource", "exactly one volume type"),
    ("tuning-volume-unknown-type", TUNING, [(("tuning", "output"), {"volumeSource": {"bogus": {}}})],
     "tuning.output.volumeSource", "exactly one volume type"),
    ("tuning-push-secret-bad", TUNING, [(("tuning", "output", "imagePushSecret"), "push secret")],
     "tuning.output.imagePushSecret", "Secret name"),
    ("tuning-output-digest", TUNING, [(("tuning", "output", "image"), "registry.example.com/a@sha256:" + "a" * 64)],
     "tuning.output.image", "digest"),
    ("template-privileged", INFERENCE, [(("inference",), {"template": {"spec": {"containers": [
        {"name": "c", "image": "r.io/c:1", "securityContext": {"privileged": True}}]}}})],
     "inference.template.spec.containers[0].securityContext.privileged", "baseline"),
    ("template-host-network", INFERENCE, [(("inference",), {"template": {"spec": {"hostNetwork": True,
                                                                                 "containers": []}}})],
     "inference.template.spec.hostNetwork", "baseline"),
    ("template-host-port", INFERENCE, [(("inference",), {"template": {"spec": {"containers": [
        {"name": "c", "image": "r.io/c:1", "ports": [{"containerPort": 80, "hostPort": 80}]}]}}})],
     "inference.template.spec.containers[0].ports[0].hostPort", "baseline"),
    # bounds (issue 16, finding 1): every count and size has an upper limit
    ("count-over-bound", INFERENCE, [(("resource", "count"), 1_000_000)], "resource.count", "at most 100"),
    ("preferred-nodes-over-bound", INFERENCE, [(("resource", "preferredNodes"), [f"n{i}" for i in range(101)])],
     "resource.preferredNodes", "at most 100 entries"),
    ("selector-labels-over-bound", INFERENCE,
     [(("resource", "labelSelector", "matchLabels"), {f"k{i}": "v" for i in range(65)})],
     "resource.labelSelector.matchLabels", "at most 64"),
    ("url-too-long", TUNING, [(("tuning", "input", "urls"), ["https://example.com/" + "a" * 3000])],
     "tuning.input.urls[0]", "at most 2048 characters"),
    ("urls-over-bound", TUNING, [(("tuning", "input", "urls"), [f"https://example.com/{i}" for i in range(101)])],
     "tuning.input.urls", "at most 100 entries"),
    ("template-too-big", INFERENCE, [(("inference",), {"template": {"spec": {"containers": [
        {"name": "c", "image": "r.io/c:1", "args": ["x" * 300_000]}]}}})], "inference.template", "bytes"),
    ("preset-name-too-long", INFERENCE, [(("inference", "preset", "name"), "a" * 300)], "inference.preset.name",
     "at most 253"),
]


def test_table_has_at_least_40_cases():
    assert len(CASES) >= 40
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_malformed_workspace_is_refused_naming_the_field(case):
    _, base, edits, path, word = case
    obj = copy.deepcopy(base)
    for where, value in edits:
        _set(obj, where, value)
    errors = errors_of(obj)
    assert errors, "must be refused"
    matching = [e for e in errors if e.startswith(path + ":")]
    assert matching, f"no error for {path}; got {errors}"
    assert any(word.lower() in e.lower() for e in matching), f"{word!r} not in {matching}"


@pytest.mark.parametrize("base", [INFERENCE, TUNING], ids=["inference", "tuning"])
def test_bases_are_valid(base):
    assert errors_of(copy.deepcopy(base)) == []


def test_all_errors_are_collected_not_just_the_first():
    obj = copy.deepcopy(TUNING)
    obj["metadata"]["name"] = "Bad_Name"
    obj["tuning"]["method"] = "full"
    obj["tuning"]["input"]["urls"] = ["http://10.1.1.1/x"]
    del obj["tuning"]["output"]["imagePushSecret"]
    paths = {e.split(":")[0] for e in errors_of(obj)}
    assert {"metadata.name", "tuning.method", "tuning.input.urls[0]", "tuning.output.imagePushSecret"} <= paths


def test_immutable_fields_on_update():
    old = parse_workspace(copy.deepcopy(TUNING))
    new_obj = copy.deepcopy(TUNING)
    new_obj["resource"]["instanceType"] = "Standard_NC48ads_A100_v4"
    new_obj["tuning"]["method"] = "lora"
    new_obj["tuning"]["input"]["urls"] = ["https://example.com/other.parquet"]
    new_obj["resource"]["labelSelector"]["matchLabels"] = {"apps": "other"}
    result = validate_workspace(parse_workspace(new_obj), old=old)
    paths = {e.path for e in result.errors}
    assert paths == {"resource.instanceType", "tuning.method", "tuning.input", "resource.labelSelector"}
    assert all("immutable" in e.message for e in result.errors)
    # changing a mutable field (output) is fine
    ok = copy.deepcopy(TUNING)
    ok["tuning"]["output"]["image"] = "registry.example.com/adapters/phi:2"
    assert validate_workspace(parse_workspace(ok), old=old).errors == []


def test_switching_inference_to_tuning_is_refused():
    old = parse_workspace(copy.deepcopy(INFERENCE))
    result = validate_workspace(parse_workspace(copy.deepcopy(TUNING)), old=old)
    assert any("switch" in e.message for e in result.errors)


def test_yaml_syntax_error_names_line():
    from kaito_core.api import DocumentError

    with pytest.raises(DocumentError, match="line"):
        load_text("apiVersion: kaito.sh/v1beta1\nkind: Workspace\nmetadata: {name: [x\n")


def test_bad_training_config_sections_are_named():
    from kaito_core.api import configmaps_by_name

    docs = load_text("""
apiVersion: v1
kind: ConfigMap
metadata: {name: tcfg}
data:
  training_config.yaml: |
    training_config:
      LoraConfig: {r: 8}
      Optimizer: {lr: 1}
---
""" + "\n".join(["apiVersion: kaito.sh/v1beta1", "kind: Workspace", "metadata: {name: t}",
                 "resource: {labelSelector: {matchLabels: {a: b}}}",
                 "tuning: {preset: {name: phi-3-mini-4k-instruct}, method: lora, config: tcfg,",
                 "  input: {urls: ['https://example.com/x.csv']}, output: {volumeSource: {emptyDir: {}}}}"]))
    ws = next(d.obj for d in docs if d.kind == "Workspace")
    result = validate_workspace(ws, configmaps=configmaps_by_name(docs))
    (err,) = result.errors
    assert err.path == "tuning.config" and "Optimizer" in err.message


def test_training_config_keys_are_checked_per_key():
    from kaito_core.api import parse_configmap
    from kaito_core.api.validation import training_config_problems

    cm = parse_configmap({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "t"},
                          "data": {"training_config.yaml": "training_config:\n  LoraConfig: {r: 8, lora_alpa: 16}\n"}})
    (problem,) = training_config_problems(cm)
    assert "training_config.LoraConfig.lora_alpa" in problem and "lora_alpha" in problem
