"""Traffic-scene families (a registry, like the image families') and their checkpoints.

A :class:`SceneFamily` says how to build a family's network from its config, rebuild it from an
exported checkpoint and sample scenes with it; ``scene_ar`` (the learned model) and the two
baselines (``scene_marginal``, ``scene_random``) are registered in :data:`SCENE_FAMILIES`, and
nothing else in the package branches on their names (training: :mod:`aigc_synth.training.scene_trainer`).

An exported scene generator (``format = aigc_synth.scene_generator/v1``) holds the family
(``scene_ar``, ``scene_marginal``, ``scene_random``), its keyword arguments, its weights or fitted
tables (tensors and plain containers only, read with ``weights_only=True``) and the traffic levels,
lane counts and road kinds it was trained on (a request outside them is refused; a checkpoint
written before road kinds knows ``straight`` only). Its sha256 is the
``model_id`` of every scene it makes, exactly like the image generators.

:func:`load_scene_generator_from_bytes` turns a checkpoint into a :class:`SceneGenerator` whose
``sample(traffic, num_lanes, seeds, scene_ids, roads)`` is a pure function of each row.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from aigc_synth.errors import CheckpointError, first_line
from aigc_synth.io.atomic import sha256_file
from aigc_synth.io.checkpoint import load_checkpoint_bytes, require_format, save_checkpoint
from aigc_synth.models.configs import SceneARConfig, SceneMarginalConfig, SceneRandomConfig
from aigc_synth.scenes.baselines import MarginalSceneSampler, RandomSceneSampler
from aigc_synth.scenes.format import ROAD_KINDS, TRAFFIC_LEVELS, Road, Scene, SceneError, road_kind_problems

SCENE_GENERATOR_FORMAT = "aigc_synth.scene_generator/v1"


@dataclass(frozen=True)
class SceneFamily:
    """Everything the project needs to know about one scene family.

    * ``config``: its dataclass (:mod:`aigc_synth.models.configs`, Hydra's ``model/<name>_schema``).
    * ``rebuild(model_config, state) → impl``: the sampler from an exported checkpoint's contents.
    * ``sample(impl, traffic, lanes, seeds, scene_ids, model_id, compute_batch, roads) → [Scene]``:
      each scene a pure function of its own row (``roads``: a road kind or a full ``Road`` per row).
    * ``build(model_config) → nn.Module``: the trainable network (None: nothing to optimise).
    * ``arch_keys``: config keys that must match to resume a training state.
    """

    name: str
    config: type
    rebuild: Callable[[Mapping[str, Any], Any], Any]
    sample: Callable[..., list[Scene]]
    build: Callable[[Mapping[str, Any]], Any] | None = None
    arch_keys: tuple[str, ...] = ()


def _build_scene_ar(model_config: Mapping[str, Any]) -> Any:
    from aigc_synth.models.scene_ar import SceneAR

    # checkpoints exported before speed_coding (gap_coding) existed drew every speed on absolute bins
    # (every gap in metres)
    return SceneAR(hidden=int(model_config["hidden"]), head_hidden=int(model_config["head_hidden"]),
                   relative_speed=_coding(model_config, "speed_coding") == "relative",
                   headway_gap=_coding(model_config, "gap_coding") == "headway")


#: ``model.speed_coding`` / ``model.gap_coding`` of ``scene_ar`` (see
#: :class:`~aigc_synth.models.configs.SceneARConfig`); the first is what a checkpoint without the key means
SPEED_CODINGS = ("absolute", "relative")
GAP_CODINGS = ("metres", "headway")
CODINGS = {"speed_coding": SPEED_CODINGS, "gap_coding": GAP_CODINGS}


def _coding(model_config: Mapping[str, Any], key: str) -> str:
    allowed = CODINGS[key]
    coding = str(model_config.get(key, allowed[0]))
    if coding not in allowed:
        raise ValueError(f"model.{key} must be one of {list(allowed)}, got {coding!r}")
    return coding


def _rebuild_scene_ar(model_config: Mapping[str, Any], state: Any) -> Any:
    model = _build_scene_ar(model_config)
    model.load_state_dict(state)
    return model.eval().requires_grad_(False)


def _sample_scene_ar(impl: Any, traffic, lanes, seeds, scene_ids, model_id: str, compute_batch: int, roads) -> list[Scene]:
    from aigc_synth.models.scene_ar import sample_scenes

    return sample_scenes(impl, traffic, lanes, seeds, scene_ids, model_id, compute_batch, roads)


def _sample_per_row(impl: Any, traffic, lanes, seeds, scene_ids, model_id: str, compute_batch: int, roads) -> list[Scene]:
    """The baselines: one scene at a time (no network, nothing to batch)."""
    return [replace(impl.sample(t, int(n), int(s), int(i), road=r), model_id=model_id)
            for t, n, s, i, r in zip(traffic, lanes, seeds, scene_ids, roads)]


def _rebuild_random(model_config: Mapping[str, Any], state: Any) -> RandomSceneSampler:
    return RandomSceneSampler(speed_range=(float(model_config["speed_low"]), float(model_config["speed_high"])))


SCENE_FAMILIES: dict[str, SceneFamily] = {
    "scene_ar": SceneFamily("scene_ar", SceneARConfig, _rebuild_scene_ar, _sample_scene_ar, build=_build_scene_ar,
                            arch_keys=("family", "hidden", "head_hidden", "speed_coding", "gap_coding")),
    "scene_marginal": SceneFamily("scene_marginal", SceneMarginalConfig, lambda cfg, state: MarginalSceneSampler.from_dict(state),
                                  _sample_per_row),
    "scene_random": SceneFamily("scene_random", SceneRandomConfig, _rebuild_random, _sample_per_row),
}


def get_scene_family(name: str) -> SceneFamily:
    if name not in SCENE_FAMILIES:
        raise ValueError(f"unknown scene family {name!r}; available: {sorted(SCENE_FAMILIES)}")
    return SCENE_FAMILIES[name]
#: The default scene model shipped inside the package (``job.checkpoint=null`` on a scene job).
BUNDLED_SCENE_CHECKPOINT = Path(__file__).resolve().parent.parent / "assets" / "default_scene_generator.pt"


def resolve_scene_checkpoint(checkpoint: str | None) -> Path:
    """``None`` / ``""`` / ``default`` / ``bundled`` → the bundled scene model; anything else a path."""
    if checkpoint in (None, "", "default", "bundled"):
        return BUNDLED_SCENE_CHECKPOINT
    return Path(checkpoint).expanduser()


def export_scene_generator(path: str | Path, *, family: str, model_config: dict[str, Any], state: dict[str, Any],
                           traffic: Sequence[str], lanes: Sequence[int], roads: Sequence[str] = ("straight",),
                           meta: dict[str, Any] | None = None) -> str:
    """Write an exported scene generator atomically; return its sha256 (the model id)."""
    if family not in SCENE_FAMILIES:
        raise ValueError(f"unknown scene family {family!r}; available: {list(SCENE_FAMILIES)}")
    unknown = [r for r in roads if r not in ROAD_KINDS]
    if unknown or not roads:
        raise ValueError(f"road kinds must be among {list(ROAD_KINDS)}, got {list(roads)}")
    save_checkpoint({"format": SCENE_GENERATOR_FORMAT, "family": family, "model_config": dict(model_config), "state": state,
                     "traffic": list(traffic), "lanes": [int(n) for n in lanes], "roads": list(roads), "meta": meta or {}}, path)
    return sha256_file(path)


@dataclass
class SceneGenerator:
    """A loaded scene generator: ``sample`` plus what it can be asked for."""

    family: str
    model_id: str
    traffic: tuple[str, ...]
    lanes: tuple[int, ...]
    source: str
    roads: tuple[str, ...] = ("straight",)
    meta: dict[str, Any] = field(default_factory=dict)
    _impl: Any = None

    def check_request(self, traffic: Sequence[str], lanes: Sequence[int], roads: Sequence[str | Road] = ()) -> None:
        """SceneError naming the first traffic level / lane count / road kind this model was not trained on."""
        for t in traffic:
            if t not in TRAFFIC_LEVELS:
                raise SceneError(f"unknown traffic level {t!r}; allowed: {list(TRAFFIC_LEVELS)}")
            if t not in self.traffic:
                raise SceneError(f"{self.source} was trained on traffic {list(self.traffic)}, not {t!r}")
        for n in lanes:
            if int(n) not in self.lanes:
                raise SceneError(f"{self.source} was trained on {list(self.lanes)} lanes, not {n}")
        for road, n in zip(roads, lanes):
            kind = road.kind if isinstance(road, Road) else road
            problems = road.problems(int(n)) if isinstance(road, Road) else road_kind_problems(kind, int(n))
            if problems:
                raise SceneError(problems[0])
            if kind not in self.roads:
                raise SceneError(f"{self.source} was trained on roads {list(self.roads)}, not {kind!r}")

    def sample(self, traffic: Sequence[str], num_lanes: Sequence[int], seeds: Sequence[int], scene_ids: Sequence[int],
               compute_batch: int = 64, roads: Sequence[str | Road] | None = None) -> list[Scene]:
        """One scene per row; each a pure function of (model, traffic, lanes, road, seed, scene id).

        ``roads``: per row a road kind (its parameters drawn by the model from the row's seed) or a
        full :class:`~aigc_synth.scenes.format.Road`; default all straight.
        """
        roads = ["straight"] * len(seeds) if roads is None else list(roads)
        if len(roads) != len(seeds):
            raise SceneError(f"need one road per scene, got {len(roads)} for {len(seeds)} scenes")
        self.check_request(traffic, num_lanes, roads)
        return get_scene_family(self.family).sample(self._impl, traffic, num_lanes, seeds, scene_ids, self.model_id, compute_batch,
                                                    roads)


def build_scene_model(family: str, model_config: Mapping[str, Any]) -> Any:
    """A scene family's trainable network from its config keys (ValueError for families without one)."""
    build = get_scene_family(family).build
    if build is None:
        raise ValueError(f"{family} has no network")
    return build(model_config)


def load_scene_generator(path: str | Path) -> SceneGenerator:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"scene checkpoint not found: {path}")
    return load_scene_generator_from_bytes(path.read_bytes(), source=str(path))


def read_scene_header(data: bytes, source: str) -> dict[str, Any]:
    """Load and validate a scene checkpoint's contents (no model built)."""
    ckpt = require_format(load_checkpoint_bytes(data, label=source), source, SCENE_GENERATOR_FORMAT, "scene generator",
                          "`aigc-synth train model=scene_ar` writes one as generator.pt",
                          keys=("family", "model_config", "state", "traffic", "lanes"))
    unknown = [r for r in ckpt.get("roads", ["straight"]) if r not in ROAD_KINDS]
    if unknown:
        raise CheckpointError(f"scene generator {source} names unknown road kinds {unknown}; allowed: {list(ROAD_KINDS)}")
    if ckpt["family"] not in SCENE_FAMILIES:
        raise CheckpointError(f"scene generator {source} has unknown family {ckpt['family']!r}")
    return ckpt


def load_scene_generator_from_bytes(data: bytes, source: str = "<bytes>") -> SceneGenerator:
    """Rebuild a scene generator from checkpoint bytes (hashed for the model id, loaded safely)."""
    ckpt = read_scene_header(data, source)
    family, cfg = ckpt["family"], ckpt["model_config"]
    try:
        impl = get_scene_family(family).rebuild(cfg, ckpt["state"])
    except (RuntimeError, TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"scene generator {source} does not match its config: {first_line(exc, 200)}") from None
    return SceneGenerator(family=family, model_id=hashlib.sha256(data).hexdigest(), traffic=tuple(ckpt["traffic"]),
                          lanes=tuple(int(n) for n in ckpt["lanes"]), source=source, roads=tuple(ckpt.get("roads", ["straight"])),
                          meta=dict(ckpt.get("meta", {})), _impl=impl)


__all__ = ["BUNDLED_SCENE_CHECKPOINT", "SCENE_FAMILIES", "SCENE_GENERATOR_FORMAT", "SceneFamily", "SceneGenerator",
           "build_scene_model", "export_scene_generator", "get_scene_family",
           "load_scene_generator", "load_scene_generator_from_bytes", "resolve_scene_checkpoint"]
