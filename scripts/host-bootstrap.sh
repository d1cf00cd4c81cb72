#!/usr/bin/env bash
# Runs once as root on a fresh neko host (from cloud-init): enables Docker, lets SSH_USER use it,
# makes the ECR credential helper answer for REGISTRY_HOST, and on GPU hosts registers the NVIDIA
# container runtime with Docker.
#
# sshd answers before cloud-init runs this, so the result goes to a marker file that the wake step
# (scripts/wake.js) reads: removed first, `ok docker=<version>` (plus `gpu=<driver version>` on GPU
# hosts) written as the very last step, after every job above has finished (so the next SSH login
# is in the docker group), `failed <step>` written by the EXIT trap when any step fails.
#
# Usage: host-bootstrap.sh SSH_USER GPU(0|1) [REGISTRY_HOST]
# Env:   NEKO_INFRA_MARKER  the marker file (default /var/lib/neko-infra/bootstrap.status)
set -euo pipefail

(($# == 2 || $# == 3)) || { echo "usage: host-bootstrap.sh SSH_USER GPU(0|1) [REGISTRY_HOST]" >&2; exit 2; }
user=$1
gpu=$2
registry=${3:-}
marker=${NEKO_INFRA_MARKER:-/var/lib/neko-infra/bootstrap.status}

current="starting"
step() {
  current=$1
  echo "host-bootstrap: $1" >&2
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
    echo "host-bootstrap: failed while $current (exit $rc)" >&2
    write_marker "failed $current" || true
  fi
}
trap on_exit EXIT

step "removing the marker of an earlier run"
rm -f "$marker"

if ! command -v docker >/dev/null 2>&1; then
  step "installing Docker"
  dnf install -y -q docker
fi
step "starting Docker"
systemctl enable --now docker
step "adding $user to the docker group"
usermod -aG docker "$user"

if [[ -n $registry ]]; then
  step "installing the ECR credential helper"
  dnf install -y -q amazon-ecr-credential-helper
  step "configuring the ECR credential helper for $registry"
  home=$(getent passwd "$user" | cut -d: -f6)
  [[ -n $home ]] || { echo "host-bootstrap: no home directory for $user" >&2; exit 1; }
  for dir in /root/.docker "$home/.docker"; do
    mkdir -p "$dir"
    printf '{"credHelpers":{"%s":"ecr-login"}}\n' "$registry" >"$dir/config.json"
  done
  chown -R "$user:" "$home/.docker"
fi

gpu_version=""
if [[ $gpu == 1 ]]; then
  step "checking for the NVIDIA container toolkit"
  command -v nvidia-ctk >/dev/null 2>&1 || { echo "host-bootstrap: nvidia-ctk missing: is this the NVIDIA driver AMI?" >&2; exit 1; }
  step "registering the NVIDIA runtime with Docker"
  nvidia-ctk runtime configure --runtime=docker
  step "restarting Docker"
  systemctl restart docker
  step "checking the GPU"
  nvidia-smi -L >&2
  gpu_version=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -n 1)
  [[ -n $gpu_version ]] || { echo "host-bootstrap: nvidia-smi reports no driver version" >&2; exit 1; }
fi

step "checking that Docker answers"
docker_version=$(docker version --format '{{.Server.Version}}')

step "writing the marker"
write_marker "ok docker=$docker_version${gpu_version:+ gpu=$gpu_version}"
echo "host-bootstrap: ready: docker $docker_version${gpu_version:+, NVIDIA driver $gpu_version}" >&2
