#!/usr/bin/env bash
# Builds one flake output with Nix and prints its store path: the only line on stdout.
#
# Usage: nix-build.sh FLAKE_REF ATTR
# Env:   NIX_BUILDERS  optional Nix `builders` line(s); when set the build is sent to them
#                      (--max-jobs 0), as an operator on a Mac does with a remote x86_64 builder.
#        NIX_CACHE, NIX_CACHE_PUBLIC_KEY  optional binary cache (store URI, e.g. s3://bucket?region=r)
#                      to substitute from, trusting paths signed with that key;
#        NIX_CACHE_SECRET_KEY  with it, the output is signed and uploaded there after the build.
#        NEKO_INFRA_LOG_DIR  where the build log goes (default ~/.cache/neko-infra/logs).
# The full log is written to a file on this machine, never to stdout: Pulumi keeps stdout in state.
set -euo pipefail

die() { echo "nix-build: $*" >&2; exit 1; }
(($# == 2)) || { echo "usage: nix-build.sh FLAKE_REF ATTR" >&2; exit 2; }
flake=$1
attr=$2

command -v nix >/dev/null 2>&1 || die "nix is not on PATH for $(id -un)@$(hostname) (is the builder bootstrapped?)"

log_dir=${NEKO_INFRA_LOG_DIR:-${HOME:-/tmp}/.cache/neko-infra/logs}
mkdir -p "$log_dir"
log="$log_dir/build-$(date -u +%Y%m%dT%H%M%SZ)-$$.log"

args=(build --no-link --json --print-build-logs "$flake#$attr")
if [[ -n ${NIX_BUILDERS:-} ]]; then
  args+=(--max-jobs 0 --builders "$NIX_BUILDERS")
  # Nix's ssh has no connect timeout of its own: a builder that drops packets (stopped, firewalled)
  # would hold the build for the kernel's TCP timeout (over 2 minutes). BatchMode: never prompt.
  export NIX_SSHOPTS="${NIX_SSHOPTS:-} -o ConnectTimeout=10 -o BatchMode=yes"
fi

if [[ -n ${NIX_CACHE:-} ]]; then
  : "${NIX_CACHE_PUBLIC_KEY:?nix-build: NIX_CACHE is set but NIX_CACHE_PUBLIC_KEY is not}"
  args+=(--option extra-substituters "$NIX_CACHE" --option extra-trusted-public-keys "$NIX_CACHE_PUBLIC_KEY")
fi

# Why a remote builder refused us: Nix only says "remote machines may not have all required system
# features"; the ssh error (e.g. "Permission denied (publickey)") is what the operator needs.
diagnose_builders() {
  local line uri key hostkey store err
  while IFS= read -r line; do
    read -r uri _ key _ _ _ _ hostkey <<<"$line"
    [[ -n ${uri:-} ]] || continue
    store=$uri
    [[ -n ${key:-} && $key != - ]] && store+="?ssh-key=$key"
    if [[ -n ${hostkey:-} && $hostkey != - ]]; then
      [[ $store == *\?* ]] && store+="&" || store+="?"
      store+="base64-ssh-public-host-key=$hostkey"
    fi
    if ! err=$(NIX_SSHOPTS="${NIX_SSHOPTS:-} -o BatchMode=yes -o ConnectTimeout=10" timeout 30 nix store ping --store "$store" 2>&1 >/dev/null); then
      echo "nix-build: remote builder $uri cannot be used: $(grep -m1 -E 'Permission denied|Host key verification failed|Connection refused|timed out|No route|Could not resolve|REMOTE HOST IDENTIFICATION' <<<"$err" || tail -n1 <<<"$err")" >&2
    fi
  done < <(tr ';' '\n' <<<"$NIX_BUILDERS")
}

if ! out=$(nix "${args[@]}" 2>"$log"); then
  echo "nix-build: building $flake#$attr failed (full log: $(hostname):$log)" >&2
  if [[ -n ${NIX_BUILDERS:-} ]] && grep -q -E 'unable to start any build|required system features' "$log"; then
    diagnose_builders
  fi
  grep -E '(^|: )error:' "$log" | head -n 20 >&2 || true
  echo "--- last 30 lines of the build log ---" >&2
  tail -n 30 "$log" >&2
  exit 1
fi

store_path=$(grep -o '"out":"/nix/store/[^"]*"' <<<"$out" | head -n1 | cut -d'"' -f4)
[[ -n $store_path ]] || die "nix build succeeded but printed no output path for $flake#$attr: $out"

# Keep the result for the next builder: sign it and copy its closure to the cache. A failed upload
# costs only warmth, not this build: warn and go on.
if [[ -n ${NIX_CACHE:-} && -n ${NIX_CACHE_SECRET_KEY:-} ]]; then
  keyfile=$(mktemp)
  trap 'rm -f "$keyfile"' EXIT
  (umask 077 && printf '%s' "$NIX_CACHE_SECRET_KEY" >"$keyfile")
  if ! { nix store sign --key-file "$keyfile" --recursive "$store_path" && nix copy --to "$NIX_CACHE" "$store_path"; } 2>>"$log"; then
    echo "nix-build: warning: uploading $store_path to the binary cache failed (the build itself succeeded): $(tail -n1 "$log")" >&2
  fi
fi
echo "$store_path"
