"""Flags of ``kaito tune`` and ``python -m kaito_core.tuning`` (one definition for both).

Light at import (argparse only): the ``kaito`` command imports this at every start.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

DESCRIPTION = ("Fine-tune a model with LoRA or QLoRA and write the adapter to a directory or push it to an "
               "OCI registry. Give a tuning Workspace (-f workspace.yaml, with its ConfigMap) or flags; "
               "flags win over the Workspace.")


def _int_in(low: int, high: int | None = None):
    """An argparse type: an integer in [low, high], refused by argparse with the flag's name."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer (got {text!r})") from None
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"must be {bound} (got {value})")
        return value
    return parse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--filename", action="append", default=[], metavar="FILE",
                   help="Workspace YAML with a tuning section, and the ConfigMap / Secret it names "
                        "(repeat for several files)")
    p.add_argument("--workspace", metavar="NAME", help="which Workspace, when the files hold several")
    p.add_argument("--preset", help="preset name (e.g. phi-3-mini-4k-instruct): LoRA defaults and chat template")
    p.add_argument("--model-dir", "--model", dest="model_dir", metavar="DIR",
                   help="directory with the base model's weights and tokenizer (or a Hugging Face id 'org/model' "
                        "when the weights are downloaded at run time)")
    p.add_argument("--base-model", metavar="ID",
                   help="the model id the adapter records as its base (default: the preset's Hugging Face id); "
                        "for weights given as a directory that are a preset's model")
    p.add_argument("--method", type=str.lower, choices=("lora", "qlora"),
                   help="lora (full-precision base) or qlora (4-bit nf4); any case, as upstream")
    p.add_argument("--data", action="append", default=[], metavar="URL|PATH",
                   help="training data: http(s) URL, file or directory (repeatable); csv, json, jsonl, "
                        "parquet, arrow")
    p.add_argument("--input-image", metavar="REF", help="training data as an OCI artifact (pulled with oras)")
    p.add_argument("--pull-secret", metavar="FILE", help="docker config for --input-image")
    p.add_argument("--config", metavar="FILE",
                   help="training_config.yaml, or a ConfigMap YAML holding it (upstream KAITO's format)")
    p.add_argument("--output", metavar="DIR", help="write adapter_config.json + adapter_model.safetensors here")
    p.add_argument("--output-image", "--push", dest="output_image", metavar="REF",
                   help="push the adapter as an OCI artifact to this reference")
    p.add_argument("--push-secret", metavar="FILE",
                   help="docker config JSON (or a dockerconfigjson Secret / mounted secret dir) for --output-image; "
                        "default: $DOCKER_CONFIG/config.json, then ~/.docker/config.json")
    p.add_argument("--overwrite", action="store_true", help="replace an adapter already in --output")
    p.add_argument("--work-dir", metavar="DIR",
                   help="downloads and checkpoints (kept, so a run started again with the same directory resumes); "
                        "default: $KAITO_TUNING_WORK_DIR, else a temporary directory removed afterwards")
    p.add_argument("--allow-private-urls", action="store_true", default=None,
                   help="allow data URLs on loopback/private/link-local addresses "
                        "(or KAITO_ALLOW_PRIVATE_URLS=1); refused by default")
    p.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]",
                   help="registry spoken to over plain http (loopback registries always are)")
    p.add_argument("--max-download-bytes", type=_int_in(1), metavar="N", help="size limit per downloaded file")
    p.add_argument("--metrics-port", type=_int_in(0, 65535), metavar="PORT",
                   help="serve Prometheus metrics (step, loss, tokens/s) on this port while training")
    p.add_argument("--progress", choices=("auto", "bar", "log", "none"), default="auto",
                   help="progress bar (terminal), JSON log lines, or nothing (default: auto)")
    p.add_argument("--skip-malformed", action="store_true", help="skip malformed rows instead of stopping")
    p.add_argument("--max-steps", type=_int_in(1), metavar="N", help="stop after N optimizer steps")
    p.add_argument("--nproc-per-node", type=_int_in(1), metavar="N",
                   help="data parallel: run N processes (one per GPU), as upstream's accelerate launch; each "
                        "trains on its own shard, rank 0 writes the adapter (CPU: gloo backend)")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON on stdout")


def build_request(args: argparse.Namespace):
    from kaito_core.api.training.errors import TuningError
    from kaito_core.tuning.recipe import TuneRequest

    fields: dict[str, Any] = {}
    if args.filename:
        from kaito_core.tuning.workspace import request_fields

        fields = request_fields(args.filename, workspace=args.workspace)
    ws = fields.pop("workspace", None)
    data_volume = fields.pop("data_volume", "unset")
    output_volume = fields.pop("output_volume", "unset")
    secret_name = fields.pop("push_secret_name", None)
    flag_map = {"preset": args.preset, "model_dir": args.model_dir, "method": args.method,
                "input_image": args.input_image, "pull_secret": args.pull_secret, "config": args.config,
                "output": args.output, "output_image": args.output_image, "push_secret": args.push_secret,
                "work_dir": args.work_dir, "max_download_bytes": args.max_download_bytes,
                "metrics_port": args.metrics_port, "max_steps": args.max_steps,
                "allow_private_urls": args.allow_private_urls, "base_model": args.base_model}
    for key, value in flag_map.items():
        if value is not None:
            fields[key] = value
    if args.data:
        fields["data"] = list(args.data)
    if data_volume is None and not args.data:
        raise TuningError(f"Workspace {ws}: tuning.input.volumeSource is not a hostPath, so kaito tune cannot "
                          "reach it here; give the data with --data PATH")
    if output_volume is None and not args.output and not fields.get("output_image"):
        raise TuningError(f"Workspace {ws}: tuning.output.volumeSource is not a hostPath; give --output DIR")
    if fields.get("output_image") and secret_name and not fields.get("push_secret"):
        raise TuningError(f"Workspace {ws}: tuning.output.imagePushSecret is {secret_name!r}; give its docker "
                          "config with --push-secret FILE, or add the Secret manifest with -f")
    return TuneRequest(overwrite=args.overwrite, insecure_registries=list(args.insecure_registry),
                       progress=args.progress, skip_malformed=args.skip_malformed, **fields)


DEBUG_ENV = "KAITO_DEBUG"  # the same switch as `kaito`'s (kaito_core.cli.DEBUG_ENV)


def setup_logging() -> None:
    logger = logging.getLogger("kaito.tuning")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    # Keep library chatter (oras info lines, transformers warnings) out of the run's log.
    logging.getLogger("oras").setLevel(logging.WARNING)
    # bitsandbytes warns on import, on CPUs with AVX512-BF16, that the optional `kernels`
    # package is missing ("Failed to load CPU gemm_4bit_forward ..."), in every run, LoRA
    # included; it then uses its own CPU kernel, so the line reads as an error and is not one.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


def _own_argv() -> list[str]:
    """This command's arguments (after ``tune`` for ``kaito tune``), as typed."""
    argv = sys.argv[1:]
    if "tune" in argv and not sys.argv[0].endswith("__main__.py"):
        argv = argv[argv.index("tune") + 1:]
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--nproc-per-node":
            skip = True
            continue
        if not a.startswith("--nproc-per-node="):
            out.append(a)
    return out


def run_from_args(args: argparse.Namespace) -> int:
    import os

    from kaito_core.tuning.recipe import run
    from kaito_core.tuning.train import Interrupted, end_distributed

    setup_logging()
    n = getattr(args, "nproc_per_node", None)
    if n is not None and n < 1:
        from kaito_core.api.training.errors import TuningError

        raise TuningError(f"--nproc-per-node {n}: must be 1 or more (one process per GPU)")
    if n and n > 1 and "WORLD_SIZE" not in os.environ:
        from kaito_core.tuning.launch import run_workers

        return run_workers(n, _own_argv())
    req = build_request(args)
    try:
        result = run(req)
    except Interrupted as exc:
        # A distinct exit code: the Job (or a script) can tell "stopped, resumable" from "failed".
        if os.environ.get("RANK", "0") in ("", "0"):
            print(f"interrupted: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:  # a second Ctrl-C while saving
        print("interrupted: stopped before a checkpoint was saved", file=sys.stderr)
        return 130
    finally:
        end_distributed()
    s = result.summary
    if (s.get("distributed") or {}).get("rank", 0) != 0:
        return 0  # one report, from rank 0, which wrote the adapter
    if args.json:
        json.dump(s, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        where = " and ".join(x for x in (str(result.output_dir) if result.output_dir else "",
                                         f"{result.image} ({result.digest})" if result.image else "") if x)
        print(f"{s['method']}: {s['steps']} steps, loss {s['first_loss']:.4f} -> {s['final_loss']:.4f}, "
              f"{s['tokens_seen']} tokens in {s['duration_s']:.1f}s; "
              f"{s['data']['rows_used']}/{s['data']['rows_total']} rows used; adapter: {where}")
        for note in s["notes"]:
            print(f"note: {note}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from kaito_core.errors import KaitoError

    parser = argparse.ArgumentParser(prog="python -m kaito_core.tuning", description=DESCRIPTION)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_from_args(args)
    except KaitoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - the Job's log gets one line, as `kaito tune` prints it
        import os

        if os.environ.get(DEBUG_ENV):
            raise
        print(f"error: internal error in the tuning recipe: {type(exc).__name__}: {exc}\n"
              f"  this is a bug in kaito; run again with {DEBUG_ENV}=1 for the traceback and report it",
              file=sys.stderr)
        return 3
