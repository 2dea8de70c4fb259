"""Downstream benchmark (issue 13): do generated images of rare conditions help a perception model?

The protocol
    * **Real training pool** (``pool_size`` renders of ``pool_scenes`` scenes) in which fog, snow and
      night are rare: weather fog ``rare_prob``, snow ``rare_prob``, clear / overcast / rain share
      the rest equally; time of day night ``rare_prob``, day / dusk share the rest (default 2 %
      each; :func:`condition_probs_for`). Drawn per item by
      :class:`~aigc_synth.data.scene_images.SceneImageDataset` (``condition_probs``); traffic is the
      scene's own level.
    * **Held-out real test set**, balanced: ``test_per_combination`` renders of each of the 45
      weather × time × traffic combinations, from *other* scenes (scene ids and scene seeds disjoint
      from the pool's) and other cosmetic seeds. No generator and no downstream model ever sees it;
      :func:`check_disjoint` asserts it and its evidence goes into the report.
    * **A generator trained on the imbalanced pool only**: a given layout-conditioned checkpoint
      (its model id and meta are recorded, and whether its meta names this very pool), or one
      trained in-process (``train_generator_steps``) by :func:`aigc_synth.training.trainer.train`
      on :class:`PoolImages`: exactly the pool's items (same scenes, conditions and cosmetic seeds,
      cycled), rendered at the generator's resolution.
    * **Four training sets** for each downstream model:

      (a) ``real``: the pool;
      (b) ``real+generated``: the pool + ``M`` generated images of rare conditions on pool scenes;
      (c) ``generated``: ``synthetic_size`` generated images, the 15 weather × time cells equally
          often, on pool scenes (train on synthetic, test on real);
      (d) ``real+oracle``: the pool + ``M`` real renders of exactly (b)'s scenes and conditions
          (other cosmetic seeds): what (b) would get from perfect generated images.

      ``M`` (the mix ratio ``M / pool_size``) defaults to the *balancing* count
      (:func:`plan_rare_topup`): every weather × time cell with a rare value is topped up to the
      mean count of the six common cells, so in (b) and (d) every weather and every time of day is
      about equally frequent. ``mix_ratio`` sets ``M = round(mix_ratio * pool_size)`` instead
      (distributed over the rare cells in the same proportions).
    * **Downstream models**, each trained on every row for the same ``steps`` with the same
      ``batch_size`` (batches drawn with replacement, so a smaller set runs the same optimisation;
      :class:`StepLedger` counts the steps actually taken and raises on any mismatch), for each of
      ``seeds`` (initial weights and batch order; the same seed gives every row the same start):

      * the condition classifier (:class:`~aigc_synth.models.classifier.DomainClassifier`, the
        scene classifier's recipe: :func:`train_condition_classifier`);
      * the vehicle detector (:class:`~aigc_synth.models.detector.VehicleCenterNet`,
        :func:`aigc_synth.training.detector.train_vehicle_detector`). Generated images are labelled
        with the boxes of the scene they were drawn for (the layout they were asked to show).
    * **Metrics** on the held-out set, grouped **rare** (an image with any rare value: fog, snow or
      night; 27 of the 45 combinations) vs **common** (the other 18): classifier accuracy per factor,
      per condition value and per combination; detector AP50 and recall (COCO, IoU 0.5, the layout
      metric's ground-truth filter; :func:`aigc_synth.metrics.layout.layout_fidelity`). Mean ± sample
      standard deviation (ddof 1) over the seeds.

Outputs in ``out``: ``downstream.json`` (every number, the config, counts, disjointness evidence,
steps), ``downstream.md`` (table: rows a–d × accuracy rare / common per factor and AP50 rare /
common) and ``downstream.png`` (grouped bars), each written atomically. ``generator/`` holds an
in-process generator run.

The modules, by concern: :mod:`.config` (constants, :class:`DownstreamConfig`, the quick preset, the
rare cells), :mod:`.data` (scenes, :class:`ImageSet`, pool, test set, top-up plan, disjointness),
:mod:`.generation` (the generator and its images), :mod:`.learners` (step ledger, classifier loop,
classifier and detector evaluation), :mod:`.report` (summary, Markdown, plot, outputs) and :mod:`.run`
(:func:`prepare`, :func:`train_and_evaluate`, :func:`run_downstream`). This package re-exports their
public names. The command line is :mod:`aigc_synth.benchmarks.downstream_cli`
(``aigc-synth benchmark downstream``).
"""

from __future__ import annotations

from aigc_synth.benchmarks.downstream.config import (
    CELLS,
    FACTORS,
    GENERATED_SEED,
    IMAGE_SIZE,
    MODELS,
    ORACLE_SEED,
    POOL_SCENE_SEED_BASE,
    POOL_SEED,
    QUICK,
    QUICK_GENERATOR_STEPS,
    RARE,
    ROWS,
    SCHEMA,
    SYNTHETIC_SEED,
    TEST_SCENE_SEED_BASE,
    TEST_SEED,
    TIMES,
    TR,
    TRAFFIC,
    WEATHERS,
    DownstreamConfig,
    T,
    W,
    composition,
    condition_probs_for,
    is_rare_cell,
    quick_config,
    rare_mask,
)
from aigc_synth.benchmarks.downstream.data import (
    ImageSet,
    PoolImages,
    balanced_cells,
    check_disjoint,
    concat_sets,
    extra_items,
    make_pool,
    make_test_set,
    plan_rare_topup,
    pool_dataset,
    pool_fingerprint,
    render_items,
    sample_scenes,
    split_scenes,
    test_items,
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
from aigc_synth.benchmarks.downstream.report import (
    DETAIL,
    SUMMARY,
    jsonable,
    markdown,
    mean_std,
    plot,
    summarise,
    write_outputs,
)
from aigc_synth.benchmarks.downstream.run import (
    Prepared,
    prepare,
    run_downstream,
    train_and_evaluate,
)

__all__ = [
    "CELLS",
    "DETAIL",
    "FACTORS",
    "GENERATED_SEED",
    "IMAGE_SIZE",
    "MODELS",
    "ORACLE_SEED",
    "POOL_SCENE_SEED_BASE",
    "POOL_SEED",
    "QUICK",
    "QUICK_GENERATOR_STEPS",
    "RARE",
    "ROWS",
    "SCHEMA",
    "SUMMARY",
    "SYNTHETIC_SEED",
    "T",
    "TEST_SCENE_SEED_BASE",
    "TEST_SEED",
    "TIMES",
    "TR",
    "TRAFFIC",
    "W",
    "WEATHERS",
    "DownstreamConfig",
    "ImageSet",
    "PoolImages",
    "Prepared",
    "StepLedger",
    "as_nchw",
    "balanced_cells",
    "check_disjoint",
    "composition",
    "concat_sets",
    "condition_probs_for",
    "evaluate_classifier",
    "evaluate_detector",
    "extra_items",
    "generate_set",
    "is_rare_cell",
    "jsonable",
    "make_pool",
    "make_test_set",
    "markdown",
    "mean_std",
    "plan_rare_topup",
    "plot",
    "pool_dataset",
    "pool_fingerprint",
    "prepare",
    "prepare_generator",
    "quick_config",
    "rare_mask",
    "render_items",
    "run_downstream",
    "sample_scenes",
    "split_scenes",
    "summarise",
    "test_items",
    "topup_cells",
    "train_and_evaluate",
    "train_condition_classifier",
    "write_outputs",
]
