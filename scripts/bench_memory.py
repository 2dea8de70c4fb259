#!/usr/bin/env python
"""Peak memory vs job size: the job must stream, never materialise the whole output.

    python scripts/bench_memory.py                       # 1k and 50k images, bundled model
    python scripts/bench_memory.py --sizes 1000 10000

Each size runs in a fresh subprocess (its own local Ray). While it runs, every 0.2 s this script
reads /proc for the driver and all its descendant processes (raylet, GCS, workers, actors) and
keeps the peak RSS of the driver and the peak summed RSS of the rest. Object-store spilling is read
from Ray's memory summary at the end of each job. Prints peak(largest) ÷ peak(smallest).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")

CHILD = r"""
import json
from aigc_synth.config import compose
from aigc_synth.jobs.generate import run_generation
import ray
cfg = compose("generate", {overrides!r})
run_generation(cfg, progress=False, log=lambda *a: None)
m = json.load(open(cfg.output_dir + "/run.json"))  # this run's timings (the manifest holds none)
spilled = 0.0
try:
    from ray._private.internal_api import memory_summary
    for line in memory_summary(stats_only=True).splitlines():
        if line.strip().startswith("Spilled"):
            spilled = float(line.split()[1])
except Exception:
    pass
print("RESULT " + json.dumps({{"images_per_s": m["timings"]["images_per_s"], "spilled_mib": spilled}}))
"""


def rss_tree(root_pid: int) -> tuple[int, int]:
    """(driver RSS, summed RSS of all descendants) in bytes."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            ppid = int(fields[1])
            rss[int(entry.name)] = int((entry / "statm").read_text().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    total, stack, seen = 0, list(children.get(root_pid, [])), set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return rss.get(root_pid, 0), total


def run_size(n: int, shard_size: int) -> dict:
    out = Path(tempfile.mkdtemp(prefix=f"aigc-mem-{n}-")) / "job"
    overrides = [f"output_dir={out}", f"job.num_samples={n}", f"job.shard_size={shard_size}", "preview=false"]
    code = CHILD.format(overrides=overrides)
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    peak_driver = peak_workers = 0
    while proc.poll() is None:
        d, w = rss_tree(proc.pid)
        peak_driver, peak_workers = max(peak_driver, d), max(peak_workers, w)
        time.sleep(0.2)
    stdout = proc.stdout.read() if proc.stdout else ""
    result = next((json.loads(line[7:]) for line in stdout.splitlines() if line.startswith("RESULT ")), {})
    subprocess.run(["rm", "-rf", str(out.parent)], check=False)
    return {"num_samples": n, "peak_driver_mib": peak_driver / 2**20, "peak_workers_mib": peak_workers / 2**20,
            "peak_total_mib": (peak_driver + peak_workers) / 2**20, "wall_s": time.time() - t0, **result,
            "exit_code": proc.returncode}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000, 50_000])
    ap.add_argument("--shard-size", type=int, default=500)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = [run_size(n, args.shard_size) for n in args.sizes]
    for r in rows:
        print(f"{r['num_samples']:>8} images: driver peak {r['peak_driver_mib']:7.0f} MiB, Ray processes peak "
              f"{r['peak_workers_mib']:7.0f} MiB, total {r['peak_total_mib']:7.0f} MiB, spilled {r.get('spilled_mib', 0):.0f} MiB, "
              f"{r.get('images_per_s', 0):.0f} img/s, exit {r['exit_code']}")
    small, large = rows[0], rows[-1]
    print(f"peak({large['num_samples']}) ÷ peak({small['num_samples']}): driver {large['peak_driver_mib'] / small['peak_driver_mib']:.2f}, "
          f"Ray processes {large['peak_workers_mib'] / small['peak_workers_mib']:.2f}, total {large['peak_total_mib'] / small['peak_total_mib']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
