"""Typed configs, registered with Hydra's ConfigStore; YAML presets live in ``conf/``.

The CLI composes ``conf/`` with overrides, resolves everything in the driver
(``OmegaConf.to_object``) and passes plain dataclasses on, so Ray actors never see Hydra.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class ModelConfig:
    """Generator family, its size, and its training recipe (loss, optimiser, EMA, augmentation)."""

    family: str = "cgan"  # cgan | dcgan | cvae
    loss: str = "hinge"  # hinge | bce
    resolution: int = 64  # 32 | 64 | 128
    z_dim: int = 64
    base_channels: int = 32
    d_base_channels: int = 32
    embed_dim: int = 64
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.0
    beta2: float = 0.99
    ema_decay: float = 0.999  # 0 disables the EMA generator
    ema_start: int = 200
    diffaugment: bool = True
    mode_seeking: float = 0.0  # MSGAN weight (Mao et al. 2019): rewards distinct images for distinct z
    kl_weight: float = 1.0  # cvae only: β of reconstruction + β·KL
    aux_class_weight: float = 0.0  # cgan only: weight of the generator's AC-GAN term (0 = no auxiliary classifier)


@dataclass
class DataConfig:
    """Training data: the built-in procedural scenes, or a user's image folder plus labels CSV."""

    source: str = "procedural"  # procedural | folder
    folder: Optional[str] = None
    labels_csv: Optional[str] = None


@dataclass
class TrainConfig:
    out_dir: str = "runs/train"
    steps: int = 6000
    batch_size: int = 32
    seed: int = 0
    threads: int = 0  # torch intra-op threads; 0 = all cores
    log_every: int = 25
    sample_every: int = 500
    checkpoint_every: int = 500
    resume: bool = True
    eval_every: int = 0  # >0: log KID/FD/condition accuracy (domain classifier) every N steps; keep the best
    eval_samples: int = 450  # real and generated images per evaluation
    best_metric: str = "kid"  # kid | fd | accuracy_mean: selects best_generator.pt
    classifier: Optional[str] = None  # None = the bundled domain classifier
    # fine-tuning: start from another run's state.pt (weights, EMA, generator optimiser) instead of
    # from scratch; discriminator heads the source lacks (e.g. the auxiliary classifier) start fresh
    init_from: Optional[str] = None


@dataclass
class TrainRoot:
    train: TrainConfig = field(default_factory=TrainConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
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
    classifier: Optional[str] = None  # None / "default" = the bundled domain classifier


@dataclass
class JobConfig:
    name: str = "balanced"
    num_samples: int = 1000
    seed: int = 0
    shard_size: int = 250
    formats: list[str] = field(default_factory=lambda: ["parquet", "png"])
    checkpoint: Optional[str] = None  # None = the bundled default generator
    schema: dict[str, Any] = field(default_factory=dict)  # optional: if non-empty, must equal the checkpoint's schema
    resolution: Optional[int] = None  # optional: must equal the checkpoint's resolution if given
    plan: PlanConfig = field(default_factory=PlanConfig)
    max_samples: int = 100_000_000  # refuse larger requests (typo guard)
    compute_batch: int = 32  # rows per network call (padded); part of the determinism contract, raise on GPUs
    gate: GateConfig = field(default_factory=GateConfig)


@dataclass
class ResourcesConfig:
    actors: Optional[int] = None  # None = one per GPU, or per CPU core on CPU-only clusters
    num_gpus: float = 0.0  # per actor
    cpus_per_actor: Optional[float] = None  # None = share the CPUs left after the reserve
    reserve_cpus: float = 0.5  # kept free for Ray Data's read/write tasks (avoids the 2-core deadlock)
    batch_size: int = 64  # rows per actor call; never changes the output bytes
    progress_timeout_s: float = 600.0  # fail (instead of hanging) if no shard completes for this long
    png_stage: bool = False  # True: PNG encode + write as a separate CPU task stage (measured slower on 2 cores)


@dataclass
class RayConfig:
    address: Optional[str] = None  # None: RAY_ADDRESS if set, else a new local instance; "auto" joins a running one
    num_cpus: Optional[int] = None  # local instance only


@dataclass
class GenerateRoot:
    output_dir: str = "outputs/generate"
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


@dataclass
class ServeRoot:
    serve: ServeConfig = field(default_factory=ServeConfig)
    ray: RayConfig = field(default_factory=RayConfig)


@dataclass
class EvaluateRoot:
    """``aigc-synth evaluate``: metrics of a generator (checkpoint) or of a job's output against a
    reference set, in the domain classifier's feature space (Inception's too, given local weights)."""

    source: str = "default"  # a checkpoint path, "default" (the bundled generator) or a job output_dir
    out_dir: str = "outputs/eval"
    overwrite: bool = False
    n_per_condition: int = 100  # checkpoint source: images sampled per condition (all combinations)
    max_samples: int = 10_000  # job source: rows read at most (first shards first)
    seed: int = 0  # checkpoint source: job seed of the sampled images
    reference: str = "procedural"  # "procedural" or a folder of real images (with reference_labels)
    reference_labels: Optional[str] = None  # labels CSV for a folder reference
    classifier: Optional[str] = None  # None / "default" = the bundled domain classifier
    inception_weights: Optional[str] = None  # local torch-fidelity Inception weights: adds Inception FID/KID/IS
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    grid_per_condition: int = 4  # real and generated examples per condition in the report grid
    threads: int = 0  # torch threads for sampling; 0 = all cores


def register_configs() -> None:
    """Register the schemas so YAML in ``conf/`` is type-checked on composition."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainRoot)
    cs.store(name="generate_schema", node=GenerateRoot)
    cs.store(name="serve_schema", node=ServeRoot)
    cs.store(name="evaluate_schema", node=EvaluateRoot)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="job", name="job_schema", node=JobConfig)
