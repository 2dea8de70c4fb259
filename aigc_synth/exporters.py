"""``aigc-synth export OUTPUT_DIR --format F --out DIR``: one verb for every export format.

Each format is an :class:`Exporter` in :data:`EXPORTERS`: what kind of job output it reads
(``scenes`` or ``image``), the optional dependency it needs, and the writer. Everything is checked
before anything is written - the input is a finished job of the right kind, every shard it reads
matches the job's manifest (sha256, as ``aigc-synth verify`` checks it:
:func:`aigc_synth.io.reader.check_shards`), every scene is valid (no overlapping or out-of-window
agents), the dependency is installed, ``--out`` is absent or empty - and the writers stage their
files and move them into place, so a failed export leaves nothing behind. A folder of scene Parquet
files that is not a job's output has no manifest to check against.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from aigc_synth.errors import UsageError

INSTALL_SIM = "pip install 'aigc_synth[sim]'"


@dataclass(frozen=True)
class Exporter:
    name: str
    read: Callable[[str | Path, str, int | None], tuple[list, str]]  # (source, format, limit) -> (rows, unit): checked rows
    requires: tuple[str, ...]  # importable modules, checked before reading anything
    write: Callable[[Sequence, Path], list[Path]]  # (what ``read`` returned, out dir) -> main files
    summary: str


def read_image_rows(source: str | Path, fmt: str, limit: int | None) -> tuple[list, str]:
    """A finished image job's rows (:func:`aigc_synth.io.reader.iter_image_rows`), its shards checked first."""
    from aigc_synth.io.reader import check_shards, iter_image_rows, load_manifest
    from aigc_synth.sampling.registry import job_kind

    kind = job_kind(load_manifest(source))  # BadFileError naming it: missing, truncated, not a manifest
    if not kind.images:
        raise UsageError(f"--format {fmt} exports image jobs; {source} holds {kind.unit}s (use sumo or openscenario)")
    check_shards(source, limit)  # the shards iter_image_rows reads: as the job wrote them, or nothing is read
    return list(iter_image_rows(source, limit)), "image"


def read_scene_rows(source: str | Path, fmt: str, limit: int | None) -> tuple[list, str]:
    """Scenes of a finished scene job (its shards checked first) or of a folder of scene Parquet, all valid."""
    from aigc_synth.io.reader import check_shards
    from aigc_synth.sampling.registry import job_kind
    from aigc_synth.sampling.scene import SCENE_KIND
    from aigc_synth.scenes.dataset import job_manifest, read_scenes
    from aigc_synth.scenes.format import require_valid

    manifest = job_manifest(source)
    if manifest is not None and job_kind(manifest) is SCENE_KIND:
        check_shards(source, limit)  # the shards read_scenes reads (another kind's output: refused by read_scenes)
    scenes = read_scenes(source, limit)
    if not scenes:
        raise UsageError(f"{source} holds no scenes")
    require_valid(scenes)  # before the first file: an invalid scene exports nothing
    return scenes, "scene"


def _sumo(scenes, out: Path) -> list[Path]:
    from aigc_synth.scenes.export import export_sumo

    return export_sumo(scenes, out)


def _openscenario(scenes, out: Path) -> list[Path]:
    from aigc_synth.scenes.export import export_openscenario

    return export_openscenario(scenes, out)


def _webdataset(source, out: Path) -> list[Path]:
    from aigc_synth.io.image_export import export_webdataset

    return export_webdataset(source, out)


def _coco(source, out: Path) -> list[Path]:
    from aigc_synth.io.image_export import export_coco

    return export_coco(source, out)


def _bdd100k(source, out: Path) -> list[Path]:
    from aigc_synth.data.bdd100k import export_bdd100k

    return export_bdd100k(source, out)


EXPORTERS: dict[str, Exporter] = {
    "sumo": Exporter("sumo", read_scene_rows, ("sumo",), _sumo,
                     "SUMO network + route file + .sumocfg per scene (every vehicle placed exactly)"),
    "openscenario": Exporter("openscenario", read_scene_rows, ("scenariogeneration",), _openscenario,
                             "OpenSCENARIO 1.0 .xosc per scene + OpenDRIVE .xodr roads (CARLA ScenarioRunner, esmini)"),
    "webdataset": Exporter("webdataset", read_image_rows, (), _webdataset,  # plain tarfile: the library is only for reading
                           "WebDataset tar shards: <key>.<image ext> + <key>.json per sample"),
    "coco": Exporter("coco", read_image_rows, (), _coco, "COCO detection JSON (instances.json) next to the images"),
    "bdd100k": Exporter("bdd100k", read_image_rows, (), _bdd100k, "BDD100K layout: images/ + labels JSON (attributes, box2d)"),
}


@dataclass(frozen=True)
class ExportResult:
    files: list[Path]  # the main files written
    count: int  # samples exported: images or scenes
    unit: str  # "image" | "scene"

    def describe(self) -> str:
        """``1000 images``, ``1 scene``."""
        return f"{self.count} {self.unit}{'' if self.count == 1 else 's'}"


def export_output(source: str | Path, fmt: str, out: str | Path, limit: int | None = None) -> list[Path]:
    """Export a job's output (or a folder of scene Parquet) to ``out``; return the main files written."""
    return export(source, fmt, out, limit).files


def export(source: str | Path, fmt: str, out: str | Path, limit: int | None = None) -> ExportResult:
    """:func:`export_output`, also saying how many images or scenes were exported. Raises UsageError for
    bad input and IntegrityError (exit status 1) when a shard to read does not match the manifest."""
    from aigc_synth.io.atomic import check_writable_directory

    if fmt not in EXPORTERS:
        raise UsageError(f"unknown export format {fmt!r}; available: {sorted(EXPORTERS)}")
    exporter = EXPORTERS[fmt]
    missing = [m for m in exporter.requires if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"--format {fmt} needs {', '.join(missing)}, which is not installed: {INSTALL_SIM}")
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--out {out} exists and is not an empty directory; choose a new one")
    check_writable_directory(out, "--out")  # before reading anything: messages name --out, not a staging path
    if limit is not None and limit < 1:
        raise UsageError(f"--limit must be >= 1, got {limit}")
    rows, unit = exporter.read(source, fmt, limit)
    return ExportResult(exporter.write(rows, out), len(rows), unit)
