#!/usr/bin/env bash
# shellcheck disable=SC2034,SC2154 # lock_held is read, and health_addr set, by scripts/neko-lib.sh
# Creates neko afresh from the spec scripts/neko-rollout.sh last deployed, wherever a stopped neko
# would otherwise be started again: at boot (a wake after an idle stop) and after a Docker daemon
# restart. An image may be unable to start the same container twice (the Nix-built neko image's
# entrypoint creates its user with `getent ... || groupadd` and has no getent: a second start exits
# 9), so neko runs with --restart=no and is never started twice; this script makes a new one.
#
# Usage: neko-restore.sh [--watch]
#   (none)   once: when NAME, or NAME-previous (a swap the power cut short), exists and does not
#            run, remove NAME and create it from SPEC_DIR/NAME-specs/current (its profile's stale
#            Singleton* locks cleared first), then wait for /health. Nothing to do (exit 0): NAME
#            runs, no spec was recorded, or there is no container at all (a neko that
#            `pulumi destroy` removed never comes back). Exit 1: the new neko did not come up.
#   --watch  what neko-restore.service runs (host-bootstrap.sh installs it on hosts with systemd):
#            the above each time the Docker engine answers again: at boot and after every daemon
#            restart, however it happened (it follows `docker events` until the engine goes away).
#            A failed restore is tried again 3 times, 30 s apart. Runs until stopped.
# Env: NEKO_NAME (default neko); NEKO_STATE_DIR: SPEC_DIR, as neko-rollout.sh chooses it (unset:
#      /var/lib/neko-infra/host when this user can write it, else ${XDG_STATE_HOME:-~/.local/state}/neko-infra);
#      NEKO_LOCK_SECONDS (default 300): how long to wait for a rollout of the same NAME (the same
#      lock as neko-rollout.sh's); NEKO_HEALTH_SECONDS: the /health budget (default: the spec's).
# Lines go to stderr (the journal). The spec's environment file holds secrets: it goes to
# `docker run --env-file` only, and nothing here prints it.
set -euo pipefail
# scripts/neko-lib.sh: in front of this text where the setup step installs it, beside it in a checkout.
if ! declare -F wait_healthy >/dev/null; then
  # shellcheck source=/dev/null
  source "$(dirname "${BASH_SOURCE[0]}")/neko-lib.sh"
fi

me=neko-restore
log() { echo "$me: $*" >&2; }

name=${NEKO_NAME:-neko}
prev=$name-previous
lock_seconds=${NEKO_LOCK_SECONDS:-300}
health_override=${NEKO_HEALTH_SECONDS:-}
host_state_dir=/var/lib/neko-infra/host
lock_held=""
fail_reason=""
tmp=""

usage() {
  echo "usage: neko-restore.sh [--watch]  (env: see its header)" >&2
  exit 2
}

# SPEC_DIR: as neko-rollout.sh's choose_spec_dir.
spec_dir() {
  if [[ -n ${NEKO_STATE_DIR:-} ]]; then
    printf '%s' "$NEKO_STATE_DIR"
  elif [[ -d $host_state_dir && -w $host_state_dir ]]; then
    printf '%s' "$host_state_dir"
  elif [[ -n ${XDG_STATE_HOME:-} ]]; then
    printf '%s' "$XDG_STATE_HOME/neko-infra"
  elif [[ -n ${HOME:-} ]]; then
    printf '%s' "$HOME/.local/state/neko-infra"
  else
    log "neither NEKO_STATE_DIR nor HOME is set: no spec to read"
    exit 1
  fi
}

secrets=()
# 0 when the restore is done or there is nothing to do; 1 with fail_reason.
restore_once() {
  local dir specs hash line key value img="" prof="" port="" budget=150 st status since started
  local -a args=()
  dir=$(spec_dir)
  specs=$dir/$name-specs
  if [[ ! -f $specs/current ]]; then
    log "no spec recorded in $specs (never deployed here, or taken off by pulumi destroy): nothing to restore"
    return 0
  fi
  take_lock "$dir/neko-rollout-$name.lock" || return 1
  hash=$(cat "$specs/current")
  if [[ ! $hash =~ ^[0-9a-f]{64}$ || ! -f $specs/$hash.args || ! -f $specs/$hash.env ]]; then
    release_lock
    fail_reason="$specs/current names no complete spec ('$hash')"
    return 1
  fi
  st=$(docker inspect --format '{{.State.Status}}' "$name" 2>/dev/null) || st=absent
  case $st in
    running | paused)
      release_lock
      log "$name runs: nothing to restore"
      return 0
      ;;
    absent)
      if ! docker container inspect "$prev" >/dev/null 2>&1; then
        release_lock
        log "no $name container (removed, or never started here): nothing to restore"
        return 0
      fi
      ;;
  esac
  while IFS= read -r line; do
    case ${line%% *} in
      arg) args+=("${line#* }") ;;
      image) img=${line#* } ;;
      profile) prof=${line#* } ;;
      http-port) port=${line#* } ;;
      health-seconds) budget=${line#* } ;;
    esac
  done <"$specs/$hash.args"
  [[ -z $health_override ]] || budget=$health_override
  secrets=()
  while IFS= read -r line; do
    key=${line%%=*} value=${line#*=}
    if [[ $key =~ PASS|SECRET|TOKEN|KEY|CREDENTIAL|ICESERVERS ]] && ((${#value} >= 4)); then secrets+=("$value"); fi
  done <"$specs/$hash.env"
  if [[ -z $img || ! $port =~ ^[0-9]+$ || ! $budget =~ ^[0-9]+$ ]]; then
    release_lock
    fail_reason="the spec $specs/$hash.args lacks its image, http-port or health-seconds"
    return 1
  fi
  status=$st
  [[ $st != absent ]] || status="absent ($prev is there: a swap was cut short)"
  log "$name is $status: creating it afresh from its recorded spec (image $img; an old container is never started again)"
  docker rm --force --volumes "$name" >/dev/null 2>&1 || true
  if [[ -n $prof ]]; then
    docker run --rm --network none --user 0 --entrypoint rm -v "$prof:/p" "$img" \
      -f /p/SingletonLock /p/SingletonCookie /p/SingletonSocket >/dev/null 2>"$tmp/err" ||
      log "could not clear the profile's lock files: $(docker_error "$tmp/err") (starting it anyway)"
  fi
  since=$SECONDS
  started=$(date +%s)
  if ! docker run --detach --name "$name" --env-file "$specs/$hash.env" ${args[@]+"${args[@]}"} "$img" >/dev/null 2>"$tmp/err"; then
    release_lock
    fail_reason="the new $name could not be created: $(docker_error "$tmp/err")"
    return 1
  fi
  if ! wait_healthy "$name" "$port" "$budget" "$started"; then
    release_lock
    fail_reason="the new $name $fail_reason; its last log lines:
$(docker logs --tail 30 "$name" 2>&1 | mask | sed 's/^/    /')"
    return 1
  fi
  release_lock
  log "$name restored: a new container of $img answers /health on http://$health_addr after $((SECONDS - since))s"
}

# Restores once, then again whenever the Docker engine comes back.
watch() {
  local waiting=0 tries began
  while :; do
    if ! docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
      ((waiting)) || log "waiting for the Docker engine"
      waiting=1
      sleep 2
      continue
    fi
    waiting=0
    tries=0
    until restore_once; do
      log "$fail_reason"
      if ((++tries > 3)); then
        log "giving up until the Docker engine restarts (or this service does)"
        break
      fi
      log "trying again in 30 s"
      sleep 30
    done
    began=$SECONDS
    # Returns when the engine goes away (its API connection ends): a stop, a crash, a restart.
    docker events --filter type=daemon >/dev/null 2>&1 || true
    log "the Docker engine went away"
    # An events stream that ends at once while the engine still answers: do not spin.
    if ((SECONDS - began < 5)) && docker version >/dev/null 2>&1; then sleep 30; fi
  done
}

cleanup() {
  local rc=$?
  release_lock
  [[ -z $tmp ]] || rm -rf "$tmp"
  exit "$rc"
}

main() {
  (($# <= 1)) || usage
  [[ $lock_seconds =~ ^[0-9]+$ ]] || {
    log "NEKO_LOCK_SECONDS must be a number of seconds, got '$lock_seconds'"
    exit 2
  }
  [[ -z $health_override || $health_override =~ ^[1-9][0-9]*$ ]] || {
    log "NEKO_HEALTH_SECONDS must be a positive number of seconds, got '$health_override'"
    exit 2
  }
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/neko-restore.XXXXXX")
  trap cleanup EXIT
  trap 'exit 143' TERM INT
  case ${1:-} in
    "")
      docker version --format '{{.Server.Version}}' >/dev/null 2>"$tmp/err" || {
        log "cannot reach the Docker engine: $(docker_error "$tmp/err")"
        exit 1
      }
      restore_once || {
        log "$fail_reason"
        exit 1
      }
      ;;
    --watch) watch ;;
    *) usage ;;
  esac
}

main "$@" </dev/null
