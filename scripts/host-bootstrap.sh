#!/usr/bin/env bash
# shellcheck disable=SC2154 # marker: set by scripts/setup-lib.sh, which lib/shell.ts puts before this script
# The host's setup step: run as root over SSH (sudo -n for a login user such as ec2-user) on the
# host's first `up`, on every new instance, and again whenever this script or its settings change
# (no reboot: user-data holds only the host key). Makes sure Docker runs and SSH_USER may use it,
# makes the ECR credential helper answer for REGISTRY_HOST, mounts the browser profile's EBS volume
# PROFILE_VOLUME (formatting it only when it holds no file system: a volume that outlived an earlier
# instance keeps its profile), on GPU hosts registers the NVIDIA container runtime with Docker,
# creates the host's state directory for SSH_USER, installs neko's restore at boot and after Docker
# restarts (neko-restore.service, where systemd runs) and the idle stop. On an ssh host (an
# existing Docker host) only what is missing is done: Docker is never installed where it answers.
# The marker is scripts/setup-lib.sh's: `ok docker=<version>` (plus `gpu=<driver version>`) last,
# after every job above has finished (so the next SSH login is in the docker group).
#
# Usage: host-bootstrap.sh SSH_USER GPU(0|1) REGISTRY_HOST|- PROFILE_VOLUME_ID|- IDLE_MINUTES [TLS_VOLUME_ID|-]
#        TLS_VOLUME_ID: the EBS volume for the TLS front's certificates, mounted at host/tls for
#        SSH_USER (a certificate directory already there is copied onto a new volume first)
# Env:   IDLE_STOP_SCRIPT  the text of host-idle-stop.sh (with IDLE_MINUTES > 0)
#        NEKO_RESTORE_SCRIPT  the text of neko-restore.sh (unset: no restore is installed)
#        NEKO_READY_SCRIPT the text of host-ready.sh (EC2 hosts with a wake link: the ready tag)
#        NEKO_IMDS_GUARD_SCRIPT  the text of imds-guard.sh (EC2 hosts), with IMDS_GUARD_UIDS: the
#                          uids (space-separated) that may not reach the instance metadata service
#        NEKO_INFRA_DIR    the host's directory (default /var/lib/neko-infra): host/ (state the
#                          deploy and the idle check share) and profile/ (the mounted volume)
#        NEKO_INFRA_MARKER see setup-lib.sh
set -euo pipefail
SETUP_NAME=host-bootstrap

usage="usage: host-bootstrap.sh SSH_USER GPU(0|1) REGISTRY_HOST|- PROFILE_VOLUME_ID|- IDLE_MINUTES [TLS_VOLUME_ID|-]"
(($# == 5 || $# == 6)) || { echo "$usage" >&2; exit 2; }
user=$1
gpu=$2
registry=$3
[[ $registry != - ]] || registry=""
volume=$4
[[ $volume != - ]] || volume=""
idle_minutes=$5
tls_volume=${6:--}
[[ $tls_volume != - ]] || tls_volume=""
[[ $idle_minutes =~ ^[0-9]+$ ]] || { echo "$SETUP_NAME: IDLE_MINUTES must be a number, not '$idle_minutes'" >&2; exit 2; }
base=${NEKO_INFRA_DIR:-/var/lib/neko-infra}
trap on_exit EXIT

step "removing the marker of an earlier run"
rm -f "$marker"
wait_for_cloud_init

if ! docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
  if ! command -v docker >/dev/null 2>&1; then
    step "installing Docker"
    dnf install -y -q docker
  fi
  step "starting Docker"
  systemctl enable --now docker
fi
if [[ $user != root ]] && ! id -nG "$user" | tr ' ' '\n' | grep -qx docker; then
  step "adding $user to the docker group"
  usermod -aG docker "$user"
fi

if [[ -n $registry ]]; then
  step "installing the ECR credential helper"
  dnf install -y -q amazon-ecr-credential-helper
  step "configuring the ECR credential helper for $registry"
  home=$(getent passwd "$user" | cut -d: -f6)
  [[ -n $home ]] || { echo "$SETUP_NAME: no home directory for $user" >&2; exit 1; }
  for dir in /root/.docker "$home/.docker"; do
    mkdir -p "$dir"
    printf '{"credHelpers":{"%s":"ecr-login"}}\n' "$registry" >"$dir/config.json"
  done
  chown -R "$user:" "$home/.docker"
fi

step "creating $base/host for $user"
install -d -m 0755 -o "$user" "$base/host"

# mount_volume VOLUME_ID XEN_DEVICE DIR LABEL WHAT: the EBS volume VOLUME_ID mounted at DIR (at
# boot too, through /etc/fstab), formatted only when it holds no file system: a volume that
# outlived an earlier instance keeps what it holds. Sets `formatted` to 1 when it was new.
mount_volume() {
  local id=$1 xen=$2 dir=$3 label=$4 what=$5 device uuid i
  # Nitro names EBS disks by their volume ID (without the dash); the volume is attached after the
  # instance is created, so it may appear a little after boot.
  device=/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_${id/-/}
  step "waiting for the $what volume $id"
  for ((i = 0; i < 600; i++)); do
    [[ -e $device ]] && break
    [[ -e $xen ]] && { device=$xen; break; }
    sleep 1
  done
  [[ -e $device ]] || { echo "$SETUP_NAME: the $what volume $id did not appear in 10 minutes" >&2; exit 1; }
  formatted=0
  if ! blkid "$device" >/dev/null 2>&1; then
    step "formatting the new $what volume"
    mkfs.ext4 -q -L "$label" "$device"
    formatted=1
  fi
  step "mounting the $what volume at $dir"
  install -d -m 0755 "$dir"
  uuid=$(blkid -s UUID -o value "$device")
  grep -q "UUID=$uuid " /etc/fstab || echo "UUID=$uuid $dir ext4 defaults,nofail 0 2" >>/etc/fstab
  if ! mountpoint -q "$dir"; then
    if ((formatted)) && [[ -n $(ls -A "$dir") ]]; then
      # What the root volume held there so far (an upgraded host) moves onto the new volume.
      step "copying what $dir holds onto the new $what volume"
      local staging
      staging=$(mktemp -d)
      mount "$device" "$staging"
      cp -a "$dir/." "$staging/"
      umount "$staging"
      rmdir "$staging"
    fi
    mount "$dir"
  fi
  step "growing the $what file system to the volume"
  resize2fs "$device" >/dev/null 2>&1 || true
}

if [[ -n $volume ]]; then
  mount_volume "$volume" /dev/sdf "$base/profile" neko-profile profile
  # The browser runs as neko (uid 1000) inside the image; its entrypoint chowns its home too.
  chown 1000:1000 "$base/profile"
fi
if [[ -n $tls_volume ]]; then
  mount_volume "$tls_volume" /dev/sdg "$base/host/tls" neko-tls "TLS certificates"
  # tls-front.sh (as SSH_USER) keeps its configuration and Caddy's data here.
  chown "$user:" "$base/host/tls"
  chmod 0700 "$base/host/tls"
  # Docker starts Caddy at boot: never before its certificates are mounted (it would ask again).
  if [[ -d /run/systemd/system ]]; then
    install -d -m 0755 /etc/systemd/system/docker.service.d
    printf '%s\n' "[Unit]" "RequiresMountsFor=$base/host/tls" |
      write_file /etc/systemd/system/docker.service.d/neko-tls-volume.conf 0644 && systemctl daemon-reload
  fi
fi

# neko runs with --restart=no (an image may not start the same container twice: the Nix-built
# one cannot), so at boot and after every Docker restart neko-restore.sh creates it afresh from the
# spec the last rollout recorded in $base/host. Before the GPU step below, whose Docker restart it
# then covers. A changed script or unit restarts the service (it finds neko running: no-op).
restore_unit() {
  local unit=/etc/systemd/system/neko-restore.service script=$base/neko-restore.sh changed=0 mounts=""
  [[ -n ${NEKO_RESTORE_SCRIPT:-} ]] || return 0
  step "installing neko's restore at boot and after Docker restarts"
  printf '%s\n' "$NEKO_RESTORE_SCRIPT" | write_file "$script" 0755 && changed=1
  if [[ ! -d /run/systemd/system ]]; then
    echo "$SETUP_NAME: no systemd here: after a reboot or a Docker restart, bring neko back with: bash $script (as $user)" >&2
    return 0
  fi
  # Never on an empty directory where the profile volume is not mounted (yet).
  [[ -z $volume ]] || mounts="RequiresMountsFor=$base/profile"
  printf '%s\n' "[Unit]" \
    "Description=Create neko afresh from its last deployed spec at boot and after Docker restarts" \
    "After=docker.service" "Wants=docker.service" ${mounts:+"$mounts"} "" \
    "[Service]" "User=$user" "Environment=NEKO_STATE_DIR=$base/host" "ExecStart=/usr/bin/bash $script --watch" \
    "Restart=always" "RestartSec=5" "" \
    "[Install]" "WantedBy=multi-user.target" | write_file "$unit" 0644 && changed=1
  if ((changed)); then systemctl daemon-reload; fi
  systemctl enable neko-restore.service >/dev/null
  if ((changed)); then systemctl restart neko-restore.service; else systemctl start neko-restore.service; fi
}
restore_unit

# EC2 hosts with a wake link: at every boot, once neko answers, the instance tags itself ready
# (scripts/host-ready.sh); started here too (without waiting), so the first deploy is tagged.
ready_unit() {
  local unit=/etc/systemd/system/neko-ready.service script=$base/host-ready.sh changed=0
  [[ -n ${NEKO_READY_SCRIPT:-} && -d /run/systemd/system ]] || return 0
  step "installing the ready tag at boot (for the wake link)"
  printf '%s\n' "$NEKO_READY_SCRIPT" | write_file "$script" 0755 && changed=1
  printf '%s\n' "[Unit]" "Description=Tag this instance neko-infra:ready once neko answers after a boot" \
    "After=docker.service neko-restore.service network-online.target" "Wants=network-online.target" "" \
    "[Service]" "Type=oneshot" "Environment=NEKO_STATE_DIR=$base/host" "ExecStart=/usr/bin/bash $script" "" \
    "[Install]" "WantedBy=multi-user.target" | write_file "$unit" 0644 && changed=1
  if ((changed)); then systemctl daemon-reload; fi
  systemctl enable neko-ready.service >/dev/null
  systemctl start --no-block neko-ready.service
}
ready_unit

# EC2 hosts: the host-network containers (Caddy, coturn) may not read user-data or the role's
# credentials (scripts/imds-guard.sh). Applied now, and at every boot before Docker starts them;
# Docker does not start without it (fail closed: a guard that failed would leave them exposed).
guard_unit() {
  local unit=/etc/systemd/system/neko-imds-guard.service script=$base/imds-guard.sh changed=0
  [[ -n ${NEKO_IMDS_GUARD_SCRIPT:-} ]] || return 0
  [[ ${IMDS_GUARD_UIDS:-} =~ ^[0-9]+( [0-9]+)*$ ]] || { echo "$SETUP_NAME: IMDS_GUARD_UIDS must be uids separated by spaces, not '${IMDS_GUARD_UIDS:-}'" >&2; exit 2; }
  if ! command -v iptables >/dev/null 2>&1; then
    step "installing iptables"
    dnf install -y -q iptables-nft
  fi
  step "keeping uids $IMDS_GUARD_UIDS (Caddy, coturn) away from the instance metadata service"
  printf '%s\n' "$NEKO_IMDS_GUARD_SCRIPT" | write_file "$script" 0755 && changed=1
  # shellcheck disable=SC2086 # one argument per uid
  bash "$script" $IMDS_GUARD_UIDS
  [[ -d /run/systemd/system ]] || return 0
  printf '%s\n' "[Unit]" "Description=Keep neko's host-network containers away from the instance metadata service" \
    "Before=docker.service" "" \
    "[Service]" "Type=oneshot" "RemainAfterExit=yes" "ExecStart=/usr/bin/bash $script $IMDS_GUARD_UIDS" "" \
    "[Install]" "RequiredBy=docker.service" | write_file "$unit" 0644 && changed=1
  if ((changed)); then systemctl daemon-reload; fi
  systemctl enable neko-imds-guard.service >/dev/null
}
guard_unit

gpu_version=""
if [[ $gpu == 1 ]]; then
  step "checking for the NVIDIA container toolkit"
  command -v nvidia-ctk >/dev/null 2>&1 || { echo "$SETUP_NAME: nvidia-ctk missing: is this the NVIDIA driver AMI?" >&2; exit 1; }
  step "registering the NVIDIA runtime with Docker"
  nvidia-ctk runtime configure --runtime=docker
  step "restarting Docker"
  systemctl restart docker
  step "checking the GPU"
  nvidia-smi -L >&2
  gpu_version=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -n 1)
  [[ -n $gpu_version ]] || { echo "$SETUP_NAME: nvidia-smi reports no driver version" >&2; exit 1; }
fi

idle_timer host "$idle_minutes"

step "checking that Docker answers"
docker_version=$(docker version --format '{{.Server.Version}}')

step "writing the marker"
write_marker "ok docker=$docker_version${gpu_version:+ gpu=$gpu_version}"
echo "$SETUP_NAME: ready: docker $docker_version${gpu_version:+, NVIDIA driver $gpu_version}" >&2
