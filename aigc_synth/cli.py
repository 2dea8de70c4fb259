"""``aigc-synth``: train generators, run generation jobs, evaluate, serve.

Verbs (argparse subcommands); the config verbs take Hydra overrides (``key=value``) composed
onto ``conf/``::

    aigc-synth generate [overrides]    # Ray job → Parquet/PNG shards + manifest (the default verb)
    aigc-synth train [overrides]       # train a generator; exports generator.pt
    aigc-synth info CHECKPOINT         # show an exported generator's schema and config
    aigc-synth verify OUTPUT_DIR       # check every shard against the manifest
    aigc-synth preview OUTPUT_DIR      # (re)write a finished job's preview.png
    aigc-synth export OUTPUT_DIR --format F --out DIR   # for other tools (checks the shards it reads first)
    aigc-synth evaluate [overrides]    # metrics + report for a checkpoint or a job's output
    aigc-synth submit [--address URL] [--no-wait] -- [overrides]   # generate on a running cluster (job server)
    aigc-synth serve [overrides]       # online generation endpoint (Ray Serve), until Ctrl-C

``--verbose`` (before or after the verb; or ``AIGC_SYNTH_VERBOSE=1``) also prints Ray's log lines, which
otherwise go only to Ray's session logs (:mod:`aigc_synth.runtime.logfilter`).

Every error a user can cause ends as one line on stderr and exit status 2 (1 for runtime
failures), with nothing written: the verbs raise :class:`aigc_synth.errors.AigcSynthError`
subclasses, which carry their exit status, and :func:`main` catches the base class once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

from aigc_synth.config import compose
from aigc_synth.errors import EXIT_FAILURE, EXIT_USAGE, AigcSynthError, UsageError, describe_failure, first_line, root_cause


def _quiet_ray_logs() -> None:
    """No usage-stats prompt, no Ray Data progress bars (ours is the one bar). Ray's log lines are kept off
    the console where Ray starts: :func:`aigc_synth.runtime.cluster.connect_ray` (``--verbose`` brings them back)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")


def cmd_generate(args: argparse.Namespace) -> int:
    from aigc_synth.jobs.generate import run_generation
    from aigc_synth.jobs.report import print_summary, write_preview

    cfg = compose("generate", args.overrides)
    _quiet_ray_logs()
    manifest = run_generation(cfg, progress=True)  # returns once manifest.json is committed: the job is finished
    out = cfg.output_dir  # a string: may be an object-store URI (Path would mangle s3://)
    failed_preview = None
    if cfg.preview:
        try:
            write_preview(out, manifest)
        except (OSError, AigcSynthError) as exc:  # after the commit: a warning, never a failed job
            failed_preview = describe_failure(exc)
    print_summary(out, manifest)
    if failed_preview:
        print(f"aigc-synth generate: warning: the job is finished (manifest committed; `aigc-synth verify {out}` checks it) "
              f"but its preview was not written: {failed_preview}; write it with `aigc-synth preview {out}`", file=sys.stderr)
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    from aigc_synth.io.reader import load_manifest
    from aigc_synth.jobs.report import write_preview

    where = write_preview(args.output_dir, load_manifest(args.output_dir))
    print(f"preview: {where}" if where else f"{args.output_dir}: no Parquet shards to draw a preview from")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from aigc_synth.training.registry import trainer_for

    cfg = compose("train", args.overrides)
    path = trainer_for(cfg.model.family)(cfg.train, cfg.model, cfg.data)  # images or scenes: one run-directory contract
    print(f"exported generator: {path}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from aigc_synth.exporters import export

    result = export(args.output_dir, args.format, args.out, args.limit)
    print(f"exported {result.describe()} as {args.format} → {args.out}")
    return 0


def _export_args(p: argparse.ArgumentParser) -> None:
    from aigc_synth.exporters import EXPORTERS

    p.add_argument("output_dir", help="a finished job's output_dir (for sumo / openscenario also a folder of scene "
                                      "Parquet files); every shard read is checked against the job's manifest first")
    p.add_argument("--format", required=True, choices=sorted(EXPORTERS),
                   help="; ".join(f"{e.name}: {e.summary}" for e in EXPORTERS.values()))
    p.add_argument("--out", required=True, help="directory to write (must not exist, or be empty)")
    p.add_argument("--limit", type=int, default=None, help="export only the first N images or scenes")


def cmd_info(args: argparse.Namespace) -> int:
    from aigc_synth.io.atomic import sha256_file
    from aigc_synth.models.exported import read_generator_header, resolve_checkpoint_path

    path = resolve_checkpoint_path(args.checkpoint)
    header = read_generator_header(path)
    info = {"path": str(path), "model_id": sha256_file(path), "size_bytes": path.stat().st_size, "family": header["family"],
            "model_config": header["model_config"], "schema": header["schema"],
            "meta": {k: v for k, v in header.get("meta", {}).items() if k != "recipe"}}
    print(json.dumps(info, indent=2))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from aigc_synth.evaluation.registry import evaluator_for

    cfg = compose("evaluate", args.overrides)
    _quiet_ray_logs()  # a scene evaluation replays its scenes on Ray
    evaluator = evaluator_for(cfg.source)
    for line in evaluator.summary(evaluator.evaluate(cfg)):
        print(line)
    print(f"report: {Path(cfg.out_dir) / 'report.md'}  metrics: {Path(cfg.out_dir) / 'metrics.json'}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from aigc_synth.io.reader import verify_output

    problems = verify_output(args.output_dir)
    if problems:
        for p in problems:
            print(f"FAIL {p}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"OK {args.output_dir}: every shard matches the manifest")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import signal
    import threading
    import time

    from aigc_synth.serve.server import start_server, stop_server

    cfg = compose("serve", args.overrides)
    _quiet_ray_logs()
    # Without an address start_server starts a local Ray whose GCS, raylet and monitor are children of this
    # process, in its process group. Ctrl-C (SIGINT, which Ray blocks in them) leaves them running, so Serve
    # can drain and shut down gracefully; a SIGTERM to the group reaches them too and Serve's controller stops
    # answering, so SIGTERM means "stop now": stop_server kills that Ray instead of waiting on it.
    owns_ray = not (cfg.ray.address or os.environ.get("RAY_ADDRESS"))
    # Seconds from a stop signal to our exit, whatever Ray does meanwhile (supervisors SIGKILL 10-30 s after
    # SIGTERM). On a cluster, serve.shutdown() is what deletes the app there: allow Serve's own 30-s wait.
    deadline_s = 12.0 if owns_ray else 40.0
    received: list[int] = []

    def on_signal(signum, frame):
        if received:  # a second signal while stopping: stop waiting (our local Ray is fate-shared: it dies with us)
            print(f"aigc-synth serve: {signal.Signals(signum).name} again: exiting now", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        received.append(signum)
        raise KeyboardInterrupt

    def exit_at_deadline() -> None:
        time.sleep(deadline_s)
        print(f"aigc-synth serve: shutdown still running after {deadline_s:g} s: exiting anyway",
              file=sys.stderr, flush=True)
        os._exit(EXIT_FAILURE)

    started = False

    def ray_connected() -> None:
        # Only once Ray is up: ray.init installs its own SIGTERM handlers (sys.exit, and a C++ one that
        # aborts), which would skip the cleanup below; from here on a stop signal, even during deployment,
        # goes through it
        nonlocal started
        started = True
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    try:
        server = start_server(cfg, on_ray_connected=ray_connected)
        print(f"serving model {server.model_id[:12]} ({server.checkpoint}) at {server.url}  "
              f"[POST /generate, POST /scenes, GET /conditions, GET /health; "
              f"{'bearer token required' if server.auth else 'NO token'}]  "
              "Ctrl-C to stop", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping the server", file=sys.stderr, flush=True)
        return 0
    finally:
        if started:
            threading.Thread(target=exit_at_deadline, name="serve-stop-deadline", daemon=True).start()
            terminating = owns_ray and signal.SIGTERM in received
            stop_server(shutdown_ray=owns_ray, ray_terminating=terminating)
            if terminating:  # Ray's atexit ray.shutdown() would spend 5 s on the raylet stop_server just killed
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(0)


def cmd_submit(args: argparse.Namespace) -> int:
    from aigc_synth.jobs.submit import submit_generation

    try:
        result = submit_generation(args.overrides, args.address, wait=not args.no_wait,
                                   log=lambda line: print(line, flush=True), submission_id=args.submission_id)
    except KeyboardInterrupt:
        print("aigc-synth submit: detached; the job keeps running (`ray job stop <submission id>` stops it)", file=sys.stderr)
        return 130
    if args.no_wait:
        print(result["submission_id"])
        return 0
    if result["status"] != "SUCCEEDED":
        print(f"aigc-synth submit: job {result['submission_id']} {result['status']}: {result['message'][:300]}", file=sys.stderr)
        return EXIT_FAILURE
    where = "" if Path(result["manifest"]).exists() else " (on the cluster's storage)"
    print(f"job {result['submission_id']} SUCCEEDED; manifest: {result['manifest']}{where}")
    return 0


BENCHMARKS = ("downstream",)


def cmd_benchmark(args: argparse.Namespace) -> int:
    """``aigc-synth benchmark downstream ARGS``: the downstream benchmark's own command line."""
    from aigc_synth.benchmarks.downstream_cli import main as downstream_main

    try:
        return downstream_main(list(args.args), prog="aigc-synth benchmark downstream")
    except SystemExit as exc:  # its argparse: --help (0) or a bad command line (2, message already printed)
        return int(exc.code or 0)


def _benchmark_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", choices=BENCHMARKS, help="which benchmark (downstream: do generated rare-condition "
                                                     "images help a classifier and a detector?)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="the benchmark's flags (`--help` lists them)")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one :class:`UsageError` line (exit 2)."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{message} (see {self.prog} --help)")


def _overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="*", help="Hydra overrides key=value")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="aigc-synth", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                     epilog="Examples:\n  aigc-synth generate\n  aigc-synth generate job=rare_conditions job.num_samples=500\n"
                            "  aigc-synth train model=dcgan_baseline train.steps=200")
    verbose_help = ("also print Ray's log lines on the console (as AIGC_SYNTH_VERBOSE=1 does); "
                    "they always go to Ray's session logs")
    parser.add_argument("--verbose", action="store_true", help=verbose_help)
    sub = parser.add_subparsers(dest="command", metavar="VERB", parser_class=_Parser)
    verbs: dict[str, tuple[Callable[[argparse.Namespace], int], str, Callable[[argparse.ArgumentParser], None]]] = {
        "generate": (cmd_generate, "run a generation job (Ray) → Parquet/PNG shards + manifest", _overrides),
        "train": (cmd_train, "train a generator; exports generator.pt", _overrides),
        "evaluate": (cmd_evaluate, "metrics + report for a checkpoint or a job's output", _overrides),
        "serve": (cmd_serve, "online generation endpoint (Ray Serve), until Ctrl-C", _overrides),
        "info": (cmd_info, "show an exported generator's schema and config",
                 lambda p: p.add_argument("checkpoint", help="checkpoint path, or 'default'")),
        "verify": (cmd_verify, "check every shard of a job output against its manifest",
                   lambda p: p.add_argument("output_dir", help="a job's output_dir (local path or URI)")),
        "preview": (cmd_preview, "(re)write preview.png of a finished job",
                    lambda p: p.add_argument("output_dir", help="a finished job's output_dir (local path or URI)")),
        "export": (cmd_export, "write a job's output for other tools (SUMO, OpenSCENARIO, WebDataset, COCO, BDD100K)",
                   _export_args),
        "submit": (cmd_submit, "run a generation job on a running cluster through its job server", None),
        "benchmark": (cmd_benchmark, "run a benchmark (downstream: real vs real + generated rare conditions)",
                      _benchmark_args),
    }
    for name, (fn, help_text, add_args) in verbs.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        # after the verb too; SUPPRESS: absent here, it leaves `aigc-synth --verbose VERB` as parsed
        p.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=verbose_help)
        if add_args is None:
            from aigc_synth.jobs.submit import add_submit_arguments

            add_submit_arguments(p)
        else:
            add_args(p)
        p.set_defaults(func=fn)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verb = next((a for a in argv if not a.startswith("-")), "generate")
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:  # no verb (`aigc-synth`, `aigc-synth --verbose`): generate
            args = parser.parse_args([*argv, "generate"])
        if getattr(args, "overrides", None) and args.overrides[0] == "--":  # `submit -- overrides`
            args.overrides = args.overrides[1:]
        verb = args.command
        if args.verbose:
            from aigc_synth.runtime.logfilter import set_verbose

            set_verbose()
        return args.func(args)
    except AigcSynthError as exc:
        print(f"aigc-synth {verb}: error: {exc}", file=sys.stderr)
        return exc.exit_status
    except FileNotFoundError as exc:  # a path the user named
        print(f"aigc-synth {verb}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted: committed shards are kept; rerun the same command to continue", file=sys.stderr)
        return 130
    except Exception as exc:  # runtime failure (e.g. Ray): one line, the traceback only on request
        if os.environ.get("AIGC_SYNTH_DEBUG"):
            raise
        cause = root_cause(exc)
        if isinstance(cause, AigcSynthError):  # our own error, raised inside a Ray worker
            print(f"aigc-synth {verb}: error: {first_line(cause)}", file=sys.stderr)
            return cause.exit_status
        print(f"aigc-synth {verb}: failed: {describe_failure(exc)} (set AIGC_SYNTH_DEBUG=1 for the traceback)", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
