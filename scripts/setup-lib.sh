#!/usr/bin/env bash
# shellcheck disable=SC2034 # doing: read by on_term, from scripts/step-preamble.sh
# What the two setup steps (builder-bootstrap.sh, host-bootstrap.sh) share; lib/shell.ts puts this
# file before either script on the step's standard input. They run as root (sudo -n for a login
# user such as ec2-user) over SSH, every time their inputs change and on every new machine, so
# each of their jobs is idempotent.
#
# The marker: removed first, `ok <versions>` written as the very last step, `failed <step>` written
# by the EXIT trap when any step fails. The wake steps of every later step wait for `ok` (a fresh
# login reads it: scripts/wake.js), so nothing runs on a half set-up machine.
#
# Env: NEKO_INFRA_MARKER  the marker file (default /var/lib/neko-infra/bootstrap.status)
#      SETUP_NAME         the script's name, for messages (set by the script)
#      NEKO_INFRA_DIR     where the idle stop script goes (default /var/lib/neko-infra)
set -euo pipefail

marker=${NEKO_INFRA_MARKER:-/var/lib/neko-infra/bootstrap.status}
current="starting"
step() {
  current=$1
  doing=$1
  echo "${SETUP_NAME:-setup}: $1" >&2
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
    echo "${SETUP_NAME:-setup}: failed while $current (exit $rc)" >&2
    write_marker "failed $current" || true
  fi
  exit "$rc"
}

# write_file PATH MODE: standard input to PATH (replaced atomically, owned by root); exit status 0
# when the content changed, 1 when PATH already held it.
write_file() {
  local new
  new=$(mktemp "$1.XXXXXX")
  cat >"$new"
  if [[ -f $1 ]] && cmp -s "$new" "$1"; then
    rm -f "$new"
    return 1
  fi
  chmod "$2" "$new"
  mv -f "$new" "$1"
}

# A fresh instance: cloud-init may still be at work (package locks, the host key) when the first
# login comes. Machines without cloud-init have nothing to wait for.
wait_for_cloud_init() {
  [[ -d /run/cloud-init ]] && command -v cloud-init >/dev/null 2>&1 || return 0
  step "waiting for cloud-init to finish"
  timeout 600 cloud-init status --wait >/dev/null 2>&1 ||
    echo "${SETUP_NAME:-setup}: cloud-init reports a problem or is still running ($(cloud-init status 2>&1 | tr '\n' ' ' | cut -c1-200)); going on" >&2
}

# idle_timer ROLE MINUTES: the systemd timer that runs ROLE-idle-stop.sh (IDLE_STOP_SCRIPT, its
# text) every minute; MINUTES 0 removes it. Changed files reload systemd; nothing else restarts.
idle_timer() {
  local role=$1 minutes=$2 dir=${NEKO_INFRA_DIR:-/var/lib/neko-infra} units=/etc/systemd/system what changed=0
  local unit=neko-$role-idle
  if [[ $role == builder ]]; then what="this Nix builder"; else what="this neko host"; fi
  if ((minutes <= 0)); then
    step "removing the idle stop"
    if [[ -e $units/$unit.timer ]]; then
      systemctl disable --now "$unit.timer" >/dev/null 2>&1 || true
      rm -f "$units/$unit.timer" "$units/$unit.service" "$dir/$role-idle-stop.sh"
      systemctl daemon-reload
    fi
    return 0
  fi
  [[ -n ${IDLE_STOP_SCRIPT:-} ]] || { echo "${SETUP_NAME:-setup}: IDLE_STOP_SCRIPT is empty" >&2; return 1; }
  step "installing the idle stop ($minutes minutes)"
  mkdir -p "$dir"
  printf '%s\n' "$IDLE_STOP_SCRIPT" | write_file "$dir/$role-idle-stop.sh" 0755 && changed=1
  printf '[Unit]\nDescription=Stop %s when idle\n\n[Service]\nType=oneshot\nExecStart=/usr/bin/bash %s %s\n' \
    "$what" "$dir/$role-idle-stop.sh" "$minutes" | write_file "$units/$unit.service" 0644 && changed=1
  printf '[Unit]\nDescription=Check every minute whether %s is idle\n\n[Timer]\nOnBootSec=5min\nOnUnitActiveSec=1min\n\n[Install]\nWantedBy=timers.target\n' \
    "$what" | write_file "$units/$unit.timer" 0644 && changed=1
  if ((changed)); then systemctl daemon-reload; fi
  systemctl enable --now "$unit.timer" >/dev/null
}
