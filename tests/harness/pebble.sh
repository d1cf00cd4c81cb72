#!/usr/bin/env bash
# Pebble, Let's Encrypt's ACME test server, for the TLS front tests: built from its Go module
# (github.com/letsencrypt/pebble/v2@v2.10.3, cached by tests/harness/go-tool.sh) and run on ADDR.
#
#   pebble.sh start STATE_DIR ADDR     e.g. the machine's side of a nshost.sh veth
#   pebble.sh stop  STATE_DIR          (idempotent)
#
# ACME on https://ADDR:14000/dir, management API on https://ADDR:15000. Both are served with a
# certificate for ADDR that start signs with a CA of its own (STATE_DIR/minica.pem, made with
# openssl, valid 2 days): the "minica" root an ACME client must trust to talk to Pebble.
# Validation is real: httpPort 80 and tlsPort 443 of the identifier's address (no
# PEBBLE_VA_ALWAYS_VALID). Profiles: default (90 days), shortlived (160 hours, as Let's
# Encrypt's), tiny (5 minutes). PEBBLE_VA_NOSLEEP=1 (no random 0-15 s wait before validating),
# PEBBLE_WFE_NONCEREJECT=0 (no deliberately rejected nonces), Retry-After 1 s for orders and
# authorizations: fast and deterministic runs. Pebble keeps everything in memory and makes a new
# issuing CA at every start: its root is fetched from the management API after start.
#
# start writes STATE_DIR/env (sourceable):
#   PEBBLE_DIR_URL    https://ADDR:14000/dir
#   PEBBLE_ROOT_FILE  the root that signs issued certificates (GET /roots/0)
#   PEBBLE_MINICA     the CA of Pebble's own API certificate
#   PEBBLE_LOG        Pebble's log
# Env (optional): PEBBLE_READY_TIMEOUT (seconds, default 15; a cold build of Pebble is not
# counted: go-tool.sh bounds it).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh disable=SC1091
source "$here/lib.sh"

usage() {
  echo "usage: ${0##*/} start STATE_DIR ADDR | stop STATE_DIR" >&2
  exit 2
}

do_stop() {
  local pid
  pid=$(read_pid "$state/pebble.pid")
  if [[ -n $pid ]]; then
    stop_pid "$pid" pebble pebble
  fi
  rm -f "$state/pebble.pid" "$state/env"
}

# make_certs ADDR: a CA and Pebble's API certificate for ADDR, signed by it.
make_certs() {
  local addr=$1
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=neko-infra test pebble minica" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$state/minica.key" -out "$state/minica.pem" 2>"$state/openssl.log"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/CN=$addr" -keyout "$state/api.key" -out "$state/api.csr" 2>>"$state/openssl.log"
  printf 'subjectAltName=IP:%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' "$addr" >"$state/api.ext"
  openssl x509 -req -in "$state/api.csr" -CA "$state/minica.pem" -CAkey "$state/minica.key" \
    -CAcreateserial -days 2 -extfile "$state/api.ext" -out "$state/api.pem" 2>>"$state/openssl.log"
  chmod 600 "$state/minica.key" "$state/api.key"
}

write_config() {
  local addr=$1
  cat >"$state/pebble-config.json" <<EOF
{
  "pebble": {
    "listenAddress": "$addr:14000",
    "managementListenAddress": "$addr:15000",
    "certificate": "$state/api.pem",
    "privateKey": "$state/api.key",
    "httpPort": 80,
    "tlsPort": 443,
    "ocspResponderURL": "",
    "externalAccountBindingRequired": false,
    "retryAfter": { "authz": 1, "order": 1 },
    "keyAlgorithm": "ecdsa",
    "profiles": {
      "default": { "description": "90 days", "validityPeriod": 7776000 },
      "shortlived": { "description": "160 hours, as Let's Encrypt's shortlived", "validityPeriod": 576000 },
      "tiny": { "description": "5 minutes", "validityPeriod": 300 }
    }
  }
}
EOF
}

do_start() {
  local addr=$1 timeout=${PEBBLE_READY_TIMEOUT:-15}
  need_root
  need openssl curl
  [[ $addr =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "ADDR must be an IPv4 address, not '$addr'"
  ipv4_is_local "$addr" || die "$addr is not an address of this machine"
  mkdir -p "$state"
  local pid
  pid=$(read_pid "$state/pebble.pid")
  if [[ -n $pid ]] && pid_alive "$pid" pebble && [[ -f $state/env ]]; then
    start_ok=1
    log "pebble already running (pid $pid)"
    return 0
  fi
  do_stop
  local bin
  bin=$("$here/go-tool.sh" pebble) || die "cannot build pebble (see above)"
  make_certs "$addr" || {
    tail_log "$state/openssl.log"
    die "openssl could not make Pebble's certificates"
  }
  write_config "$addr"

  : >"$state/pebble.log"
  PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 \
    "$bin" -config "$state/pebble-config.json" -strict </dev/null >>"$state/pebble.log" 2>&1 &
  pid=$!
  echo "$pid" >"$state/pebble.pid"

  local deadline=$((SECONDS + timeout))
  while :; do
    if ! pid_alive "$pid"; then
      tail_log "$state/pebble.log"
      die "pebble (pid $pid) exited during start-up; see $state/pebble.log"
    fi
    if curl -sf --max-time 2 --cacert "$state/minica.pem" -o "$state/issued-root.pem" \
      "https://$addr:15000/roots/0" 2>/dev/null && grep -q 'BEGIN CERTIFICATE' "$state/issued-root.pem" &&
      [[ $(http_code "https://$addr:14000/dir" --cacert "$state/minica.pem") == 200 ]]; then
      break
    fi
    if ((SECONDS >= deadline)); then
      tail_log "$state/pebble.log"
      die "pebble on $addr did not serve its directory and root within ${timeout}s"
    fi
    sleep 0.1
  done
  write_env "$state/env" \
    "PEBBLE_DIR_URL=https://$addr:14000/dir" \
    "PEBBLE_ROOT_FILE=$state/issued-root.pem" \
    "PEBBLE_MINICA=$state/minica.pem" \
    "PEBBLE_LOG=$state/pebble.log"
  start_ok=1
  log "pebble up on https://$addr:14000/dir (pid $pid); env in $state/env"
}

[[ $# -ge 2 ]] || usage
cmd=$1
state=$(abs_dir "$2")
start_ok=0
case $cmd in
start)
  [[ $# -eq 3 ]] || usage
  trap '[[ $start_ok == 1 ]] || { log "start failed; cleaning up"; do_stop || true; }' EXIT
  do_start "$3"
  ;;
stop)
  [[ $# -eq 2 ]] || usage
  do_stop
  ;;
*) usage ;;
esac
