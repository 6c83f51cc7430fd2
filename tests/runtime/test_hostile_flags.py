"""``kaito serve`` given hostile settings: each one is refused with exit code 1 and a message
naming the flag (or the config file's key), the value and what is expected; never an internal
error (exit 3) or a library's message that names neither."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("setting,needle", [
    ("max_batch: lots", "transformers.max_batch is 'lots'; expected an integer"),
    ("max_batch: true", "transformers.max_batch is True; expected an integer"),
    ("timeout_body: soon", "transformers.timeout_body is 'soon'; expected a number"),
    ("dtype: 16", "transformers.dtype is 16; expected a string"),
    ("allow_pickle: 'yes'", "transformers.allow_pickle is 'yes'; expected true or false"),
    ("max_model_len: [1]", "transformers.max_model_len is [1]; expected an integer"),
])
def test_config_settings_of_the_wrong_type(tmp_path, capsys, setting, needle):
    from kaito_core.cli import main

    cfg = tmp_path / "inference_config.yaml"
    cfg.write_text(f"transformers:\n  {setting}\n")
    assert main(["serve", "--model", "m", "--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert needle in err and "internal error" not in err, err


def test_a_null_config_setting_is_the_default(tmp_path):
    from kaito_core.runtime.options import build_parser, options_from_args

    cfg = tmp_path / "inference_config.yaml"
    cfg.write_text("transformers:\n  max_batch: null\n  timeout_body: 7\n")
    opts = options_from_args(build_parser().parse_args(["--model", "m", "--config", str(cfg)]))
    assert (opts.max_batch, opts.timeout_body) == (16, 7.0)


@pytest.mark.parametrize("device,needle", [
    ("tpu", "--device 'tpu' is not a device torch knows; use cpu, cuda or cuda:N"),
    ("cuda:x", "--device 'cuda:x' is not a device torch knows"),
])
def test_a_device_torch_does_not_know(tiny_models, capsys, unused_port, device, needle):
    from kaito_core.cli import main

    assert main(["serve", "--model", str(tiny_models["llama"]), "--device", device,
                 "--port", str(unused_port())]) == 1
    assert needle in capsys.readouterr().err


def test_cuda_without_a_gpu_says_so(tiny_models, capsys, unused_port):
    import torch

    from kaito_core.cli import main

    if torch.cuda.is_available():
        pytest.skip("a GPU machine serves --device cuda: nothing to refuse there")
    assert main(["serve", "--model", str(tiny_models["llama"]), "--device", "cuda",
                 "--port", str(unused_port())]) == 1
    assert "torch sees no CUDA GPU here" in capsys.readouterr().err


def test_a_host_that_does_not_resolve(capsys, unused_port):
    from kaito_core.cli import main

    assert main(["serve", "--model", "m", "--host", "999.1.1.1", "--port", str(unused_port())]) == 1
    assert "--host '999.1.1.1' is not an address this machine can listen on" in capsys.readouterr().err
