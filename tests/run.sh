#!/usr/bin/env bash
# The test command (README: `npm test`): installs what the suites need, then runs them all and
# ends with one line `N passed, N failed` summing every check.
#
#   static     tsc --noEmit once for the whole tree (jest only transpiles), eslint + prettier,
#              actionlint over .github/workflows
#   unit       pure logic, the dev/prod stacks under Pulumi mocks, the policy pack
#   realtool   every script against real Nix, sshd, registry, skopeo, dockerd (tests/harness)
#   engine     the pipeline, the local stack and the spot guard through the real Pulumi CLI and the
#              real command provider v1.2.1 (tools/pulumi-offline.sh)
#
# Env: SUITES="unit realtool engine" to run a subset (the static checks always run).
#
# What it changes on the machine: static and unit run as any user and install nothing outside the
# repo and the user's caches (`npm ci` into node_modules; Node.js 22 and actionlint under
# ~/.cache/neko-infra when missing). Only realtool and engine need root: they install Debian
# packages (tools/install-deps.sh) and start namespaced services. Their Nix reads
# tests/harness/nix/nix.conf through NIX_CONF_DIR, never the machine's /etc/nix/nix.conf.
set -euo pipefail

cd "$(dirname "$0")/.."
suites=${SUITES:-unit realtool engine}
log() { echo "== $*" >&2; }

machine_suites=()
for s in $suites; do
  case $s in
  unit) ;;
  realtool | engine) machine_suites+=("$s") ;;
  *)
    echo "tests/run.sh: unknown suite '$s' in SUITES (unit, realtool, engine)" >&2
    exit 2
    ;;
  esac
done

# engines.node is >=22 (@pulumi/pulumi wants it): an older node on PATH gives way to the cached one.
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if ((node_major < 22)); then
  log "node $(node --version 2>/dev/null || echo missing) is older than engines.node (>=22): Node.js 22 from tools/node22.sh"
  PATH="$(bash tools/node22.sh):$PATH"
  export PATH
fi

if ((${#machine_suites[@]})); then
  if [[ $(id -u) != 0 ]]; then
    echo "tests/run.sh: the ${machine_suites[*]} suite(s) need root (Debian packages, network namespaces, dockerd, sshd); SUITES=unit runs as any user" >&2
    exit 1
  fi
  log "Debian packages"
  bash tools/install-deps.sh
  # The suites' own Nix settings (flakes, no substituters, no build users, /bin/busybox in the sandbox).
  export NIX_CONF_DIR="$PWD/tests/harness/nix"
fi

log "npm ci"
npm ci --no-audit --no-fund --loglevel=error >/dev/null

if [[ " $suites " == *" engine "* ]]; then
  log "Pulumi CLI and language host (built once from Go modules, then cached), the real command provider v1.2.1"
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

report=$(mktemp)
trap 'rm -f "$report"' EXIT

projects=()
for s in $suites; do projects+=(--selectProjects "$s"); done
log "jest: $suites"
set +e
npx jest "${projects[@]}" --runInBand --json --outputFile="$report"
jest_rc=$?
set -e
if [[ -s $report ]]; then
  # "passed failed", then "status<TAB>file" per test file (read by node, not jq: nothing to install)
  # shellcheck disable=SC2016 # JavaScript template literals, not shell expansions
  if summary=$(node -e '
    const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    console.log(`${r.numPassedTests} ${r.numFailedTests}`);
    for (const t of r.testResults) console.log(`${t.status}\t${t.name.replace(/.*\/tests\//, "tests/")}`);
  ' "$report"); then
    read -r p f <<<"${summary%%$'\n'*}"
    passed=$((passed + p))
    failed=$((failed + f))
    tail -n +2 <<<"$summary" >&2
  else
    echo "tests/run.sh: cannot read jest's report" >&2
    failed=$((failed + 1))
  fi
fi
if ((jest_rc != 0)) && ((failed == 0)); then
  # jest failed without a failing test (a suite that did not load, a crash): count it
  echo "tests/run.sh: jest exited $jest_rc without a failing test" >&2
  failed=$((failed + 1))
fi

echo "$passed passed, $failed failed"
((failed == 0))
