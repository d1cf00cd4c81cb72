#!/usr/bin/env bash
# Lints the GitHub Actions workflows (.github/workflows) with actionlint, which also hands every
# `run:` script to shellcheck. actionlint is built once from its Go module (served by the
# Go module proxy, no download site needed) into a cache outside the repo, keyed by version; a
# cached run takes well under a second.
#
#   bash tools/actionlint.sh            # every workflow; exit 1 on any finding
#   bash tools/actionlint.sh FILE...    # some of them (other actionlint flags pass through too)
#
# Env: ACTIONLINT_VERSION (default 1.7.12). shellcheck must be on PATH: without it actionlint
# silently skips the `run:` scripts, so this script refuses to run instead.
set -euo pipefail

ACTIONLINT_VERSION="${ACTIONLINT_VERSION:-1.7.12}"
ACTIONLINT_VERSION="${ACTIONLINT_VERSION#v}"
readonly MODULE=github.com/rhysd/actionlint

cache_dir="${XDG_CACHE_HOME:-$HOME/.cache}/neko-infra/actionlint-v$ACTIONLINT_VERSION"
bin="$cache_dir/actionlint"

log() { printf 'actionlint.sh: %s\n' "$*" >&2; }

if [[ ! -x $bin ]]; then
  if ! command -v go >/dev/null 2>&1; then
    if [[ -x /usr/local/go/bin/go ]]; then
      PATH="/usr/local/go/bin:$PATH"
    else
      log "go not found (needed once to build actionlint v$ACTIONLINT_VERSION from $MODULE)"
      exit 1
    fi
  fi
  mkdir -p "$cache_dir"
  tmp="$(mktemp -d "$cache_dir/.build.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  log "building actionlint v$ACTIONLINT_VERSION from the Go module proxy (once)"
  # Outside any module and workspace of the caller; `go install pkg@version` pins every dependency
  # to actionlint's own go.sum.
  (cd "$tmp" && GOWORK=off GOBIN="$tmp" go install -trimpath -ldflags "-s -w" "$MODULE/cmd/actionlint@v$ACTIONLINT_VERSION")
  # A rename in the same directory: the cache never holds half a binary.
  mv -f "$tmp/actionlint" "$bin"
fi

if ! shellcheck=$(command -v shellcheck); then
  log "shellcheck not found on PATH: install it (apt-get install shellcheck), actionlint would skip every run: script"
  exit 1
fi

cd "$(dirname "$0")/.."
exec "$bin" -shellcheck "$shellcheck" "$@"
