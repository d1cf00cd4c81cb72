#!/usr/bin/env bash
# shellcheck disable=SC2034 # `doing` is read by on_term, from scripts/step-preamble.sh
# Copies a flake on this machine (and its locked inputs) into a builder's Nix store over SSH and
# prints the store path of its source: the only line on stdout.
#
# Usage: ship-flake.sh FLAKE_DIR USER@HOST PORT
#        FLAKE_DIR as configured: absolute, or relative to the current directory (the Pulumi
#        project's, e.g. ./neko), so the command line is the same on every machine.
# Env:   SSH_PRIVATE_KEY  the private key's text (a Pulumi secret; written to a 0600 temp file)
#        SSH_HOST_KEY     the builder's public host key line, pinned: any other key is refused
set -euo pipefail

die() { echo "ship-flake: $*" >&2; exit 1; }
(($# == 3)) || { echo "usage: ship-flake.sh FLAKE_DIR USER@HOST PORT" >&2; exit 2; }
dir=$1
target=$2
port=$3
doing="starting"


: "${SSH_PRIVATE_KEY:?ship-flake: SSH_PRIVATE_KEY is not set}"
: "${SSH_HOST_KEY:?ship-flake: SSH_HOST_KEY is not set}"
[[ -d $dir ]] || die "no directory $dir$([[ $dir == /* ]] || echo " (relative to $PWD)")"
[[ -f $dir/flake.nix ]] || die "no flake.nix in $dir$([[ $dir == /* ]] || echo " (relative to $PWD)")"
# Nix is given the absolute directory: a relative path: ref would depend on Nix's URL parsing.
abs=$(cd "$dir" && pwd -P)
command -v nix >/dev/null 2>&1 || die "nix is not on PATH of this machine: a local flake is copied with 'nix flake archive'"

tmp=$(mktemp -d)
step_tmp+=("$tmp") # removed on exit (scripts/step-preamble.sh)
(umask 077 && printf '%s\n' "$SSH_PRIVATE_KEY" >"$tmp/key")
host=${target#*@}
if [[ $port == 22 ]]; then known=$host; else known="[$host]:$port"; fi
printf '%s %s\n' "$known" "$SSH_HOST_KEY" >"$tmp/known_hosts"

export NIX_SSHOPTS="-i $tmp/key -p $port -o IdentitiesOnly=yes -o UserKnownHostsFile=$tmp/known_hosts -o StrictHostKeyChecking=yes -o BatchMode=yes -o ConnectTimeout=10"
echo "ship-flake: copying $abs and its inputs to ssh-ng://$target (port $port)" >&2
doing="copying $abs to ssh-ng://$target"
# flakes on whatever this machine's nix.conf says
if ! out=$(nix --extra-experimental-features "nix-command flakes" flake archive --json --to "ssh-ng://$target" "path:$abs" 2>"$tmp/log"); then
  reason=$(grep -m1 -E 'Permission denied|Host key verification failed|REMOTE HOST IDENTIFICATION|Connection refused|timed out|No route to host|Could not resolve' "$tmp/log" || true)
  [[ -n $reason ]] && echo "ship-flake: cannot reach the builder $target:$port over SSH: $reason" >&2
  echo "ship-flake: copying $dir to ssh-ng://$target failed:" >&2
  tail -n 20 "$tmp/log" >&2
  exit 1
fi
path=$(grep -o '"path":"/nix/store/[^"]*"' <<<"$out" | head -n1 | cut -d'"' -f4)
[[ -n $path ]] || die "nix flake archive printed no store path: $out"
echo "ship-flake: done: $path in ${SECONDS}s" >&2
echo "$path"
