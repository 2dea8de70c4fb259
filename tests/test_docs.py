"""The README and docs/ stay true: their commands run or parse, their links and file paths exist.

* Every ``aigc-synth`` command in a fenced ``bash`` block of README.md and docs/*.md (the experiment
  record excepted: it quotes commands of removed options, with the commit they ran on) is parsed the
  way the CLI parses it: argparse for the verb, then Hydra composition of its overrides, so a renamed
  key or verb fails here.
* README blocks marked ``bash runnable`` are run, in order, through the real CLI entry point in an
  empty working directory, with tiny overrides appended (fewer samples) — a user copying them gets
  what they say.
* Every relative link (and ``#anchor``) and every repository path named in backticks exists.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
#: quotes commands of removed options (each with the commit it ran on): links and paths only
HISTORICAL = {"experiments.md"}
#: top-level folders a backticked path may start with, and package sub-folders (paths relative to aigc_synth/)
REPO_DIRS = ("aigc_synth", "scripts", "conf", "docs", "tests", "clusters", ".ci")
PACKAGE_DIRS = ("data", "models", "training", "sampling", "jobs", "io", "metrics", "evaluation", "scenes", "serve", "runtime",
                "benchmarks", "assets")
#: appended to a runnable command, by verb: the smallest run that still exercises it
TINY = {"generate": ["job.num_samples=6", "job.shard_size=3"]}
CONFIG_VERBS = {"generate": "generate", "train": "train", "evaluate": "evaluate", "serve": "serve"}


def fenced_blocks(path: Path) -> list[tuple[str, list[str]]]:
    """(info string, lines) of every fenced code block of a Markdown file."""
    blocks, info, lines = [], None, []
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            if info is None:
                info, lines = line[3:].strip(), []
            else:
                blocks.append((info, lines))
                info = None
        elif info is not None:
            lines.append(line)
    return blocks


def commands(lines: list[str]) -> list[list[str]]:
    """Shell commands of a block as argument lists: continuations joined, comments dropped,
    leading ``VAR=value`` assignments and the ``bash scripts/in_env.sh`` wrapper removed."""
    out, pending = [], ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        argv = shlex.split(pending + line, comments=True)
        pending = ""
        while argv and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", argv[0]):
            argv = argv[1:]
        if argv[:2] == ["bash", "scripts/in_env.sh"]:
            argv = argv[2:]
        if argv:
            out.append(argv)
    return out


def doc_commands(paths) -> list[tuple[str, list[str], bool]]:
    """(file name, argv, runnable) of every command in the ``bash`` blocks of ``paths``."""
    found = []
    for path in paths:
        for info, lines in fenced_blocks(path):
            words = info.split()
            if words[:1] == ["bash"]:
                found += [(path.name, argv, "runnable" in words[1:]) for argv in commands(lines)]
    return found


def check_parses(argv: list[str]) -> None:
    """Parse an ``aigc-synth`` command line as the CLI would, composing its overrides; run nothing."""
    from aigc_synth.benchmarks.downstream_cli import parse_args as downstream_args
    from aigc_synth.cli import build_parser
    from aigc_synth.config import compose

    args = build_parser().parse_args(argv)
    overrides = [o for o in getattr(args, "overrides", []) if o != "--"]
    if args.command in CONFIG_VERBS:
        compose(CONFIG_VERBS[args.command], overrides)
    elif args.command == "submit":
        compose("generate", overrides)
    elif args.command == "benchmark":
        downstream_args(list(args.args))


def check_other(argv: list[str]) -> None:
    """A non-``aigc-synth`` command: the test command is CI's; scripts and files it names exist."""
    if argv[:3] == ["python", "-m", "pytest"]:
        assert "python -m pytest" in (ROOT / ".ci/run").read_text(), "README's test command is not what CI runs"
        return
    for word in argv[1:]:
        if re.match(r"(scripts|clusters|conf|docs|tests)/", word):
            assert (ROOT / word).exists(), f"{' '.join(argv)}: {word} does not exist"


ALL_DOCS = [README, *DOCS, ROOT / "clusters/README.md"]
PARSED = [(name, argv) for name, argv, _ in doc_commands([p for p in ALL_DOCS if p.name not in HISTORICAL])]


@pytest.mark.parametrize("name,argv", PARSED, ids=[f"{n}:{' '.join(a)[:60]}" for n, a in PARSED])
def test_every_documented_command_parses(name, argv):
    if argv[0] == "aigc-synth":
        check_parses(argv[1:])
    else:
        check_other(argv)


def test_readme_has_runnable_blocks_and_the_ci_test_command():
    runnable = [argv for _, argv, run in doc_commands([README]) if run]
    verbs = {argv[1] for argv in runnable if argv[0] == "aigc-synth"}
    assert {"generate", "verify", "preview", "export", "info", "evaluate"} <= verbs
    assert ["python", "-m", "pytest"] in runnable


def test_readme_runnable_commands_run(tmp_path, monkeypatch, ray_session):
    """README's runnable blocks, in order, in an empty directory, with tiny overrides: exit 0 each,
    and the files they promise appear."""
    from aigc_synth.cli import main

    monkeypatch.chdir(tmp_path)
    ran = []
    for _, argv, run in doc_commands([README]):
        if not run or argv[0] != "aigc-synth":
            continue
        args = argv[1:] + TINY.get(argv[1], [])
        assert main(args) == 0, f"README command failed: {' '.join(argv)}"
        ran.append(argv[1])
    assert ran.count("generate") >= 3
    assert (tmp_path / "outputs/rare_coco/instances.json").is_file()
    assert (tmp_path / "outputs/eval_default/metrics.json").is_file()
    assert len(list((tmp_path / "outputs").glob("scenes-*/manifest.json"))) == 1


# ------------------------------------------------------------------ links and paths

def github_slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[`*]", "", heading.strip().lstrip("#").strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    in_fence, found = False, set()
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
        elif not in_fence and re.match(r"#{1,6} ", line):
            found.add(github_slug(line))
    return found


def prose(path: Path) -> str:
    """The file without its fenced blocks."""
    return re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)


def test_github_slug_matches_githubs_rule():
    assert github_slug("## Downstream benchmark: does the generated data help?") == "downstream-benchmark-does-the-generated-data-help"
    assert github_slug("### Figures: the same weights, ψ 0.65 and a row-colour calibration") == \
        "figures-the-same-weights-ψ-065-and-a-row-colour-calibration"
    assert github_slug("## `aigc-synth evaluate`") == "aigc-synth-evaluate"


@pytest.mark.parametrize("doc", ALL_DOCS, ids=lambda p: p.name)
def test_links_and_anchors_resolve(doc):
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", prose(doc)):
        if re.match(r"[a-z]+://|mailto:", target):
            continue
        file, _, anchor = target.partition("#")
        dest = (doc.parent / file).resolve() if file else doc
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{doc.name}: broken links: {broken}"


def named_paths(text: str) -> set[str]:
    """Repository paths named in backticks (``aigc_synth/x.py``, ``data/layout.py``, ``tests/t.py::name``)."""
    found = set()
    for code in re.findall(r"`([^`\n]+)`", text):
        for word in code.split():
            word = word.strip("()[],;:'\"").split("@")[0]
            if any(c in word for c in "<>…*{}|$=") or "/" not in word or re.search(r"-v\d+$", word):
                continue  # placeholders, globs, assignments; gymnasium ids (aigc_synth/scene-v0)
            head = word.split("/")[0]
            if head in REPO_DIRS or (head in PACKAGE_DIRS and re.search(r"\.(py|pt|yaml)(::|$)", word)):
                found.add(word)
    return found


@pytest.mark.parametrize("doc", [d for d in ALL_DOCS if d.name not in HISTORICAL], ids=lambda p: p.name)
def test_named_files_exist(doc):
    missing = []
    for word in sorted(named_paths(doc.read_text())):
        path, _, test_name = word.partition("::")
        base = ROOT if path.split("/")[0] in REPO_DIRS else ROOT / "aigc_synth"
        if not (base / path).exists():
            missing.append(word)
        elif test_name and not re.search(rf"def {re.escape(test_name)}\b", (base / path).read_text()):
            missing.append(f"{word} (no such test)")
    assert not missing, f"{doc.name} names files that do not exist: {missing}"
