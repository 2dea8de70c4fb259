"""The console of a CLI job: aigc_synth's own lines and one progress bar; Ray's log lines only with --verbose.

Ray's log lines still go to its session logs (``<RAY_TMPDIR>/ray/session_*/logs``); each job here runs
its own local Ray under a short temporary RAY_TMPDIR, so that is checkable without racing other jobs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from aigc_synth.cli import build_parser
from aigc_synth.runtime.logfilter import VERBOSE_ENV

from tests.helpers import CLI

#: Ray's Python log format ("%(asctime)s\t%(levelname)s %(filename)s:%(lineno)s -- %(message)s"), its C++
#: glog lines ("[2026-... E 123 456] core_worker.cc:..."), worker/raylet prefixes, and the lines seen before
RAY_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\s+(DEBUG|INFO|WARNING|ERROR|CRITICAL)\b"
                      r"|\b(DEBUG|INFO|WARNING|ERROR|CRITICAL)\b|\.py:\d+ -- |^\[\d{4}-\d\d-\d\d [^]]* [IWEF] \d+ \d+\]"
                      r"|\((raylet|pid=|MapWorker)|streaming_executor|core_worker|Progress bars disabled|[Tt]oken")
RAY_PY_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\t(INFO|WARNING) \S+\.py:\d+ -- ")


def _run(*args: str, timeout: int = 300) -> tuple[subprocess.CompletedProcess, Path]:
    """The CLI in a subprocess, its own Ray under a fresh RAY_TMPDIR (short: Ray's socket paths must fit)."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": str(ray_tmp)}
    env.pop("RAY_ADDRESS", None)
    env.pop(VERBOSE_ENV, None)
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=env)
    return proc, ray_tmp


def _lines(text: str) -> list[str]:
    return [ln for ln in re.split(r"[\r\n]", text) if ln.strip()]


# each case is a CLI with a Ray of its own (~15-25 s); the scene job's console takes the same path, so it runs with -m slow
@pytest.mark.parametrize("job, unit, summary", [("balanced", "image", "images: 8 in 2 shard(s)"),
                                                pytest.param("scenes", "scene", "scenes: 8 in 2 shard(s)", marks=pytest.mark.slow)])
def test_a_default_job_prints_only_its_own_lines_and_one_bar(tmp_path, job, unit, summary):
    out = tmp_path / "out"
    proc, ray_tmp = _run("generate", f"job={job}", f"output_dir={out}", "job.num_samples=8", "job.shard_size=4")
    try:
        assert proc.returncode == 0, proc.stderr[-3000:]
        console = _lines(proc.stdout + "\n" + proc.stderr)
        assert [ln for ln in console if RAY_LINE.search(ln)] == [], proc.stdout + proc.stderr
        assert summary in proc.stdout and f"output: {out}" in proc.stdout
        bars = [ln for ln in console if re.search(r"\d+%\|", ln)]
        assert bars and all(ln.startswith("generate: ") and re.search(fr"{unit}/s|s/{unit}\]", ln) for ln in bars), bars
        assert bars[0].startswith("generate:   0%") and bars[-1].startswith("generate: 100%") and "8/8" in bars[-1]
        # what the console no longer shows is still in Ray Data's session log
        logs = list(ray_tmp.glob("ray/session_2*/logs/ray-data/ray-data.log"))
        assert len(logs) == 1 and "Execution plan of Dataset" in logs[0].read_text()
        # and the job is whole: a manifest that verifies and a preview; the bundled default image model is
        # layout-conditioned, so every image row names its scene and carries its boxes
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["num_samples"] == 8 and (out / "preview.png").is_file()
        if unit == "image":
            table = pq.read_table(out / "parquet")
            assert manifest["model"]["family"] == "layout_gan" and {"scene_id", "boxes"} <= set(table.column_names)
            assert sum(len(b) for b in table.column("boxes").to_pylist()) > 0
            assert "throughput" in proc.stdout
        verify = subprocess.run([*CLI, "verify", str(out)], capture_output=True, text=True, timeout=120)
        assert verify.returncode == 0 and "OK" in verify.stdout, verify.stdout + verify.stderr
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


# both cases start a Ray of their own (~15 s): slow. The default suite keeps "cannot fit" in-process
# (tests/test_job.py) and a quiet console in the job case above; the handlers are tested below
@pytest.mark.slow
@pytest.mark.parametrize("how", ["quiet", "--verbose"])
def test_verbose_brings_rays_lines_back_and_errors_print_either_way(tmp_path, how):
    """Cheap: a job spec that fails right after Ray started (5 actors cannot fit), exit 2, nothing written.
    (AIGC_SYNTH_VERBOSE and the flag's other places: the in-process tests below.)"""
    out = tmp_path / "out"
    args = ["generate", f"output_dir={out}", "job.num_samples=8", "resources.actors=5", "resources.cpus_per_actor=1"]
    if how == "--verbose":
        args.insert(0, "--verbose")
    proc, ray_tmp = _run(*args)
    shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("aigc-synth generate: error: ")]
    assert len(errors) == 1 and "cannot fit 5 actor(s)" in errors[0], proc.stderr
    ray_lines = [ln for ln in _lines(proc.stdout + "\n" + proc.stderr) if RAY_PY_LINE.search(ln)]
    if how == "quiet":
        assert _lines(proc.stderr) == errors and proc.stdout == ""
    else:  # at least "INFO worker.py:NNNN -- Started a local Ray instance."
        assert ray_lines, proc.stderr
    assert not out.exists()


@pytest.mark.parametrize("argv, verbose", [
    (["generate"], False), (["--verbose", "generate", "job=scenes"], True), (["generate", "--verbose", "job=scenes"], True),
    (["generate", "job=scenes", "--verbose"], True), (["verify", "out", "--verbose"], True),
    (["submit", "--verbose", "--", "job=scenes"], True), (["--verbose"], True), (["evaluate", "--verbose"], True),
])
def test_verbose_is_a_global_flag_also_accepted_after_the_verb(argv, verbose):
    parser = build_parser()
    args = parser.parse_args(argv)
    assert args.verbose is verbose
    assert getattr(args, "overrides", None) in (None, [], ["job=scenes"], ["--", "job=scenes"])


@pytest.mark.parametrize("value, verbose", [(None, False), ("0", False), ("", False), ("1", True), ("yes", True)])
def test_ray_console_handlers_follow_the_verbose_setting(monkeypatch, value, verbose):
    """In-process, no Ray started: what connect_ray does before ray.init. Console handlers of the ``ray`` and
    ``ray.data`` loggers print ERROR and up unless verbose; the loggers' levels and Ray Data's file handler
    (its session log) are left as Ray set them."""
    import logging

    from aigc_synth.runtime.logfilter import RAY_CONSOLE_LOGGERS, configure_ray_console

    def state():
        return {name: (logging.getLogger(name).level,
                       [(type(h).__name__, h.level) for h in logging.getLogger(name).handlers]) for name in RAY_CONSOLE_LOGGERS}

    monkeypatch.setenv(VERBOSE_ENV, "1")
    assert configure_ray_console() is True
    as_ray_set_them = state()
    try:
        if value is None:
            monkeypatch.delenv(VERBOSE_ENV)
        else:
            monkeypatch.setenv(VERBOSE_ENV, value)
        assert configure_ray_console() is verbose
        now = state()
        if verbose:
            assert now == as_ray_set_them
        else:
            for name, (level, handlers) in now.items():
                assert level == as_ray_set_them[name][0]
                for (kind, h_level), (_, own) in zip(handlers, as_ray_set_them[name][1]):
                    expected = own if kind == "SessionFileHandler" else max(own, logging.ERROR)
                    assert h_level == expected, (name, kind)
            assert ("SessionFileHandler", 0) in now["ray.data"][1]  # ray-data.log: every level
            for name in ("ray", "ray.data"):
                assert ("PlainRayHandler", logging.ERROR) in now[name][1]
    finally:
        monkeypatch.setenv(VERBOSE_ENV, "1")
        configure_ray_console()  # as Ray set them, for the rest of this test session


def test_the_stderr_filter_keeps_the_bar_a_dropped_core_worker_line_follows(capfd, monkeypatch):
    """The benign C++ line comes when the actors start, right after the bar's first "\\r<bar>" (no newline):
    the bar passes on at once, so dropping that line does not take the bar with it."""
    import time

    from aigc_synth.runtime.logfilter import BENIGN, drop_stderr_lines

    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    benign = b"[2026-12-05 08:03:46,444 E 1 2] core_worker.cc:2465: Actor 'MapWorker' " + BENIGN[0] + b"\n"
    with drop_stderr_lines():
        os.write(2, b"\rgenerate:   0%|          | 0/8")
        time.sleep(0.3)  # separate writes, as the bar and the core worker make them
        os.write(2, benign)
        time.sleep(0.3)
        os.write(2, b"\rgenerate: 100%|##########| 8/8\nreal error line\n")
    assert capfd.readouterr().err == "\rgenerate:   0%|          | 0/8\rgenerate: 100%|##########| 8/8\nreal error line\n"
