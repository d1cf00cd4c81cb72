#!/usr/bin/env bash
# Starting a harness dockerd, stopping it and what a crashed one leaves behind; sourced by dockerd.sh
# and nshost.sh (after lib.sh).
#
# start_engine STATE_DIR EXEC_ROOT CTR_NS BRIDGE TIMEOUT COMMAND...
#
# Runs COMMAND (dockerd, or a launcher that execs it, followed by any flags of its own) with the
# flags every harness engine shares: an empty --config-file (ignores /etc/docker/daemon.json), its
# socket STATE_DIR/docker.sock, data root STATE_DIR/data, EXEC_ROOT, BRIDGE, no iptables, the
# userland proxy, its own containerd namespace CTR_NS (apart from other engines, should dockerd find
# a system containerd). Log: STATE_DIR/dockerd.log. Sets pid (also in
# STATE_DIR/dockerd.pid) and returns once `docker info` answers; fails with the log's last lines when
# dockerd exits first or TIMEOUT seconds pass.
#
# Optional globals (defaults: Debian's engine): engine_daemon_json (the --config-file's content,
# '{}'), engine_proxy (the userland proxy, /usr/sbin/docker-proxy), engine_client (the client that
# asks `docker info`, /usr/bin/docker).
start_engine() {
  local state=$1 exec_root=$2 ctr_ns=$3 bridge=$4 timeout=$5
  shift 5
  local sock=$state/docker.sock client=${engine_client:-/usr/bin/docker}
  mkdir -p "$state/data" "$state/client" "$exec_root"
  printf '%s\n' "${engine_daemon_json:-"{}"}" >"$state/daemon.json"
  : >"$state/dockerd.log"
  "$@" \
    --config-file "$state/daemon.json" \
    --host "unix://$sock" \
    --data-root "$state/data" \
    --exec-root "$exec_root" \
    --pidfile "$state/docker.pid" \
    --bridge "$bridge" \
    --iptables=false --ip-masq=false --ip-forward=false \
    --userland-proxy=true --userland-proxy-path "${engine_proxy:-/usr/sbin/docker-proxy}" \
    --containerd-namespace "$ctr_ns" --containerd-plugins-namespace "$ctr_ns-plugins" \
    </dev/null >>"$state/dockerd.log" 2>&1 &
  pid=$!
  # dockerd writes --pidfile itself and refuses to start when that file names a live process (even
  # itself), so $! goes to a file of our own.
  echo "$pid" >"$state/dockerd.pid"

  local deadline=$((SECONDS + timeout)) err=""
  while :; do
    if ! pid_alive "$pid"; then
      tail_log "$state/dockerd.log"
      die "dockerd (pid $pid) exited during start-up; see $state/dockerd.log"
    fi
    if err=$("$client" -H "unix://$sock" info --format '{{.ServerVersion}}' 2>&1 </dev/null); then
      return 0
    fi
    if ((SECONDS >= deadline)); then
      tail_log "$state/dockerd.log"
      die "dockerd on unix://$sock did not answer 'docker info' within ${timeout}s (last error: $err)"
    fi
    sleep 0.2
  done
}

# start_containerd STATE_DIR EXEC_ROOT CONTAINERD TIMEOUT
#
# Runs CONTAINERD (containerd v2, containerd-shim-runc-v2 beside it) for a dockerd started with
# `--containerd "$containerd_sock"`, as a distribution's containerd.service runs beside
# docker.service: root STATE_DIR/containerd; state, temp, shim sockets and its socket
# (containerd_sock, set here) under EXEC_ROOT/ctd; config STATE_DIR/containerd.toml (no imports:
# /etc/containerd is not read); pid STATE_DIR/containerd.pid; log STATE_DIR/containerd.log. The
# plugins that would reach outside those directories or serve Kubernetes are disabled: CRI (with
# its CNI, CDI and pause image), NRI (/var/run/nri), opt (/opt/containerd), the image verifier,
# and the snapshotters Docker does not use here (erofs, zfs, devmapper, blockfile, btrfs). Returns
# once it has booted; fails with its log's last lines when it exits first or TIMEOUT seconds pass.
start_containerd() {
  local state=$1 exec_root=$2 bin=$3 timeout=$4 dir=$2/ctd cpid deadline
  containerd_sock=$dir/containerd.sock
  mkdir -p "$state/containerd" "$dir"
  cat >"$state/containerd.toml" <<TOML
version = 4
root = "$state/containerd"
state = "$dir/state"
temp = "$dir/tmp"
imports = []
disabled_plugins = [
  "io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime",
  "io.containerd.podsandbox.controller.v1.podsandbox", "io.containerd.nri.v1.nri",
  "io.containerd.internal.v1.opt", "io.containerd.image-verifier.v1.bindir",
  "io.containerd.snapshotter.v1.erofs", "io.containerd.differ.v1.erofs",
  "io.containerd.mount-handler.v1.erofs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.blockfile",
  "io.containerd.snapshotter.v1.btrfs",
]

[plugins.'io.containerd.server.v1.grpc']
  address = "$containerd_sock"
[plugins.'io.containerd.server.v1.ttrpc']
  address = "$containerd_sock.ttrpc"
[plugins.'io.containerd.shim.v1.manager']
  socket_dir = "$dir/s"
TOML
  : >"$state/containerd.log"
  # Its own shim (beside it) before Debian's /usr/bin/containerd-shim-runc-v2 (1.6); runc from PATH.
  PATH="$(dirname "$bin"):$PATH" "$bin" --config "$state/containerd.toml" \
    </dev/null >>"$state/containerd.log" 2>&1 &
  cpid=$!
  echo "$cpid" >"$state/containerd.pid"
  deadline=$((SECONDS + timeout))
  until grep -q 'containerd successfully booted' "$state/containerd.log"; do
    if ! pid_alive "$cpid"; then
      tail_log "$state/containerd.log"
      die "containerd (pid $cpid) exited during start-up; see $state/containerd.log"
    fi
    if ((SECONDS >= deadline)); then
      tail_log "$state/containerd.log"
      die "containerd (pid $cpid) did not boot within ${timeout}s; see $state/containerd.log"
    fi
    sleep 0.1
  done
}

# stop_engine STATE_DIR EXEC_ROOT CTR_NS LABEL
#
# Removes the containers (a PID 1 without a SIGTERM handler, such as busybox httpd, would hold
# dockerd's shutdown for its 10 s stop timeout), stops dockerd (pid in STATE_DIR/dockerd.pid) and
# its containerd (the one dockerd started, or start_containerd's), kills the containerd shims a dead
# dockerd left running in CTR_NS (unique to the STATE_DIR) with their containers, removes their
# empty cgroups, unmounts what is still mounted under EXEC_ROOT, STATE_DIR/data and
# STATE_DIR/containerd (deepest first) and deletes EXEC_ROOT. Idempotent.
stop_engine() {
  local state=$1 exec_root=$2 ctr_ns=$3 label=$4 pid ids cpid
  pid=$(read_pid "$state/dockerd.pid")
  [[ -n $pid ]] || pid=$(read_pid "$state/docker.pid")
  if [[ -n $pid ]] && pid_alive "$pid" dockerd; then
    ids=$(timeout 20 /usr/bin/docker -H "unix://$state/docker.sock" ps -aq 2>/dev/null || true)
    if [[ -n $ids ]]; then
      # shellcheck disable=SC2086 # one id per word
      timeout 30 /usr/bin/docker -H "unix://$state/docker.sock" rm -f $ids >/dev/null 2>&1 || true
    fi
    stop_pid "$pid" dockerd "$label" 30
  fi
  rm -f "$state/dockerd.pid" "$state/docker.pid"
  # containerd exits with dockerd; a leftover one still has its pid file under the exec root.
  cpid=$(read_pid "$exec_root/containerd/containerd.pid")
  [[ -z $cpid ]] || stop_pid "$cpid" containerd "$label's containerd" 10
  # start_containerd's, which outlives dockerd.
  cpid=$(read_pid "$state/containerd.pid")
  [[ -z $cpid ]] || stop_pid "$cpid" containerd "$label's containerd" 10
  rm -f "$state/containerd.pid"
  kill_orphan_shims "$ctr_ns"
  remove_container_cgroups "$state/data/containers"
  unmount_under "$exec_root"
  unmount_under "$state/data"
  unmount_under "$state/containerd"
  rm -rf "$exec_root"
}

kill_orphan_shims() {
  local ctr_ns=$1 p pids=() kids
  for p in /proc/[0-9]*; do
    if tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -q -- "^[^ ]*/containerd-shim[^ ]* .*-namespace $ctr_ns "; then
      pids+=("${p#/proc/}")
    fi
  done
  ((${#pids[@]})) || return 0
  log "killing leftover containerd shims of namespace $ctr_ns and their containers: ${pids[*]}"
  for p in "${pids[@]}"; do
    kids=$(cat "/proc/$p"/task/*/children 2>/dev/null || true)
    # shellcheck disable=SC2086 # one pid per word
    [[ -z $kids ]] || kill -KILL $kids 2>/dev/null || true
    kill -KILL "$p" 2>/dev/null || true
  done
  sleep 0.2
}

# cgroup v1 here: /sys/fs/cgroup/<controller>/docker/<id>; v2: /sys/fs/cgroup/docker/<id>.
remove_container_cgroups() {
  local containers=$1 c id cg
  [[ -d $containers ]] || return 0
  for c in "$containers"/*/; do
    [[ -d $c ]] || continue
    id=$(basename "$c")
    for cg in /sys/fs/cgroup/*/docker/"$id" /sys/fs/cgroup/docker/"$id"; do
      if [[ -d $cg ]]; then
        rmdir "$cg" 2>/dev/null || log "cannot remove cgroup $cg (still in use?)"
      fi
    done
  done
}

unmount_under() {
  local dir=$1 m
  [[ -d $dir ]] || return 0
  while read -r m; do
    [[ -n $m ]] || continue
    umount -l "$m" 2>/dev/null || true
  done < <(awk -v d="$dir" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r)
}
