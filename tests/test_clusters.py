"""Cluster configs parse, carry the required fields, pin the same Ray as pyproject.toml, and every
entrypoint is a real CLI command whose overrides compose against conf/."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from aigc_synth.cli import build_parser
from aigc_synth.config import compose

ROOT = Path(__file__).resolve().parents[1]
CLUSTERS = ROOT / "clusters"


def ray_pin() -> str:
    text = (ROOT / "pyproject.toml").read_text()
    match = re.search(r'"ray\[data\]==([0-9.]+)"', text)
    assert match, "pyproject.toml must pin ray[data]==X.Y.Z"
    return match.group(1)


def _yaml(name: str) -> dict:
    return yaml.safe_load((CLUSTERS / name).read_text())


def check_entrypoint(entrypoint: str) -> None:
    argv = shlex.split(entrypoint)
    assert argv[0] == "aigc-synth", entrypoint
    build_parser().parse_args(argv[1:])  # an unknown verb raises UsageError
    config = {"generate": "generate", "train": "train"}[argv[1]]
    compose(config, argv[2:])  # raises UsageError on a misspelled key or a bad value


def _images(spec: dict) -> list[str]:
    images = []
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        images += [c["image"] for c in group["template"]["spec"]["containers"]]
    return images


@pytest.mark.parametrize("name", ["kuberay/raycluster.yaml", "kuberay/rayjob.yaml"])
def test_kuberay_versions_and_gpu_workers(name):
    doc = _yaml(name)
    assert doc["apiVersion"] == "ray.io/v1"
    spec = doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]
    assert spec["rayVersion"] == ray_pin()
    assert all(img.split(":")[1].startswith(ray_pin()) for img in _images(spec))
    assert str(spec["headGroupSpec"]["rayStartParams"]["num-cpus"]) == "0"
    gpu_groups = [g for g in spec["workerGroupSpecs"]
                  if g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu")]
    assert gpu_groups, "a GPU worker group is required"
    for g in gpu_groups:
        assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]


def test_rayjob_entrypoint_is_a_valid_command():
    doc = _yaml("kuberay/rayjob.yaml")
    assert doc["kind"] == "RayJob" and doc["spec"]["shutdownAfterJobFinishes"] is True
    check_entrypoint(doc["spec"]["entrypoint"])


def test_launcher_yaml():
    doc = _yaml("launcher/aws-gpu.yaml")
    assert doc["available_node_types"][doc["head_node_type"]]["resources"]["CPU"] == 0
    assert any(f"ray[data]=={ray_pin()}" in cmd for cmd in doc["setup_commands"])
    assert doc["available_node_types"]["gpu_worker"]["max_workers"] >= 1


def test_entrypoint_check_catches_typos():
    from aigc_synth.errors import UsageError

    with pytest.raises(UsageError, match="num_sampels"):
        check_entrypoint("aigc-synth generate job.num_sampels=10")
    with pytest.raises(UsageError, match="invalid choice: 'generat'"):
        check_entrypoint("aigc-synth generat job.num_samples=10")
