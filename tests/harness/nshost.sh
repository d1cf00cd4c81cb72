#!/usr/bin/env bash
# A Docker host in its own network namespace, for the TLS front and TURN relay tests: a netns with
# a veth to this machine and a Debian dockerd (20.10) running inside it, so `--network host`
# containers bind inside the netns (on its address and its own loopback), not on this machine.
#
#   nshost.sh start STATE_DIR
#   nshost.sh stop  STATE_DIR      (idempotent; removes all containers first; also cleans up a
#                                   failed start)
#
# Network: netns nekoh-<hash of STATE_DIR>, veth nkh<hash> on this machine (10.233.N.1/24) and eth0
# inside (10.233.N.2/24), lo up; N free, picked under the harness lock
# (/run/neko-harness-subnets.lock) or env NSHOST_SUBNET. No default route: nothing inside can
# leave towards anything but this machine's side of the veth.
# dockerd (entered into the netns with `nsenter --net`; not `ip netns exec`, whose fresh /sys
# hides the cgroup mounts dockerd needs): socket unix://STATE_DIR/docker.sock, --data-root STATE_DIR/data, --exec-root
# /run/nekoh-<hash>, its own bridge nkhbr0 (10.234.N.1/24, inside the netns),
# --iptables=false --ip-masq=false --ip-forward=false, its own containerd namespace, an empty
# --config-file (ignores /etc/docker/daemon.json). Log: STATE_DIR/dockerd.log.
# Env (optional): NSHOST_SUBNET (N), NSHOST_READY_TIMEOUT (seconds for `docker info`, default 30).
#
# start writes STATE_DIR/env (sourceable):
#   DOCKER_HOST (unix://STATE_DIR/docker.sock), DOCKER_BIN (/usr/bin/docker, the Debian client),
#   DOCKER_CONFIG (STATE_DIR/client), NSHOST_ADDR (10.233.N.2, the host's address),
#   NSHOST_SIDE_ADDR (10.233.N.1, this machine's end of the veth), NSHOST_NETNS
# Run a command "on the host" (its network) with `ip netns exec "$NSHOST_NETNS" CMD`.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh disable=SC1091
source "$here/lib.sh"
# shellcheck source=engine-lib.sh disable=SC1091
source "$here/engine-lib.sh"

dockerd_bin=/usr/sbin/dockerd
docker_bin=/usr/bin/docker
lock=/run/neko-harness-subnets.lock
bridge=nkhbr0 # inside the netns: no clash with other harnesses

usage() {
  echo "usage: ${0##*/} start|stop STATE_DIR" >&2
  exit 2
}

# Names derived from STATE_DIR; start records the subnet in STATE_DIR/nshost.state.
load_names() {
  local h
  h=$(short_hash "$state")
  netns=nekoh-$h
  veth=nkh$h
  veth_peer=nkh${h}p
  exec_root=/run/nekoh-$h
  ctr_ns=nekoh-$h
  subnet=${NSHOST_SUBNET:-}
  if [[ -f $state/nshost.state ]]; then
    # shellcheck source=/dev/null
    source "$state/nshost.state"
  fi
}

do_stop() {
  load_names
  stop_engine "$state" "$exec_root" "$ctr_ns" "dockerd in $netns"
  delete_netns "$netns" "$veth"
  rm -f "$state/env" "$state/docker.sock" "$state/nshost.state"
}

do_start() {
  local timeout=${NSHOST_READY_TIMEOUT:-30}
  need_root
  need "$dockerd_bin" "$docker_bin" ip nsenter flock
  mkdir -p "$state"
  local sock=$state/docker.sock
  ((${#sock} < 100)) || die "socket path $sock is too long for a unix socket (use a shorter STATE_DIR)"
  load_names
  local pid
  pid=$(read_pid "$state/dockerd.pid")
  if [[ -n $pid ]] && pid_alive "$pid" dockerd && [[ -f $state/env ]]; then
    start_ok=1 # leave the running host alone
    log "namespaced host already running (netns $netns, dockerd pid $pid)"
    return 0
  fi
  do_stop
  load_names

  (
    flock -w 30 9 || die "timed out waiting for $lock"
    pick_subnet 10.233 NSHOST_SUBNET "$state"
    if netns_exists "$netns"; then
      die "netns $netns already exists (another harness with the same STATE_DIR?)"
    fi
    printf 'subnet=%q\n' "$subnet" >"$state/nshost.state"
    ip netns add "$netns"
    ip link add "$veth" type veth peer name "$veth_peer" netns "$netns"
    ip addr add "10.233.$subnet.1/24" dev "$veth"
    ip link set "$veth" up
    ip -n "$netns" link set "$veth_peer" name eth0
    ip -n "$netns" addr add "10.233.$subnet.2/24" dev eth0
    ip -n "$netns" link set eth0 up
    ip -n "$netns" link set lo up
    ip -n "$netns" link add "$bridge" type bridge
    ip -n "$netns" addr add "10.234.$subnet.1/24" dev "$bridge"
    ip -n "$netns" link set "$bridge" up
  ) 9>"$lock"
  load_names

  # nsenter (without --fork) replaces itself with dockerd: $! is dockerd's pid.
  start_engine "$state" "$exec_root" "$ctr_ns" "$bridge" "$timeout" nsenter --net="/run/netns/$netns" -- "$dockerd_bin"
  write_env "$state/env" \
    "DOCKER_HOST=unix://$sock" \
    "DOCKER_BIN=$docker_bin" \
    "DOCKER_CONFIG=$state/client" \
    "NSHOST_ADDR=10.233.$subnet.2" \
    "NSHOST_SIDE_ADDR=10.233.$subnet.1" \
    "NSHOST_NETNS=$netns"
  start_ok=1
  log "namespaced host up: netns $netns at 10.233.$subnet.2, dockerd pid $pid on unix://$sock; env in $state/env"
}

[[ $# -eq 2 ]] || usage
cmd=$1
state=$(abs_dir "$2")
start_ok=0
case $cmd in
start)
  trap '[[ $start_ok == 1 ]] || { log "start failed; cleaning up"; do_stop || true; }' EXIT
  do_start
  ;;
stop)
  need_root
  do_stop
  ;;
*) usage ;;
esac
