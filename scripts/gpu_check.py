#!/usr/bin/env python
"""One-shot GPU check (under 5 minutes on one GPU): the GPU tests, then images/s of each image family.

    python scripts/gpu_check.py --out gpu_check.json                      # on a GPU node
    python scripts/gpu_check.py --device cpu --n 64 --out /tmp/cpu.json   # the same measurement on CPUs

Per family (the bundled layout GAN, and a layout-diffusion checkpoint: ``--diffusion PATH``, default the
bundled one when present) it samples ``--n`` layout images on the device with the job's sampling path
(:func:`aigc_synth.sampling.sampler.generate_images`, per-sample seeds, fixed micro-batches) and reports
images/s, the GPU's mean utilisation while it ran (``nvidia-smi``) and the ratio to a plain PyTorch loop
calling the same module on the same inputs (what our determinism machinery costs). Diffusion is measured
as exported and with its GPU options (bf16 autocast, channels-last). Then each family runs as a real job
(``jobs``: a local Ray on this machine, the actor on the GPU, encoding and writing on the CPUs), whose
images/s next to the model-only figure is what the pipeline costs on this GPU. Everything goes to one JSON; the
README's GPU figures are taken from it, none is written by hand.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from aigc_synth.data.layout import scene_layouts
from aigc_synth.models.exported import BUNDLED_CHECKPOINT, load_generator
from aigc_synth.models.scene_families import BUNDLED_SCENE_CHECKPOINT, load_scene_generator
from aigc_synth.sampling.sampler import generate_images
from aigc_synth.seeds import latents_for_seeds

ROOT = Path(__file__).resolve().parents[1]
BUNDLED_DIFFUSION = ROOT / "aigc_synth" / "assets" / "layout_diffusion.pt"


class Utilisation:
    """Mean GPU utilisation (%) sampled by nvidia-smi every 0.2 s while the block runs (None without it)."""

    def __enter__(self):
        self.samples, self._stop = [], threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=5).stdout.split()
                self.samples.append(float(out[0]))
            except (OSError, subprocess.SubprocessError, ValueError, IndexError):
                return
            time.sleep(0.2)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def mean(self):
        return round(float(np.mean(self.samples)), 1) if self.samples else None


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(path: Path, n: int, device: str, compute_batch: int, **sampling) -> dict:
    gen = load_generator(path, device=device)
    if sampling:
        gen.module.configure_sampling(**sampling)
    scenes = load_scene_generator(BUNDLED_SCENE_CHECKPOINT).sample(["moderate"] * n, [3] * n, list(range(n)), list(range(n)))
    layouts = scene_layouts(scenes, gen.resolution)
    codes = np.zeros((n, len(gen.schema.names)), np.int64)
    seeds = np.arange(n)
    generate_images(gen, codes[:compute_batch], seeds[:compute_batch], device, compute_batch, layouts=layouts[:compute_batch])  # warm-up
    _sync(device)
    with Utilisation() as util:
        t0 = time.perf_counter()
        generate_images(gen, codes, seeds, device, compute_batch, layouts=layouts)
        _sync(device)
        ours = time.perf_counter() - t0
    z = latents_for_seeds(seeds, gen.z_dim).to(device)
    c, lay = torch.from_numpy(codes).to(device), torch.from_numpy(layouts).to(device)
    with torch.no_grad():  # the plain loop: the same module, inputs already on the device, no padding or copies
        t0 = time.perf_counter()
        for i in range(0, n, compute_batch):
            gen.module(z[i:i + compute_batch], c[i:i + compute_batch], lay[i:i + compute_batch])
        _sync(device)
        plain = time.perf_counter() - t0
    return {"checkpoint": str(path), "family": gen.family, "model_id": gen.model_id[:12], "n": n, "compute_batch": compute_batch,
            "sampling": dict(getattr(gen.module, "sampling", {})), "img_per_s": round(n / ours, 1),
            "plain_loop_img_per_s": round(n / plain, 1), "ratio_to_plain_loop": round(plain / ours, 3),
            "gpu_utilisation_pct": util.mean}


def job_rate(path: Path, n: int, device: str, compute_batch: int, out: Path) -> dict:
    """A real ``aigc-synth generate`` job of ``n`` images from ``path`` on a local Ray of this machine: on a
    GPU, one actor on the GPU (``resources.num_gpus=1``) and the encode + write stage on the CPUs."""
    import ray

    from aigc_synth.benchmarks.scale_out import steady_rate
    from aigc_synth.config import compose
    from aigc_synth.jobs.generate import run_generation

    gpu = device.startswith("cuda")
    cfg = compose("generate", [f"output_dir={out}", f"job.checkpoint={path}", f"job.num_samples={n}",
                               f"job.compute_batch={compute_batch}", f"resources.num_gpus={1 if gpu else 0}", "preview=false"])
    try:
        run_generation(cfg, progress=False, log=lambda *_: None)
    finally:
        ray.shutdown()
    run = json.loads((out / "run.json").read_text())
    return {"checkpoint": str(path), "n": n, "job_img_per_s": round(n / run["timings"]["generate_s"], 1),
            "job_steady_img_per_s": steady_rate(run.get("profile", {}).get("per_shard", [])),
            "actors": run["resources"]["actors"], "shard_size": json.loads((out / "job.json").read_text())["job"]["shard_size"],
            "png_stage": gpu}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--n", type=int, default=2048, help="images per measurement")
    ap.add_argument("--compute-batch", type=int, default=256)
    ap.add_argument("--diffusion", default=None, help="a layout_diffusion checkpoint (default: the bundled one, if any)")
    ap.add_argument("--skip-tests", action="store_true")
    ap.add_argument("--skip-jobs", action="store_true", help="no Ray job per family (the model-only figures)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    result: dict = {"device": torch.cuda.get_device_name(0) if a.device.startswith("cuda") else a.device,
                    "torch": torch.__version__}
    if not a.skip_tests:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "tests/test_gpu.py", "-p", "no:cacheprovider"],
                              cwd=ROOT, capture_output=True, text=True)
        result["gpu_tests"] = {"returncode": proc.returncode, "summary": (proc.stdout.strip().splitlines() or [""])[-1]}
    runs = [measure(BUNDLED_CHECKPOINT, a.n, a.device, a.compute_batch)]
    diffusion = Path(a.diffusion) if a.diffusion else BUNDLED_DIFFUSION
    if diffusion.is_file():
        n = max(a.compute_batch, a.n // 8)  # a solver of many network passes: fewer images, same batch
        runs.append(measure(diffusion, n, a.device, a.compute_batch))
        if a.device.startswith("cuda"):
            runs.append(measure(diffusion, n, a.device, a.compute_batch, bf16=True, channels_last=True))
    result["families"] = runs
    if not a.skip_jobs:  # the same models through the job machinery (Ray Data, actors, encode, shards)
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            result["jobs"] = [job_rate(Path(r["checkpoint"]), r["n"], a.device, a.compute_batch, Path(tmp) / f"job{k}")
                              for k, r in enumerate(runs) if not r["sampling"].get("bf16")]
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
