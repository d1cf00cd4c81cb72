#!/usr/bin/env bash
# A private Docker engine (Debian's dockerd 20.10, or a current one: see DOCKERD_ENGINE below) for
# real-tool tests.
#
#   dockerd.sh start STATE_DIR [INSECURE_REGISTRY]   e.g. 10.231.N.1:5000
#   dockerd.sh stop  STATE_DIR                       (idempotent; removes all
#                                                     containers first)
#
# Socket unix://STATE_DIR/docker.sock, --data-root STATE_DIR/data, --exec-root
# /run/nekod-<hash> (short: unix socket paths under it must stay < 108 bytes),
# --pidfile STATE_DIR/docker.pid (the harness's own record: dockerd.pid), log STATE_DIR/dockerd.log, an empty
# --config-file (ignores /etc/docker/daemon.json).
# Networking: its own Linux bridge nkd<hash> on 10.232.M.1/24 (M free, picked
# under a lock, or env DOCKERD_SUBNET) instead of docker0, and --iptables=false
# --ip-masq=false --ip-forward=false: dockerd would otherwise flush the shared
# DOCKER iptables chains of any other dockerd and flip the host's ip_forward.
# Published ports (-p 127.0.0.1:P:8080) go through docker-proxy (userland
# proxy); containers have no route off the host.
#
# start writes STATE_DIR/env (sourceable):
#   DOCKER_HOST (unix://STATE_DIR/docker.sock), DOCKER_BIN (/usr/bin/docker, the
#   Debian client; /usr/local/bin/docker on PATH is another version),
#   DOCKER_CONFIG (STATE_DIR/client: `docker login` writes there, not ~/.docker)
#
# DOCKERD_ENGINE=current at start: a current engine instead, as Docker Engine 29 fresh installs
# and Docker Desktop 4.34+ have: dockerd 28.5.2 with the containerd image store
# ({"features":{"containerd-snapshotter":true}} in its daemon.json; images are named by manifest
# digest) on its own containerd v2.4.2 (started here, `--containerd`; see start_containerd in
# engine-lib.sh), its own docker-proxy 28.5.2, Debian's runc; both built once from their Go modules
# by go-tool.sh (minutes cold, then cached). The same socket, roots, bridge and flags as above.
# The env file then also holds DOCKER_ENGINE=current, and DOCKER_BIN is /usr/local/bin/docker
# (28.2.2 here; Debian's 20.10 client is older than any current install).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh disable=SC1091
source "$here/lib.sh"
# shellcheck source=engine-lib.sh disable=SC1091
source "$here/engine-lib.sh"

dockerd_bin=/usr/sbin/dockerd
docker_bin=/usr/bin/docker
current_client=/usr/local/bin/docker
lock=/run/neko-harness-subnets.lock

usage() {
  echo "usage: ${0##*/} start STATE_DIR [INSECURE_REGISTRY] | stop STATE_DIR" >&2
  exit 2
}

load_names() {
  local h
  h=$(short_hash "$state")
  bridge=nkd$h
  exec_root=/run/nekod-$h
  ctr_ns=nekod-$h
  subnet=${DOCKERD_SUBNET:-}
  running_engine=default
  if [[ -f $state/dockerd.state ]]; then
    # shellcheck source=/dev/null
    source "$state/dockerd.state"
  fi
}

do_stop() {
  load_names
  stop_engine "$state" "$exec_root" "$ctr_ns" dockerd
  if ip link show "$bridge" >/dev/null 2>&1; then
    ip link delete "$bridge" || die "cannot delete bridge $bridge"
  fi
  rm -f "$state/env" "$state/docker.sock" "$state/dockerd.state"
}

do_start() {
  local insecure=${1:-} timeout=${DOCKERD_READY_TIMEOUT:-30} engine=${DOCKERD_ENGINE:-default}
  need_root
  case $engine in
  default) need "$dockerd_bin" "$docker_bin" /usr/sbin/docker-proxy ;;
  current)
    [[ -x $current_client ]] || die "no $current_client: the current engine's client (a current Docker CLI, 28.x or newer; tools/install-deps.sh does not install one)"
    need runc /usr/bin/docker
    ;;
  *) die "DOCKERD_ENGINE must be 'current' or 'default' (or unset), not '$engine'" ;;
  esac
  need ip flock
  mkdir -p "$state"
  local sock=$state/docker.sock
  ((${#sock} < 100)) || die "socket path $sock is too long for a unix socket (use a shorter STATE_DIR)"
  load_names
  local pid
  pid=$(read_pid "$state/dockerd.pid")
  if [[ -n $pid ]] && pid_alive "$pid" dockerd && [[ -f $state/env ]]; then
    start_ok=1 # leave the running dockerd alone
    if [[ ${running_insecure-} != "$insecure" ]]; then
      die "dockerd for $state already runs with INSECURE_REGISTRY='${running_insecure-}' (pid $pid), not '$insecure'; stop it first"
    fi
    if [[ $running_engine != "$engine" ]]; then
      die "dockerd for $state already runs as DOCKERD_ENGINE=$running_engine (pid $pid), not $engine; stop it first"
    fi
    log "dockerd already running (pid $pid)"
    return 0
  fi
  do_stop
  load_names

  local containerd_bin="" proxy=/usr/sbin/docker-proxy
  if [[ $engine == current ]]; then
    # Before anything is set up: a cold build takes minutes and may fail.
    dockerd_bin=$("$here/go-tool.sh" dockerd) || die "cannot build dockerd 28.5.2 (see above)"
    containerd_bin=$("$here/go-tool.sh" containerd) || die "cannot build containerd v2.4.2 (see above)"
    [[ -x ${containerd_bin%/*}/containerd-shim-runc-v2 ]] || die "no containerd-shim-runc-v2 beside $containerd_bin"
    proxy=${dockerd_bin%/*}/docker-proxy
    [[ -x $proxy ]] || die "no docker-proxy beside $dockerd_bin"
    docker_bin=$current_client
  fi

  (
    flock -w 30 9 || die "timed out waiting for $lock"
    pick_subnet 10.232 DOCKERD_SUBNET "$state"
    printf 'bridge=%q\nexec_root=%q\nsubnet=%q\nrunning_insecure=%q\nrunning_engine=%q\n' \
      "$bridge" "$exec_root" "$subnet" "$insecure" "$engine" >"$state/dockerd.state"
    ip link add "$bridge" type bridge
    ip addr add "10.232.$subnet.1/24" dev "$bridge"
    ip link set "$bridge" up
  ) 9>"$lock"
  load_names

  local launch=("$dockerd_bin") env_extra=()
  [[ -z $insecure ]] || launch+=(--insecure-registry "$insecure")
  if [[ $engine == current ]]; then
    start_containerd "$state" "$exec_root" "$containerd_bin" "$timeout"
    launch+=(--containerd "$containerd_sock")
    # shellcheck disable=SC2034 # read by start_engine (engine-lib.sh)
    {
      engine_daemon_json='{"features":{"containerd-snapshotter":true}}'
      engine_proxy=$proxy
      engine_client=$docker_bin
    }
    env_extra+=("DOCKER_ENGINE=current")
  fi
  start_engine "$state" "$exec_root" "$ctr_ns" "$bridge" "$timeout" "${launch[@]}"
  write_env "$state/env" \
    "DOCKER_HOST=unix://$sock" \
    "DOCKER_BIN=$docker_bin" \
    "DOCKER_CONFIG=$state/client" \
    ${env_extra[@]+"${env_extra[@]}"}
  start_ok=1
  log "dockerd ($engine engine) up on unix://$sock (pid $pid, bridge $bridge 10.232.$subnet.1/24); env in $state/env"
}

[[ $# -ge 2 ]] || usage
cmd=$1
state=$(abs_dir "$2")
start_ok=0
case $cmd in
start)
  [[ $# -le 3 ]] || usage
  trap '[[ $start_ok == 1 ]] || { log "start failed; cleaning up"; do_stop || true; }' EXIT
  do_start "${3:-}"
  ;;
stop)
  [[ $# -eq 2 ]] || usage
  need_root
  do_stop
  ;;
*) usage ;;
esac
