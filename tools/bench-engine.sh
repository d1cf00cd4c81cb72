#!/usr/bin/env bash
# Times the local stack under the real Pulumi engine: CYCLES rounds of create (`up`), no-op
# `preview` and `destroy`, and prints the median of each (the engine suite's closing line).
#
# Usage: bash tools/bench-engine.sh [CYCLES]   (default 5; needs root, like the engine suite)
set -euo pipefail
cd "$(dirname "$0")/.."
cycles=${1:-5}
bin=$(bash tools/pulumi-offline.sh)
PATH="$bin:$PATH" NEKO_INFRA_BENCH_CYCLES=$cycles npx jest --selectProjects engine --runInBand 2>&1 |
  grep -E 'engine timings|Tests:' || { echo "bench-engine: the engine suite printed no timings" >&2; exit 1; }
