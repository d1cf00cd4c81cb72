# shellcheck shell=bash
# Helpers shared by the real-tool harness scripts (builder.sh, registry.sh,
# dockerd.sh). Sourced, not executed.

# die MSG...: print "<script>: error: MSG" on stderr and exit 1.
die() {
  echo "${0##*/}: error: $*" >&2
  exit 1
}

log() {
  echo "${0##*/}: $*" >&2
}

# need CMD...: fail naming the missing command and the package that provides it.
need() {
  local c
  for c in "$@"; do
    [[ -x "$c" ]] || command -v "$c" >/dev/null 2>&1 ||
      die "required command '$c' not found (run tools/install-deps.sh)"
  done
}

need_root() {
  [[ $(id -u) -eq 0 ]] || die "must run as root (network namespaces, mounts, dockerd)"
}

# abs_dir DIR: print DIR as an absolute path (need not exist yet).
abs_dir() {
  realpath -m -- "$1"
}

# short_hash STRING: 8 hex chars derived from STRING (stable names per STATE_DIR).
short_hash() {
  printf '%s' "$1" | sha256sum | cut -c1-8
}

# pid_alive PID [COMM]: true if PID runs and (when given) its command name is COMM.
pid_alive() {
  local pid=$1 comm=${2:-}
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # An exited process whose parent was the (now gone) harness script stays a
  # zombie until init reaps it, which can take seconds: count it as gone.
  local stat
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat%% *} != [ZX] ]] || return 1
  if [[ -n $comm ]]; then
    local actual
    actual=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    [[ $actual == "$comm" ]] || return 1
  fi
  return 0
}

# read_pid FILE: print the pid stored in FILE, or nothing.
read_pid() {
  [[ -f $1 ]] || return 0
  local pid
  pid=$(tr -cd '0-9' <"$1")
  printf '%s' "$pid"
}

# stop_pid PID COMM WHAT [TIMEOUT]: SIGTERM the process if it is still ours
# (same command name), wait up to TIMEOUT seconds (default 10), then SIGKILL.
stop_pid() {
  local pid=$1 comm=$2 what=$3 timeout=${4:-10} i
  pid_alive "$pid" "$comm" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < timeout * 10; i++)); do
    pid_alive "$pid" "$comm" || return 0
    sleep 0.1
  done
  log "$what (pid $pid) did not exit within ${timeout}s of SIGTERM; sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    pid_alive "$pid" "$comm" || return 0
    sleep 0.1
  done
  die "$what (pid $pid) survived SIGKILL"
}

# write_env FILE NAME=VALUE...: write sourceable `export NAME=VALUE` lines
# atomically (values shell-quoted).
write_env() {
  local file=$1 kv
  shift
  : >"$file.tmp"
  for kv in "$@"; do
    printf 'export %s=%q\n' "${kv%%=*}" "${kv#*=}" >>"$file.tmp"
  done
  mv -f "$file.tmp" "$file"
}

# http_code URL [CURL_ARGS...]: print the HTTP status (000 when unreachable).
http_code() {
  local url=$1
  shift
  curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$@" "$url" 2>/dev/null || true
}

# netns_exists NAME
netns_exists() {
  local names
  names=$(ip netns list 2>/dev/null | awk '{ print $1 }')
  grep -qxF -- "$1" <<<"$names"
}

# ipv4_in_use PREFIX: true if an address or route of this host starts with
# PREFIX (e.g. "10.231.7."). Output is captured first: `cmd | grep -q` fails
# under pipefail when grep exits early and cmd gets SIGPIPE.
ipv4_in_use() {
  local list
  list=$(ip -4 -o addr show | awk '{ print $4 }'; ip -4 route show | awk '{ print $1 }')
  grep -q -- "^${1//./\\.}" <<<"$list"
}

# pick_subnet PREFIX ENVNAME SEED: sets $subnet to a free N of PREFIX.N.0/24: the
# one asked for through ENVNAME (already in $subnet), or the first free one from
# a start derived from SEED (the state dir), so concurrent harnesses spread out.
pick_subnet() {
  local prefix=$1 envname=$2 seed=$3 start i n
  if [[ -n $subnet ]]; then
    if ! [[ $subnet =~ ^[0-9]+$ ]] || ((subnet < 1 || subnet > 254)); then
      die "$envname must be 1..254, got '$subnet'"
    fi
    ! ipv4_in_use "$prefix.$subnet." || die "$prefix.$subnet.0/24 is already in use ($envname=$subnet)"
    return
  fi
  start=$((16#$(short_hash "$seed") % 200 + 20))
  for ((i = 0; i < 254; i++)); do
    n=$(((start - 1 + i) % 254 + 1))
    if ! ipv4_in_use "$prefix.$n."; then
      subnet=$n
      return
    fi
  done
  die "no free $prefix.N.0/24 subnet"
}

# ipv4_is_local IP: true if IP is an address of this host.
ipv4_is_local() {
  local list
  list=$(ip -4 -o addr show | awk '{ sub("/.*", "", $4); print $4 }')
  grep -qxF -- "$1" <<<"$list"
}

# tail_log FILE: last lines of a log, indented, for error messages.
tail_log() {
  [[ -f $1 ]] || return 0
  echo "--- last lines of $1 ---" >&2
  tail -n 20 "$1" | sed 's/^/  /' >&2
}

# Deletes network namespace NETNS (after stopping whatever still runs inside and keeps it busy: a
# leftover ssh session, a test's peer or server) and this machine's end VETH of its veth pair.
# Idempotent.
delete_netns() {
  local netns=$1 veth=$2 pids pid
  if netns_exists "$netns"; then
    pids=$(ip netns pids "$netns" 2>/dev/null | tr '\n' ' ' || true)
    pids=${pids% }
    if [[ -n $pids ]]; then
      log "processes still in netns $netns: $pids; stopping them"
      for pid in $pids; do
        kill -TERM "$pid" 2>/dev/null || true
      done
      sleep 0.5
      for pid in $(ip netns pids "$netns" 2>/dev/null || true); do
        kill -KILL "$pid" 2>/dev/null || true
      done
    fi
    ip netns delete "$netns" || die "cannot delete netns $netns"
  fi
  # Deleting the netns destroys the veth pair asynchronously.
  if ip link show "$veth" >/dev/null 2>&1; then
    ip link delete "$veth" 2>/dev/null || ! ip link show "$veth" >/dev/null 2>&1 ||
      die "cannot delete veth $veth"
  fi
}
