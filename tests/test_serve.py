"""``aigc-synth serve``: real HTTP requests against the Ray Serve app on 127.0.0.1 (shared 2-CPU Ray).

The app is started once for the module (tiny 32-px checkpoint, a free port) and shut down at the end,
so later tests get their CPUs back. Its replicas ask 0.5 CPU (generator) and 0 (ingress).
"""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from aigc_synth.client import GenerationClient, GenerationError
from aigc_synth.cli import main
from aigc_synth.config import compose
from aigc_synth.serve.protocol import TOKEN_ENV
from aigc_synth.serve.server import ServeConfigError, validate_serve_config
from tests.helpers import compose_generate

TOKEN = "test-token-0123456789abcdef"
COND = {"weather": "fog", "time_of_day": "night", "traffic": "heavy"}
SEED, N = 7, 40
MAX_BODY = 4096


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _http(url: str, path: str, body: bytes | None = None, token: str | None = TOKEN, headers: dict | None = None):
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url + path, data=body, headers=hdrs, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture(scope="session")
def _own_local_ray():
    """Start the shared Ray as a fresh local instance when this module runs first: a bare ``ray.init()``
    would join any ``ray start`` cluster on this machine (``/tmp/ray/ray_current_cluster``)."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)


@pytest.fixture(scope="module")
def server(_own_local_ray, ray_session, tiny_checkpoint):
    from aigc_synth.serve.server import start_server, stop_server

    port = _free_port()
    cfg = compose("serve", [f"serve.port={port}", f"serve.checkpoint={tiny_checkpoint}", f"serve.token={TOKEN}",
                            "serve.max_n=48", f"serve.max_body_bytes={MAX_BODY}", "serve.app_name=aigc_synth_test"])
    running = start_server(cfg, log=lambda m: None)
    try:
        yield running.url
    finally:
        stop_server()


@pytest.fixture(scope="module")
def client(server):
    return GenerationClient(server, token=TOKEN)


@pytest.fixture(scope="module")
def batch_job(_own_local_ray, ray_session, tiny_checkpoint, tmp_path_factory) -> dict[int, tuple[bytes, int]]:
    """The batch job equivalent to {conditions: [COND], n: N, seed: SEED}: sample_id → (PNG bytes, seed)."""
    from aigc_synth.jobs.generate import run_generation

    out = tmp_path_factory.mktemp("serve_job") / "job"
    items = "[{conditions:{weather:fog,time_of_day:night,traffic:heavy},weight:1}]"
    cfg = compose_generate([f"output_dir={out}", f"job.checkpoint={tiny_checkpoint}", f"job.num_samples={N}",
                            "job.shard_size=16", f"job.seed={SEED}", "job.plan.kind=list", f"job.plan.items={items}",
                            "preview=false", "resources.actors=1", "resources.cpus_per_actor=0.5"])
    run_generation(cfg, progress=False)
    table = pq.read_table(Path(out) / "parquet")
    data = table.column("image").combine_chunks().field("bytes").to_pylist()
    return dict(zip(table.column("sample_id").to_pylist(), zip(data, table.column("seed").to_pylist())))


# -- refusal and config checks (no server) ---------------------------------------------------------
def test_non_loopback_host_without_token_is_refused(monkeypatch, capsys):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    port = _free_port()
    assert main(["serve", "serve.host=0.0.0.0", f"serve.port={port}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "non-loopback" in err and TOKEN_ENV in err
    assert not _listening(port)


def test_loopback_without_token_warns_and_env_token_is_used(monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    token, warning = validate_serve_config(compose("serve", []).serve)
    assert token is None and "warning" in warning
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    token, warning = validate_serve_config(compose("serve", ["serve.host=0.0.0.0"]).serve)
    assert token == "from-env" and warning is None
    with pytest.raises(ServeConfigError, match="max_n"):
        validate_serve_config(compose("serve", ["serve.max_n=0"]).serve)


# -- the running app ---------------------------------------------------------------------------------
def test_generate_returns_n_decodable_images(client):
    results = client.generate(COND, n=5, seed=SEED)
    assert len(results) == 5
    for i, (image, meta) in enumerate(results):
        assert image.shape == (32, 32, 3) and image.dtype == np.uint8
        assert meta["sample_index"] == i and meta["condition"] == COND and len(meta["sha256"]) == 64
        assert meta["bytes"].startswith(b"\x89PNG")
    assert len({m["sha256"] for _, m in results}) == 5  # distinct seeds → distinct images


def test_bytes_equal_the_batch_job(client, batch_job):
    served = client.generate([COND], n=N, seed=SEED)
    assert sorted(batch_job) == list(range(N))
    for image, meta in served:
        png, seed = batch_job[meta["sample_index"]]
        assert meta["seed"] == seed
        assert meta["bytes"] == png, f"sample {meta['sample_index']} differs from the batch job"
    # a slice [start, start + n) of the same job gives the same bytes
    part = client.generate([COND], n=3, seed=SEED, start=10, num_samples=N)
    assert [m["bytes"] for _, m in part] == [batch_job[i][0] for i in (10, 11, 12)]


def test_concurrent_requests_are_batched_without_changing_bytes(client):
    expected = [m["sha256"] for _, m in client.generate(COND, n=6, seed=3)]
    results: list = [None] * 4

    def call(k: int) -> None:
        results[k] = [m["sha256"] for _, m in client.generate(COND, n=6, seed=3)]

    threads = [threading.Thread(target=call, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert results == [expected] * 4


def test_npy_format_matches_png_pixels(client):
    png = client.generate(COND, n=2, seed=1)
    npy = client.generate(COND, n=2, seed=1, format="npy")
    for (a, ma), (b, mb) in zip(png, npy):
        assert b.shape == (32, 32, 3) and np.array_equal(a, b) and ma["seed"] == mb["seed"]


def test_several_conditions_follow_the_list_plan(client):
    other = {"weather": "snow", "time_of_day": "day", "traffic": "light"}
    results = client.generate([COND, other], n=10, seed=0)
    conds = [m["condition"] for _, m in results]
    assert conds.count(COND) == 5 and conds.count(other) == 5


def test_conditions_and_health(server, client):
    info = client.conditions()
    assert info["schema"]["weather"] == ["clear", "overcast", "rain", "fog", "snow"]
    assert info["width"] == 32 and info["max_n"] == 48 and len(info["model_id"]) == 64
    assert _http(server, "/health", token=None) == (200, {"status": "ok"})


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_missing_or_wrong_token_is_401(server, token):
    body = json.dumps({"conditions": COND, "n": 1}).encode()
    for path, data in (("/generate", body), ("/conditions", None)):
        status, payload = _http(server, path, data, token=token)
        assert status == 401 and "token" in payload["error"]


@pytest.mark.parametrize("body, needle", [
    ({"conditions": {"weather": "fog", "time_of_day": "night", "traffic": "heavy", "season": "winter"}}, "unknown factor 'season'"),
    ({"conditions": {"weather": "hail", "time_of_day": "night", "traffic": "heavy"}}, "unknown value 'hail'"),
    ({"conditions": COND, "n": 49}, "'n' must lie in [1, 48]"),
    ({"conditions": COND, "format": "jpeg"}, "'format' must be one of"),
    ({"conditions": COND, "seeds": 3}, "unknown field 'seeds'"),
])
def test_bad_requests_are_422(server, body, needle):
    status, payload = _http(server, "/generate", json.dumps(body).encode())
    assert status == 422 and needle in payload["error"]


def test_malformed_json_is_422(server):
    status, payload = _http(server, "/generate", b"{not json")
    assert status == 422 and "not valid JSON" in payload["error"]


def test_oversized_body_is_413(server):
    body = json.dumps({"conditions": {**COND, "pad": "x" * MAX_BODY}}).encode()
    status, payload = _http(server, "/generate", body)
    assert status == 413 and "limit" in payload["error"]


def test_client_raises_on_errors(server):
    with pytest.raises(GenerationError) as exc:
        GenerationClient(server, token="nope").generate(COND)
    assert exc.value.status == 401


# -- POST /scenes ---------------------------------------------------------------------------------------------
SCENE_CONDS = [{"traffic": "heavy", "num_lanes": 3, "road": "merge"}, {"traffic": "light", "num_lanes": "2", "road": "straight"}]


@pytest.fixture(scope="module")
def scene_job_rows(_own_local_ray, ray_session, tmp_path_factory) -> list[dict]:
    """The scene job equivalent to {conditions: SCENE_CONDS, n: 12, seed: 5} on the bundled scene model."""
    from aigc_synth.jobs.generate import run_generation

    out = tmp_path_factory.mktemp("serve_scene_job") / "job"
    items = ("[{conditions:{traffic:heavy,num_lanes:'3',road:merge},weight:1},"
             "{conditions:{traffic:light,num_lanes:'2',road:straight},weight:1}]")
    cfg = compose_generate(["job=scenes", f"output_dir={out}", "job.num_samples=12", "job.shard_size=5", "job.seed=5",
                            "job.plan.kind=list", f"job.plan.items={items}", "preview=false", "resources.actors=1",
                            "resources.cpus_per_actor=0.5"])
    run_generation(cfg, progress=False)
    return pq.read_table(Path(out) / "parquet").to_pylist()


def test_scenes_endpoint_returns_the_scene_jobs_rows(server, scene_job_rows):
    status, body = _http(server, "/scenes", json.dumps({"conditions": SCENE_CONDS, "n": 12, "seed": 5}).encode())
    assert status == 200, body
    assert body["scenes"] == scene_job_rows
    assert {(r["traffic"], r["road"]["kind"]) for r in body["scenes"]} == {("heavy", "merge"), ("light", "straight")}
    status, part = _http(server, "/scenes", json.dumps({"conditions": SCENE_CONDS, "n": 4, "seed": 5, "start": 8,
                                                        "num_samples": 12}).encode())
    assert status == 200 and part["scenes"] == scene_job_rows[8:12]


@pytest.mark.parametrize("body, needle", [
    ({"conditions": [{"traffic": "foggy", "num_lanes": 3, "road": "curve"}]}, "foggy"),
    ({"conditions": [{"traffic": "heavy", "num_lanes": 7, "road": "curve"}]}, "'7'"),
    ({"conditions": [{"traffic": "heavy", "num_lanes": 3, "road": "roundabout"}]}, "'roundabout'"),
    ({"conditions": [{"traffic": "heavy", "num_lanes": 3}]}, "missing factor 'road'"),
    ({"conditions": [{"traffic": "heavy", "num_lanes": 3, "road": "curve"}], "format": "png"}, "does not apply to scenes"),
    ({"conditions": [{"traffic": "heavy", "num_lanes": 3, "road": "curve"}], "n": 49}, "'n' must lie in"),
])
def test_bad_scene_requests_are_422(server, body, needle):
    status, reply = _http(server, "/scenes", json.dumps(body).encode())
    assert status == 422 and needle in reply["error"]


def test_scenes_need_the_token(server):
    status, _ = _http(server, "/scenes", json.dumps({"conditions": SCENE_CONDS}).encode(), token=None)
    assert status == 401
