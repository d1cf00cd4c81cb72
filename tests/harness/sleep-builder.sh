#!/usr/bin/env bash
# Puts a builder of tests/harness/builder.sh to sleep and wakes it again, as a stopped machine and
# the command that starts it (the wake step's WAKE=command):
#
#   sleep-builder.sh sleep STATE_DIR   stops its sshd and every process in its netns; the netns and
#                                      its address stay, so connections are refused
#   sleep-builder.sh wake  STATE_DIR   starts sshd again in the same netns with the same host key,
#                                      config and private mounts as builder.sh start; returns once
#                                      an ssh login works (bounded by BUILDER_READY_TIMEOUT, 10 s)
#
# `builder.sh stop STATE_DIR` stops a woken builder as usual (it reads sshd.pid).
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh disable=SC1091
source "$here/lib.sh"

[[ $# -eq 2 ]] || { echo "usage: ${0##*/} sleep|wake STATE_DIR" >&2; exit 2; }
verb=$1
state=$(abs_dir "$2")
need_root
[[ -f $state/builder.state && -f $state/sshd_config ]] || die "no builder started in $state (run builder.sh start first)"
netns=""
# shellcheck source=/dev/null
source "$state/builder.state"
netns_exists "$netns" || die "netns $netns of $state is gone"

# The same as builder.sh's start (which this file must not change): a private mount namespace with
# the builder's own /nix, /root, /tmp, /var/lib/containers and /run/containers, then sshd.
# shellcheck disable=SC2016 # expanded by that inner sh
mount_and_exec_sshd='
  set -e
  state=$1
  mount --bind "$state/nix" /nix
  for pair in home:/root tmp:/tmp containers-lib:/var/lib/containers containers-run:/run/containers; do
    src=$state/${pair%%:*} dst=${pair#*:}
    case $state/ in
    "$dst"/*)
      mkdir -p "$src${state#"$dst"}"
      mount --bind "$state" "$src${state#"$dst"}"
      ;;
    esac
    mount --rbind "$src" "$dst"
  done
  exec "$2" -D -f "$state/sshd_config" -E "$state/sshd.log"'

case $verb in
sleep)
  stop_pid "$(read_pid "$state/sshd.pid")" sshd "builder sshd"
  # A stopped machine keeps no session either.
  for pid in $(ip netns pids "$netns" 2>/dev/null || true); do
    kill -KILL "$pid" 2>/dev/null || true
  done
  log "builder in $netns sleeps (sshd stopped)"
  ;;
wake)
  pid=$(read_pid "$state/sshd.pid")
  if [[ -n $pid ]] && pid_alive "$pid" sshd; then
    log "builder in $netns is awake already (sshd pid $pid)"
    exit 0
  fi
  # setsid: sshd leaves the caller's process group, so whoever ran this can wait for it alone.
  setsid ip netns exec "$netns" unshare -m --propagation private \
    /bin/sh -c "$mount_and_exec_sshd" sh "$state" /usr/sbin/sshd </dev/null >>"$state/sshd.log" 2>&1 &
  pid=$!
  echo "$pid" >"$state/sshd.pid"
  deadline=$((SECONDS + ${BUILDER_READY_TIMEOUT:-10}))
  until err=$(ssh -F "$state/ssh_config" -o ConnectTimeout=2 builder true 2>&1 </dev/null); do
    pid_alive "$pid" || { tail_log "$state/sshd.log"; die "builder sshd (pid $pid) exited while waking"; }
    ((SECONDS < deadline)) || { tail_log "$state/sshd.log"; die "builder sshd did not accept a login after waking: $err"; }
    sleep 0.1
  done
  log "builder in $netns is awake (sshd pid $pid)"
  ;;
*) die "unknown verb $verb (sleep or wake)" ;;
esac
