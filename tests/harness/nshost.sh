#!/usr/bin/env bash
# A Docker host in its own network namespace, for the TLS front and TURN relay tests: a netns with
# a veth to this machine and a Debian dockerd (20.10) running inside it, so `--network host`
# containers bind inside the netns (on its address and its own loopback), not on this machine.
#
#   nshost.sh start STATE_DIR
#   nshost.sh stop  STATE_DIR      (idempotent; removes all containers first; also cleans up a
#                                   failed start)
#   nshost.sh wipe  STATE_DIR      (login mode only) the host as its replacement machine: no
#                                   container, image or volume, empty /var/lib, /tmp and home, a
#                                   new ssh host key; same address, user and client key
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
# Env (optional): NSHOST_SUBNET (N), NSHOST_READY_TIMEOUT (seconds for `docker info`, and in login
# mode for the ssh login, default 30), NSHOST_LOGIN_USER (login mode, below; read by start only),
# NSHOST_INSECURE_REGISTRY (HOST:PORT dockerd may reach over plain HTTP; read by start, kept by
# wipe), NSHOST_KEEP_HOST_KEY=1 (wipe keeps the ssh host key, as an EC2 replacement does).
#
# Login mode (NSHOST_LOGIN_USER=ec2-user at start): the host as a program meets an EC2 Amazon Linux
# instance: an SSH login whose user is not root (in group docker, passwordless sudo), a Docker
# engine, nothing else. dockerd and sshd share one private mount namespace (made by
# `unshare -m --propagation private` in the netns, whose sh does the mounts and execs dockerd; sshd
# joins it with `nsenter --target <dockerd> --mount --net`), so a path a session creates is the
# path `docker run -v` mounts. In it: /etc/passwd, /etc/group, /etc/shadow are STATE_DIR/etc copies
# of this machine's plus the user (first uid >= 1000 free here as uid and gid, home
# /home/USER, /bin/bash, password `*`) and the user in group docker (the machine's docker group, or
# a new one); /etc/sudoers.d is STATE_DIR/etc/sudoers.d (`USER ALL=(ALL) NOPASSWD:ALL`, and
# DOCKER_HOST kept through sudo); /home is STATE_DIR/home (the user's home from /etc/skel),
# /var/lib is STATE_DIR/varlib (empty at first: no /var/lib/neko-infra), /tmp is STATE_DIR/tmp;
# STATE_DIR stays visible at its path (mode 0711; it may not lie under /home or /var/lib, and
# outside /tmp its parents must be world-searchable: the user reads its authorized keys and the
# Docker socket there). dockerd runs with --group docker (socket root:docker 0660). sshd
# (STATE_DIR/sshd_config, log STATE_DIR/sshd.log) listens on NSHOST_ADDR:22: key-only, only USER,
# its own ed25519 host key, UsePAM no, StrictModes no, authorized keys in
# STATE_DIR/authorized_keys (not in the home, so wipe keeps the login), and SetEnv
# DOCKER_HOST=unix://STATE_DIR/docker.sock (the socket is not at /var/run/docker.sock). start
# returns once the user logs in, reaches Docker and `sudo -n true` succeeds. A stop and a start
# with the same STATE_DIR keep the data (a reboot); wipe (or a new STATE_DIR) is a new machine.
#
# start writes STATE_DIR/env (sourceable):
#   DOCKER_HOST (unix://STATE_DIR/docker.sock), DOCKER_BIN (/usr/bin/docker, the Debian client),
#   DOCKER_CONFIG (STATE_DIR/client), NSHOST_ADDR (10.233.N.2, the host's address),
#   NSHOST_SIDE_ADDR (10.233.N.1, this machine's end of the veth), NSHOST_NETNS
# and in login mode also (wipe rewrites them):
#   NSHOST_SSH_USER, NSHOST_SSH_PORT (22), NSHOST_SSH_KEY (the client's private key file),
#   NSHOST_HOST_KEY (`ssh-ed25519 AAAA...`, no comment), NSHOST_KNOWN_HOSTS,
#   NSHOST_SSH_CONFIG (`ssh -F "$NSHOST_SSH_CONFIG" nshost CMD` logs in as the user)
#
# Run a command "on the host" (its network) with `ip netns exec "$NSHOST_NETNS" CMD`; in login mode
# over ssh, or as root with `nsenter --target "$(cat STATE_DIR/dockerd.pid)" --mount --net CMD`
# (`ip netns exec` would not see the host's mounts).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh disable=SC1091
source "$here/lib.sh"
# shellcheck source=engine-lib.sh disable=SC1091
source "$here/engine-lib.sh"

dockerd_bin=/usr/sbin/dockerd
docker_bin=/usr/bin/docker
sshd_bin=/usr/sbin/sshd
lock=/run/neko-harness-subnets.lock
bridge=nkhbr0 # inside the netns: no clash with other harnesses

usage() {
  echo "usage: ${0##*/} start|stop|wipe STATE_DIR" >&2
  exit 2
}

# Names derived from STATE_DIR; start records the subnet and the login user in STATE_DIR/nshost.state.
load_names() {
  local h
  h=$(short_hash "$state")
  netns=nekoh-$h
  veth=nkh$h
  veth_peer=nkh${h}p
  exec_root=/run/nekoh-$h
  ctr_ns=nekoh-$h
  subnet=${NSHOST_SUBNET:-}
  login_user=${NSHOST_LOGIN_USER:-}
  insecure_registry=${NSHOST_INSECURE_REGISTRY:-}
  if [[ -f $state/nshost.state ]]; then
    # shellcheck source=/dev/null
    source "$state/nshost.state"
  fi
}

# Stops sshd (login mode), dockerd and its containers. Leaves the netns.
stop_processes() {
  local pid
  pid=$(read_pid "$state/sshd.pid")
  [[ -z $pid ]] || stop_pid "$pid" sshd "sshd in $netns"
  rm -f "$state/sshd.pid"
  stop_engine "$state" "$exec_root" "$ctr_ns" "dockerd in $netns"
}

do_stop() {
  load_names
  stop_processes
  # delete_netns stops what still runs there (ssh sessions); with the last process of login mode's
  # mount namespace, every mount it made is gone.
  delete_netns "$netns" "$veth"
  rm -f "$state/env" "$state/docker.sock" "$state/nshost.state"
}

# ---------------------------------------------------------------- login mode

# Run by /bin/sh in the host's netns and a new private mount namespace; $1 = STATE_DIR, then
# dockerd and its flags. When STATE_DIR lies under a directory it covers (/tmp), STATE_DIR is first
# bound at the same path inside the directory that will cover it (the directories on the way made
# 0755: the user reaches STATE_DIR/authorized_keys and STATE_DIR/docker.sock through them).
# shellcheck disable=SC2016 # expanded by that inner sh
mount_and_exec_dockerd='
  set -e
  umask 022
  state=$1
  shift
  for f in passwd group shadow sudoers.d; do
    mount --bind "$state/etc/$f" "/etc/$f"
  done
  for pair in home:/home varlib:/var/lib tmp:/tmp; do
    src=$state/${pair%%:*} dst=${pair#*:}
    case $state/ in
    "$dst"/*)
      mkdir -p "$src${state#"$dst"}"
      mount --bind "$state" "$src${state#"$dst"}"
      ;;
    esac
    mount --rbind "$src" "$dst"
  done
  exec "$@"'

# The user's files reach sshd and the Docker socket through STATE_DIR's path, searched as the user.
check_login_path() {
  local d=$state perms
  case $state/ in
  /home/* | /var/lib/*) die "login mode: STATE_DIR $state may not lie under /home or /var/lib (the host's own directories cover them)" ;;
  /tmp/*) return 0 ;; # the host's /tmp is ours: its path to STATE_DIR is made 0755
  esac
  while d=$(dirname "$d") && [[ $d != / ]]; do
    perms=$(stat -c %A "$d")
    [[ ${perms:9:1} == [xt] ]] ||
      die "login mode: $d ($perms) is not searchable by others, so $login_user could not reach STATE_DIR/authorized_keys and STATE_DIR/docker.sock; put STATE_DIR under /tmp"
  done
}

# The host's /etc/passwd, /etc/group, /etc/shadow (made at the first start: a restart and a wipe
# keep the user's uid) and /etc/sudoers.d.
write_accounts() {
  local etc=$state/etc user=$login_user id gid
  mkdir -p "$etc"
  if [[ ! -f $etc/shadow ]]; then
    cp /etc/passwd /etc/group "$etc/"
    ! grep -q "^$user:" "$etc/passwd" || die "user $user exists on this machine already; pick another NSHOST_LOGIN_USER"
    ! grep -q "^$user:" "$etc/group" || die "group $user exists on this machine already; pick another NSHOST_LOGIN_USER"
    # One number free both as a uid and as a gid, as useradd picks for a user with its own group.
    id=$(awk -F: '{ used[$3] = 1 } END { for (n = 1000; n < 60000; n++) if (!(n in used)) { print n; exit } }' \
      "$etc/passwd" "$etc/group")
    [[ -n $id ]] || die "no free uid/gid >= 1000"
    echo "$user:x:$id:$id:EC2 Default User:/home/$user:/bin/bash" >>"$etc/passwd"
    echo "$user:x:$id:" >>"$etc/group"
    if grep -q '^docker:' "$etc/group"; then
      awk -F: -v OFS=: -v u="$user" '$1 == "docker" { $4 = ($4 == "" ? u : $4 "," u) } { print }' \
        "$etc/group" >"$etc/group.tmp"
      mv -f "$etc/group.tmp" "$etc/group"
    else
      gid=$(awk -F: '{ used[$3] = 1 } END { for (n = 999; n > 100; n--) if (!(n in used)) { print n; exit } }' "$etc/group")
      [[ -n $gid ]] || die "no free gid for group docker"
      echo "docker:x:$gid:$user" >>"$etc/group"
    fi
    chmod 644 "$etc/passwd" "$etc/group"
    # `*`, not `!`: sshd (UsePAM no) refuses a `!`-locked account even for a key. Mode and group
    # as the machine's (root:shadow 0640): the user cannot read it.
    install -m 640 -g "$(stat -c %g /etc/shadow)" /dev/null "$etc/shadow.tmp"
    cat /etc/shadow >"$etc/shadow.tmp"
    echo "$user:*:$(($(date +%s) / 86400)):0:99999:7:::" >>"$etc/shadow.tmp"
    mv -f "$etc/shadow.tmp" "$etc/shadow"
  fi
  mkdir -p "$etc/sudoers.d"
  chmod 750 "$etc/sudoers.d"
  # As cloud-init writes it on Amazon Linux; DOCKER_HOST kept so `sudo docker` reaches the engine
  # `docker` does (the socket is not the default one).
  local sudoers=$etc/sudoers.d/90-cloud-init-users
  printf '# Generated by tests/harness/nshost.sh\n%s ALL=(ALL) NOPASSWD:ALL\nDefaults env_keep += "DOCKER_HOST"\n' \
    "$user" >"$sudoers"
  chmod 440 "$sudoers"
  visudo -cq -f "$sudoers" || die "visudo rejects $sudoers"
}

# The file systems of a new machine, where missing: the user's home from /etc/skel, an empty
# /var/lib and /tmp.
make_file_systems() {
  local home=$state/home/$login_user ids
  mkdir -p "$state/home" "$state/varlib" "$state/tmp"
  chmod 755 "$state/home" "$state/varlib"
  chmod 1777 "$state/tmp"
  if [[ ! -d $home ]]; then
    ids=$(awk -F: -v u="$login_user" '$1 == u { print $3 ":" $4 }' "$state/etc/passwd")
    cp -R /etc/skel "$home"
    chown -R "$ids" "$home"
    chmod 700 "$home"
  fi
}

new_host_key() {
  rm -f "$state/ssh_host_ed25519_key" "$state/ssh_host_ed25519_key.pub"
  ssh-keygen -q -t ed25519 -N '' -C neko-test-nshost-host -f "$state/ssh_host_ed25519_key"
}

host_key() {
  cut -d' ' -f1,2 "$state/ssh_host_ed25519_key.pub"
}

write_ssh_files() {
  local addr=$1
  [[ -f $state/ssh_host_ed25519_key ]] || new_host_key
  [[ -f $state/client_ed25519 ]] ||
    ssh-keygen -q -t ed25519 -N '' -C neko-test-nshost-client -f "$state/client_ed25519"
  # Read by sshd as the user: world-readable, outside the home (which wipe empties).
  install -m 644 "$state/client_ed25519.pub" "$state/authorized_keys"
  cat >"$state/sshd_config" <<EOF
# Generated by tests/harness/nshost.sh
ListenAddress $addr:22
HostKey $state/ssh_host_ed25519_key
PidFile $state/sshd.pid
AuthorizedKeysFile $state/authorized_keys
AllowUsers $login_user
PermitRootLogin no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
# STATE_DIR may sit under a world-writable /tmp, which StrictModes rejects.
StrictModes no
Subsystem sftp internal-sftp
LogLevel VERBOSE
# The engine's socket is not at /var/run/docker.sock here.
SetEnv DOCKER_HOST=unix://$state/docker.sock
EOF
  echo "$addr,nshost $(host_key)" >"$state/known_hosts"
  cat >"$state/ssh_config" <<EOF
# Generated by tests/harness/nshost.sh: ssh -F $state/ssh_config nshost
Host nshost $addr
  HostName $addr
  Port 22
  User $login_user
  IdentityFile $state/client_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile $state/known_hosts
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  BatchMode yes
  ConnectTimeout 5
  LogLevel ERROR
EOF
}

# sshd in dockerd's (pid) mount namespace and the netns, logging to STATE_DIR/sshd.log (-e: its
# stderr); sets sshd_pid. setsid: sshd leaves the
# caller's process group. nsenter (without --fork) and setsid (not a group leader here) replace
# themselves, so $! is sshd's pid.
launch_sshd() {
  : >"$state/sshd.log"
  setsid nsenter --target "$pid" --mount --net -- "$sshd_bin" -D -e -f "$state/sshd_config" \
    </dev/null >>"$state/sshd.log" 2>&1 &
  sshd_pid=$!
  echo "$sshd_pid" >"$state/sshd.pid"
}

# Waits up to TIMEOUT seconds until the user logs in, then checks that it reaches Docker without
# sudo and that `sudo -n` works.
await_login() {
  local timeout=$1 deadline=$((SECONDS + $1)) err=""
  while :; do
    if ! pid_alive "$sshd_pid"; then
      tail_log "$state/sshd.log"
      die "sshd in $netns (pid $sshd_pid) exited during start-up; see $state/sshd.log"
    fi
    if err=$(ssh -F "$state/ssh_config" -o ConnectTimeout=2 nshost true 2>&1 </dev/null); then
      break
    fi
    if ((SECONDS >= deadline)); then
      tail_log "$state/sshd.log"
      die "sshd in $netns did not accept a login as $login_user within ${timeout}s (last ssh error: ${err:-none})"
    fi
    sleep 0.1
  done
  err=$(ssh -F "$state/ssh_config" nshost 'docker info --format "{{.ServerVersion}}" >/dev/null && sudo -n true' 2>&1 </dev/null) ||
    die "$login_user logs in but cannot use Docker (DOCKER_HOST=unix://$state/docker.sock) or sudo -n: $err"
}

# Starts the host's processes in its netns: dockerd, and in login mode dockerd in a mount namespace
# of its own with sshd beside it. Sets pid (dockerd) and sshd_pid.
boot() {
  local timeout=${NSHOST_READY_TIMEOUT:-30}
  local -a insecure=()
  [[ -z $insecure_registry ]] || insecure=(--insecure-registry "$insecure_registry")
  if [[ -z $login_user ]]; then
    # nsenter (without --fork) replaces itself with dockerd: $! is dockerd's pid.
    start_engine "$state" "$exec_root" "$ctr_ns" "$bridge" "$timeout" nsenter --net="/run/netns/$netns" -- "$dockerd_bin" ${insecure[@]+"${insecure[@]}"}
    return
  fi
  # nsenter, unshare (both without --fork) and sh's exec replace themselves: $! is dockerd's pid.
  start_engine "$state" "$exec_root" "$ctr_ns" "$bridge" "$timeout" \
    nsenter --net="/run/netns/$netns" -- unshare -m --propagation private \
    /bin/sh -c "$mount_and_exec_dockerd" sh "$state" "$dockerd_bin" --group docker ${insecure[@]+"${insecure[@]}"}
  launch_sshd
  await_login "$timeout"
}

write_host_env() {
  local vars=(
    "DOCKER_HOST=unix://$state/docker.sock"
    "DOCKER_BIN=$docker_bin"
    "DOCKER_CONFIG=$state/client"
    "NSHOST_ADDR=10.233.$subnet.2"
    "NSHOST_SIDE_ADDR=10.233.$subnet.1"
    "NSHOST_NETNS=$netns"
  )
  if [[ -n $login_user ]]; then
    vars+=(
      "NSHOST_SSH_USER=$login_user"
      "NSHOST_SSH_PORT=22"
      "NSHOST_SSH_KEY=$state/client_ed25519"
      "NSHOST_HOST_KEY=$(host_key)"
      "NSHOST_KNOWN_HOSTS=$state/known_hosts"
      "NSHOST_SSH_CONFIG=$state/ssh_config"
    )
  fi
  write_env "$state/env" "${vars[@]}"
}

# ---------------------------------------------------------------- verbs

do_start() {
  need_root
  need "$dockerd_bin" "$docker_bin" ip nsenter flock
  mkdir -p "$state"
  local sock=$state/docker.sock
  ((${#sock} < 100)) || die "socket path $sock is too long for a unix socket (use a shorter STATE_DIR)"
  load_names
  local pid sshd_pid=""
  pid=$(read_pid "$state/dockerd.pid")
  if [[ -n $pid ]] && pid_alive "$pid" dockerd && [[ -f $state/env ]] &&
    { [[ -z $login_user ]] || pid_alive "$(read_pid "$state/sshd.pid")" sshd; }; then
    start_ok=1 # leave the running host alone
    [[ $login_user == "${NSHOST_LOGIN_USER:-}" ]] ||
      die "the host of $state already runs with NSHOST_LOGIN_USER='$login_user' (dockerd pid $pid), not '${NSHOST_LOGIN_USER:-}'; stop it first"
    log "namespaced host already running (netns $netns, dockerd pid $pid)"
    return 0
  fi
  do_stop
  load_names
  if [[ -n $login_user ]]; then
    [[ $login_user =~ ^[a-z_][a-z0-9_-]{0,30}$ ]] || die "NSHOST_LOGIN_USER '$login_user' is not a user name"
    need unshare mount setsid install ssh ssh-keygen "$sshd_bin" sudo visudo
    check_login_path
  fi

  (
    flock -w 30 9 || die "timed out waiting for $lock"
    pick_subnet 10.233 NSHOST_SUBNET "$state"
    if netns_exists "$netns"; then
      die "netns $netns already exists (another harness with the same STATE_DIR?)"
    fi
    printf 'subnet=%q\nlogin_user=%q\ninsecure_registry=%q\n' "$subnet" "$login_user" "$insecure_registry" >"$state/nshost.state"
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

  if [[ -n $login_user ]]; then
    chmod 711 "$state"
    mkdir -p /run/sshd # sshd's privilege separation directory
    write_accounts
    make_file_systems
    write_ssh_files "10.233.$subnet.2"
  fi
  boot
  write_host_env
  start_ok=1
  if [[ -n $login_user ]]; then
    log "namespaced host up: $login_user@10.233.$subnet.2:22 (netns $netns, dockerd pid $pid, sshd pid $sshd_pid), DOCKER_HOST=unix://$sock; env in $state/env"
  else
    log "namespaced host up: netns $netns at 10.233.$subnet.2, dockerd pid $pid on unix://$sock; env in $state/env"
  fi
}

# The replacement machine: every process stopped (sessions too), the engine's data (containers,
# images, volumes), /var/lib, /tmp and the home deleted, a new host key; then booted again at the
# same address, with the same user and client key. DOCKER_CONFIG (this machine's client) stays.
do_wipe() {
  need_root
  load_names
  [[ -n $login_user && -f $state/env && -f $state/sshd_config ]] ||
    die "no host in login mode started in $state (run NSHOST_LOGIN_USER=ec2-user ${0##*/} start first)"
  netns_exists "$netns" || die "netns $netns of $state is gone"
  stop_processes
  local pids="" pid i
  for ((i = 0; i < 50; i++)); do
    pids=$(ip netns pids "$netns" 2>/dev/null || true)
    [[ -n $pids ]] || break
    for pid in $pids; do
      kill -KILL "$pid" 2>/dev/null || true
    done
    sleep 0.1
  done
  [[ -z $pids ]] || die "processes still in netns $netns: $pids"
  # The mount namespace went with its last process: these are plain directories again.
  rm -rf --one-file-system "${state:?}/data" "${state:?}/varlib" "${state:?}/tmp" "${state:?}/home"
  rm -f "$state/docker.sock"
  make_file_systems
  # An EC2 replacement keeps the host key Pulumi generated (cloud-init installs it again); a
  # re-installed machine gets a new one.
  [[ ${NSHOST_KEEP_HOST_KEY:-0} == 1 ]] || new_host_key
  write_ssh_files "10.233.$subnet.2"
  local sshd_pid=""
  boot
  write_host_env
  start_ok=1
  log "host of $state wiped: new host key $(host_key), dockerd pid $pid, sshd pid $sshd_pid"
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
wipe)
  trap '[[ $start_ok == 1 ]] || { log "wipe failed; stopping the host"; do_stop || true; }' EXIT
  do_wipe
  ;;
stop)
  need_root
  do_stop
  ;;
*) usage ;;
esac
