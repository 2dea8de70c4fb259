"""Child process for the node-removal tests: a 1-head + N-worker Ray cluster on this machine.

Run by tests/test_faults.py in its own process (the test session already holds a Ray instance):

    python tests/cluster_fault_child.py CHECKPOINT OUTPUT_DIR WORKERS [TIMEOUT_S [one|all|gpu]]

The head has 0 CPUs, so every generator actor lives on a worker node. Once two shards are
committed, the worker node hosting an actor is removed (``one``; its raylet and workers die, like
a preempted VM) or every worker node is (``all``: no CPU left anywhere, so Ray would wait forever).
``gpu``: simulated GPU nodes (2 CPUs and 2 GPUs declared each; CHECKPOINT must be a device-free
``latency`` model), one actor per GPU with encode + write as the nodes' CPU stage, as on a real GPU
cluster; the node of an actor is removed and, once Ray has seen it go, a fresh node is added back
(a preempted VM replaced by the autoscaler). ``TIMEOUT_S`` 0 means a clean run. Prints one ``RESULT {json}`` line: ``ok`` or the error type and message.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

import ray  # noqa: E402  (after the environment defaults above)
from ray.cluster_utils import Cluster  # noqa: E402

from aigc_synth.jobs.generate import run_generation  # noqa: E402
# run as a script, this file's own folder (tests/) is sys.path[0]: its sibling helpers.py imports as `helpers`
from helpers import compose_generate, shard_actor_pids  # noqa: E402


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _raylet_pid(node) -> int:
    return node.all_processes["raylet"][0].process.pid


def main() -> None:
    ckpt, out, workers = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    timeout_s = int(sys.argv[4]) if len(sys.argv) > 4 else 120
    remove = timeout_s > 0  # 0: a clean run (no node removed) with the default watchdog
    mode = sys.argv[5] if len(sys.argv) > 5 else "one"
    remove_all, gpu = mode == "all", mode == "gpu"
    timeout_s = timeout_s or 300
    # detect a dead node in ~2 s instead of Ray's default ~30 s, so the test spends its time on the job
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 3,
                                          "health_check_initial_delay_ms": 0}})
    node_shape = {"num_cpus": 2, "num_gpus": 2} if gpu else {"num_cpus": 1}
    nodes = [cluster.add_node(**node_shape) for _ in range(workers)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    if gpu:  # one actor per simulated GPU; the encode + write stage on the nodes' CPUs
        pool = [f"resources.actors={2 * workers}", "resources.num_gpus=1", "resources.cpus_per_actor=0.25",
                "resources.png_stage=true", "job.num_samples=1920", "job.shard_size=16", "job.compute_batch=16"]
    else:  # 2 actors × 0.75 CPU: one actor per 1-CPU worker node, and a spare node (if any) to move to
        pool = ["resources.actors=2", "resources.cpus_per_actor=0.75", "job.num_samples=480", "job.shard_size=20"]
    cfg = compose_generate([f"output_dir={out}", f"job.checkpoint={ckpt}", *pool, "resources.batch_size=20",
                            f"resources.progress_timeout_s={timeout_s}", "preview=false"])
    result: dict = {}

    def target():
        try:
            run_generation(cfg, progress=False, log=lambda *a: None)
            result["status"] = "ok"
        except BaseException as exc:
            result["status"], result["message"] = type(exc).__name__, str(exc)

    thread = threading.Thread(target=target, daemon=True)
    t0 = time.time()
    thread.start()
    removed = None
    while remove and thread.is_alive() and time.time() - t0 < 180 and removed is None:
        done = len(list((out / "parquet").glob("part-*.parquet"))) if (out / "parquet").exists() else 0
        if done >= 2:
            hosts = {_ppid(pid) for pid in shard_actor_pids()}
            if remove_all:
                for node in nodes:
                    cluster.remove_node(node, allow_graceful=False)
                removed = nodes
            for node in [] if remove_all else nodes:
                if _raylet_pid(node) in hosts:
                    cluster.remove_node(node, allow_graceful=False)
                    removed = node
                    break
        time.sleep(0.05)
    if gpu and removed is not None and thread.is_alive():
        while thread.is_alive() and sum(n["Alive"] for n in ray.nodes()) > workers:  # head + survivors
            time.sleep(0.2)
        result["added_node_at_shards"] = len(list((out / "parquet").glob("part-*.parquet")))
        cluster.add_node(**node_shape)
    thread.join(timeout=timeout_s + 240)
    result.setdefault("status", "still running")
    result["removed_node"] = removed is not None
    result["elapsed_s"] = round(time.time() - t0, 1)
    print("RESULT " + json.dumps(result), flush=True)
    os._exit(0)  # skip Ray's slow atexit teardown; the parent kills the process group


if __name__ == "__main__":
    main()
