#!/usr/bin/env bash
# The test command (README: `npm test`): installs what the suites need, then runs them all and
# ends with one line `N passed, N failed` summing every check.
#
#   static     tsc --noEmit once for the whole tree (jest only transpiles), eslint + prettier,
#              actionlint over .github/workflows
#   unit       pure logic and the dev/prod stacks under Pulumi mocks
#   realtool   every script against real Nix, sshd, registry, skopeo, dockerd (tests/harness)
#   engine     the local stack through the real Pulumi CLI (tools/pulumi-offline.sh)
#
# Env: SUITES="unit realtool engine" to run a subset (the static checks always run).
set -euo pipefail

cd "$(dirname "$0")/.."
suites=${SUITES:-unit realtool engine}
log() { echo "== $*" >&2; }

if [[ $(id -u) != 0 ]]; then
  echo "tests/run.sh: the real-tool suites need root (network namespaces, dockerd, sshd)" >&2
  exit 1
fi

log "Debian packages"
bash tools/install-deps.sh
# The suites' own Nix settings (flakes, no substituters, no build users, /bin/busybox in the
# sandbox): Nix reads them instead of the machine's /etc/nix/nix.conf.
export NIX_CONF_DIR="$PWD/tests/harness/nix"

log "npm ci"
npm ci --no-audit --no-fund --loglevel=error >/dev/null

if [[ " $suites " == *" engine "* ]]; then
  log "Pulumi CLI, language host and command provider (built once from Go modules, then cached)"
  bin=$(bash tools/pulumi-offline.sh)
  export PATH="$bin:$PATH"
fi

passed=0
failed=0

# One line per static check; each counts as one test.
check() {
  local name=$1
  shift
  log "$name"
  if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)) && echo "tests/run.sh: $name failed" >&2; fi
}
check typecheck npx tsc --noEmit
check "lint (eslint, prettier)" npm run --silent lint
check "actionlint (.github/workflows)" bash tools/actionlint.sh

projects=()
for s in $suites; do projects+=(--selectProjects "$s"); done
report=$(mktemp)
trap 'rm -f "$report"' EXIT
log "jest: $suites"
set +e
npx jest "${projects[@]}" --runInBand --json --outputFile="$report"
jest_rc=$?
set -e
if [[ -s $report ]]; then
  passed=$((passed + $(jq .numPassedTests "$report")))
  failed=$((failed + $(jq .numFailedTests "$report")))
  jq -r '.testResults[] | "\(.status)\t\(.name | sub(".*/tests/"; "tests/"))"' "$report" >&2
fi
if ((jest_rc != 0)) && ((failed == 0)); then
  # jest failed without a failing test (a suite that did not load, a crash): count it
  echo "tests/run.sh: jest exited $jest_rc without a failing test" >&2
  failed=$((failed + 1))
fi

echo "$passed passed, $failed failed"
((failed == 0))
