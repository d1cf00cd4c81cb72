#!/usr/bin/env bash
# Waits until the Docker engine answers this user (a fresh host is still bootstrapping) and prints
# its version. Fails after TIMEOUT seconds with the engine's own error.
#
# Usage: wait-for-docker.sh TIMEOUT_SECONDS
set -euo pipefail

(($# == 1)) || { echo "usage: wait-for-docker.sh TIMEOUT_SECONDS" >&2; exit 2; }
timeout=$1
deadline=$((SECONDS + timeout))
until err=$(docker version --format '{{.Server.Version}}' 2>&1); do
  if ((SECONDS >= deadline)); then
    echo "wait-for-docker: docker did not answer $(id -un)@$(hostname) after ${timeout}s: $err" >&2
    if command -v cloud-init >/dev/null 2>&1; then
      cloud-init status --long >&2 || true
    fi
    exit 1
  fi
  sleep 3
done
echo "docker $err"
