"""``aigc-synth``: train generators and run generation jobs.

Subcommands take Hydra overrides (``key=value``) composed onto ``conf/``::

    aigc-synth generate [overrides]    # Ray job → Parquet/PNG shards + manifest
    aigc-synth train [overrides]       # train a generator; exports generator.pt
    aigc-synth info CHECKPOINT         # show an exported generator's schema and config
    aigc-synth verify OUTPUT_DIR       # check every shard against the manifest
    aigc-synth evaluate [overrides]    # metrics + report for a checkpoint or a job's output
    aigc-synth submit [--address URL] [--no-wait] -- [overrides]   # generate on a running cluster (job server)
    aigc-synth serve [overrides]       # online generation endpoint (Ray Serve), until Ctrl-C

Every error a user can cause ends as one line on stderr and exit status 2 (1 for runtime
failures), with nothing written.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Sequence

CONF_DIR = Path(__file__).resolve().parent / "conf"
EXIT_USAGE, EXIT_FAILURE = 2, 1


class UsageError(Exception):
    """A bad command line or config: reported in one line, exit status 2."""


def compose(config_name: str, overrides: Sequence[str]) -> Any:
    """Compose ``conf/<config_name>.yaml`` with overrides; return the resolved typed dataclass."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from aigc_synth.config import register_configs

    register_configs()
    conf_dir = Path(os.environ.get("AIGC_SYNTH_CONF", CONF_DIR)).resolve()
    if not conf_dir.is_dir():
        raise UsageError(f"config directory not found: {conf_dir}")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base=None):
            cfg = hydra_compose(config_name=config_name, overrides=list(overrides))
        OmegaConf.resolve(cfg)
        return OmegaConf.to_object(cfg)
    except Exception as exc:  # hydra / omegaconf errors: bad key, bad type, unknown group option
        msg = " ".join(str(exc).split())
        if exc.__cause__ is not None and str(exc.__cause__):
            msg += ": " + " ".join(str(exc.__cause__).split())
        raise UsageError(f"invalid configuration: {msg[:400]}") from None
    finally:
        GlobalHydra.instance().clear()


def _quiet_ray_logs() -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    for name in ("ray", "ray.data", "ray._private"):
        logging.getLogger(name).setLevel(logging.WARNING)


def cmd_generate(overrides: Sequence[str]) -> int:
    from aigc_synth.config import GenerateRoot
    from aigc_synth.jobs.generate import run_generation
    from aigc_synth.jobs.report import print_summary, write_preview

    cfg: GenerateRoot = compose("generate", overrides)
    _quiet_ray_logs()
    manifest = run_generation(cfg, progress=True)
    out = cfg.output_dir  # a string: may be an object-store URI (Path would mangle s3://)
    if cfg.preview:
        write_preview(out, manifest)
    print_summary(out, manifest)
    return 0


def cmd_train(overrides: Sequence[str]) -> int:
    from aigc_synth.config import TrainRoot
    from aigc_synth.training.trainer import train

    cfg: TrainRoot = compose("train", overrides)
    path = train(cfg.train, cfg.model, cfg.data)
    print(f"exported generator: {path}")
    return 0


def cmd_info(args: Sequence[str]) -> int:
    from aigc_synth.io.atomic import sha256_file
    from aigc_synth.io.checkpoint import read_generator_header
    from aigc_synth.jobs.generate import resolve_checkpoint_path

    if len(args) != 1:
        raise UsageError("usage: aigc-synth info CHECKPOINT (or 'default')")
    path = resolve_checkpoint_path(args[0])
    header = read_generator_header(path)
    info = {"path": str(path), "model_id": sha256_file(path), "size_bytes": path.stat().st_size, "family": header["family"],
            "model_config": header["model_config"], "schema": header["schema"],
            "meta": {k: v for k, v in header.get("meta", {}).items() if k != "recipe"}}
    print(json.dumps(info, indent=2))
    return 0


def cmd_evaluate(overrides: Sequence[str]) -> int:
    from aigc_synth.config import EvaluateRoot
    from aigc_synth.evaluation import evaluate

    cfg: EvaluateRoot = compose("evaluate", overrides)
    result = evaluate(cfg)
    o = result["overall"]
    acc = ", ".join(f"{k} {v:.3f}" for k, v in o["condition_accuracy"].items())
    print(f"FD {o['fd']:.2f}  KID {o['kid']:.5f} ± {o['kid_std']:.5f}  precision {o['precision']:.3f}  "
          f"recall {o['recall']:.3f}  coverage {o['coverage']:.3f}  condition accuracy: {acc}")
    print(f"report: {Path(cfg.out_dir) / 'report.md'}  metrics: {Path(cfg.out_dir) / 'metrics.json'}")
    return 0


def cmd_verify(args: Sequence[str]) -> int:
    from aigc_synth.io.reader import verify_output

    if len(args) != 1:
        raise UsageError("usage: aigc-synth verify OUTPUT_DIR")
    problems = verify_output(args[0])
    if problems:
        for p in problems:
            print(f"FAIL {p}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"OK {args[0]}: every shard matches the manifest")
    return 0


def cmd_serve(overrides: Sequence[str]) -> int:
    import signal
    import time

    from aigc_synth.config import ServeRoot
    from aigc_synth.serve.server import ServeConfigError, start_server, stop_server

    cfg: ServeRoot = compose("serve", overrides)
    _quiet_ray_logs()
    started = False
    try:
        server = start_server(cfg)
        started = True
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` stops Serve cleanly, like Ctrl-C
        print(f"serving model {server.model_id[:12]} ({server.checkpoint}) at {server.url}  "
              f"[POST /generate, GET /conditions, GET /health; {'bearer token required' if server.auth else 'NO token'}]  "
              "Ctrl-C to stop", flush=True)
        while True:
            time.sleep(3600)
    except ServeConfigError as exc:
        raise UsageError(str(exc)) from None
    except KeyboardInterrupt:
        print("stopping the server", file=sys.stderr)
        return 0
    finally:
        if started:
            stop_server()


COMMANDS = {"generate": cmd_generate, "train": cmd_train, "info": cmd_info, "verify": cmd_verify, "evaluate": cmd_evaluate,
            "serve": cmd_serve}


def cmd_submit(args: Sequence[str]) -> int:
    from aigc_synth.jobs.submit import SubmitError, parse_args, submit_generation

    opts = parse_args(args)
    try:
        result = submit_generation(opts.overrides, opts.address, wait=not opts.no_wait,
                                   log=lambda line: print(line, flush=True), submission_id=opts.submission_id)
    except SubmitError as exc:
        print(f"aigc-synth submit: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("aigc-synth submit: detached; the job keeps running (`ray job stop <submission id>` stops it)", file=sys.stderr)
        return 130
    if opts.no_wait:
        print(result["submission_id"])
        return 0
    if result["status"] != "SUCCEEDED":
        print(f"aigc-synth submit: job {result['submission_id']} {result['status']}: {result['message'][:300]}", file=sys.stderr)
        return EXIT_FAILURE
    where = "" if Path(result["manifest"]).exists() else " (on the cluster's storage)"
    print(f"job {result['submission_id']} SUCCEEDED; manifest: {result['manifest']}{where}")
    return 0


COMMANDS["submit"] = cmd_submit  # own options (--address, --no-wait): main() hands it the raw argv


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aigc-synth", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Examples:\n  aigc-synth generate\n  aigc-synth generate job=rare_conditions job.num_samples=500\n"
                                            "  aigc-synth train model=dcgan_baseline train.steps=200")
    parser.add_argument("command", choices=sorted(COMMANDS), nargs="?", default="generate")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides key=value (or arguments of info/verify)")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["submit"]:  # its options are parsed by cmd_submit, not here
        args = argparse.Namespace(command="submit", overrides=argv[1:])
    else:
        args = parser.parse_args(argv)
    from aigc_synth.io.checkpoint import CheckpointError
    from aigc_synth.evaluation import EvaluationError
    from aigc_synth.jobs.generate import JobSpecError, JobStalledError
    from aigc_synth.schema import SchemaError

    try:
        return COMMANDS[args.command](args.overrides)
    except (UsageError, JobSpecError, CheckpointError, SchemaError, FileNotFoundError, EvaluationError) as exc:
        print(f"aigc-synth {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except JobStalledError as exc:
        print(f"aigc-synth {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("interrupted: committed shards are kept; rerun the same command to continue", file=sys.stderr)
        return 130
    except Exception as exc:  # runtime failure (e.g. Ray): one line, the traceback only on request
        if os.environ.get("AIGC_SYNTH_DEBUG"):
            raise
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        print(f"aigc-synth {args.command}: failed: {type(exc).__name__}: {first} (set AIGC_SYNTH_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
