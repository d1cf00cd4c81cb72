#!/usr/bin/env bash
# `npm run doctor -- STACK`: is everything `npm run up -- STACK` needs in place? One line per check
# (ok / FAIL or WARN with a fix line / skip), exit 0 when nothing failed, 1 otherwise. It changes and installs
# nothing. The checks are tools/doctor.js; this wrapper only picks the Node.js that runs them: the
# `node` on PATH when it is 22 or newer, else the Node 22 tools/node22.sh cached (if there is one),
# else the old node (its check fails, the others still run). The version of the `node` on PATH goes
# to the Node.js check as DOCTOR_PATH_NODE.
set -euo pipefail

if (($# != 1)) || [[ ! $1 =~ ^[A-Za-z0-9_.-]+$ ]]; then
  echo "usage: npm run doctor -- STACK   (the stack name, e.g. local, dev, prod)" >&2
  exit 2
fi
cd "$(dirname "${BASH_SOURCE[0]}")/.."

path_node=$(node --version 2>/dev/null || true)
major=${path_node#v}
major=${major%%.*}
[[ $major =~ ^[0-9]+$ ]] || major=0

runner=""
if ((major >= 22)); then
  runner=node
else
  for dir in "${XDG_CACHE_HOME:-$HOME/.cache}"/neko-infra/node-22.*; do
    if [[ -f $dir/.complete && -x $dir/bin/node ]]; then runner=$dir/bin/node; fi
  done
  if [[ -z $runner ]] && ((major >= 18)); then runner=node; fi
fi

if [[ -z $runner ]]; then
  # The fix as doctor.js gives it: tools/node22.sh is for Linux x86_64 only (it refuses macOS).
  # NEKO_INFRA_DOCTOR_PLATFORM (<os>/<arch>, e.g. darwin/arm64) is set by the tests only.
  # (bash 3.2 here too: macOS's /bin/bash)
  platform=${NEKO_INFRA_DOCTOR_PLATFORM:-}
  [[ -n $platform ]] || platform="$(uname -s 2>/dev/null || true)/$(uname -m 2>/dev/null || true)"
  # shellcheck disable=SC2016 # the fixes are commands to copy, not to expand here
  case $platform in
    darwin/* | Darwin/*) fix='brew install node@22, then export PATH="$(brew --prefix node@22)/bin:$PATH" (node@22 is keg-only); or nvm install 22' ;;
    linux/x64 | Linux/x86_64) fix='PATH=$(bash tools/node22.sh):$PATH (Node 22 from the npm registry, cached), or install Node.js 22 LTS' ;;
    *) fix="install Node.js 22 LTS (https://nodejs.org/en/download, or nvm install 22); tools/node22.sh is for Linux x86_64 only, this is $platform" ;;
  esac
  echo "FAIL  Node.js: ${path_node:-no node on PATH}${path_node:+ is older than engines.node >=22}"
  echo "      fix: $fix"
  echo "skip  the other checks: they need Node.js 18 or newer to run"
  exit 1
fi
DOCTOR_PATH_NODE=$path_node exec "$runner" tools/doctor.js "$1"
