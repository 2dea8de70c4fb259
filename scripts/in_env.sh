#!/usr/bin/env bash
# Run a command inside the project's virtual environment, creating it on first use.
#
#   bash scripts/in_env.sh aigc-synth generate      # the main job on the bundled defaults
#   bash scripts/in_env.sh python -m pytest         # the test suite
#
# The venv lives in .venv (override with AIGC_SYNTH_VENV). It is (re)installed when missing or
# when pyproject.toml is newer than the last install. Torch is pinned to the wheels this project's
# machines keep on disk (a CUDA build that also runs on CPUs); set AIGC_SYNTH_TORCH to change it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${AIGC_SYNTH_VENV:-$ROOT/.venv}"
STAMP="$VENV/.aigc_synth_installed"
TORCH_SPEC="${AIGC_SYNTH_TORCH:-torch==2.14.1 torchvision==0.29.1}"
if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ]; then
  echo "[in_env] setting up $VENV (first run takes a few minutes)" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # shellcheck disable=SC2086
  "$VENV/bin/python" -m pip install -q $TORCH_SPEC
  "$VENV/bin/python" -m pip install -q -e "$ROOT[dev,sim]"
  touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
export RAY_USAGE_STATS_ENABLED="${RAY_USAGE_STATS_ENABLED:-0}"
cd "$ROOT"
exec "$@"
