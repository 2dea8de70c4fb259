#!/usr/bin/env bash
# Start a Ray head and N worker nodes on this machine, bound to loopback, for development.
#   bash clusters/local/start_cluster.sh [NUM_WORKERS] [CPUS_PER_NODE]
# Then: RAY_ADDRESS=127.0.0.1:6379 aigc-synth generate ...   (joins from this shell)
#   or: aigc-synth submit --address http://127.0.0.1:8265 -- ...   (a job on the head's job server)
# and finally: ray stop   (stops EVERY Ray process on this machine)
set -euo pipefail
WORKERS="${1:-2}"
CPUS="${2:-1}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
RAY="${RAY_BIN:-$ROOT/.venv/bin/ray}"
# jobs submitted to this head run `aigc-synth ...` through a shell: find it in the same venv as ray
export PATH="$(dirname "$RAY"):$PATH"
"$RAY" start --head --node-ip-address=127.0.0.1 --port=6379 --num-cpus=0 --include-dashboard=true --dashboard-host=127.0.0.1 --disable-usage-stats
for _ in $(seq 1 "$WORKERS"); do
  "$RAY" start --address=127.0.0.1:6379 --node-ip-address=127.0.0.1 --num-cpus="$CPUS"
done
"$RAY" status --address=127.0.0.1:6379
