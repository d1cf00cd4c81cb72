#!/usr/bin/env bash
# shellcheck disable=SC2034 # `doing` is read by on_term, from scripts/step-preamble.sh
# The HTTPS front of a neko host: runs Caddy in the container neko-tls (host network), which gets
# and renews a certificate for SUBJECT by ACME, redirects HTTP to HTTPS and proxies to neko on
# 127.0.0.1; then waits until https://SUBJECT/ serves a certificate that verifies. It does not
# wait for neko: on a new host the front comes first (TURN shares its certificate, and neko's ICE
# servers name TURN), so Caddy answers 502 until neko runs; the rollout (neko-rollout.sh,
# NEKO_FRONT_URL) checks /health through the front once neko answers. Prints one line on stdout:
#   https://SUBJECT/ serves a certificate from <issuer> valid until <date>
#
# Usage: tls-front.sh IMAGE SUBJECT        (SUBJECT: the host's domain or its IP address)
# Env:   TLS_CADDYFILE       the Caddyfile (lib/caddy.ts); required
#        TLS_USER            uid:gid Caddy runs as (lib/caddy.ts TLS_USER); required. Not root, so
#                            the host's metadata guard (imds-guard.sh) can reject its packets; the
#                            data directory is given to it (through the image's chown, as root)
#        TLS_ROOT_CERT       PEM root of a private ACME server, trusted for the ACME connection
#                            (written beside the Caddyfile: /etc/caddy/acme-root.pem in the container)
#        TLS_EXPECT_ADDRESS  with a domain SUBJECT: the host's public address, which the name must
#                            resolve to (checked before anything else)
#        TLS_DIR             host directory for config/ (mounted read-only at /etc/caddy, readable
#                            by all: no secret) and data/ (certificates, mounted at /data); default
#                            ${NEKO_STATE_DIR:-/var/lib/neko-infra/host}/tls, created if missing
#        TLS_WAIT_SECONDS    how long to wait for the certificate (default 180)
#        TLS_CA_FILE         tests only: CA bundle to verify the served certificate with
#                            (default: the system's)
# Idempotent: the container carries a hash of the image, the Caddyfile, the root and TLS_DIR; when
# it runs with the same hash nothing is restarted. The check connects to 127.0.0.1:443 with
# SUBJECT's name (a host need not reach its own public address), so it also proves the certificate
# is served to clients that send no SNI (browsers, for an IP address).
set -euo pipefail

readonly name=neko-tls label=neko-infra.config-hash
die() {
  echo "tls-front: $*" >&2
  exit 1
}
log() { echo "tls-front: $*" >&2; }
(($# == 2)) || {
  echo "usage: tls-front.sh IMAGE SUBJECT" >&2
  exit 2
}
image=$1
subject=$2
doing="starting"


if [[ $subject == *:* || $subject =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
  ip_subject=1
else
  ip_subject=0
  [[ $subject =~ ^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$ ]] ||
    die "SUBJECT '$subject' is neither an IP address nor a domain name"
fi
[[ -n ${TLS_CADDYFILE:-} ]] || die "TLS_CADDYFILE is empty: the Caddyfile comes from lib/caddy.ts"
[[ ${TLS_USER:-} =~ ^[1-9][0-9]*:[0-9]+$ ]] || die "TLS_USER must be a uid:gid other than root's, not '${TLS_USER:-}' (lib/caddy.ts TLS_USER)"
wait_seconds=${TLS_WAIT_SECONDS:-180}
[[ $wait_seconds =~ ^[1-9][0-9]*$ ]] || die "TLS_WAIT_SECONDS must be a whole number of seconds, not '$wait_seconds'"
if [[ -n ${TLS_CA_FILE:-} && ! -r $TLS_CA_FILE ]]; then
  die "TLS_CA_FILE $TLS_CA_FILE is not readable"
fi

# A domain must point at this host before an ACME server can validate it.
if ((!ip_subject)) && [[ -n ${TLS_EXPECT_ADDRESS:-} ]]; then
  doing="resolving $subject"
  resolved=$(getent ahosts "$subject" 2>/dev/null | awk '{ print $1 }' | sort -u | tr '\n' ' ') || true
  resolved=${resolved% }
  if ! tr ' ' '\n' <<<"$resolved" | grep -qxF -- "$TLS_EXPECT_ADDRESS"; then
    if [[ $TLS_EXPECT_ADDRESS == *:* ]]; then record=AAAA; else record=A; fi
    die "neko-infra:host.domain is $subject, which resolves to ${resolved:-nothing}, not to this host's address $TLS_EXPECT_ADDRESS: set the DNS $record record of $subject to $TLS_EXPECT_ADDRESS (and wait until it resolves), or change host.domain"
  fi
fi

command -v docker >/dev/null 2>&1 || die "docker is not on PATH for $(id -un)@$(hostname)"
command -v curl >/dev/null 2>&1 || die "curl is not on PATH for $(id -un)@$(hostname) (it checks the served certificate)"
tmp=$(mktemp -d)
step_tmp+=("$tmp") # removed on exit (scripts/step-preamble.sh)

doing="asking the Docker engine"
if ! timeout 30 docker version --format '{{.Server.Version}}' >/dev/null 2>"$tmp/err"; then
  die "the Docker engine does not answer $(id -un)@$(hostname) (DOCKER_HOST=${DOCKER_HOST:-its default socket}): $(grep -v '^[[:space:]]*$' "$tmp/err" | tail -n 1 || echo "no answer within 30s")"
fi

# ---------------------------------------------------------------- configuration

dir=${TLS_DIR:-${NEKO_STATE_DIR:-/var/lib/neko-infra/host}/tls}
[[ $dir == /* ]] || die "TLS_DIR must be an absolute path, not '$dir'"
doing="writing the configuration to $dir"
(umask 077 && mkdir -p "$dir/data") || die "cannot create $dir/data"
# Caddy (TLS_USER) reads its configuration: no secret in it.
{ mkdir -p "$dir/config" && chmod 0755 "$dir/config"; } || die "cannot create $dir/config"
# write FILE: standard input to FILE (readable by all), replaced atomically.
write() {
  cat >"$1.tmp.$$" && chmod 0644 "$1.tmp.$$" && mv -f "$1.tmp.$$" "$1"
}
printf '%s\n' "$TLS_CADDYFILE" | write "$dir/config/Caddyfile"
if [[ -n ${TLS_ROOT_CERT:-} ]]; then
  grep -q -- '-----BEGIN CERTIFICATE-----' <<<"$TLS_ROOT_CERT" || die "TLS_ROOT_CERT is not a PEM certificate"
  printf '%s\n' "$TLS_ROOT_CERT" | write "$dir/config/acme-root.pem"
else
  rm -f "$dir/config/acme-root.pem"
fi

# ---------------------------------------------------------------- image and container

doing="looking for $image"
if ! image_id=$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null); then
  doing="pulling $image"
  log "pulling $image"
  docker pull --quiet "$image" >/dev/null 2>"$tmp/err" ||
    die "docker pull $image failed: $(grep -v '^[[:space:]]*$' "$tmp/err" | tail -n 2)"
  image_id=$(docker image inspect --format '{{.Id}}' "$image")
fi

# The file system holding $dir too: once the setup step mounts a volume there, Caddy moves onto it.
fs_id=$(stat -c %d "$dir" 2>/dev/null || echo unknown)
hash=$(printf '%s\0' "$image" "$image_id" "$TLS_CADDYFILE" "${TLS_ROOT_CERT:-}" "$dir" "$TLS_USER" "$fs_id" | sha256sum | cut -c1-32)
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
  # The certificates become TLS_USER's (an earlier front ran Caddy as root); the login user
  # running this script may not chown them itself.
  doing="giving $dir/data to $TLS_USER"
  docker run --rm --network none --user 0:0 --entrypoint chown -v "$dir/data:/data" "$image" \
    -R "$TLS_USER" /data >/dev/null 2>"$tmp/err" ||
    die "cannot give $dir/data to $TLS_USER with the image's chown: $(grep -v '^[[:space:]]*$' "$tmp/err" | grep -v 'IPv4 forwarding' | tail -n 1)"
  doing="starting $name"
  docker run -d --name "$name" --network host --restart unless-stopped --label "$label=$hash" \
    --user "$TLS_USER" -v "$dir/config:/etc/caddy:ro" -v "$dir/data:/data" \
    "$image" caddy run --config /etc/caddy/Caddyfile --adapter caddyfile >/dev/null 2>"$tmp/err" ||
    die "docker run $name failed: $(grep -v '^[[:space:]]*$' "$tmp/err" | grep -v 'IPv4 forwarding is disabled' | tail -n 2)"
  log "started $name ($image) for $subject"
fi

# ---------------------------------------------------------------- wait for the certificate

if [[ $subject == *:* ]]; then url_host="[$subject]"; else url_host=$subject; fi
check=(curl -sS --max-time 5 --connect-to ":443:127.0.0.1:443")
[[ -z ${TLS_CA_FILE:-} ]] || check+=(--cacert "$TLS_CA_FILE")

# json_field KEY: the first "KEY":"value" of a JSON log line on stdin, unescaped.
json_field() {
  sed -nE "s/.*\"$1\":\"(([^\"\\\\]|\\\\.)*)\".*/\\1/p" | head -n 1 | sed -e 's/\\"/"/g' -e 's/\\\\/\\/g'
}

# Caddy's ACME errors among its last log lines, one readable line each.
acme_errors() {
  local line msg err ident logger
  docker logs --tail 300 "$name" 2>&1 |
    grep -E 'could not get certificate|job failed|challenge failed|HTTP request failed|validating authorization|will retry|unknown profile|obtaining certificate|no (solvers|certificate)|rate ?limit|unauthorized|invalid' |
    grep -iE '"level":"(error|warn)"|error|fail|retry' | tail -n 20 |
    while IFS= read -r line; do
      if [[ $line == \{* ]]; then
        logger=$(json_field logger <<<"$line")
        msg=$(json_field msg <<<"$line")
        ident=$(json_field identifier <<<"$line")
        err=$(json_field error <<<"$line")
        [[ -n $err ]] || err=$(json_field detail <<<"$line")
        echo "  ${logger:+$logger: }$msg${ident:+ ($ident)}${err:+: $err}" | cut -c1-400
      else
        echo "  $line" | cut -c1-400
      fi
    done |
    awk '$0 == prev { n++; next } { flush(); prev = $0; n = 1 } END { flush() }
      function flush() { if (n) print prev (n > 1 ? " (" n " times)" : "") }' | tail -n 6
}

fail_waiting() {
  local errors
  errors=$(acme_errors || true)
  {
    echo "tls-front: no verified certificate for $subject within ${wait_seconds}s (last check: $(tail -n 1 "$tmp/curl.err" 2>/dev/null | cut -c1-200))"
    if [[ -n $errors ]]; then
      echo "tls-front: Caddy's last ACME errors (docker logs $name):"
      echo "$errors"
    else
      echo "tls-front: Caddy logged no ACME error; its last lines (docker logs $name):"
      docker logs --tail 8 "$name" 2>&1 | cut -c1-300 | sed 's/^/  /'
    fi
    echo "tls-front: hint: the ACME server validates by connecting to $subject: port 80 (HTTP challenge) must be reachable from the internet"
  } >&2
  exit 1
}

doing="waiting for the certificate of $subject"
deadline=$((SECONDS + wait_seconds))
started=$SECONDS
next_progress=$((SECONDS + 20))
restarts=$(docker container inspect --format '{{.RestartCount}}' "$name" 2>/dev/null || echo 0)
while :; do
  # Any HTTP answer (502 while neko is not there yet) means the certificate verified.
  code=$("${check[@]}" -o /dev/null -w '%{http_code}' "https://$url_host/health" 2>"$tmp/curl.err") || true
  [[ ! $code =~ ^[1-5][0-9][0-9]$ ]] || break
  status=$(docker container inspect --format '{{.State.Status}} {{.RestartCount}}' "$name" 2>/dev/null || echo "missing 0")
  if [[ ${status% *} != running || ${status#* } != "$restarts" ]]; then
    echo "tls-front: $name is ${status% *} (restarts: ${status#* }); its last lines:" >&2
    docker logs --tail 10 "$name" 2>&1 | cut -c1-300 | sed 's/^/  /' >&2
    die "$name does not keep running (is port 80 or 443 taken by another server on this host?)"
  fi
  if ((SECONDS >= deadline)); then
    fail_waiting
  fi
  if ((SECONDS >= next_progress)); then
    log "waiting for the certificate of $subject ($((SECONDS - started)) s)"
    next_progress=$((SECONDS + 20))
  fi
  sleep 1
done

# ---------------------------------------------------------------- what is served

doing="reading the served certificate"
"${check[@]}" -v -o /dev/null "https://$url_host/health" 2>"$tmp/verbose" || true
issuer=$(sed -nE 's/^\*[[:space:]]+issuer: //p' "$tmp/verbose" | head -n 1)
expire=$(sed -nE 's/^\*[[:space:]]+expire date: //p' "$tmp/verbose" | head -n 1)
org=$(tr ';,' '\n' <<<"$issuer" | sed -nE 's/^[[:space:]]*O ?= ?//p' | head -n 1)
cn=$(tr ';,' '\n' <<<"$issuer" | sed -nE 's/^[[:space:]]*CN ?= ?//p' | head -n 1)
if [[ -n $org && -n $cn ]]; then
  issued_by="$org ($cn)"
else
  issued_by=${cn:-${issuer:-an unknown issuer}}
fi
until=$(date -u -d "$expire" +%Y-%m-%dT%H:%M:%SZ 2>/dev/null || echo "${expire:-an unknown date}")
log "ready in ${SECONDS}s"
echo "https://$url_host/ serves a certificate from $issued_by valid until $until"
