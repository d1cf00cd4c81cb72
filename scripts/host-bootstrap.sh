#!/usr/bin/env bash
# Runs once as root on a fresh neko host (from cloud-init): enables Docker, lets SSH_USER use it,
# makes the ECR credential helper answer for REGISTRY_HOST, and on GPU hosts registers the NVIDIA
# container runtime with Docker.
#
# Usage: host-bootstrap.sh SSH_USER GPU(0|1) [REGISTRY_HOST]
set -euo pipefail

(($# == 2 || $# == 3)) || { echo "usage: host-bootstrap.sh SSH_USER GPU(0|1) [REGISTRY_HOST]" >&2; exit 2; }
user=$1
gpu=$2
registry=${3:-}
log() { echo "host-bootstrap: $*" >&2; }

command -v docker >/dev/null 2>&1 || dnf install -y -q docker
systemctl enable --now docker
usermod -aG docker "$user"

if [[ -n $registry ]]; then
  log "ECR credential helper for $registry"
  dnf install -y -q amazon-ecr-credential-helper
  home=$(getent passwd "$user" | cut -d: -f6)
  for dir in /root/.docker "$home/.docker"; do
    mkdir -p "$dir"
    printf '{"credHelpers":{"%s":"ecr-login"}}\n' "$registry" >"$dir/config.json"
  done
  chown -R "$user:" "$home/.docker"
fi

if [[ $gpu == 1 ]]; then
  command -v nvidia-ctk >/dev/null 2>&1 || { log "nvidia-ctk missing: is this the NVIDIA driver AMI?"; exit 1; }
  nvidia-ctk runtime configure --runtime=docker
  systemctl restart docker
  nvidia-smi -L >&2 || { log "nvidia-smi sees no GPU"; exit 1; }
fi
log "ready: $(docker version --format '{{.Server.Version}}')"
