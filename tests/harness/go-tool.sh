#!/usr/bin/env bash
# Builds a pinned Go tool the TLS tests need from its Go module (the machine reaches the Go module
# proxy, not download sites), caches it by version outside the repo, and prints the binary's path:
# the only line on stdout.
#
#   go-tool.sh pebble     github.com/letsencrypt/pebble/v2@v2.10.3, ./cmd/pebble
#   go-tool.sh caddy      github.com/caddyserver/caddy/v2@v2.11.9, ./cmd/caddy (static)
#
# Cache: ${XDG_CACHE_HOME:-~/.cache}/neko-infra/<tool>-<version>/bin/<tool>, the build's log
# beside it (build.log). A cached run takes milliseconds; a cold one (empty Go module and build
# caches) minutes, bounded by GO_TOOL_BUILD_TIMEOUT seconds (default 1200), with a progress line on
# stderr every 30 s. The build runs in a throwaway module under a temporary directory; no source is
# kept anywhere but Go's own module cache. Static builds (CGO_ENABLED=0): the caddy binary goes
# into a container image without a C library.
set -euo pipefail

# stdout is reserved for the result; fd 3 keeps it, everything else -> stderr.
exec 3>&1 1>&2
log() { printf 'go-tool: %s\n' "$*"; }
die() {
  log "error: $*"
  exit 1
}

(($# == 1)) || {
  echo "usage: go-tool.sh pebble|caddy" >&2
  exit 2
}
tool=$1
case $tool in
pebble)
  module=github.com/letsencrypt/pebble/v2
  version=v2.10.3
  package=$module/cmd/pebble
  ldflags="-s -w"
  ;;
caddy)
  module=github.com/caddyserver/caddy/v2
  version=v2.11.9
  package=$module/cmd/caddy
  # `caddy version` prints the version instead of "unknown" (the main module is ours).
  ldflags="-s -w -X $module.CustomVersion=$version"
  ;;
*)
  echo "usage: go-tool.sh pebble|caddy" >&2
  exit 2
  ;;
esac
budget=${GO_TOOL_BUILD_TIMEOUT:-1200}
[[ $budget =~ ^[1-9][0-9]*$ ]] || die "GO_TOOL_BUILD_TIMEOUT must be a whole number of seconds, not '$budget'"

cache_dir=${XDG_CACHE_HOME:-$HOME/.cache}/neko-infra/$tool-$version
bin=$cache_dir/bin/$tool
if [[ -x $bin ]]; then
  printf '%s\n' "$bin" >&3
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  [[ -x /usr/local/go/bin/go ]] || die "go not found (needed to build $tool from its Go module)"
  PATH=/usr/local/go/bin:$PATH
fi
export GOWORK=off GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0

mkdir -p "$cache_dir/bin"
# One build at a time per tool and version; a second caller waits, then finds the binary.
exec 9>"$cache_dir/.lock"
flock -w "$budget" 9 || die "another build of $tool holds $cache_dir/.lock for more than ${budget}s"
if [[ -x $bin ]]; then
  printf '%s\n' "$bin" >&3
  exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/go-tool-$tool.XXXXXX")
progress=""
cleanup() {
  [[ -z $progress ]] || kill "$progress" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

build_log=$cache_dir/build.log
log "building $module@$version (cold: minutes; log in $build_log)"
start=$SECONDS
(
  while sleep 30; do log "still building $tool ($((SECONDS - start))s): $(tail -n 1 "$build_log" 2>/dev/null | cut -c1-120)"; done
) &
progress=$!

if ! (
  cd "$work" &&
    go mod init "go-tool/$tool" &&
    printf '//go:build tools\n\npackage tools\n\nimport _ "%s"\n' "$package" >tools.go &&
    go mod edit -require="$module@$version" &&
    timeout "$budget" go mod tidy &&
    timeout "$budget" go build -trimpath -ldflags "$ldflags" -o "$work/$tool" "$package"
) >"$build_log" 2>&1; then
  tail -n 20 "$build_log" | sed 's/^/  /' >&2
  die "building $module@$version failed or took more than ${budget}s per step (log: $build_log)"
fi
mv -f "$work/$tool" "$bin"
log "built $tool $version in $((SECONDS - start))s: $bin"
printf '%s\n' "$bin" >&3
