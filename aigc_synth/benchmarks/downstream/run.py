"""The benchmark's run: :func:`prepare` (scenes, sets, generator, rows, checks), :func:`train_and_evaluate`
(every row × seed) and :func:`run_downstream` (the whole protocol, outputs written)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aigc_synth.benchmarks.downstream.config import (
    GENERATED_SEED,
    IMAGE_SIZE,
    ORACLE_SEED,
    POOL_SCENE_SEED_BASE,
    POOL_SEED,
    RARE,
    ROWS,
    SCHEMA,
    SYNTHETIC_SEED,
    TEST_SCENE_SEED_BASE,
    TEST_SEED,
    DownstreamConfig,
    composition,
    condition_probs_for,
    rare_mask,
)
from aigc_synth.benchmarks.downstream.data import (
    ImageSet,
    balanced_cells,
    check_disjoint,
    concat_sets,
    extra_items,
    make_pool,
    make_test_set,
    plan_rare_topup,
    render_items,
    split_scenes,
    topup_cells,
)
from aigc_synth.benchmarks.downstream.generation import generate_set, prepare_generator
from aigc_synth.benchmarks.downstream.learners import (
    StepLedger,
    as_nchw,
    evaluate_classifier,
    evaluate_detector,
    train_condition_classifier,
)
from aigc_synth.benchmarks.downstream.report import summarise, write_outputs
from aigc_synth.data.scene_images import resolve_condition_probs
from aigc_synth.scenes.format import Scene
from aigc_synth.seeds import LATENT_STREAM, derive_seeds


@dataclass
class Prepared:
    """Everything the downstream runs read: the sets, the rows, and what the report says about them."""

    pool: ImageSet
    test: ImageSet
    generated: ImageSet
    oracle: ImageSet
    synthetic: ImageSet
    rows: dict[str, ImageSet]
    report: dict[str, Any] = field(default_factory=dict)


def prepare(cfg: DownstreamConfig, log: Callable[[str], None] = print) -> tuple[Prepared, Any]:
    """Scenes, pool, test set, generator, generated / oracle / synthetic sets, the four rows, checks."""
    probs = resolve_condition_probs(cfg.condition_probs or condition_probs_for(cfg.rare_prob), SCHEMA)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    pool_scenes, test_scenes, scene_desc = split_scenes(cfg)
    pool = make_pool(pool_scenes, cfg.pool_size, probs)
    test = make_test_set(test_scenes, cfg.test_per_combination)
    timings["scenes_and_renders_s"] = round(time.perf_counter() - t0, 1)
    log(f"pool: {len(pool)} real images ({composition(pool.codes)['shares']}), test: {len(test)} real images "
        f"({timings['scenes_and_renders_s']} s)")

    t1 = time.perf_counter()
    gen, gen_info = prepare_generator(cfg, pool_scenes, probs, log)
    timings["generator_s"] = round(time.perf_counter() - t1, 1)

    t2 = time.perf_counter()
    plan = plan_rare_topup(pool.codes, cfg.mix_ratio)
    used = _scene_indices(pool_scenes, pool.scene_ids)  # the pool scenes the pool shows
    cells = topup_cells(plan)
    idx_b, codes_b = extra_items(pool_scenes, used, cells, GENERATED_SEED)
    generated = generate_set(gen, pool_scenes, idx_b, codes_b, GENERATED_SEED, "generated")
    oracle = render_items(pool_scenes, idx_b, codes_b, derive_seeds(ORACLE_SEED, np.arange(len(cells)), LATENT_STREAM),
                          "oracle")
    n_syn = cfg.synthetic_size or cfg.pool_size
    idx_c, codes_c = extra_items(pool_scenes, used, balanced_cells(n_syn), SYNTHETIC_SEED)
    synthetic = generate_set(gen, pool_scenes, idx_c, codes_c, SYNTHETIC_SEED, "synthetic")
    timings["generated_and_oracle_s"] = round(time.perf_counter() - t2, 1)
    log(f"mixture: {plan['num_generated']} generated rare images (mix ratio {plan['mix_ratio']}), "
        f"{len(oracle)} oracle renders, {len(synthetic)} synthetic ({timings['generated_and_oracle_s']} s)")

    rows = {"a": pool, "b": concat_sets(pool, generated), "c": synthetic, "d": concat_sets(pool, oracle)}
    if int((rows["b"].origin == "generated").sum()) != plan["num_generated"] or \
            int((rows["d"].origin == "oracle").sum()) != plan["num_generated"]:
        raise RuntimeError("the mixture does not hold the planned number of extra images")
    disjoint = check_disjoint(test, {"pool": pool, "generated": generated, "oracle": oracle, "synthetic": synthetic})
    test_comp = composition(test.codes)
    combos = np.unique(test.codes, axis=0, return_counts=True)[1]
    if len(combos) != len(SCHEMA.combinations()) or combos.min() != combos.max():
        raise RuntimeError("the test set is not balanced over the 45 combinations")
    report = {
        "scenes": scene_desc,
        "pool": {**composition(pool.codes), "requested_probabilities": probs, "dataset_seed": POOL_SEED,
                 "scenes_used": len(used)},
        "test": {**test_comp, "per_combination": cfg.test_per_combination, "combinations": len(combos),
                 "n_rare": int(rare_mask(test.codes).sum()), "n_common": int((~rare_mask(test.codes)).sum()),
                 "dataset_seed": TEST_SEED},
        "mixture": plan,
        "generator": gen_info,
        "disjointness": disjoint,
        "timings": timings,
        "seeds": {"pool_scene_seed_base": POOL_SCENE_SEED_BASE, "test_scene_seed_base": TEST_SCENE_SEED_BASE,
                  "pool": POOL_SEED, "test": TEST_SEED, "oracle": ORACLE_SEED, "generated": GENERATED_SEED,
                  "synthetic": SYNTHETIC_SEED},
    }
    return Prepared(pool, test, generated, oracle, synthetic, rows, report), gen


def _scene_indices(scenes: Sequence[Scene], scene_ids: np.ndarray) -> np.ndarray:
    """Indices into ``scenes`` of the distinct ``scene_ids`` (the pool scenes that appear in the pool)."""
    where = {s.scene_id: k for k, s in enumerate(scenes)}
    return np.array(sorted({where[int(i)] for i in scene_ids}), np.int64)


def train_and_evaluate(cfg: DownstreamConfig, prep: Prepared, ledger: StepLedger,
                       log: Callable[[str], None] = print) -> dict[str, list[dict[str, Any]]]:
    """Every row × seed: a classifier and a detector, each for the ledger's steps; their test metrics."""
    from aigc_synth.training.detector import train_vehicle_detector

    per_seed: dict[str, list[dict[str, Any]]] = {r: [] for r in prep.rows}
    for seed in cfg.seeds:
        for r, data in prep.rows.items():
            t0 = time.perf_counter()
            x = as_nchw(data.images)
            cb, seen = ledger.counter()
            clf = train_condition_classifier(x, data.codes, data.counts(), ledger.steps, ledger.batch_size, seed,
                                             width=cfg.classifier_width, stem=cfg.classifier_stem,
                                             lr=cfg.classifier_lr, callback=cb)
            rec_c = ledger.record(r, "classifier", seed, seen["steps"], seen["batch_sizes"], len(data))
            cb, seen = ledger.counter()
            det = train_vehicle_detector(x, data.boxes, data.visible, ledger.steps, ledger.batch_size, seed,
                                         lr=cfg.detector_lr, widths=cfg.detector_widths, init_seed=seed,
                                         progress=False, callback=cb)
            rec_d = ledger.record(r, "detector", seed, seen["steps"], seen["batch_sizes"], len(data))
            t1 = time.perf_counter()
            res = {"seed": seed, "classifier": evaluate_classifier(clf, prep.test),
                   "detector": evaluate_detector(det, prep.test, f"downstream-{r}-seed{seed}"),
                   "steps": {"classifier": rec_c, "detector": rec_d},
                   "train_seconds": round(t1 - t0, 1), "eval_seconds": round(time.perf_counter() - t1, 1)}
            per_seed[r].append(res)
            log(f"seed {seed} row ({r}) {ROWS[r]}: weather acc rare {res['classifier']['rare']['weather']:.3f} / "
                f"common {res['classifier']['common']['weather']:.3f}, time acc rare "
                f"{res['classifier']['rare']['time_of_day']:.3f}, AP50 rare {res['detector']['rare']['ap50']:.3f} / "
                f"common {res['detector']['common']['ap50']:.3f} ({res['train_seconds']} + {res['eval_seconds']} s)")
    return per_seed


def run_downstream(cfg: DownstreamConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The whole protocol (module docstring); writes the outputs to ``cfg.out`` and returns the result."""
    cfg.validate()
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    prep, _ = prepare(cfg, log)
    ledger = StepLedger(cfg.steps, cfg.batch_size)
    t1 = time.perf_counter()
    per_seed = train_and_evaluate(cfg, prep, ledger, log)
    equal = ledger.verify(list(prep.rows))
    rows = {}
    for r, data in prep.rows.items():
        comp = composition(data.codes)
        comp["origin"] = {o: int((data.origin == o).sum()) for o in sorted(set(data.origin.tolist()))}
        rows[r] = {"name": ROWS[r], "composition": comp, "summary": summarise(per_seed[r]), "per_seed": per_seed[r]}
    probs = prep.report["pool"]["requested_probabilities"]
    result = {
        "protocol": "issue 13: imbalanced real pool (fog, snow, night rare), balanced disjoint held-out real test set, "
                    "generator trained on the pool only; rows (a) real, (b) real + generated rare, (c) generated only, "
                    "(d) real + real rare (oracle, same count as (b)); equal steps and batch size for every row",
        "config": {**asdict(cfg), "rare_probabilities": {v: probs[f][v] for f, vs in RARE.items() for v in vs},
                   "seeds": list(cfg.seeds), "threads_used": torch.get_num_threads(), "image_size": IMAGE_SIZE,
                   "classifier": {"width": cfg.classifier_width, "stem": cfg.classifier_stem, "lr": cfg.classifier_lr,
                                  "recipe": "scene classifier's: CE per factor + 4 x smooth-L1 count, AdamW one-cycle, "
                                            "flip / shift / blur / noise"},
                   "detector": {"widths": list(cfg.detector_widths), "lr": cfg.detector_lr,
                                "recipe": "aigc_synth.training.detector.train_vehicle_detector"}},
        **prep.report,
        "equal_steps": equal,
        "rows": rows,
    }
    result["timings"]["downstream_s"] = round(time.perf_counter() - t1, 1)
    result["timings"]["total_s"] = round(time.perf_counter() - t0, 1)
    result["outputs"] = write_outputs(result, cfg.out)
    log(f"wrote {result['outputs']['json']}, .md, .png ({result['timings']['total_s']} s)")
    return result
