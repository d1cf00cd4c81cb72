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
start_engine() {
  local state=$1 exec_root=$2 ctr_ns=$3 bridge=$4 timeout=$5
  shift 5
  local sock=$state/docker.sock
  mkdir -p "$state/data" "$state/client" "$exec_root"
  echo '{}' >"$state/daemon.json"
  : >"$state/dockerd.log"
  "$@" \
    --config-file "$state/daemon.json" \
    --host "unix://$sock" \
    --data-root "$state/data" \
    --exec-root "$exec_root" \
    --pidfile "$state/docker.pid" \
    --bridge "$bridge" \
    --iptables=false --ip-masq=false --ip-forward=false \
    --userland-proxy=true --userland-proxy-path /usr/sbin/docker-proxy \
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
    if err=$(/usr/bin/docker -H "unix://$sock" info --format '{{.ServerVersion}}' 2>&1 </dev/null); then
      return 0
    fi
    if ((SECONDS >= deadline)); then
      tail_log "$state/dockerd.log"
      die "dockerd on unix://$sock did not answer 'docker info' within ${timeout}s (last error: $err)"
    fi
    sleep 0.2
  done
}

# stop_engine STATE_DIR EXEC_ROOT CTR_NS LABEL
#
# Removes the containers (a PID 1 without a SIGTERM handler, such as busybox httpd, would hold
# dockerd's shutdown for its 10 s stop timeout), stops dockerd (pid in STATE_DIR/dockerd.pid) and
# its containerd, kills the containerd shims a dead dockerd left running in CTR_NS (unique to the
# STATE_DIR) with their containers, removes their empty cgroups, unmounts what is still mounted
# under EXEC_ROOT and STATE_DIR/data (deepest first) and deletes EXEC_ROOT. Idempotent.
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
  kill_orphan_shims "$ctr_ns"
  remove_container_cgroups "$state/data/containers"
  unmount_under "$exec_root"
  unmount_under "$state/data"
  rm -rf "$exec_root"
}

kill_orphan_shims() {
  local ctr_ns=$1 p pids=() kids
  for p in /proc/[0-9]*; do
    if tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -q -- "^/usr/bin/containerd-shim[^ ]* .*-namespace $ctr_ns "; then
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
