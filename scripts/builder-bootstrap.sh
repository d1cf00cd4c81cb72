#!/usr/bin/env bash
# Runs once as root on a fresh Amazon Linux 2023 builder (from cloud-init): installs Nix with
# flakes, makes SSH_USER a trusted user (remote builds and store copies need it), installs skopeo,
# and puts nix on the PATH of non-interactive SSH shells.
#
# Usage: builder-bootstrap.sh SSH_USER MAX_JOBS
set -euo pipefail

(($# == 2)) || { echo "usage: builder-bootstrap.sh SSH_USER MAX_JOBS" >&2; exit 2; }
user=$1
max_jobs=$2
log() { echo "builder-bootstrap: $*" >&2; }

log "installing skopeo"
dnf install -y -q skopeo git-core

if [[ ! -x /nix/var/nix/profiles/default/bin/nix ]]; then
  log "installing Nix"
  curl --proto '=https' --tlsv1.2 -sSfL https://install.determinate.systems/nix -o /tmp/nix-installer.sh
  sh /tmp/nix-installer.sh install linux --no-confirm --init systemd \
    --extra-conf "trusted-users = root $user" \
    --extra-conf "max-jobs = $max_jobs" \
    --extra-conf "extra-experimental-features = nix-command flakes" \
    --extra-conf "builders-use-substitutes = true"
  rm -f /tmp/nix-installer.sh
fi

# ssh runs commands without a login shell: link Nix's tools where every shell looks.
for tool in /nix/var/nix/profiles/default/bin/*; do
  ln -sf "$tool" "/usr/local/bin/$(basename "$tool")"
done
log "ready: $(nix --version)"
