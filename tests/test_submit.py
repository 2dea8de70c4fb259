"""``aigc-synth submit``: local validation before any network call, fail-fast on a dead address, and
an end-to-end job on a real head (``ray start --head`` with the job server) whose OUTPUT is checked.

The head runs in its own process group with its own ports and temp dir, so it never touches the
session's Ray (``ray_session``) nor anything else on the machine; teardown kills that group only
(never ``ray stop``, which stops every Ray process on the machine).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from aigc_synth.cli import main
from aigc_synth.jobs import submit as submit_mod
from aigc_synth.jobs.submit import build_job_overrides, submit_generation

from tests.helpers import make_tiny_checkpoint

HEAD_START_TIMEOUT_S = 120
JOB_TIMEOUT_S = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _no_network(*args, **kwargs):
    raise AssertionError("must not touch the network")


def test_misspelled_override_fails_locally_before_any_submission(monkeypatch, capsys):
    monkeypatch.setattr(submit_mod, "_probe", _no_network)
    monkeypatch.setattr(submit_mod, "_local_token_headers", _no_network)
    rc = main(["submit", "--address", "http://127.0.0.1:9", "--", "job.num_sampels=10"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and "num_sampels" in err, err


def test_bad_address_and_options_are_usage_errors(capsys):
    assert main(["submit", "--address", "127.0.0.1:6379", "--", "job.num_samples=8"]) == 2  # GCS, not http
    assert main(["submit", "--bogus"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "http" in err[0] and "--bogus" in err[1], err


def test_unreachable_address_fails_fast(capsys):
    port = _free_port()  # nothing listens there
    t0 = time.time()
    rc = main(["submit", "--address", f"http://127.0.0.1:{port}", "--", "job.num_samples=8"])
    took = time.time() - t0
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1 and "cannot reach" in err, err
    assert took < 30, took  # composing the config dominates; the probe itself times out after 5 s


def test_job_overrides_pin_absolute_paths_and_quote_safely(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    overrides, cfg = build_job_overrides(["job.num_samples=8", "output_dir='out dir,1'", "job.checkpoint=ck.pt"])
    assert cfg.output_dir == str(tmp_path / "out dir,1") and cfg.job.checkpoint == str(tmp_path / "ck.pt")
    entry = submit_mod.entrypoint_for(overrides)
    argv = shlex.split(entry)
    assert argv[:2] == ["aigc-synth", "generate"] and argv[2:] == overrides
    assert sum(a.startswith("output_dir=") for a in argv) == 1
    # the default output_dir contains ${now:...}: it is pinned so the job writes where we report
    overrides, cfg = build_job_overrides([])
    assert overrides == [f"output_dir={cfg.output_dir}"] and os.path.isabs(cfg.output_dir)


def test_default_address_from_env(monkeypatch):
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")  # a GCS address: not the job server
    assert submit_mod.default_address() == "http://127.0.0.1:8265"
    monkeypatch.setenv("RAY_ADDRESS", "http://10.0.0.5:8265/")
    assert submit_mod.default_address() == "http://10.0.0.5:8265"
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "https://ray.example:443")
    assert submit_mod.default_address() == "https://ray.example:443"


# ------------------------------------------------------------------------------------------------
# end to end on a real head
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_head():
    """A Ray head with the dashboard/job server, isolated by ports, temp dir and process group."""
    import requests

    ports = {name: _free_port() for name in (
        "port", "dashboard-port", "ray-client-server-port", "dashboard-agent-listen-port",
        "dashboard-agent-grpc-port", "metrics-export-port", "runtime-env-agent-port",
        "node-manager-port", "object-manager-port")}
    temp_dir = tempfile.mkdtemp(prefix="rsub", dir="/tmp")  # short: Ray's unix socket paths are length-limited
    bin_dir = os.path.dirname(sys.executable)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    # the job's shell must find `aigc-synth` from this venv; no token auth on this private loopback head
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", RAY_AUTH_MODE="disabled",
               RAY_USAGE_STATS_ENABLED="0", RAY_DATA_DISABLE_PROGRESS_BARS="1")
    cmd = [os.path.join(bin_dir, "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
           "--dashboard-host=127.0.0.1", "--include-dashboard=true", "--num-cpus=2", "--disable-usage-stats",
           f"--temp-dir={temp_dir}", *(f"--{k}={v}" for k, v in ports.items())]
    log_path = Path(temp_dir) / "head.log"
    with open(log_path, "w") as log:
        head = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{ports['dashboard-port']}"
    try:
        deadline = time.time() + HEAD_START_TIMEOUT_S
        while True:
            if head.poll() is not None:
                pytest.fail(f"ray start exited {head.returncode}: {log_path.read_text()[-2000:]}")
            try:
                if requests.get(f"{url}/api/version", timeout=2).status_code == 200:
                    break
            except requests.exceptions.RequestException:
                pass
            if time.time() > deadline:
                pytest.fail(f"the job server did not come up in {HEAD_START_TIMEOUT_S}s: {log_path.read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        _kill_group(head, temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _kill_group(proc: subprocess.Popen, temp_dir: str) -> None:
    """SIGTERM, then SIGKILL, to the head's own process group (and only to it); then any worker that
    left the group (Ray workers start their own session) but still names this head's unique temp dir."""
    for sig, wait_s in ((signal.SIGTERM, 3), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.time() + wait_s
        while time.time() < deadline:
            proc.poll()
            try:
                os.killpg(proc.pid, 0)  # anything left in the group?
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            continue
        break
    proc.poll()
    deadline = time.time() + 5
    while time.time() < deadline:  # until no process names the temp dir (a dying one could recreate files)
        left = []
        for pid_dir in Path("/proc").glob("[0-9]*"):
            try:
                if temp_dir.encode() in (pid_dir / "cmdline").read_bytes():
                    left.append(int(pid_dir.name))
                    os.kill(int(pid_dir.name), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        if not left:
            break
        time.sleep(0.2)


def test_submit_end_to_end_writes_a_verified_dataset(ray_head, tmp_path, monkeypatch, capsys):
    from aigc_synth.io.reader import verify_output

    ckpt = make_tiny_checkpoint(tmp_path / "tiny.pt")
    monkeypatch.chdir(tmp_path)  # a RELATIVE output_dir must land here, not in the job's working dir
    lines: list[str] = []
    t0 = time.time()
    result = submit_generation(["job.num_samples=64", "job.shard_size=32", "resources.actors=1",
                                f"job.checkpoint={ckpt}", "output_dir=out", "preview=false"],
                               address=ray_head, log=lines.append)
    took = time.time() - t0
    logs = "\n".join(lines)
    assert result["status"] == "SUCCEEDED", f"{result}\n{logs[-3000:]}"
    out = tmp_path / "out"
    assert result["output_dir"] == str(out) and result["manifest"] == str(out / "manifest.json")
    assert (out / "manifest.json").is_file()
    assert verify_output(out) == []
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["num_samples"] == 64 and sum(s["rows"] for s in manifest["shards"]) == 64
    assert len(manifest["shards"]) == 2
    assert lines[0].startswith("submitted ") and any("64" in ln for ln in lines[1:]), logs[-2000:]
    print(f"end-to-end submit took {took:.1f}s")


@pytest.mark.slow  # ~20 s more on a loaded 2-core machine (a second job); the module stays under ~90 s without it
def test_submit_cli_failed_job_exits_1_and_no_wait_prints_id(ray_head, tmp_path, capsys):
    # the config composes, but the job fails on the cluster (the checkpoint does not exist there)
    rc = main(["submit", "--address", ray_head, "--", "job.num_samples=8",
               f"job.checkpoint={tmp_path / 'missing.pt'}", f"output_dir={tmp_path / 'o'}"])
    captured = capsys.readouterr()
    assert rc == 1, captured
    assert "FAILED" in captured.err.strip().splitlines()[-1], captured.err
    assert not (tmp_path / "o").exists()  # the job's own validation wrote nothing

    rc = main(["submit", "--no-wait", "--address", ray_head, "--submission-id", "aigc-test-nowait", "--",
               "job.num_samples=8", f"job.checkpoint={tmp_path / 'missing.pt'}", f"output_dir={tmp_path / 'o2'}"])
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 0 and out[-1] == "aigc-test-nowait", out


def test_cli_module_usage_error_exits_2():
    """`python -m aigc_synth.cli` (one copy of the CLI module: the verbs no longer import it back)."""
    proc = subprocess.run([sys.executable, "-m", "aigc_synth.cli", "submit", "--bogus"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("aigc-synth submit: error:") and "--bogus" in proc.stderr


class _FakeJobClient:
    """Stands in for ray.job_submission.JobSubmissionClient: the job 'succeeds' at once."""

    def __init__(self, address, headers=None):
        pass

    def submit_job(self, **kwargs):
        return "raysubmit_fake"

    async def tail_job_logs(self, sid):
        yield "done\n"

    def get_job_status(self, sid):
        return "SUCCEEDED"

    def get_job_info(self, sid):
        return type("Info", (), {"message": ""})()


def test_submit_reports_the_object_store_manifest_uri(monkeypatch, capsys):
    import ray.job_submission

    monkeypatch.setattr(submit_mod, "_probe", lambda *a, **k: None)
    monkeypatch.setattr(submit_mod, "_local_token_headers", lambda *a, **k: {})
    monkeypatch.setattr(ray.job_submission, "JobSubmissionClient", _FakeJobClient)
    rc = main(["submit", "--address", "http://127.0.0.1:9", "--", "job.num_samples=8",
               "output_dir='s3://bucket/runs/a?region=us-east-1'"])
    out = capsys.readouterr().out
    assert rc == 0, out
    # not Path-joined (which gives s3:/bucket/...), and the query stays at the end
    assert "manifest: s3://bucket/runs/a/manifest.json?region=us-east-1" in out, out
