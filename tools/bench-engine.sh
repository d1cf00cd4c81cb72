#!/usr/bin/env bash
# Times the pipeline stack (tests/engine/pipeline.test.ts: sleeping ssh builder, OCI registry,
# local host) under the real Pulumi engine and prints the median wall time of each kind of run:
# create, no-change `up`, no-change `preview`, destroy (one run of the suite; CYCLES no-change runs).
#
# Usage: bash tools/bench-engine.sh [CYCLES]   (default 5; needs root, like the engine suite)
set -euo pipefail
cd "$(dirname "$0")/.."
cycles=${1:-5}
bin=$(bash tools/pulumi-offline.sh)
export NIX_CONF_DIR=$PWD/tests/harness/nix
PATH="$bin:$PATH" NEKO_INFRA_BENCH_CYCLES=$cycles npx jest tests/engine/pipeline.test.ts --selectProjects engine --runInBand 2>&1 |
  grep -E 'engine timings|Tests:' || { echo "bench-engine: the engine suite printed no timings" >&2; exit 1; }
