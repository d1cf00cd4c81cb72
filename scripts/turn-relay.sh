#!/usr/bin/env bash
# shellcheck disable=SC2034 # `doing` is read by on_term, from scripts/step-preamble.sh
# The TURN relay of a neko host: runs coturn in the container neko-turn (host network) with the
# configuration from lib/turn.ts, waits until it listens, and prints one line on stdout:
#   neko-turn listens on 3478 (UDP, TCP) and 5349 (TLS), relaying on UDP 49160-49200
#
# Usage: turn-relay.sh IMAGE
# Env:   TURN_CONF      the turnserver configuration (lib/turn.ts); a secret (it holds the user's
#                       password): written 0600 root into TURN_DIR, never printed
#        TURN_DIR       host directory for it (default ${NEKO_STATE_DIR:-/var/lib/neko-infra/host}/turn),
#                       created 0700 if missing, mounted read-only at /etc/neko-turn
#        TLS_DIR        the TLS front's directory (tls-front.sh; same default): with TURN over TLS
#                       its data/ is mounted read-only at /tls (lib/turn.ts TURN_TLS_DIR)
#        TURN_TLS_CERT, TURN_TLS_KEY  with TURN over TLS (tls-listening-port in TURN_CONF): the
#                       front's certificate and key as the container sees them, under /tls
#        TURN_WAIT_SECONDS   how long to wait for the listeners (default 60)
#        TURN_RELOAD_SECONDS how often the container reloads the certificate (default 43200: 12 h)
#
# How the container runs: as root, with its own entrypoint (/bin/sh -c, below) instead of the
# image's. It copies the front's certificate and key (Caddy keeps them 0600 root in 0700
# directories) to /run/neko-turn, readable by nobody only, and starts turnserver, which reads its
# root-only configuration, binds, and then drops to nobody:nogroup (proc-user/proc-group in
# TURN_CONF). coturn reads certificates only at start and on SIGUSR2, so every
# TURN_RELOAD_SECONDS the entrypoint copies them again and sends SIGUSR2; Caddy renews short-lived
# certificates days before they expire. The entrypoint waits on turnserver: when it dies the
# container exits and Docker restarts it (--restart unless-stopped).
# Idempotent: the container carries a hash of its image, configuration and mounts; when it runs
# with the same hash nothing is restarted.
set -euo pipefail

readonly name=neko-turn label=neko-infra.config-hash tls_mount=/tls
die() {
  echo "turn-relay: $*" >&2
  exit 1
}
log() { echo "turn-relay: $*" >&2; }
(($# == 1)) || {
  echo "usage: turn-relay.sh IMAGE" >&2
  exit 2
}
image=$1
doing="starting"



[[ -n ${TURN_CONF:-} ]] || die "TURN_CONF is empty: the configuration comes from lib/turn.ts"
wait_seconds=${TURN_WAIT_SECONDS:-60}
reload_seconds=${TURN_RELOAD_SECONDS:-43200}
[[ $wait_seconds =~ ^[1-9][0-9]*$ ]] || die "TURN_WAIT_SECONDS must be a whole number of seconds, not '$wait_seconds'"
[[ $reload_seconds =~ ^[1-9][0-9]*$ ]] || die "TURN_RELOAD_SECONDS must be a whole number of seconds, not '$reload_seconds'"

# conf_value KEY: the value of KEY=... in TURN_CONF (the last one), or nothing.
conf_value() {
  sed -nE "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*([^[:space:]]*).*/\\1/p" <<<"$TURN_CONF" | tail -n 1
}
port=$(conf_value listening-port)
port=${port:-3478}
tls_port=$(conf_value tls-listening-port)
relay="$(conf_value min-port)-$(conf_value max-port)"
[[ $port =~ ^[0-9]+$ && (-z $tls_port || $tls_port =~ ^[0-9]+$) ]] || die "TURN_CONF has a malformed listening-port or tls-listening-port"

state_dir=${NEKO_STATE_DIR:-/var/lib/neko-infra/host}
dir=${TURN_DIR:-$state_dir/turn}
tls_dir=${TLS_DIR:-$state_dir/tls}
[[ $dir == /* && $tls_dir == /* ]] || die "TURN_DIR and TLS_DIR must be absolute paths"

# TURN over TLS: the front's certificate must be there (tls-front.sh ran and succeeded).
cert=${TURN_TLS_CERT:-}
key=${TURN_TLS_KEY:-}
if [[ -n $tls_port ]]; then
  [[ -n $cert && -n $key ]] || die "TURN_CONF has tls-listening-port=$tls_port but TURN_TLS_CERT/TURN_TLS_KEY do not name the front's certificate"
  for f in "$cert" "$key"; do
    [[ $f == "$tls_mount"/* ]] || die "TURN_TLS_CERT and TURN_TLS_KEY must lie under $tls_mount (the front's data as the container sees it), not $f"
  done
elif [[ -n $cert || -n $key ]]; then
  die "TURN_TLS_CERT/TURN_TLS_KEY are set but TURN_CONF has no tls-listening-port"
fi

command -v docker >/dev/null 2>&1 || die "docker is not on PATH for $(id -un)@$(hostname)"
tmp=$(mktemp -d)
step_tmp+=("$tmp") # removed on exit (scripts/step-preamble.sh)

doing="asking the Docker engine"
if ! timeout 30 docker version --format '{{.Server.Version}}' >/dev/null 2>"$tmp/err"; then
  die "the Docker engine does not answer $(id -un)@$(hostname) (DOCKER_HOST=${DOCKER_HOST:-its default socket}): $(grep -v '^[[:space:]]*$' "$tmp/err" | tail -n 1 || echo "no answer within 30s")"
fi

doing="writing the configuration to $dir"
(umask 077 && mkdir -p "$dir") || die "cannot create $dir"
chmod 700 "$dir"
# The password never leaves this file: 0600 root, in a 0700 directory (umask before creating it).
(umask 077 && printf '%s' "$TURN_CONF" >"$dir/turnserver.conf.tmp.$$" && mv -f "$dir/turnserver.conf.tmp.$$" "$dir/turnserver.conf")

# Runs as root in the container (busybox or any POSIX sh): see the header.
# shellcheck disable=SC2016 # expanded by the container's sh
entrypoint='set -eu
certs=/run/neko-turn
copy_certs() {
  [ -n "${TURN_TLS_CERT:-}" ] || return 0
  mkdir -p "$certs"
  cp "$TURN_TLS_CERT" "$certs/cert.pem.new" && cp "$TURN_TLS_KEY" "$certs/key.pem.new" &&
    chown nobody:nogroup "$certs/cert.pem.new" "$certs/key.pem.new" &&
    chmod 0400 "$certs/cert.pem.new" "$certs/key.pem.new" &&
    mv -f "$certs/cert.pem.new" "$certs/cert.pem" && mv -f "$certs/key.pem.new" "$certs/key.pem"
}
copy_certs
turnserver -c /etc/neko-turn/turnserver.conf &
pid=$!
trap "kill -TERM $pid 2>/dev/null || true" TERM INT
(
  while sleep "$TURN_RELOAD_SECONDS"; do
    if copy_certs; then
      echo "neko-turn: certificate copied again; asking turnserver to reload it (SIGUSR2)"
      kill -USR2 "$pid" 2>/dev/null || true
    else
      echo "neko-turn: cannot copy the certificate; turnserver keeps the one it has" >&2
    fi
  done
) &
status=0
wait "$pid" || status=$?
while kill -0 "$pid" 2>/dev/null; do wait "$pid" || status=$?; done
echo "neko-turn: turnserver exited ($status)" >&2
exit "$status"'

doing="looking for $image"
if ! image_id=$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null); then
  doing="pulling $image"
  log "pulling $image"
  docker pull --quiet "$image" >/dev/null 2>"$tmp/err" ||
    die "docker pull $image failed: $(grep -v '^[[:space:]]*$' "$tmp/err" | tail -n 2)"
  image_id=$(docker image inspect --format '{{.Id}}' "$image")
fi

# The front's certificate must be there (tls-front.sh ran and succeeded). Caddy keeps it 0600
# root in 0700 directories, which the login user (ec2-user) cannot look into: look as the
# container will, as root with the front's data mounted where TURN_CONF expects it.
if [[ -n $tls_port ]]; then
  doing="looking for the TLS front's certificate"
  # shellcheck disable=SC2016 # expanded by the container's sh
  if ! docker run --rm --network none --user 0:0 --entrypoint /bin/sh \
    --mount "type=bind,source=$tls_dir/data,target=$tls_mount,readonly" "$image" \
    -c 'for f in "$@"; do [ -f "$f" ] || { echo "no $f"; exit 1; }; done' check "$cert" "$key" >"$tmp/err" 2>&1; then
    die "the TLS front has no certificate for TURN over TLS in $tls_dir/data ($(grep -v '^[[:space:]]*$' "$tmp/err" | grep -v 'IPv4 forwarding' | tail -n 1); has tls-front.sh obtained its certificate on this host?)"
  fi
fi

hash=$(printf '%s\0' "$image" "$image_id" "$TURN_CONF" "$dir" "$tls_dir" "$cert" "$key" "$reload_seconds" "$entrypoint" | sha256sum | cut -c1-32)
doing="inspecting the container $name"
current=$(docker container inspect --format "{{.State.Running}} {{index .Config.Labels \"$label\"}}" "$name" 2>/dev/null || true)
if [[ $current == "true $hash" ]]; then
  log "$name runs this configuration already: nothing restarted"
else
  if [[ -n $current ]]; then
    doing="removing the old $name"
    log "replacing $name (its configuration changed, or it was not running)"
    docker rm -f "$name" >/dev/null 2>"$tmp/err" || die "cannot remove the old $name: $(tail -n 1 "$tmp/err")"
  fi
  run=(docker run -d --name "$name" --network host --restart unless-stopped --label "$label=$hash"
    --user 0:0 -v "$dir:/etc/neko-turn:ro" -e "TURN_RELOAD_SECONDS=$reload_seconds")
  if [[ -n $tls_port ]]; then
    run+=(-v "$tls_dir/data:$tls_mount:ro" -e "TURN_TLS_CERT=$cert" -e "TURN_TLS_KEY=$key")
  fi
  doing="starting $name"
  "${run[@]}" --entrypoint /bin/sh "$image" -c "$entrypoint" neko-turn >/dev/null 2>"$tmp/err" ||
    die "docker run $name failed: $(grep -v '^[[:space:]]*$' "$tmp/err" | grep -v 'IPv4 forwarding is disabled' | tail -n 2)"
  log "started $name ($image)"
fi

# ---------------------------------------------------------------- wait until it listens

# listening PORT: something accepts TCP connections on 127.0.0.1:PORT.
listening() {
  # shellcheck disable=SC2016 # $1 of the inner bash
  timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' listening "$1" 2>/dev/null
}
doing="waiting for $name to listen on $port${tls_port:+ and $tls_port}"
deadline=$((SECONDS + wait_seconds))
restarts=$(docker container inspect --format '{{.RestartCount}}' "$name" 2>/dev/null || echo 0)
while :; do
  if listening "$port" && { [[ -z $tls_port ]] || listening "$tls_port"; }; then
    break
  fi
  status=$(docker container inspect --format '{{.State.Status}} {{.RestartCount}}' "$name" 2>/dev/null || echo "missing 0")
  if [[ ${status% *} != running || ${status#* } != "$restarts" ]]; then
    echo "turn-relay: $name is ${status% *} (restarts: ${status#* }); its last lines:" >&2
    docker logs --tail 12 "$name" 2>&1 | cut -c1-300 | sed 's/^/  /' >&2
    die "$name does not keep running"
  fi
  if ((SECONDS >= deadline)); then
    echo "turn-relay: its last lines (docker logs $name):" >&2
    docker logs --tail 12 "$name" 2>&1 | cut -c1-300 | sed 's/^/  /' >&2
    die "$name does not listen on 127.0.0.1:$port${tls_port:+ and :$tls_port} after ${wait_seconds}s (another TURN server on the host?)"
  fi
  sleep 0.5
done

# A rule coturn could not read is dropped while the server runs on: refuse that.
problems=$(docker logs "$name" 2>&1 | grep -E 'Wrong address format|CONFIG ERROR|Unknown user name|no certificate found|invalid private key|cannot find .*file' | sort -u | head -n 5 || true)
if [[ -n $problems ]]; then
  echo "turn-relay: coturn reported problems with its configuration:" >&2
  cut -c1-300 <<<"$problems" | sed 's/^/  /' >&2
  die "$name runs, but not as configured (see above)"
fi

log "ready in ${SECONDS}s"
echo "$name listens on $port (UDP, TCP)${tls_port:+ and $tls_port (TLS)}, relaying on UDP $relay"
