"""``aigc-synth export OUTPUT_DIR --format F --out DIR``: one verb for every export format.

Each format is an :class:`Exporter` in :data:`EXPORTERS`: what kind of job output it reads
(``scenes`` or ``image``), the optional dependency it needs, and the writer. Everything is checked
before anything is written - the input is a finished job of the right kind, every scene is valid
(no overlapping or out-of-window agents), the dependency is installed, ``--out`` is absent or
empty - and the writers stage their files and move them into place, so a failed export leaves
nothing behind.
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
    reads: str  # "scenes" | "image"
    requires: tuple[str, ...]  # importable modules, checked before reading anything
    write: Callable[[Sequence, Path], list[Path]]
    summary: str


def _sumo(scenes, out: Path) -> list[Path]:
    from aigc_synth.scenes.export import export_sumo

    return export_sumo(scenes, out)


def _openscenario(scenes, out: Path) -> list[Path]:
    from aigc_synth.scenes.export import export_openscenario

    return export_openscenario(scenes, out)


EXPORTERS: dict[str, Exporter] = {
    "sumo": Exporter("sumo", "scenes", ("sumo",), _sumo,
                     "SUMO network + route file + .sumocfg per scene (every vehicle placed exactly)"),
    "openscenario": Exporter("openscenario", "scenes", ("scenariogeneration",), _openscenario,
                             "OpenSCENARIO 1.0 .xosc per scene + OpenDRIVE .xodr roads (CARLA ScenarioRunner, esmini)"),
}


def export_output(source: str | Path, fmt: str, out: str | Path, limit: int | None = None) -> list[Path]:
    """Export a job's output (or a folder of scene Parquet) to ``out``; return the main files written."""
    from aigc_synth.scenes.dataset import read_scenes
    from aigc_synth.scenes.format import require_valid

    if fmt not in EXPORTERS:
        raise UsageError(f"unknown export format {fmt!r}; available: {sorted(EXPORTERS)}")
    exporter = EXPORTERS[fmt]
    missing = [m for m in exporter.requires if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"--format {fmt} needs {', '.join(missing)}, which is not installed: {INSTALL_SIM}")
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--out {out} exists and is not an empty directory; choose a new one")
    if limit is not None and limit < 1:
        raise UsageError(f"--limit must be >= 1, got {limit}")
    scenes = read_scenes(source, limit)
    if not scenes:
        raise UsageError(f"{source} holds no scenes")
    require_valid(scenes)  # before the first file: an invalid scene exports nothing
    return exporter.write(scenes, out)
