#!/usr/bin/env bash
# Start a Ray head and N worker nodes on this machine, bound to loopback, for development.
#   bash clusters/local/start_cluster.sh [NUM_WORKERS] [CPUS_PER_NODE]
# Then: RAY_ADDRESS=127.0.0.1:6379 aigc-synth generate ...   and finally: ray stop
set -euo pipefail
WORKERS="${1:-2}"
CPUS="${2:-1}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
RAY="${RAY_BIN:-$ROOT/.venv/bin/ray}"
"$RAY" start --head --node-ip-address=127.0.0.1 --port=6379 --num-cpus=0 --include-dashboard=false --disable-usage-stats
for _ in $(seq 1 "$WORKERS"); do
  "$RAY" start --address=127.0.0.1:6379 --node-ip-address=127.0.0.1 --num-cpus="$CPUS"
done
"$RAY" status --address=127.0.0.1:6379
