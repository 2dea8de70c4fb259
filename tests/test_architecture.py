"""Structure rules of the package: no import cycle, one obvious home per concern, small job modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "aigc_synth"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module → the ``aigc_synth`` modules it imports (anywhere in the file, lazily or not)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for t in targets:
                if t in modules and t != name:
                    graph[name].add(t)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_inside_the_package():
    graph = import_graph()
    assert "aigc_synth.cli" in graph and graph["aigc_synth.jobs.submit"]  # the walk sees the package
    assert find_cycle(graph) is None, " → ".join(find_cycle(graph))


@pytest.mark.parametrize("path", sorted((PACKAGE / "jobs").glob("*.py")), ids=lambda p: p.name)
def test_job_modules_stay_small(path):
    assert len(path.read_text().splitlines()) <= 300


def test_no_test_module_imports_another_test_module():
    for path in Path(__file__).parent.glob("test_*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.split(".")[-1].startswith(("test_", "conftest")), f"{path.name} imports {node.module}"


#: The package's layers, lowest first: each folder (or root module) imports only itself and what is listed
#: before it, so a lower layer never needs a higher one (a folder loop is a change of design, not a fix).
LAYERS = ("errors", "schema", "seeds", "aigc_synth", "io", "runtime", "scenes", "data", "models", "config", "metrics",
          "sampling", "evaluation", "training", "jobs", "serve", "benchmarks", "exporters", "client", "cli")


def layer_of(module: str) -> str:
    """``aigc_synth.jobs.spec`` → ``jobs``; ``aigc_synth.cli`` → ``cli``; the package itself → ``aigc_synth``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    rank = {name: i for i, name in enumerate(LAYERS)}
    return sorted(f"{a} → {b}" for a, targets in graph.items() for b in targets
                  if rank[layer_of(b)] > rank[layer_of(a)])


def test_the_layer_check_sees_a_wrong_direction():
    graph = {"aigc_synth.io.checkpoint": {"aigc_synth.models.registry"}, "aigc_synth.models.registry": {"aigc_synth.io.atomic"}}
    assert layer_violations(graph) == ["aigc_synth.io.checkpoint → aigc_synth.models.registry"]


def test_every_folder_and_root_module_has_a_layer():
    units = {layer_of(m) for m in import_graph()}
    assert units == set(LAYERS), f"unlisted: {sorted(units - set(LAYERS))}, gone: {sorted(set(LAYERS) - units)}"


def test_folders_import_only_lower_layers():
    assert layer_violations(import_graph()) == []


def test_no_module_imports_a_private_name_of_another():
    found = []
    for path in [*PACKAGE.rglob("*.py"), *Path(__file__).parent.glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("aigc_synth", "tests"):
                found += [f"{path.name}: {node.module}.{a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    assert found == []


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_is_over_600_lines(path):
    assert len(path.read_text().splitlines()) <= 600


def test_every_registered_family_and_kind_is_complete():
    """A family or kind added to one registry without the others would fail only when a user reaches it."""
    from aigc_synth.evaluation.registry import EVALUATORS
    from aigc_synth.models.registry import FAMILIES
    from aigc_synth.models.scene_families import SCENE_FAMILIES
    from aigc_synth.sampling.registry import SAMPLER_KINDS
    from aigc_synth.training.scene_trainer import SCENE_FITTERS
    from aigc_synth.training.steps import OBJECTIVES
    from aigc_synth.training.trainer import DATA_SOURCES

    assert set(SCENE_FITTERS) == set(SCENE_FAMILIES)
    for family in FAMILIES.values():
        assert family.objective is None or family.objective in OBJECTIVES, family.name
        assert set(family.data_sources) <= set(DATA_SOURCES), family.name
    assert set(EVALUATORS) == set(SAMPLER_KINDS)
