#!/usr/bin/env bash
# Runs once as root on a fresh Amazon Linux 2023 builder (from cloud-init): installs Nix with
# flakes, makes SSH_USER a trusted user (remote builds and store copies need it), installs skopeo
# from nixpkgs, and puts both on the PATH of non-interactive SSH shells.
#
# sshd answers before cloud-init runs this, so the result goes to a marker file that the wake step
# (scripts/wake.js) reads: removed first, `ok nix=<version> skopeo=<version>` written as the very
# last step, `failed <step>` written by the EXIT trap when any step fails.
#
# Usage: builder-bootstrap.sh SSH_USER MAX_JOBS
# Env:   NEKO_INFRA_MARKER   the marker file (default /var/lib/neko-infra/bootstrap.status)
#        NEKO_INFRA_NIXPKGS  where skopeo comes from (default below)
set -euo pipefail

# skopeo is not in AL2023's core repositories, so it comes from nixpkgs. A release branch, not
# nixpkgs-unstable: it keeps getting security fixes but no breaking upgrades, so every builder gets
# the same skopeo major version. Move it to the next release when that one is out (May/November).
nixpkgs=${NEKO_INFRA_NIXPKGS:-github:NixOS/nixpkgs/nixos-25.05}
marker=${NEKO_INFRA_MARKER:-/var/lib/neko-infra/bootstrap.status}
# Where the Determinate installer puts Nix (the `nix` of this shell is not on PATH yet), and our own
# profile for skopeo: the installer's default profile stays as it made it.
nix_bin=/nix/var/nix/profiles/default/bin
tools_profile=/nix/var/nix/profiles/neko-infra-tools

(($# == 2)) || { echo "usage: builder-bootstrap.sh SSH_USER MAX_JOBS" >&2; exit 2; }
user=$1
max_jobs=$2

current="starting"
step() {
  current=$1
  echo "builder-bootstrap: $1" >&2
}
# Atomic: a reader sees the old marker, no marker, or the whole new one.
write_marker() {
  mkdir -p "$(dirname "$marker")"
  printf '%s\n' "$1" >"$marker.tmp.$$"
  chmod 0644 "$marker.tmp.$$"
  mv -f "$marker.tmp.$$" "$marker"
}
on_exit() {
  local rc=$?
  if ((rc != 0)); then
    echo "builder-bootstrap: failed while $current (exit $rc)" >&2
    write_marker "failed $current" || true
  fi
}
trap on_exit EXIT

step "removing the marker of an earlier run"
rm -f "$marker"

step "installing git"
dnf install -y -q git-core

if [[ ! -x $nix_bin/nix ]]; then
  step "downloading the Nix installer"
  installer=$(mktemp)
  curl --proto '=https' --tlsv1.2 -sSfL https://install.determinate.systems/nix -o "$installer"
  step "installing Nix"
  sh "$installer" install linux --no-confirm --init systemd \
    --extra-conf "trusted-users = root $user" \
    --extra-conf "max-jobs = $max_jobs" \
    --extra-conf "extra-experimental-features = nix-command flakes" \
    --extra-conf "builders-use-substitutes = true"
  rm -f "$installer"
fi

step "installing skopeo from $nixpkgs"
"$nix_bin/nix" profile install --profile "$tools_profile" "$nixpkgs#skopeo"

# ssh runs commands without a login shell: link the tools where every shell looks.
step "linking nix and skopeo into /usr/local/bin"
mkdir -p /usr/local/bin
for tool in "$nix_bin"/* "$tools_profile/bin/skopeo"; do
  ln -sf "$tool" "/usr/local/bin/$(basename "$tool")"
done

step "checking nix and skopeo"
nix_version=$(/usr/local/bin/nix --version)
skopeo_version=$(/usr/local/bin/skopeo --version)
nix_version=${nix_version##* }
skopeo_version=${skopeo_version#skopeo version }

step "writing the marker"
write_marker "ok nix=$nix_version skopeo=${skopeo_version%% *}"
echo "builder-bootstrap: ready: nix $nix_version, skopeo ${skopeo_version%% *}" >&2
