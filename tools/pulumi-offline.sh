#!/usr/bin/env bash
# Builds the Pulumi CLI, the Node.js language host and the dynamic-provider shim
# from Go modules (no download sites needed, only the Go module proxy), puts the
# real command provider v1.2.1 beside them, caches it all outside the repo by
# version, and prints the bin directory to put on PATH as its only line on
# stdout. Everything else goes to stderr.
#
#   PATH="$(tools/pulumi-offline.sh):$PATH"
#
# A cold build takes a few minutes on 2 cores; a cached run takes well under a
# second. The Go module and build caches (GOPATH, GOCACHE) are left as they
# are, so a rebuild after a version bump mostly reuses them.
#
# What it puts in the bin directory:
#   pulumi                         github.com/pulumi/pulumi/pkg/v3/cmd/pulumi
#   pulumi-language-nodejs         the Node.js language host (see below)
#   pulumi-resource-pulumi-nodejs  the dynamic-provider shim shipped in sdk/v3
#   pulumi-resource-command        the real command provider, v1.2.1 (COMMAND_VERSION;
#                                  the engine takes it from PATH), not built here:
#                                  the Go module proxy refuses
#                                  github.com/pulumi/pulumi-command at every version.
#                                  In this order, it is
#     1. the plugin `pulumi plugin install resource command 1.2.1` installed
#        (a machine with the internet): $PULUMI_HOME/plugins/resource-command-v1.2.1/
#        (PULUMI_HOME defaults to ~/.pulumi; not while a .partial marker says
#        its install is unfinished), copied;
#     2. else ${NEKO_INFRA_SHARED:-<repo>/../shared}/providers/pulumi-resource-command-v1.2.1-linux-amd64.xz
#        (built from the provider's public source, see PROVENANCE.md there),
#        decompressed with xz after checking the archive and the binary against
#        the .sha256 file beside it; a mismatch is an error;
#     3. else the script fails and says how to get one of the two.
#   The cache keeps the copy; its `sources` line says where it came from.
#
# Module versions: the language host is a Go module without tags of its own,
# so it is fetched by pseudo-version at the commit of the release tag. The
# commit is read from the proxy's Origin data when it has it; set
# PULUMI_NODEJS_HOST_MODVERSION to an exact pseudo-version to skip that. When
# the language host's pseudo-version can't be had, the host is built from the
# newest sdk/v3 that still carried it inside the sdk module
# (PULUMI_NODEJS_HOST_FALLBACK_SDK, v3.68.0), which works with the newer CLI.
set -euo pipefail

PULUMI_VERSION="${PULUMI_VERSION:-3.274.1}"
COMMAND_VERSION="${COMMAND_VERSION:-1.2.1}"
PULUMI_NODEJS_HOST_MODVERSION="${PULUMI_NODEJS_HOST_MODVERSION:-}"
PULUMI_NODEJS_HOST_FALLBACK_SDK="${PULUMI_NODEJS_HOST_FALLBACK_SDK:-3.68.0}"

PULUMI_VERSION="${PULUMI_VERSION#v}"
COMMAND_VERSION="${COMMAND_VERSION#v}"
PULUMI_NODEJS_HOST_FALLBACK_SDK="${PULUMI_NODEJS_HOST_FALLBACK_SDK#v}"

# stdout is reserved for the result; fd 3 keeps it, everything else -> stderr.
exec 3>&1 1>&2

log() { printf 'pulumi-offline: %s\n' "$*"; }
die() {
  log "error: $*"
  exit 1
}

readonly PULUMI_MOD=github.com/pulumi/pulumi
readonly NODEJS_HOST_MOD=github.com/pulumi/pulumi/sdk/nodejs/cmd/pulumi-language-nodejs/v3
readonly COMMAND_MOD=github.com/pulumi/pulumi-command/provider
readonly VERSION_PKG=github.com/pulumi/pulumi/sdk/v3/go/common/version

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Where the command provider comes from, in this order (see the header).
command_plugin="${PULUMI_HOME:-$HOME/.pulumi}/plugins/resource-command-v$COMMAND_VERSION/pulumi-resource-command"
command_xz="${NEKO_INFRA_SHARED:-$repo/../shared}/providers/pulumi-resource-command-v$COMMAND_VERSION-linux-amd64.xz"

# "real-command": earlier caches (pulumi-VERSION-command-VERSION) may hold a
# home-made stand-in of the provider; they are never read.
cache_dir="${XDG_CACHE_HOME:-$HOME/.cache}/neko-infra/pulumi-${PULUMI_VERSION}-real-command-${COMMAND_VERSION}"
bin="$cache_dir/bin"
# What each binary was built from: lines "NAME MODULE@VERSION[ (where from)]".
sources="$cache_dir/sources"

have() { [[ -x "$bin/$1" ]]; }

# built_from NAME VERSION: NAME is in the cache, and built from VERSION if one is given.
built_from() {
  have "$1" && { [[ -z $2 ]] || grep -q "^$1 .*@$2\$" "$sources" 2>/dev/null; }
}

want_host() { built_from pulumi-language-nodejs "$PULUMI_NODEJS_HOST_MODVERSION"; }
# The real command provider at COMMAND_VERSION is in the cache.
want_command() {
  have pulumi-resource-command &&
    grep -q "^pulumi-resource-command $COMMAND_MOD@v$COMMAND_VERSION " "$sources" 2>/dev/null
}

complete() {
  have pulumi && have pulumi-resource-pulumi-nodejs && want_host && want_command
}

# record NAME MODULE@VERSION[ (where from)]
record() {
  { grep -v "^$1 " "$sources" 2>/dev/null || true; } >"$sources.tmp.$$"
  printf '%s %s\n' "$1" "$2" >>"$sources.tmp.$$"
  mv -f "$sources.tmp.$$" "$sources"
}

finish() {
  printf '%s\n' "$bin" >&3
  exit 0
}

if complete; then
  finish
fi

# The throwaway modules must not be pulled into a go.work of the caller.
export GOWORK=off

mkdir -p "$bin"
# One builder at a time per version; a second caller waits, then finds the cache.
exec 9>"$cache_dir/.lock"
if command -v flock >/dev/null 2>&1; then
  flock 9
fi
if complete; then
  finish
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/pulumi-offline.XXXXXX")"
tmp_out="$bin/.building.$$"
trap 'rm -rf "$work" "$tmp_out"' EXIT

# go_field MODULE@VERSION TEMPLATE: a field of `go list -m`, outside any module.
go_field() {
  (cd "$work" && go list -m -f "$2" "$1")
}

# pseudo_version MODULE@TAG BASE: the pseudo-version BASE-<time>-<hash12> of
# the commit TAG points to, from the proxy's Origin data; empty when it has none
# (then its Time is not the commit's time either).
pseudo_version() {
  local info hash time
  info="$(go_field "$1" '{{with .Origin}}{{.Hash}}{{end}}|{{if .Time}}{{.Time.UTC.Format "20060102150405"}}{{end}}' 2>/dev/null)" || return 0
  IFS='|' read -r hash time <<<"$info" || true
  if [[ ${#hash} -ge 12 && ${#time} -eq 14 ]]; then
    printf '%s-%s-%s\n' "$2" "$time" "${hash:0:12}"
  fi
}

# new_module NAME PACKAGE: a throwaway main module in $work/NAME whose only
# source file imports PACKAGE, so that `go mod tidy` resolves it.
new_module() {
  mkdir -p "$work/$1" &&
    (cd "$work/$1" && go mod init "pulumi-offline/$1" 2>/dev/null) &&
    printf '//go:build tools\n\npackage tools\n\nimport _ "%s"\n' "$2" >"$work/$1/tools.go"
}

# build_into NAME PACKAGE LDFLAGS TARGET: tidy, build, then move into place
# (a rename in the same directory, so the cache never holds half a binary).
build_into() {
  (cd "$work/$1" && go mod tidy && go build -trimpath -ldflags "-s -w $3" -o "$tmp_out" "$2") &&
    mv -f "$tmp_out" "$bin/$4"
}

build_cli() {
  log "building pulumi v$PULUMI_VERSION (a cold build takes minutes)"
  new_module cli "$PULUMI_MOD/pkg/v3/cmd/pulumi"
  # Replace directives of dependencies are ignored: pin deps here if a future
  # version needs it (another -require=MODULE@VERSION).
  if ! (cd "$work/cli" && go mod edit \
    -require="$PULUMI_MOD/pkg/v3@v$PULUMI_VERSION" \
    -require="$PULUMI_MOD/sdk/v3@v$PULUMI_VERSION") ||
    ! build_into cli "$PULUMI_MOD/pkg/v3/cmd/pulumi" "-X $VERSION_PKG.Version=v$PULUMI_VERSION" pulumi; then
    die "building pulumi v$PULUMI_VERSION failed"
  fi
  record pulumi "$PULUMI_MOD/pkg/v3@v$PULUMI_VERSION"
}

# The language host at the CLI's commit; its go.mod points pkg and sdk at
# ../.. with replace directives (ignored here), so both are pinned to the CLI's.
build_nodejs_host_at_tag() {
  local v="$PULUMI_NODEJS_HOST_MODVERSION"
  if [[ -z $v ]]; then
    v="$(pseudo_version "$PULUMI_MOD/pkg/v3@v$PULUMI_VERSION" v3.0.0)"
    [[ -n $v ]] || v="$(pseudo_version "$PULUMI_MOD/sdk/v3@v$PULUMI_VERSION" v3.0.0)"
  fi
  if [[ -z $v ]]; then
    log "the proxy gives no commit for pulumi v$PULUMI_VERSION (set PULUMI_NODEJS_HOST_MODVERSION to build the host at it)"
    return 1
  fi
  log "building pulumi-language-nodejs $v"
  new_module nodejs "$NODEJS_HOST_MOD" &&
    (cd "$work/nodejs" && go mod edit \
      -require="$NODEJS_HOST_MOD@$v" \
      -require="$PULUMI_MOD/pkg/v3@v$PULUMI_VERSION" \
      -require="$PULUMI_MOD/sdk/v3@v$PULUMI_VERSION" \
      -replace="$PULUMI_MOD/pkg/v3=$PULUMI_MOD/pkg/v3@v$PULUMI_VERSION" \
      -replace="$PULUMI_MOD/sdk/v3=$PULUMI_MOD/sdk/v3@v$PULUMI_VERSION") &&
    build_into nodejs "$NODEJS_HOST_MOD" \
      "-X $VERSION_PKG.Version=v$PULUMI_VERSION" pulumi-language-nodejs &&
    record pulumi-language-nodejs "$NODEJS_HOST_MOD@$v"
}

# Up to v3.68.0 the host was a package of the sdk/v3 module itself.
build_nodejs_host_fallback() {
  local sdk="v$PULUMI_NODEJS_HOST_FALLBACK_SDK"
  local pkg="$PULUMI_MOD/sdk/v3/nodejs/cmd/pulumi-language-nodejs"
  log "building pulumi-language-nodejs from sdk/v3 $sdk instead"
  new_module nodejs-sdk "$pkg" &&
    (cd "$work/nodejs-sdk" && go mod edit -require="$PULUMI_MOD/sdk/v3@$sdk") &&
    build_into nodejs-sdk "$pkg" "-X $VERSION_PKG.Version=$sdk" pulumi-language-nodejs &&
    record pulumi-language-nodejs "$PULUMI_MOD/sdk/v3@$sdk"
}

install_dynamic_shim() {
  local dir
  dir="$(cd "$work" && go mod download -json "$PULUMI_MOD/sdk/v3@v$PULUMI_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')"
  [[ -f $dir/nodejs/dist/pulumi-resource-pulumi-nodejs ]] ||
    die "no nodejs/dist/pulumi-resource-pulumi-nodejs in sdk/v3 v$PULUMI_VERSION"
  cp "$dir/nodejs/dist/pulumi-resource-pulumi-nodejs" "$tmp_out"
  chmod 0755 "$tmp_out"
  mv -f "$tmp_out" "$bin/pulumi-resource-pulumi-nodejs"
  record pulumi-resource-pulumi-nodejs "$PULUMI_MOD/sdk/v3@v$PULUMI_VERSION"
}

# sha256_for NAME: the checksum the .sha256 file beside the archive gives for
# NAME. Its lines are sha256sum's "HEX  NAME"; the archive's line names the
# archive, the binary's line reads "HEX  pulumi-resource-command (decompressed)".
sha256_for() {
  local hex name
  while read -r hex name || [[ -n $hex ]]; do
    if [[ ${name#\*} == "$1" && $hex =~ ^[0-9a-f]{64}$ ]]; then
      printf '%s\n' "$hex"
      return 0
    fi
  done <"$command_xz.sha256"
  return 1
}

# sha256_file FILE: "HEX  FILE", from sha256sum or, where there is none (macOS 14), shasum.
sha256_file() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1"; else shasum -a 256 "$1"; fi
}

# check_sha256 FILE WANT WHAT: dies unless FILE's sha256 is WANT.
check_sha256() {
  local got
  got="$(sha256_file "$1")" || die "cannot read $1"
  got="${got%% *}"
  [[ $got == "$2" ]] ||
    die "$3 has sha256 $got, but $command_xz.sha256 says $2: the file is damaged or not the one PROVENANCE.md describes; get it again, do not use it"
}

# The real provider: the installed plugin, else the shared archive, else an error.
install_command_provider() {
  local sum
  if [[ -x $command_plugin && ! -e ${command_plugin%/*}.partial ]]; then
    log "pulumi-resource-command v$COMMAND_VERSION: copying the installed plugin $command_plugin"
    cp "$command_plugin" "$tmp_out" || die "cannot copy $command_plugin"
    sum="$(sha256_file "$tmp_out")"
    chmod 0755 "$tmp_out"
    mv -f "$tmp_out" "$bin/pulumi-resource-command"
    record pulumi-resource-command "$COMMAND_MOD@v$COMMAND_VERSION (sha256 ${sum%% *}, the plugin installed at $command_plugin)"
    return 0
  fi
  if [[ -f $command_xz && $(uname -s)/$(uname -m) == Linux/x86_64 ]]; then
    local archive want_xz want_bin
    archive="$(cd "$(dirname "$command_xz")" && pwd)/${command_xz##*/}"
    log "pulumi-resource-command v$COMMAND_VERSION: decompressing $archive"
    command -v xz >/dev/null 2>&1 ||
      die "xz not found, needed to decompress $archive (Debian: apt-get install xz-utils; bash tools/install-deps.sh installs it)"
    [[ -f $command_xz.sha256 ]] || die "no $command_xz.sha256 beside $command_xz: without its checksums it is not used"
    want_xz="$(sha256_for "${command_xz##*/}")" ||
      die "$command_xz.sha256 has no checksum for ${command_xz##*/}"
    want_bin="$(sha256_for "pulumi-resource-command (decompressed)")" ||
      die "$command_xz.sha256 has no checksum for 'pulumi-resource-command (decompressed)'"
    check_sha256 "$command_xz" "$want_xz" "$archive"
    xz -dc "$command_xz" >"$tmp_out" || die "xz -dc $archive failed"
    check_sha256 "$tmp_out" "$want_bin" "pulumi-resource-command decompressed from $archive"
    chmod 0755 "$tmp_out"
    mv -f "$tmp_out" "$bin/pulumi-resource-command"
    record pulumi-resource-command "$COMMAND_MOD@v$COMMAND_VERSION (sha256 $want_bin, decompressed from $archive, sha256 $want_xz)"
    return 0
  fi
  log "error: no pulumi-resource-command v$COMMAND_VERSION (the Go module proxy refuses $COMMAND_MOD, so it is never built here)."
  log "  not installed as a plugin: $command_plugin"
  if [[ -f $command_xz ]]; then
    log "  $command_xz is for Linux x86_64, not $(uname -s) $(uname -m)"
  else
    log "  no shared copy: $command_xz"
  fi
  log "fix one of:"
  log "  with the internet: pulumi plugin install resource command $COMMAND_VERSION"
  log "  offline: the shared providers directory at ${NEKO_INFRA_SHARED:-$repo/../shared}/providers (or NEKO_INFRA_SHARED=<dir holding providers/>), with ${command_xz##*/} and its .sha256"
  exit 1
}

need_go() {
  if ! command -v go >/dev/null 2>&1; then
    if [[ -x /usr/local/go/bin/go ]]; then
      PATH="/usr/local/go/bin:$PATH"
    else
      die "go not found (needed to build Pulumi from Go modules)"
    fi
  fi
}

start=$SECONDS

# The provider first: when it is missing, say so before minutes of building.
if ! want_command; then
  install_command_provider
fi
if ! have pulumi; then
  need_go
  build_cli
fi
if ! want_host; then
  need_go
  if ! build_nodejs_host_at_tag; then
    if [[ -n $PULUMI_NODEJS_HOST_MODVERSION ]]; then
      die "could not build pulumi-language-nodejs at $PULUMI_NODEJS_HOST_MODVERSION"
    fi
    build_nodejs_host_fallback || die "could not build pulumi-language-nodejs"
  fi
fi
if ! have pulumi-resource-pulumi-nodejs; then
  need_go
  install_dynamic_shim
fi

got="$("$bin/pulumi" version)"
[[ $got == "v$PULUMI_VERSION" ]] || die "built pulumi reports '$got', expected v$PULUMI_VERSION"
log "ready in $((SECONDS - start))s: $bin"
finish
