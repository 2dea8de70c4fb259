"""Cluster configs parse, carry the required fields, pin the same Ray as pyproject.toml, run the aigc_synth
image built by clusters/docker/Dockerfile, and every entrypoint is a real CLI command whose overrides compose
against conf/."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

from aigc_synth.cli import build_parser
from aigc_synth.config import compose

ROOT = Path(__file__).resolve().parents[1]
CLUSTERS = ROOT / "clusters"
DOCKERFILE = CLUSTERS / "docker" / "Dockerfile"
KUBERAY = sorted((CLUSTERS / "kuberay").glob("*.yaml"))
IMAGE_REPO = "ghcr.io/your-org/aigc-synth"  # the placeholder registry the docs tell users to replace


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def ray_pin() -> str:
    """The one Ray version pyproject.toml pins (ray[data], ray[serve], ray[default] must agree)."""
    pins = {m.group(1) for dep in _pyproject()["project"]["dependencies"]
            if (m := re.fullmatch(r"ray\[[a-z,]+\]==([0-9.]+)", dep.replace(" ", "")))}
    assert len(pins) == 1, f"pyproject.toml must pin ray[...]==X.Y.Z exactly once (same version): {pins}"
    return pins.pop()


def expected_image() -> str:
    """The GPU variant of this version's image: what every KubeRay / launcher node runs."""
    return f"{IMAGE_REPO}:{_pyproject()['project']['version']}-gpu"


def _yaml(name: str) -> dict:
    return yaml.safe_load((CLUSTERS / name).read_text())


def check_entrypoint(entrypoint: str) -> None:
    argv = shlex.split(entrypoint)
    assert argv[0] == "aigc-synth", entrypoint
    build_parser().parse_args(argv[1:])  # an unknown verb raises UsageError
    config = {"generate": "generate", "train": "train"}[argv[1]]
    compose(config, argv[2:])  # raises UsageError on a misspelled key or a bad value


def _cluster_spec(doc: dict) -> dict:
    return doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]


def _images(spec: dict) -> list[str]:
    images = []
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        images += [c["image"] for c in group["template"]["spec"]["containers"]]
    return images


def parse_dockerfile(text: str) -> tuple[str, dict[str, str], list[str]]:
    """(FROM image with the pre-FROM ARG defaults substituted, those defaults, instructions after FROM)."""
    lines = re.sub(r"\\\n", " ", text).splitlines()  # join continuation lines
    instructions = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    args: dict[str, str] = {}
    for i, ins in enumerate(instructions):
        keyword, _, rest = ins.partition(" ")
        if keyword.upper() == "ARG":
            name, _, default = rest.strip().partition("=")
            args[name] = default
        elif keyword.upper() == "FROM":
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], rest.split()[0])
            return image, args, instructions[i + 1:]
        else:
            pytest.fail(f"only ARG may come before FROM, got {ins!r}")
    pytest.fail("no FROM in the Dockerfile")


def test_dockerfile_base_is_the_pinned_ray():
    image, args, after = parse_dockerfile(DOCKERFILE.read_text())
    repo, tag = image.split(":")
    assert repo == "rayproject/ray"
    assert tag == f"{ray_pin()}-py311-cpu", "the default build is the CPU image of the pinned Ray, Python 3.11"
    assert args["RAY_VERSION"] == ray_pin()
    # a pre-FROM ARG is out of scope after FROM: every variable used there must be declared again
    declared = {ins.split()[1].split("=")[0] for ins in after if ins.upper().startswith("ARG ")}
    used = {m.group(1) or m.group(2) for ins in after for m in re.finditer(r"\$\{(\w+)\}|\$(\w+)", ins)}
    assert used <= declared, f"used after FROM without an ARG there: {sorted(used - declared)}"


def test_dockerfile_installs_the_package_with_the_sim_extra():
    _, _, after = parse_dockerfile(DOCKERFILE.read_text())
    runs = " ".join(ins for ins in after if ins.upper().startswith("RUN "))
    assert re.search(r"pip install --no-cache-dir \"?\.\[sim\]\"?", runs), runs
    assert "sim" in _pyproject()["project"]["optional-dependencies"]
    assert any(ins.upper().startswith("COPY ") for ins in after)


def test_dockerignore_keeps_what_the_build_needs():
    # BuildKit reads <Dockerfile>.dockerignore for a Dockerfile built with -f from the repository root
    ignored = {ln.strip() for ln in (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
               if ln.strip() and not ln.startswith("#")}
    assert {".venv", ".git", "runs", "outputs"} <= ignored
    needed = {"pyproject.toml", "README.md", "aigc_synth", "conf"}  # README: the package's readme metadata
    assert not needed & ignored


@pytest.mark.parametrize("path", KUBERAY, ids=lambda p: p.name)
def test_kuberay_versions_and_gpu_workers(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for doc in docs:
        assert doc["apiVersion"] == "ray.io/v1"
        spec = _cluster_spec(doc)
        assert spec["rayVersion"] == ray_pin()
        assert str(spec["headGroupSpec"]["rayStartParams"]["num-cpus"]) == "0"
        gpu_groups = [g for g in spec["workerGroupSpecs"]
                      if g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu")]
        assert gpu_groups, "a GPU worker group is required"
        for g in gpu_groups:
            assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]


@pytest.mark.parametrize("path", KUBERAY, ids=lambda p: p.name)
def test_kuberay_runs_the_aigc_synth_image(path):
    assert "git+https://" not in path.read_text()
    for doc in (d for d in yaml.safe_load_all(path.read_text()) if d):
        spec = _cluster_spec(doc)
        assert spec["headGroupSpec"]["template"]["spec"]["containers"]
        assert all(g["template"]["spec"]["containers"] for g in spec["workerGroupSpecs"])
        # head and workers: one image, so one Ray, one Python and one aigc_synth on every node
        assert set(_images(spec)) == {expected_image()}
        # the code is in the image: no runtime_env install (pip / conda) at job start
        runtime_env = yaml.safe_load(doc["spec"].get("runtimeEnvYAML") or "{}") or {}
        assert not {"pip", "conda", "uv"} & set(runtime_env), runtime_env


def test_no_git_install_placeholder_anywhere():
    offenders = [str(p.relative_to(ROOT)) for p in CLUSTERS.rglob("*") if p.is_file() and "git+https://" in p.read_text()]
    assert not offenders


def test_docs_push_the_image_the_manifests_use():
    readme = (CLUSTERS / "README.md").read_text()
    assert f"docker push {expected_image()}" in readme
    assert "docker build -f clusters/docker/Dockerfile" in readme


def test_rayjob_entrypoint_is_a_valid_command():
    doc = _yaml("kuberay/rayjob.yaml")
    assert doc["kind"] == "RayJob" and doc["spec"]["shutdownAfterJobFinishes"] is True
    check_entrypoint(doc["spec"]["entrypoint"])


def test_launcher_yaml():
    doc = _yaml("launcher/aws-gpu.yaml")
    assert doc["available_node_types"][doc["head_node_type"]]["resources"]["CPU"] == 0
    assert doc["docker"]["image"] == expected_image()  # the pinned Ray comes with the image (see the Dockerfile test)
    assert not doc.get("setup_commands"), "nothing to install on top of the image"
    assert doc["available_node_types"]["gpu_worker"]["max_workers"] >= 1


def test_entrypoint_check_catches_typos():
    from aigc_synth.errors import UsageError

    with pytest.raises(UsageError, match="num_sampels"):
        check_entrypoint("aigc-synth generate job.num_sampels=10")
    with pytest.raises(UsageError, match="invalid choice: 'generat'"):
        check_entrypoint("aigc-synth generat job.num_samples=10")
