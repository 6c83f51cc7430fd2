"""Hostile configuration, each case pinned after it was found broken: YAML tricks in
training_config.yaml, null values, keys transformers' Trainer or peft refuse, out-of-range flags,
a metrics port that cannot be served, the Workspace's ConfigMap and push Secret by namespace,
and internal errors of the Job's command."""

from __future__ import annotations

import pytest

from kaito_core.api.training.config import parse_training_config
from kaito_core.api.training.errors import TuningConfigError
from kaito_core.tuning import run



def test_the_job_command_prints_one_line_for_an_internal_error(monkeypatch, capsys, tmp_path):
    """`python -m kaito_core.tuning` (the Job's command) let any exception that is not a
    KaitoError out as a traceback; `kaito tune` already printed one line."""
    from kaito_core.tuning import cli, recipe

    def broken(_req):
        raise RuntimeError("something kaito did not expect")

    monkeypatch.setattr(recipe, "run", broken)
    monkeypatch.delenv("KAITO_DEBUG", raising=False)
    code = cli.main(["--model", str(tmp_path), "--data", str(tmp_path), "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 3 and "Traceback" not in err
    assert "error: internal error in the tuning recipe: RuntimeError: something kaito did not expect" in err
    assert "KAITO_DEBUG=1" in err


@pytest.mark.parametrize("text, needle", [
    ("training_config:\n  TrainingArguments:\n    learning_rate: 1e-3\n    learning_rate: 2e-4\n",
     "line 4, column 5: found duplicate key 'learning_rate' (first at line 3)"),
    ("training_config:\n  LoraConfig: {r: 8}\n  LoraConfig: {r: 16}\n", "duplicate key 'LoraConfig'"),
    ("a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
     "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
     "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
     "training_config:\n  LoraConfig:\n    target_modules: *f\n", "billion laughs"),
    ("kind: ConfigMap\ndata: {training_config.yaml: 'training_config: {}'}\n---\n"
     "kind: ConfigMap\ndata: {training_config.yaml: 'training_config: {}'}\n",
     "2 YAML documents and 2 of them hold a training configuration"),
])
def test_yaml_tricks_in_the_training_config_are_refused(text, needle):
    with pytest.raises(TuningConfigError) as err:
        parse_training_config(text)
    assert needle in str(err.value)


def test_null_means_unset_and_a_workspace_file_gives_its_configmap():
    """`max_steps:` with no value reached TrainingArguments as None ("'>' not supported between
    NoneType and int"); a file with the Workspace and its ConfigMap was "not valid YAML"."""
    out = parse_training_config("training_config:\n  TrainingArguments:\n    max_steps:\n    save_steps: null\n"
                                "    learning_rate: '2e-4'\n    num_train_epochs: \"3\"\n")
    assert out == {"TrainingArguments": {"learning_rate": 2e-4, "num_train_epochs": 3.0}}
    both = ("apiVersion: kaito.sh/v1beta1\nkind: Workspace\nmetadata: {name: w}\n---\n"
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata:\n  training_config.yaml: |\n"
            "    training_config:\n      LoraConfig: {r: 4}\n---\n")
    assert parse_training_config(both) == {"LoraConfig": {"r": 4}}


WORKSPACE = """apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata: {name: tune-a, namespace: team-a}
resource:
  instanceType: Standard_NC24ads_A100_v4
  labelSelector: {matchLabels: {app: t}}
tuning:
  preset: {name: phi-3-mini-4k-instruct}
  method: lora
  config: params
  input: {urls: ["https://example.com/train.jsonl"]}
  output: {image: "registry.example.com/adapters/a:1", imagePushSecret: push}
"""


def _configmap(namespace: str | None, steps: int) -> str:
    ns = f"  namespace: {namespace}\n" if namespace else ""
    return (f"---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: params\n{ns}data:\n"
            f"  training_config.yaml: 'training_config: {{TrainingArguments: {{max_steps: {steps}}}}}'\n")


def test_the_workspaces_configmap_is_the_one_in_its_namespace(tmp_path):
    """ConfigMaps were matched by name only: another team's `params` trained this Workspace."""
    from kaito_core.api.training.errors import TuningError
    from kaito_core.tuning.workspace import request_fields

    files = tmp_path / "all.yaml"
    files.write_text(WORKSPACE + _configmap("team-b", 1) + _configmap("team-a", 2))
    fields = request_fields([str(files)])
    assert fields["config"]["metadata"]["namespace"] == "team-a"
    files.write_text(WORKSPACE + _configmap(None, 3))  # applied with kubectl -n team-a
    assert "max_steps: 3" in request_fields([str(files)])["config"]["data"]["training_config.yaml"]
    files.write_text(WORKSPACE + _configmap("team-b", 1))
    with pytest.raises(TuningError, match="ConfigMap 'params', which is not in namespace team-a .*only in "
                                          "namespace team-b"):
        request_fields([str(files)])


@pytest.mark.parametrize("secret, needle", [
    ("data:\n  .dockerconfigjson: '!!!not-base64'", "data..dockerconfigjson is not a base64-encoded docker config"),
    ("stringData:\n  .dockerconfigjson: '{not json'", "stringData..dockerconfigjson is not a base64-encoded"),
    ("stringData:\n  .dockerconfigjson: '[1, 2]'", "must hold a JSON object with 'auths'"),
])
def test_a_broken_push_secret_is_named(tmp_path, secret, needle):
    """A Secret whose .dockerconfigjson was not base64 or not JSON ended `kaito tune` as an
    internal error (binascii.Error, JSONDecodeError)."""
    from kaito_core.api.training.errors import TuningError
    from kaito_core.tuning.workspace import request_fields

    files = tmp_path / "all.yaml"
    files.write_text(WORKSPACE + _configmap("team-a", 1) + "---\napiVersion: v1\nkind: Secret\nmetadata:\n"
                     "  name: push\n  namespace: team-a\ntype: kubernetes.io/dockerconfigjson\n" + secret + "\n")
    with pytest.raises(TuningError) as err:
        request_fields([str(files)])
    assert needle in str(err.value) and "Secret 'push'" in str(err.value)


@pytest.mark.parametrize("flag, value, needle", [
    ("--max-steps", "-3", "argument --max-steps: must be >= 1 (got -3)"),   # trained by epochs before
    ("--max-steps", "0", "argument --max-steps: must be >= 1 (got 0)"),     # was ignored before
    ("--metrics-port", "99999", "argument --metrics-port: must be between 0 and 65535 (got 99999)"),
    ("--max-download-bytes", "-1", "argument --max-download-bytes: must be >= 1 (got -1)"),
    ("--nproc-per-node", "two", "argument --nproc-per-node: must be an integer (got 'two')"),
])
def test_numeric_flags_out_of_range_are_refused_by_name(tmp_path, capsys, flag, value, needle):
    from kaito_core.tuning import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(["--model", str(tmp_path), "--data", str(tmp_path), "--output", str(tmp_path / "o"), flag, value])
    assert exit_.value.code == 2 and needle in capsys.readouterr().err


def test_a_metrics_port_that_cannot_be_served_is_one_line(tiny_models, chat_jsonl, tmp_path, monkeypatch):
    """KAITO_TUNING_METRICS_PORT=99999 (or a port in use) ended in OverflowError/OSError."""
    import socket

    from kaito_core.api.training.errors import TuningError

    monkeypatch.setenv("KAITO_TUNING_METRICS_PORT", "99999")
    kwargs = dict(model_dir=str(tiny_models["llama"]), data=[str(chat_jsonl)], progress="none",
                  config={"training_config": {"TrainingArguments": {"max_steps": 1}}})
    with pytest.raises(TuningError, match="metrics port 99999 .*cannot serve there"):
        run(**kwargs, output=str(tmp_path / "a"))
    monkeypatch.delenv("KAITO_TUNING_METRICS_PORT")
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        with pytest.raises(TuningError, match=f"metrics port {busy.getsockname()[1]} .*Address already in use"):
            run(**kwargs, output=str(tmp_path / "b"), metrics_port=busy.getsockname()[1])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize("section, key_values, needle", [
    ("TrainingArguments", {"eval_strategy": "steps", "eval_steps": 1},
     "no rows are held out for evaluation (DatasetConfig.train_test_split is 1"),
    ("LoraConfig", {"layers_to_transform": [99]}, "training_config.LoraConfig: Target modules"),
])
def test_keys_the_trainer_or_peft_refuse_are_config_errors(tiny_models, chat_jsonl, tmp_path, section, key_values,
                                                          needle):
    """Trainer(...) and get_peft_model raised ValueError (NoMatchingPeftModuleError) straight to
    the user as an internal error."""
    config = {"training_config": {"TrainingArguments": {"max_steps": 1}, "DatasetConfig": {"train_test_split": 1}}}
    config["training_config"].setdefault(section, {}).update(key_values)
    with pytest.raises(TuningConfigError) as err:
        run(model_dir=str(tiny_models["llama"]), data=[str(chat_jsonl)], config=config,
            output=str(tmp_path / "adapter"), progress="none")
    assert needle in str(err.value)
    assert not (tmp_path / "adapter").exists()
