#!/usr/bin/env bash
# Builds a pinned Go tool the TLS tests need from its Go module (the machine reaches the Go module
# proxy, not download sites), caches it by version outside the repo, and prints the binary's path:
# the only line on stdout.
#
#   go-tool.sh pebble     github.com/letsencrypt/pebble/v2@v2.10.3, ./cmd/pebble
#   go-tool.sh caddy      github.com/caddyserver/caddy/v2@v2.11.9, ./cmd/caddy (static)
#   go-tool.sh dockerd    github.com/docker/docker@v28.5.2+incompatible: ./cmd/dockerd and
#                         ./cmd/docker-proxy beside it (bin/docker-proxy)
#   go-tool.sh containerd github.com/containerd/containerd/v2@v2.4.2: ./cmd/containerd and
#                         ./cmd/containerd-shim-runc-v2 beside it
#
# Cache: ${XDG_CACHE_HOME:-~/.cache}/neko-infra/<tool>-<version>/bin/<tool>, the build's log
# beside it (build.log). A cached run takes milliseconds; a cold one (empty Go module and build
# caches) minutes, bounded by GO_TOOL_BUILD_TIMEOUT seconds (default 1200), with a progress line on
# stderr every 30 s. The build runs in a throwaway module under a temporary directory; no source is
# kept anywhere but Go's own module cache. Static builds (CGO_ENABLED=0): the caddy binary goes
# into a container image without a C library.
#
# dockerd and containerd are built in a copy of their own module's tree (from `go mod download`),
# with the dependency versions of its own go.mod and go.sum, not in a throwaway module: `go install
# github.com/docker/docker/cmd/dockerd@v28.5.2+incompatible` fails (without a go.mod the module
# resolves the newest dependencies). The docker module keeps its requirements in vendor.mod and
# vendor.sum (its vendor/ directory is not in the module zip), so they become go.mod and go.sum.
# Several binaries come out of one build: the printed path is the first; the rest lie beside it.
set -euo pipefail

# stdout is reserved for the result; fd 3 keeps it, everything else -> stderr.
exec 3>&1 1>&2
log() { printf 'go-tool: %s\n' "$*"; }
die() {
  log "error: $*"
  exit 1
}

usage() {
  echo "usage: go-tool.sh pebble|caddy|dockerd|containerd" >&2
  exit 2
}
(($# == 1)) || usage
tool=$1
# Tree builds (dockerd, containerd): one "NAME PACKAGE CGO_ENABLED TAGS" line per binary.
tree_bins=""
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
dockerd)
  module=github.com/docker/docker
  version=v28.5.2+incompatible
  # Static and without cgo, as Docker's own static build (hack/make.sh: netgo osusergo
  # static_build); no journald log driver (needs cgo) and no btrfs graph driver (cgo only).
  ldflags="-s -w -X github.com/docker/docker/dockerversion.Version=28.5.2"
  tree_bins="dockerd ./cmd/dockerd 0 netgo,osusergo,static_build,exclude_graphdriver_btrfs
docker-proxy ./cmd/docker-proxy 0 netgo,osusergo,static_build"
  ;;
containerd)
  module=github.com/containerd/containerd/v2
  version=v2.4.2
  # As its Makefile: urfave_cli_no_docs everywhere, the shim static (CGO_ENABLED=0) with no_grpc;
  # containerd without cgo as well (so no btrfs snapshotter, which needs cgo).
  ldflags="-s -w -X $module/version.Version=$version -X $module/version.Package=$module"
  tree_bins="containerd ./cmd/containerd 0 urfave_cli_no_docs
containerd-shim-runc-v2 ./cmd/containerd-shim-runc-v2 0 urfave_cli_no_docs,no_grpc"
  ;;
*) usage ;;
esac
budget=${GO_TOOL_BUILD_TIMEOUT:-1200}
[[ $budget =~ ^[1-9][0-9]*$ ]] || die "GO_TOOL_BUILD_TIMEOUT must be a whole number of seconds, not '$budget'"

cache_dir=${XDG_CACHE_HOME:-$HOME/.cache}/neko-infra/$tool-${version%+incompatible}
bin=$cache_dir/bin/$tool
if [[ -x $bin ]]; then
  printf '%s\n' "$bin" >&3
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  [[ -x /usr/local/go/bin/go ]] || die "go not found (needed to build $tool from its Go module)"
  PATH=/usr/local/go/bin:$PATH
fi
export GOWORK=off GOFLAGS="-mod=mod -buildvcs=false" GOTOOLCHAIN=local CGO_ENABLED=0

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

# go_install: the throwaway module (pebble, caddy).
go_install() {
  cd "$work" &&
    go mod init "go-tool/$tool" &&
    printf '//go:build tools\n\npackage tools\n\nimport _ "%s"\n' "$package" >tools.go &&
    go mod edit -require="$module@$version" &&
    timeout "$budget" go mod tidy &&
    timeout "$budget" go build -trimpath -ldflags "$ldflags" -o "$work/$tool" "$package"
}

# tree_build: the module's own tree with its own requirements (dockerd, containerd).
tree_build() {
  local json dir name pkg cgo tags
  # Outside any module (GOFLAGS=-mod=mod is refused there).
  json=$(cd "$work" && GOFLAGS=-buildvcs=false timeout "$budget" go mod download -json "$module@$version") || {
    printf '%s\n' "$json"
    return 1
  }
  dir=$(printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
  [[ -n $dir && -d $dir ]] || {
    printf 'go mod download named no module directory:\n%s\n' "$json"
    return 1
  }
  echo "module tree: $dir"
  cp -R "$dir" "$work/src" && chmod -R u+w "$work/src" && cd "$work/src" || return 1
  if [[ -f vendor.mod ]]; then
    mv vendor.mod go.mod && mv vendor.sum go.sum && rm -rf vendor || return 1
  fi
  mkdir -p "$work/out"
  while read -r name pkg cgo tags; do
    echo "go build $pkg (CGO_ENABLED=$cgo, tags $tags)"
    CGO_ENABLED=$cgo timeout "$budget" go build -trimpath -tags "$tags" -ldflags "$ldflags" \
      -o "$work/out/$name" "$pkg" || return 1
  done <<<"$tree_bins"
}

if [[ -z $tree_bins ]]; then
  if ! (go_install) >"$build_log" 2>&1; then
    tail -n 20 "$build_log" | sed 's/^/  /' >&2
    die "building $module@$version failed or took more than ${budget}s per step (log: $build_log)"
  fi
  mv -f "$work/$tool" "$bin"
else
  if ! (tree_build) >"$build_log" 2>&1; then
    tail -n 20 "$build_log" | sed 's/^/  /' >&2
    die "building $module@$version failed or took more than ${budget}s per step (log: $build_log)"
  fi
  # The printed binary last: its presence means the whole set is there.
  while read -r name _; do
    [[ $name == "$tool" ]] || mv -f "$work/out/$name" "$cache_dir/bin/$name"
  done <<<"$tree_bins"
  mv -f "$work/out/$tool" "$bin"
fi
log "built $tool $version in $((SECONDS - start))s: $bin"
printf '%s\n' "$bin" >&3
