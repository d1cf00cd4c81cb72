#!/usr/bin/env bash
# Waits until Nix and skopeo answer on this machine (a fresh builder is still bootstrapping), then
# prints Nix's version. Fails after TIMEOUT seconds, naming what is missing and how bootstrap went.
#
# Usage: wait-for-nix.sh TIMEOUT_SECONDS
set -euo pipefail

(($# == 1)) || { echo "usage: wait-for-nix.sh TIMEOUT_SECONDS" >&2; exit 2; }
timeout=$1
export PATH="$PATH:/nix/var/nix/profiles/default/bin:/usr/local/bin"

missing() {
  local m=()
  nix --version >/dev/null 2>&1 || m+=(nix)
  command -v skopeo >/dev/null 2>&1 || m+=(skopeo)
  echo "${m[*]}"
}

deadline=$((SECONDS + timeout))
while [[ -n $(missing) ]]; do
  if ((SECONDS >= deadline)); then
    echo "wait-for-nix: $(missing) not answering on $(hostname) after ${timeout}s" >&2
    if command -v cloud-init >/dev/null 2>&1; then
      cloud-init status --long >&2 || true
      [[ -r /var/log/cloud-init-output.log ]] && tail -n 20 /var/log/cloud-init-output.log >&2
    fi
    exit 1
  fi
  sleep 3
done
nix --version
