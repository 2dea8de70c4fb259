"""Evaluate a generator (sampling N per condition itself) or a generation job's output.

Both sets – generated and reference – go through the frozen domain classifier; its penultimate
features feed the distribution metrics, its predictions the condition metrics. Everything is
deterministic: the same source, seed and reference give the same ``metrics.json`` numbers.

The procedural reference is rendered with the *generated* set's conditions (one real scene per
generated image, from an independent seed stream), so the overall FD/KID compare like with like
even for a skewed job plan.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

from aigc_synth.errors import EvaluationError, first_line  # noqa: F401 (EvaluationError re-exported from its former home)
from aigc_synth.metrics.condition import (
    condition_accuracy,
    condition_keys,
    condition_kl,
    inception_score_analogue,
    mean_pairwise_distance,
)
from aigc_synth.metrics.distribution import density_coverage, frechet_distance, kernel_inception_distance, precision_recall
from aigc_synth.metrics.domain import DomainFeatureExtractor, load_domain_classifier
from aigc_synth.schema import ConditionSchema
from aigc_synth.seeds import derive_seeds

#: Seed of the procedural reference set (independent of the classifier's training/held-out seeds).
REFERENCE_SEED = 424_242
CHUNK = 256


# ------------------------------------------------------------------------------------------------
# the generated set
# ------------------------------------------------------------------------------------------------
def sample_checkpoint(path: str, n_per_condition: int, seed: int, progress: bool = True) -> dict[str, Any]:
    """``n_per_condition`` images for every condition combination; sample ``i`` uses the seed
    ``derive_seeds(seed, i)``, exactly like sample id ``i`` of a generation job."""
    import torch

    from aigc_synth.models.exported import load_generator, resolve_checkpoint_path
    from aigc_synth.seeds import LATENT_STREAM
    from aigc_synth.sampling.sampler import generate_images

    gen = load_generator(resolve_checkpoint_path(path))
    combos = np.array([gen.schema.encode(c) for c in gen.schema.combinations()], dtype=np.int64)
    codes = np.repeat(combos, n_per_condition, axis=0)
    seeds = derive_seeds(seed, np.arange(len(codes)), stream=LATENT_STREAM)
    images = np.empty((len(codes), gen.resolution, gen.resolution, 3), np.uint8)
    t0 = time.perf_counter()
    for s in tqdm(range(0, len(codes), CHUNK), desc="sample", unit="batch", disable=not progress):
        images[s:s + CHUNK] = generate_images(gen, codes[s:s + CHUNK], seeds[s:s + CHUNK])
    elapsed = time.perf_counter() - t0
    return {"images": images, "codes": codes, "schema": gen.schema, "model_id": gen.model_id, "family": gen.family,
            "kind": "checkpoint", "sampling_img_per_s": round(len(codes) / elapsed, 1),
            "torch_threads": torch.get_num_threads()}


def _is_layout_checkpoint(source: str) -> bool:
    from aigc_synth.models.exported import read_generator_header, resolve_checkpoint_path
    from aigc_synth.errors import CheckpointError
    from aigc_synth.models.registry import get_family

    try:
        header = read_generator_header(resolve_checkpoint_path(source))
        return get_family(header["family"]).layout
    except (CheckpointError, ValueError, OSError):
        return False  # sample_checkpoint reports the problem with its own message


def sample_checkpoint_on_scenes(cfg, progress: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """``n_per_condition`` images per condition, each drawn for a scene (see
    :mod:`aigc_synth.evaluation.layout`), and the real renders of the same scenes."""
    import torch

    from aigc_synth.evaluation.layout import REFERENCE_SCENE_SEED, evaluation_scenes, layout_images, scene_reference
    from aigc_synth.models.exported import load_generator, resolve_checkpoint_path
    from aigc_synth.seeds import LATENT_STREAM

    gen = load_generator(resolve_checkpoint_path(cfg.source))
    combos = np.array([gen.schema.encode(c) for c in gen.schema.combinations()], dtype=np.int64)
    codes = np.repeat(combos, cfg.n_per_condition, axis=0)
    scenes, codes = evaluation_scenes(codes, cfg.seed, gen.schema, cfg.scenes)
    seeds = derive_seeds(cfg.seed, np.arange(len(codes)), stream=LATENT_STREAM)
    t0 = time.perf_counter()
    images = layout_images(gen, scenes, codes, seeds, CHUNK, progress)
    elapsed = time.perf_counter() - t0
    ref, boxes, visible = scene_reference(scenes, codes, gen.schema, gen.resolution)
    source = {"images": images, "codes": codes, "schema": gen.schema, "model_id": gen.model_id, "family": gen.family,
              "kind": "checkpoint", "sampling_img_per_s": round(len(codes) / elapsed, 1), "torch_threads": torch.get_num_threads()}
    return source, {"reference_images": ref, "boxes": boxes, "visible": visible, "reference_seed": REFERENCE_SCENE_SEED,
                    "scenes_source": cfg.scenes or "bundled scene model"}


def read_job_output(output_dir: str, max_samples: int, progress: bool = True) -> dict[str, Any]:
    """Up to ``max_samples`` rows of a finished job (whole shards in order; ids are plan-shuffled)."""
    import io

    from PIL import Image

    from aigc_synth.io.reader import load_manifest

    from aigc_synth.io.atomic import open_store
    from aigc_synth.sampling.layout import ROAD_FACTOR

    root = open_store(output_dir)  # a local directory or any pyarrow.fs URI (s3://bucket/prefix, ...)
    manifest = load_manifest(root)
    # a layout job's road factor says which scene a row shows, not a condition of the image model
    schema = ConditionSchema.from_dict({k: v for k, v in manifest["schema"].items() if k != ROAD_FACTOR})
    if not all("path" in s for s in manifest["shards"]):
        raise EvaluationError(f"{root.display}: evaluation reads the Parquet shards; this job wrote none (formats without parquet)")
    images, codes = [], []
    taken = 0
    for shard in tqdm(manifest["shards"], desc="read", unit="shard", disable=not progress):
        if taken >= max_samples:
            break
        table = root.read_table(shard["path"], columns=["image", *schema.names]).slice(0, max_samples - taken)
        blobs = table.column("image").combine_chunks().field("bytes").to_pylist()
        images.extend(np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in blobs)
        conds = [dict(zip(schema.names, row)) for row in zip(*(table.column(n).to_pylist() for n in schema.names))]
        codes.append(schema.encode_many(conds))
        taken += table.num_rows
    if not images:
        raise EvaluationError(f"{root.display}: the job holds no rows")
    return {"images": np.stack(images), "codes": np.concatenate(codes), "schema": schema, "model_id": manifest["model_id"],
            "family": manifest["model"]["family"], "kind": "job_output", "sampling_img_per_s": None}


# ------------------------------------------------------------------------------------------------
# the reference set
# ------------------------------------------------------------------------------------------------
def procedural_reference(codes: np.ndarray, resolution: int, progress: bool = True) -> np.ndarray:
    from aigc_synth.data.procedural import render_scenes

    seeds = derive_seeds(REFERENCE_SEED, np.arange(len(codes)))
    out = np.empty((len(codes), resolution, resolution, 3), np.uint8)
    for s in tqdm(range(0, len(codes), CHUNK), desc="reference", unit="batch", disable=not progress):
        out[s:s + CHUNK] = render_scenes(codes[s:s + CHUNK], seeds[s:s + CHUNK], resolution).images
    return out


def folder_reference(folder: str, labels_csv: str | None, schema: ConditionSchema, resolution: int,
                     max_samples: int) -> tuple[np.ndarray, np.ndarray]:
    from aigc_synth.data.datasets import FolderDataset

    if not labels_csv:
        raise EvaluationError("a folder reference needs reference_labels=<labels CSV> (file + one column per factor)")
    ds = FolderDataset(folder, labels_csv, schema=schema, resolution=resolution)
    n = min(len(ds), max_samples)
    b = ds.batch(range(n))
    return b["image"].permute(0, 2, 3, 1).numpy(), b["codes"].numpy()


def bdd100k_reference(images_dir: str, labels_json: str | None, schema: ConditionSchema, resolution: int,
                      max_samples: int, log: Callable[..., None] = print) -> tuple[np.ndarray, np.ndarray]:
    """The first ``max_samples`` usable frames of a BDD100K labels JSON (default mapping)."""
    from aigc_synth.data.bdd100k import BDD100KDataset, format_skipped

    if not labels_json:
        raise EvaluationError("reference_source=bdd100k needs reference_labels=<BDD100K labels JSON> (reference = image dir)")
    ds = BDD100KDataset(images_dir, labels_json, schema=schema, resolution=resolution)
    log(f"bdd100k reference: {len(ds)} usable frames, {format_skipped(ds.skipped)}")
    n = min(len(ds), max_samples)
    b = ds.batch(range(n))
    return b["image"].permute(0, 2, 3, 1).numpy(), b["codes"].numpy()


# ------------------------------------------------------------------------------------------------
# metrics
# ------------------------------------------------------------------------------------------------
def json_safe(x: Any) -> Any:
    """``x`` made JSON-safe the way ``metrics.json`` stores it: dicts and lists/tuples recursed into
    (tuples become lists), NaN / ±inf → ``None``, numpy scalars → Python numbers, floats rounded to
    6 significant digits; anything else is returned as is."""
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if not math.isfinite(float(x)) else float(f"{float(x):.6g}")
    if isinstance(x, np.integer):
        return int(x)
    return x


def distribution_metrics(real: np.ndarray, fake: np.ndarray, kid_subsets: int, kid_subset_size: int) -> dict[str, float]:
    kid, kid_std = kernel_inception_distance(real, fake, subsets=kid_subsets, subset_size=kid_subset_size)
    p, r = precision_recall(real, fake, k=3)
    d, c = density_coverage(real, fake, k=5)
    return {"fd": frechet_distance(real, fake), "kid": kid, "kid_std": kid_std, "precision": p, "recall": r,
            "density": d, "coverage": c}


def compute_metrics(gen_codes: np.ndarray, gen_scores, ref_codes: np.ndarray, ref_scores, schema: ConditionSchema,
                    kid_subsets: int = 100, kid_subset_size: int = 1000) -> dict[str, Any]:
    """All domain-space metrics for a generated set against a reference set."""
    overall = distribution_metrics(ref_scores.features, gen_scores.features, kid_subsets, kid_subset_size)
    pred = gen_scores.predicted_codes()
    acc = condition_accuracy(gen_codes, pred, schema)
    ref_acc = condition_accuracy(ref_codes, ref_scores.predicted_codes(), schema)
    overall["condition_accuracy"] = acc["per_factor"]
    overall["condition_accuracy_all_factors"] = acc["all_factors"]
    overall["is_analogue"] = {name: inception_score_analogue(p) for name, p in zip(schema.names, gen_scores.probs)}
    overall["is_analogue_reference"] = {name: inception_score_analogue(p) for name, p in zip(schema.names, ref_scores.probs)}
    overall["condition_kl"] = condition_kl(gen_codes, gen_scores.probs, pred, schema)
    overall["diversity"] = mean_pairwise_distance(gen_scores.features)
    overall["diversity_reference"] = mean_pairwise_distance(ref_scores.features)
    gen_keys, ref_keys = condition_keys(gen_codes, schema), condition_keys(ref_codes, schema)
    per_condition: dict[str, dict[str, Any]] = {}
    for key in [k for k in schema.keys() if k in set(gen_keys)]:
        gm = np.array([k == key for k in gen_keys])
        rm = np.array([k == key for k in ref_keys])
        row: dict[str, Any] = {"n_generated": int(gm.sum()), "n_reference": int(rm.sum()),
                               "accuracy": acc["per_condition"].get(key),
                               "diversity": mean_pairwise_distance(gen_scores.features[gm]),
                               "diversity_reference": mean_pairwise_distance(ref_scores.features[rm]) if rm.sum() >= 2 else None}
        if gm.sum() >= 2 and rm.sum() >= 2:
            # subsets of half the smaller set, so the std reflects sampling noise (whole-set subsets would all be equal)
            size = min(kid_subset_size, max(2, min(int(gm.sum()), int(rm.sum())) // 2))
            kid, kid_std = kernel_inception_distance(ref_scores.features[rm], gen_scores.features[gm],
                                                     subsets=min(kid_subsets, 50), subset_size=size)
            row.update(kid=kid, kid_std=kid_std, fd=frechet_distance(ref_scores.features[rm], gen_scores.features[gm]))
        per_condition[key] = row
    kids = [r["kid"] for r in per_condition.values() if "kid" in r]
    fds = [r["fd"] for r in per_condition.values() if "fd" in r]
    overall["intra_kid_mean"] = float(np.mean(kids)) if kids else None
    overall["intra_fd_mean"] = float(np.mean(fds)) if fds else None
    return {"overall": overall, "per_condition": per_condition, "confusion": acc["confusion"],
            "reference_condition_accuracy": ref_acc["per_factor"],
            "generated_count_by_traffic": _count_by_factor(gen_codes, gen_scores.count, schema, "traffic"),
            "reference_count_by_traffic": _count_by_factor(ref_codes, ref_scores.count, schema, "traffic")}


def _count_by_factor(codes: np.ndarray, count: np.ndarray, schema: ConditionSchema, factor: str) -> dict[str, float] | None:
    if factor not in schema.names:
        return None
    f = schema.names.index(factor)
    return {v: float(count[codes[:, f] == i].mean()) for i, v in enumerate(schema.values(factor)) if (codes[:, f] == i).any()}


# ------------------------------------------------------------------------------------------------
# the command
# ------------------------------------------------------------------------------------------------
def _is_job_output(source: str) -> bool:
    """A finished job's output: a local directory or an object-store URI holding manifest.json."""
    if "://" in source:
        from aigc_synth.io.atomic import open_store

        try:
            return open_store(source).is_file("manifest.json")
        except (OSError, ValueError) as exc:  # StorageError is a ValueError
            raise EvaluationError(f"cannot read {source}: {first_line(exc)}") from None
    return Path(source).is_dir() and (Path(source) / "manifest.json").is_file()


def evaluate(cfg, progress: bool = True, log: Callable[..., None] = print) -> dict[str, Any]:
    """Run an evaluation described by an :class:`~aigc_synth.config.EvaluateRoot`; return metrics.json's dict."""
    from aigc_synth.evaluation.report import write_report
    from aigc_synth.io.atomic import atomic_write_json

    # -- validate before any work --------------------------------------------------------------
    if cfg.n_per_condition < 2:
        raise EvaluationError(f"n_per_condition must be at least 2, got {cfg.n_per_condition}")
    if cfg.max_samples < 2:
        raise EvaluationError(f"max_samples must be at least 2, got {cfg.max_samples}")
    if cfg.kid_subsets < 1 or cfg.kid_subset_size < 2:
        raise EvaluationError("kid_subsets must be ≥ 1 and kid_subset_size ≥ 2")
    out = Path(cfg.out_dir)
    if (out / "metrics.json").exists() and not cfg.overwrite:
        raise EvaluationError(f"{out} already holds an evaluation (metrics.json); choose another out_dir or pass overwrite=true")
    if cfg.reference_source not in ("folder", "bdd100k"):
        raise EvaluationError(f"reference_source must be 'folder' or 'bdd100k', got {cfg.reference_source!r}")
    if cfg.reference_source == "bdd100k" and cfg.reference != "procedural" and not cfg.reference_labels:
        raise EvaluationError("reference_source=bdd100k needs reference_labels=<BDD100K labels JSON> (reference = image dir)")
    if cfg.reference not in ("auto", "procedural", "scenes") and not Path(cfg.reference).is_dir():
        raise EvaluationError(f"reference must be 'auto', 'procedural', 'scenes' or an existing folder, got {cfg.reference!r}")
    if cfg.scenes and not Path(cfg.scenes).is_dir():
        raise EvaluationError(f"scenes must be a folder of scene Parquet files, got {cfg.scenes!r}")
    source_is_job = _is_job_output(cfg.source)
    reference = cfg.reference
    if reference == "auto":
        reference = "scenes" if (not source_is_job and _is_layout_checkpoint(cfg.source)) else "procedural"
    if reference == "scenes" and source_is_job:
        raise EvaluationError("reference=scenes evaluates checkpoints (it samples each scene's image itself); "
                              "for a job output use reference=procedural or a folder")
    if cfg.inception_weights and not Path(cfg.inception_weights).is_file():
        raise EvaluationError(f"inception_weights file not found: {cfg.inception_weights} (nothing is ever downloaded)")
    if reference == "scenes" and cfg.classifier in (None, "", "default"):
        from aigc_synth.evaluation.layout import SCENE_CLASSIFIER

        classifier: DomainFeatureExtractor = load_domain_classifier(SCENE_CLASSIFIER)
    else:
        classifier = load_domain_classifier(cfg.classifier)
    if cfg.threads > 0:
        import torch

        torch.set_num_threads(cfg.threads)

    # -- the two sets ---------------------------------------------------------------------------
    t0 = time.perf_counter()
    layout = None
    if source_is_job:
        gen = read_job_output(cfg.source, cfg.max_samples, progress)
    elif reference == "scenes":
        gen, layout = sample_checkpoint_on_scenes(cfg, progress)
    else:
        if Path(cfg.source).is_dir():
            raise EvaluationError(f"{cfg.source} is a directory without manifest.json: not a finished job output")
        gen = sample_checkpoint(cfg.source, cfg.n_per_condition, cfg.seed, progress)
    schema: ConditionSchema = gen["schema"]
    if schema.to_dict() != classifier.schema.to_dict():
        raise EvaluationError(f"the source's condition schema {schema.to_dict()} differs from the domain classifier's "
                              f"{classifier.schema.to_dict()}; pass classifier=<one trained on that schema>")
    resolution = gen["images"].shape[1]
    if reference == "scenes":
        ref_images, ref_codes = layout["reference_images"], gen["codes"]
    elif reference == "procedural":
        ref_images, ref_codes = procedural_reference(gen["codes"], resolution, progress), gen["codes"]
    elif cfg.reference_source == "bdd100k":
        ref_images, ref_codes = bdd100k_reference(cfg.reference, cfg.reference_labels, schema, resolution, cfg.max_samples, log)
    else:
        ref_images, ref_codes = folder_reference(cfg.reference, cfg.reference_labels, schema, resolution, cfg.max_samples)
    log(f"scoring {len(gen['images'])} generated and {len(ref_images)} reference images with {classifier.classifier_id}")
    gen_scores = score_images(classifier, gen["images"], "score generated", progress)
    ref_scores = score_images(classifier, ref_images, "score reference", progress)

    # -- metrics ----------------------------------------------------------------------------------
    metrics = compute_metrics(gen["codes"], gen_scores, ref_codes, ref_scores, schema, cfg.kid_subsets, cfg.kid_subset_size)
    result: dict[str, Any] = {
        "format": "aigc_synth.metrics/v1",
        "source": {"path": str(cfg.source), "kind": gen["kind"], "model_id": gen["model_id"], "family": gen["family"],
                   "n": int(len(gen["images"])), "resolution": int(resolution)},
        "reference": {"kind": reference if reference in ("procedural", "scenes") else cfg.reference_source, "path": cfg.reference,
                      "seed": REFERENCE_SEED if reference == "procedural" else (layout["reference_seed"] if layout else None),
                      "n": int(len(ref_images)), **({"scenes": layout["scenes_source"]} if layout else {})},
        "feature_extractor": {"id": classifier.classifier_id, "feature_dim": classifier.feature_dim,
                              "heldout": classifier.meta.get("heldout")},
        "sampling_img_per_s": gen["sampling_img_per_s"],
        **metrics,
        "config": asdict(cfg) if hasattr(cfg, "__dataclass_fields__") else dict(cfg),
    }
    if layout is not None:
        from aigc_synth.evaluation.layout import layout_fidelity

        log(f"layout fidelity: vehicle detector on {len(gen['images'])} generated and real images")
        result["layout"] = layout_fidelity(gen["images"], ref_images, layout["boxes"], layout["visible"], cfg.detector)
    if cfg.inception_weights:
        from aigc_synth.metrics.inception import inception_metrics

        log("computing Inception FID/KID/IS from local weights")
        result["inception"] = inception_metrics(cfg.inception_weights, ref_images, gen["images"],
                                                kid_subsets=cfg.kid_subsets, kid_subset_size=cfg.kid_subset_size,
                                                is_splits=min(10, len(gen["images"])), progress=progress)
    result["elapsed_s"] = round(time.perf_counter() - t0, 1)
    result = json_safe(result)
    out.mkdir(parents=True, exist_ok=True)
    write_report(out, result, gen["images"], gen["codes"], ref_images, ref_codes, schema, cfg.grid_per_condition)
    atomic_write_json(out / "metrics.json", result)  # last: its presence means the evaluation finished
    return result


def score_images(classifier: DomainFeatureExtractor, images: np.ndarray, desc: str = "score", progress: bool = True):
    """The domain classifier's :class:`~aigc_synth.metrics.domain.ClassifierScores` (penultimate
    features, per-factor class probabilities, vehicle count) of uint8 ``images`` (n, R, R, 3), scored
    in chunks of :data:`CHUNK` and concatenated; ``desc`` labels the progress bar (shown when
    ``progress``). The input every metric of :func:`compute_metrics` takes."""
    from aigc_synth.metrics.domain import ClassifierScores

    parts = [classifier.score(images[s:s + CHUNK])
             for s in tqdm(range(0, len(images), CHUNK), desc=desc, unit="batch", disable=not progress)]
    return ClassifierScores(np.concatenate([p.features for p in parts]),
                            [np.concatenate([p.probs[f] for p in parts]) for f in range(len(parts[0].probs))],
                            np.concatenate([p.count for p in parts]))
