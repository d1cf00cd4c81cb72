#!/usr/bin/env bash
# Builds the Pulumi CLI, the Node.js language host and the command provider
# from Go modules (no download sites needed, only the Go module proxy), caches
# them outside the repo by version, and prints the bin directory to put on PATH
# as its only line on stdout. Everything else goes to stderr.
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
#   pulumi-resource-command        github.com/pulumi/pulumi-command/provider,
#                                  or else the stand-in in tools/command-provider
#                                  (the engine takes it from PATH)
#
# Module versions: the language host and the command provider are Go modules
# without tags of their own, so they are fetched by pseudo-version at the
# commit of the release tag. The commit is read from the proxy's Origin data
# when it has it; set PULUMI_NODEJS_HOST_MODVERSION / COMMAND_PROVIDER_MODVERSION
# to an exact pseudo-version to skip that. When the language host's
# pseudo-version can't be had, the host is built from the newest sdk/v3 that
# still carried it inside the sdk module (PULUMI_NODEJS_HOST_FALLBACK_SDK,
# v3.68.0), which works with the newer CLI.
#
# When the command provider can't be had (the proxy refuses it), the script
# builds tools/command-provider instead: a small stand-in of our own that
# implements the subset of command:local:Command and command:remote:Command
# this project uses (its header says which). It is rebuilt whenever a file
# under tools/command-provider changes (the cache is keyed by their hash), and
# the script says on stderr that the stand-in is in use.
# PULUMI_OFFLINE_REQUIRE_COMMAND=1 (or an explicit COMMAND_PROVIDER_MODVERSION)
# asks for the real provider only and makes its absence an error. The proxy is
# asked for it once; delete the cache directory to ask again.
set -euo pipefail

PULUMI_VERSION="${PULUMI_VERSION:-3.274.1}"
COMMAND_VERSION="${COMMAND_VERSION:-1.2.1}"
PULUMI_NODEJS_HOST_MODVERSION="${PULUMI_NODEJS_HOST_MODVERSION:-}"
PULUMI_NODEJS_HOST_FALLBACK_SDK="${PULUMI_NODEJS_HOST_FALLBACK_SDK:-3.68.0}"
COMMAND_PROVIDER_MODVERSION="${COMMAND_PROVIDER_MODVERSION:-}"
PULUMI_OFFLINE_REQUIRE_COMMAND="${PULUMI_OFFLINE_REQUIRE_COMMAND:-0}"

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
readonly COMMAND_MOD=github.com/pulumi/pulumi-command
readonly VERSION_PKG=github.com/pulumi/pulumi/sdk/v3/go/common/version
readonly STANDIN_MOD=neko-infra/tools/command-provider
# The stand-in's version, as its GetPluginInfo reports it.
readonly STANDIN_VERSION=1.2.1

standin_src="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/command-provider"
# A hash of every file of the stand-in's sources, or empty when there are none.
standin_hash=""
if [[ -f $standin_src/go.mod ]]; then
  standin_hash="$(cd "$standin_src" && find . -type f -print0 | LC_ALL=C sort -z |
    xargs -0 sha256sum | sha256sum | cut -c1-16)"
fi

cache_dir="${XDG_CACHE_HOME:-$HOME/.cache}/neko-infra/pulumi-${PULUMI_VERSION}-command-${COMMAND_VERSION}"
bin="$cache_dir/bin"
# Left when the command provider could not be fetched, so later runs (and
# rebuilds of the stand-in) don't ask the proxy again.
command_missing="$cache_dir/command-provider-unavailable"
# What each binary was built from: lines "NAME MODULE@VERSION".
sources="$cache_dir/sources"

have() { [[ -x "$bin/$1" ]]; }

# built_from NAME VERSION: NAME is in the cache, and built from VERSION if one is given.
built_from() {
  have "$1" && { [[ -z $2 ]] || grep -q "^$1 .*@$2\$" "$sources" 2>/dev/null; }
}

want_host() { built_from pulumi-language-nodejs "$PULUMI_NODEJS_HOST_MODVERSION"; }
# The real command provider is in the cache (at COMMAND_PROVIDER_MODVERSION, if given).
real_command() {
  have pulumi-resource-command &&
    grep -q "^pulumi-resource-command $COMMAND_MOD/provider@${COMMAND_PROVIDER_MODVERSION:-.*}\$" "$sources" 2>/dev/null
}
# The stand-in may take the real provider's place.
standin_allowed() {
  [[ -n $standin_hash && -z $COMMAND_PROVIDER_MODVERSION && $PULUMI_OFFLINE_REQUIRE_COMMAND != 1 ]]
}
# The stand-in is in the cache, built from the sources as they are now.
standin_current() {
  have pulumi-resource-command &&
    grep -Fqx "pulumi-resource-command $STANDIN_MOD@$standin_hash" "$sources" 2>/dev/null
}
want_command() {
  real_command || { standin_allowed && [[ -e $command_missing ]] && standin_current; }
}

complete() {
  have pulumi && have pulumi-resource-pulumi-nodejs && want_host && want_command
}

# record NAME MODULE@VERSION
record() {
  { grep -v "^$1 " "$sources" 2>/dev/null || true; } >"$sources.tmp.$$"
  printf '%s %s\n' "$1" "$2" >>"$sources.tmp.$$"
  mv -f "$sources.tmp.$$" "$sources"
}

finish() {
  if ! real_command; then
    log "note: pulumi-resource-command is the stand-in built from $standin_src" \
      "(implements only part of the command provider; $(cat "$command_missing" 2>/dev/null || echo 'the real one was not tried'))"
  fi
  printf '%s\n' "$bin" >&3
  exit 0
}

if complete; then
  finish
fi

if ! command -v go >/dev/null 2>&1; then
  if [[ -x /usr/local/go/bin/go ]]; then
    PATH="/usr/local/go/bin:$PATH"
  else
    die "go not found (needed to build Pulumi from Go modules)"
  fi
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

build_command_provider() {
  local v="$COMMAND_PROVIDER_MODVERSION"
  local pkg="$COMMAND_MOD/provider/cmd/pulumi-resource-command"
  [[ -n $v ]] || v="$(pseudo_version "$COMMAND_MOD@v$COMMAND_VERSION" v0.0.0)"
  if [[ -z $v ]]; then
    log "the proxy gives no commit for $COMMAND_MOD v$COMMAND_VERSION"
    return 1
  fi
  log "building pulumi-resource-command v$COMMAND_VERSION ($COMMAND_MOD/provider@$v)"
  new_module command "$pkg" &&
    (cd "$work/command" && go mod edit -require="$COMMAND_MOD/provider@$v") &&
    build_into command "$pkg" "-X $COMMAND_MOD/provider/pkg/version.Version=$COMMAND_VERSION" \
      pulumi-resource-command &&
    record pulumi-resource-command "$COMMAND_MOD/provider@$v" && return 0
  log "$COMMAND_MOD/provider@$v could not be fetched or built (see above)"
  return 1
}

# The stand-in, built from its own module (go.mod and go.sum in tools/command-provider).
build_command_standin() {
  log "building the stand-in pulumi-resource-command from $standin_src ($standin_hash)"
  if [[ $COMMAND_VERSION != "$STANDIN_VERSION" ]]; then
    log "warning: the stand-in implements command provider v$STANDIN_VERSION, not v$COMMAND_VERSION"
  fi
  (cd "$standin_src" && go build -trimpath -ldflags "-s -w" -o "$tmp_out" .) &&
    mv -f "$tmp_out" "$bin/pulumi-resource-command" &&
    record pulumi-resource-command "$STANDIN_MOD@$standin_hash"
}

start=$SECONDS

if ! have pulumi; then
  build_cli
fi
if ! want_host; then
  if ! build_nodejs_host_at_tag; then
    if [[ -n $PULUMI_NODEJS_HOST_MODVERSION ]]; then
      die "could not build pulumi-language-nodejs at $PULUMI_NODEJS_HOST_MODVERSION"
    fi
    build_nodejs_host_fallback || die "could not build pulumi-language-nodejs"
  fi
fi
if ! have pulumi-resource-pulumi-nodejs; then
  install_dynamic_shim
fi
if ! want_command; then
  # Ask the proxy for the real provider unless it already said no.
  if ! standin_allowed || [[ ! -e $command_missing ]]; then
    if build_command_provider; then
      rm -f "$command_missing"
    else
      printf 'the real command provider v%s could not be had from the Go module proxy (%s)\n' \
        "$COMMAND_VERSION" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$command_missing"
      if ! standin_allowed; then
        [[ -n $standin_hash ]] || log "no stand-in sources in $standin_src"
        die "could not build pulumi-resource-command v$COMMAND_VERSION"
      fi
    fi
  fi
  if ! real_command; then
    build_command_standin || die "could not build the stand-in pulumi-resource-command from $standin_src"
  fi
fi

got="$("$bin/pulumi" version)"
[[ $got == "v$PULUMI_VERSION" ]] || die "built pulumi reports '$got', expected v$PULUMI_VERSION"
log "ready in $((SECONDS - start))s: $bin"
finish
