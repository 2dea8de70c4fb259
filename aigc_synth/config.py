"""Typed configs, registered with Hydra's ConfigStore; YAML presets live in ``conf/``.

**One source of defaults**: every default value lives in a dataclass here (or, for a model
family, in :mod:`aigc_synth.models.configs`). The YAML files in ``conf/`` only choose config-group
options (``job: balanced``, ``model: cgan``), hold presets that differ on purpose (``job/rare_conditions``),
and document the keys in comments; ``tests/test_config.py`` checks that composing any YAML with
no overrides gives exactly the dataclass defaults.

:func:`compose` (used by the CLI, ``submit``, the scripts and the tests) composes ``conf/`` with
overrides, resolves everything in the driver (``OmegaConf.to_object``) and returns plain
dataclasses, so Ray actors never see Hydra.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from aigc_synth.errors import UsageError
from aigc_synth import CONF_DIR
from aigc_synth.models.configs import (
    CGANConfig,
    LayoutDiffusionConfig,
    LayoutGANConfig,
    CVAEConfig,
    DCGANConfig,
    SceneARConfig,
    SceneMarginalConfig,
    SceneRandomConfig,
)



@dataclass
class DataConfig:
    """Training data: the built-in procedural scenes, or a user's image folder plus labels CSV;
    for the traffic-scene families, a folder of scene Parquet files (``scenes``)."""

    # procedural | folder | bdd100k | coco (layout families) | scenes (renders of data.scenes; layout families)
    source: str = "procedural"
    folder: Optional[str] = None
    labels_csv: Optional[str] = None
    images: Optional[str] = None  # bdd100k: the image directory; coco: the directory file_name is relative to
    labels: Optional[str] = None  # bdd100k: the labels JSON (a list of frames); coco: instances.json
    # None = conf/mappings/bdd100k.yaml (BDD100K attribute values -> schema values; also COCO images' attributes)
    bdd100k_mapping: Optional[str] = None
    scenes: Optional[str] = None  # scene families: a directory of scene Parquet (scripts/build_scene_dataset.py, a scene job)
    lanes: Optional[str] = None  # bdd100k (layout families): BDD100K lane-marking labels JSON (optional)
    drivable: Optional[str] = None  # bdd100k (layout families): BDD100K drivable-area labels JSON (optional)


@dataclass
class TrainConfig:
    out_dir: str = "runs/${model.family}-${now:%Y%m%d-%H%M%S}"
    steps: int = 5000
    batch_size: int = 32
    seed: int = 0
    threads: int = 0  # torch intra-op threads; 0 = all cores
    device: str = "auto"  # auto (cuda when available, else cpu) | cpu | cuda | cuda:N
    # processes that build (render) the next batches while the current step trains; 0 = in the loop.
    # Batches are a pure function of the step, so any value trains bit-identically
    loader_workers: int = 0
    log_every: int = 25
    sample_every: int = 250
    checkpoint_every: int = 250
    resume: bool = True
    eval_every: int = 500  # >0: log KID/FD/recall/coverage/condition accuracy (domain or, for layout models, scene classifier) every N steps; keep the best; 0 = off
    eval_samples: int = 450  # real and generated images per evaluation
    # selects best_generator.pt: images kid | fd | accuracy_mean | recall | coverage; scenes val_mmd | val_loss;
    # auto = kid for images, val_mmd for scenes
    best_metric: str = "auto"
    classifier: Optional[str] = None  # None = the bundled domain classifier
    # fine-tuning: start from another run's state.pt (weights, EMA, generator optimiser) instead of
    # from scratch; discriminator heads the source lacks (e.g. the auxiliary classifier) start fresh
    init_from: Optional[str] = None
    # a GAN fine-tuned from an exported generator (a bundled checkpoint: no critic) trains a fresh critic
    # alone for this many steps first (the generator frozen), so its first updates face a critic that
    # already tells its images from real ones; required > 0 for that source, ignored otherwise
    critic_warmup: int = 0


@dataclass
class TrainRoot:
    train: TrainConfig = field(default_factory=TrainConfig)
    model: Any = MISSING  # a family's config (conf/model/<preset>.yaml extends <family>_schema)
    data: DataConfig = field(default_factory=DataConfig)


@dataclass
class PlanConfig:
    """How sample ids map to conditions.

    * ``grid``: the cartesian product of ``factors`` (each a list of values; a missing factor
      means all its values), every cell getting ``weights``-proportional shares (equal by default).
    * ``mixture``: each factor drawn independently with ``probs`` ({factor: {value: p}}); a missing
      factor is uniform.
    * ``list``: explicit ``items`` [{conditions: {...}, weight: w}], shares proportional to weight.
    """

    kind: str = "grid"
    factors: dict[str, Any] = field(default_factory=dict)
    weights: Optional[list[float]] = None
    probs: dict[str, Any] = field(default_factory=dict)
    items: list[Any] = field(default_factory=list)


@dataclass
class GateConfig:
    """Condition-fidelity gate: the domain classifier scores every sample; one whose predicted
    condition differs from the request (or whose confidence is below ``min_confidence``) is
    regenerated from the next derived seed, up to ``max_tries`` attempts in all."""

    enabled: bool = False
    max_tries: int = 4
    min_confidence: float = 0.0  # probability of the requested condition (product over factors)
    classifier: Optional[str] = None  # None / "default" = the bundled domain classifier (its scene-render twin for reference=scenes)
    scenes: Optional[str] = None  # reference=scenes: a folder of scene Parquet (sample i: scene i mod n); None = the bundled scene model
    detector: Optional[str] = None  # reference=scenes: the vehicle detector of layout AP50 (None = bundled)


@dataclass
class SamplingConfig:
    """Sampling options of the families that have them (``layout_diffusion``); null = the value the
    checkpoint was exported with. A job's set options are part of its fingerprint."""

    steps: Optional[int] = None  # solver steps (DPM-Solver++)
    guidance: Optional[float] = None  # classifier-free guidance scale (1 = conditional only)
    guidance_t_min: Optional[int] = None  # guide only the solver steps with diffusion timestep (0..1000) >= this
    guidance_t_max: Optional[int] = None  # ... and <= this (guidance in a limited interval)
    bf16: Optional[bool] = None  # bfloat16 autocast of the network (GPUs; changes the bytes)
    channels_last: Optional[bool] = None  # channels-last memory format (GPUs)
    compile: Optional[bool] = None  # torch.compile the network once per actor (GPUs: slow first batch)

    def options(self) -> dict[str, Any]:
        """The options that are set, as the family's ``configure_sampling`` takes them."""
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class JobConfig:
    name: str = "balanced"
    sampler: str = "image"  # image | scenes (traffic scenes: conf/job/scenes.yaml)
    num_samples: int = 1000
    seed: int = 0
    # rows per shard (one Parquet file + one image folder, written by one actor call); "auto": chosen
    # from the job and the pool, see aigc_synth.jobs.spec.auto_shard_size (a resumed job keeps its size)
    shard_size: Any = "auto"
    formats: list[str] = field(default_factory=lambda: ["parquet", "png"])  # "png": the image-file folder (any image_format)
    image_format: str = "png"  # png | jpeg | webp: how every image is encoded (Parquet bytes and files)
    image_quality: int = 90  # jpeg / webp quality (1-100); ignored for png
    checkpoint: Optional[str] = None  # None = the bundled default generator
    # layout-conditioned checkpoints only: the scenes to render (a scene job's output_dir or a folder of
    # scene Parquet; sample i shows scene i mod n); None = sample them with scene_checkpoint
    scenes: Optional[str] = None
    scene_checkpoint: Optional[str] = None  # None = the bundled scene model
    # condition transfer (layout-conditioned checkpoints; aigc_synth/sampling/transfer.py, docs/scenes.md):
    # a BDD100K labels JSON or COCO instances.json whose frames are drawn under every condition of the
    # plan (weather x time_of_day; traffic is each frame's own); the job has frames x conditions samples
    layouts: Optional[str] = None
    layouts_format: Optional[str] = None  # bdd100k | coco; None = from the JSON (a list of frames: bdd100k)
    layouts_lanes: Optional[str] = None  # BDD100K lane labels (poly2d polylines); None = lanes unknown
    layouts_drivable: Optional[str] = None  # BDD100K drivable-area labels (poly2d polygons); None = road unknown
    layouts_images: Optional[str] = None  # BDD100K: the frames' images, read for their size (None: 1280 x 720)
    # unknown layout channels (no lanes / drivable labels) as zero for a model without layout_unknown_flags
    # (right for a model trained with them unknown in every frame, e.g. COCO boxes); false: refused
    layouts_unknown_as_zero: bool = False
    schema: dict[str, Any] = field(default_factory=dict)  # optional: if non-empty, must equal the checkpoint's schema
    resolution: Optional[int] = None  # optional: must equal the checkpoint's resolution if given
    plan: PlanConfig = field(default_factory=PlanConfig)
    max_samples: int = 100_000_000  # refuse larger requests (typo guard)
    compute_batch: int = 32  # rows per network call (padded); part of the determinism contract, raise on GPUs
    gate: GateConfig = field(default_factory=GateConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)


@dataclass
class ResourcesConfig:
    actors: Optional[int] = None  # None = one per GPU, or per CPU core on CPU-only clusters
    num_gpus: float = 0.0  # per actor
    cpus_per_actor: Optional[float] = None  # None = share the CPUs left after the reserve
    reserve_cpus: float = 0.5  # kept free for Ray Data's read/write tasks (avoids the 2-core deadlock)
    batch_size: int = 64  # rows per actor call; never changes the output bytes
    progress_timeout_s: float = 600.0  # fail (instead of hanging) if no shard completes for this long
    # encode + write as a separate CPU task stage, so the actor only runs the network: null = automatic,
    # on when resources.num_gpus > 0 (a GPU node's CPUs encode while its GPU computes), off on CPU-only
    # pools (measured slower on 2 cores: the stage competes with the actors for the same CPUs)
    png_stage: Optional[bool] = None
    # actors of that encode stage: null = as many as the CPUs left by the generator pool hold, at most 4
    # per generator actor (aigc_synth.jobs.cluster.encode_pool)
    encode_actors: Optional[int] = None


@dataclass
class RayConfig:
    address: Optional[str] = None  # None: RAY_ADDRESS if set, else a new local instance; "auto" joins a running one
    num_cpus: Optional[int] = None  # local instance only


@dataclass
class GenerateRoot:
    output_dir: str = "outputs/${job.name}-${now:%Y%m%d-%H%M%S}"
    overwrite: bool = False
    preview: bool = True
    job: JobConfig = field(default_factory=JobConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    ray: RayConfig = field(default_factory=RayConfig)


@dataclass
class ServeConfig:
    """``aigc-synth serve``: the online generation endpoint (Ray Serve, FastAPI ingress)."""

    host: str = "127.0.0.1"  # a non-loopback host needs a token (refused otherwise)
    port: int = 8000
    token: Optional[str] = None  # None: $AIGC_SYNTH_TOKEN; prefer the env var (overrides land in shell history)
    checkpoint: Optional[str] = None  # None / "default" = the bundled generator
    sampler: str = "image"  # the sampler kind behind POST /generate (its checkpoint: serve.checkpoint)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)  # as job.sampling
    app_name: str = "aigc_synth"
    num_replicas: int = 1  # generator replicas
    num_gpus: float = 0.0  # per generator replica
    num_cpus: float = 0.5  # per generator replica; fractional so Serve fits on a 2-CPU Ray next to a job
    ingress_cpus: float = 0.0  # the FastAPI ingress only parses, checks and base64-encodes
    torch_threads: Optional[int] = None  # None: the replica's CPU share rounded (at least 1)
    max_n: int = 64  # images per request (larger: 422)
    max_body_bytes: int = 65536  # request body limit (larger: 413)
    max_batch_images: int = 256  # images per @serve.batch call (requests are merged up to this)
    batch_wait_timeout_s: float = 0.01
    compute_batch: int = 32  # rows per network call; must equal the batch job's job.compute_batch for equal bytes
    scenes: bool = True  # also serve POST /scenes (traffic scenes) from a scene model
    scene_checkpoint: Optional[str] = None  # None / "default" = the bundled scene model
    scene_num_cpus: float = 0.25  # the scene replica's CPU share
    scene_compute_batch: int = 64  # scenes per network call; equal to the scene job's job.compute_batch (64) for equal rows


@dataclass
class ServeRoot:
    serve: ServeConfig = field(default_factory=ServeConfig)
    ray: RayConfig = field(default_factory=RayConfig)


@dataclass
class EvaluateRoot:
    """``aigc-synth evaluate``: metrics of a generator (checkpoint) or of a job's output against a
    reference set, in the domain classifier's feature space (Inception's too, given local weights)."""

    source: str = "default"  # a checkpoint path, "default" (the bundled generator) or a job output_dir
    out_dir: str = "outputs/eval-${now:%Y%m%d-%H%M%S}"
    overwrite: bool = False
    n_per_condition: int = 100  # checkpoint source: images sampled per condition (all combinations)
    max_samples: int = 10_000  # job source: rows read at most (first shards first)
    seed: int = 0  # checkpoint source: job seed of the sampled images
    # auto: "scenes" for layout-conditioned checkpoints, else "procedural"; "scenes": real renders of the
    # evaluated samples' scenes (same weather / time; layout AP50 with the vehicle detector); or a folder
    reference: str = "auto"
    reference_labels: Optional[str] = None  # labels CSV for a folder reference (a labels JSON for bdd100k)
    reference_source: str = "folder"  # folder (labels CSV) | bdd100k (reference = image dir, reference_labels = JSON)
    classifier: Optional[str] = None  # None / "default" = the bundled domain classifier (its scene-render twin for reference=scenes)
    scenes: Optional[str] = None  # reference=scenes: a folder of scene Parquet (sample i: scene i mod n); None = the bundled scene model
    detector: Optional[str] = None  # reference=scenes: the vehicle detector of layout AP50 (None = bundled)
    inception_weights: Optional[str] = None  # local torch-fidelity Inception weights: adds Inception FID/KID/IS
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    grid_per_condition: int = 4  # real and generated examples per condition in the report grid
    threads: int = 0  # torch threads for sampling; 0 = all cores
    # scene sources (a scene job's output, a scene checkpoint, or default_scenes = the bundled scene model):
    scene_reference: Optional[str] = None  # held-out SUMO scenes (a folder of scene Parquet); None = simulate them
    scene_floor: Optional[str] = None  # a second, independent SUMO set (the real-vs-real floor); None = simulate it
    replay_scenes: int = 300  # scenes of each set replayed in SUMO for 10 s (0 = no replay)
    replay_real: bool = True  # replay the reference and floor sets too (false: the source only, e.g. a second model on the same sets)
    # merge completion from every merge scene of each replayed set, not only the replay_scenes sample: a share
    # of ~200 ramp vehicles moves by +-0.07 between samples, too much to decide the +-0.05 goal
    replay_all_merges: bool = True


def register_configs() -> None:
    """Register the schemas so YAML in ``conf/`` is type-checked on composition."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainRoot)
    cs.store(name="generate_schema", node=GenerateRoot)
    cs.store(name="serve_schema", node=ServeRoot)
    cs.store(name="evaluate_schema", node=EvaluateRoot)
    for name, node in (("cgan_schema", CGANConfig), ("layout_gan_schema", LayoutGANConfig), ("layout_diffusion_schema", LayoutDiffusionConfig), ("dcgan_schema", DCGANConfig), ("cvae_schema", CVAEConfig),
                       ("scene_ar_schema", SceneARConfig), ("scene_marginal_schema", SceneMarginalConfig),
                       ("scene_random_schema", SceneRandomConfig)):
        cs.store(group="model", name=name, node=node)
    cs.store(group="job", name="job_schema", node=JobConfig)


def conf_dir() -> Path:
    """``$AIGC_SYNTH_CONF`` (a user's own config tree) or the package's ``conf/``."""
    return Path(os.environ.get("AIGC_SYNTH_CONF", CONF_DIR)).resolve()


def compose(config_name: str, overrides: Sequence[str] = ()) -> Any:
    """Compose ``conf/<config_name>.yaml`` with ``key=value`` overrides; return the resolved typed
    dataclass. Any Hydra/OmegaConf error (unknown key, bad type, unknown option) becomes a
    one-line :class:`~aigc_synth.errors.UsageError`."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    register_configs()
    directory = conf_dir()
    if not directory.is_dir():
        raise UsageError(f"config directory not found: {directory}")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(directory), version_base=None):
            cfg = hydra_compose(config_name=config_name, overrides=list(overrides))
        OmegaConf.resolve(cfg)
        return OmegaConf.to_object(cfg)
    except Exception as exc:  # hydra / omegaconf errors: bad key, bad type, unknown group option
        msg = " ".join(str(exc).split())
        if exc.__cause__ is not None and str(exc.__cause__):
            msg += ": " + " ".join(str(exc.__cause__).split())
        raise UsageError(f"invalid configuration: {msg[:400]}") from None
    finally:
        GlobalHydra.instance().clear()
