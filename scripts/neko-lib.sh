#!/usr/bin/env bash
# shellcheck disable=SC2034,SC2154 # phase, health_addr, fail_reason, lock_held are read, and name, lock_seconds, secrets set, by the scripts that use this
# What neko-rollout.sh and neko-restore.sh share: masking secrets in what they print, docker's
# error lines, the lock one run per container name holds, and the wait for neko's /health.
# lib/shell.ts puts it before the rollout on its standard input; the setup step writes it in
# front of the restore (lib/setup.ts), which sources it from beside itself when run from a checkout.
# Bash 3.2 and BSD tools (a local host may be a Mac).
#
# The caller provides: log MESSAGE; the variables name (the container), lock_seconds, and the
# array secrets (values to mask). Set here: lock_held, fail_reason, health_addr, phase.
set -euo pipefail

# Masks every secret value in standard input (container logs, docker's error messages).
mask() {
  local text s
  text=$(cat)
  for s in ${secrets[@]+"${secrets[@]}"}; do
    text=${text//"$s"/[secret]}
  done
  printf '%s\n' "$text"
}

# The last line of docker's error output in FILE that is not a warning, masked.
docker_error() {
  local line last=""
  while IFS= read -r line; do
    [[ -z ${line//[[:space:]]/} || $line == WARNING:* ]] || last=$line
  done <"$1"
  printf '%s' "${last:-no error message}" | mask
}

# take_lock DIR: one rollout or restore at a time per container name. A directory (mkdir is
# atomic everywhere; flock is not on macOS) holding the owner's pid (and boot ID); a lock whose
# owner is gone (or from before the last boot) is taken over. Waits up to lock_seconds, then
# returns 1 with fail_reason naming who holds it.
take_lock() {
  local lock=$1 owner waited=0 unowned=0
  phase="waiting for the lock $lock"
  while ! mkdir "$lock" 2>/dev/null; do
    owner=$(cat "$lock/pid" 2>/dev/null || true)
    if [[ -n $owner ]] && { ! kill -0 "$owner" 2>/dev/null || from_another_boot "$lock"; }; then
      log "taking over the lock $lock: its run (pid $owner) is gone"
      rm -rf "$lock"
      continue
    fi
    # No pid yet: its owner is between mkdir and writing it, or died there (or an old lock file).
    if [[ -z $owner ]] && ((++unowned > 5)); then
      log "taking over the lock $lock: it names no run"
      rm -rf "$lock"
      continue
    fi
    ((waited > 0)) || log "another neko-rollout for $name runs (pid ${owner:-unknown}); waiting up to ${lock_seconds}s for it"
    if ((waited >= lock_seconds)); then
      fail_reason="another neko-rollout for $name (pid ${owner:-unknown}) still ran after ${lock_seconds}s (lock $lock)"
      return 1
    fi
    sleep 1
    waited=$((waited + 1))
  done
  echo "$$" >"$lock/pid"
  [[ ! -r $boot_id_file ]] || cat "$boot_id_file" >"$lock/boot"
  lock_held=$lock
}

release_lock() {
  [[ -z $lock_held ]] || rm -rf "$lock_held"
  lock_held=""
}

# A lock taken before this machine last booted (Linux: its boot ID) has no owner any more, whatever
# process now has its pid: the state directory outlives a power cut, unlike /tmp.
boot_id_file=/proc/sys/kernel/random/boot_id
from_another_boot() {
  [[ -r $boot_id_file && -r $1/boot ]] || return 1
  [[ $(cat "$1/boot") != "$(cat "$boot_id_file")" ]]
}

# published_addr CONTAINER PORT: HOST:PORT where the container publishes PORT/tcp (0.0.0.0 and ::
# are probed on loopback).
published_addr() {
  local out line v6=""
  out=$(docker port "$1" "$2/tcp" 2>/dev/null) || return 1
  while IFS= read -r line; do
    case $line in
      0.0.0.0:*)
        printf '127.0.0.1:%s' "${line##*:}"
        return 0
        ;;
      "[::]:"* | :::*) v6="[::1]:${line##*:}" ;;
      *.*.*.*:*)
        printf '%s' "$line"
        return 0
        ;;
      ?*) v6=$line ;;
    esac
  done <<<"$out"
  [[ -n $v6 ]] || return 1
  printf '%s' "$v6"
}

http_status() {
  curl -s -o /dev/null -w '%{http_code}' --max-time 3 "http://$1/health" 2>/dev/null || true
}

# The last exit code dockerd reported for container ID since the unix time SINCE.
exit_code_since() {
  local code
  code=$(docker events --since "$2" --until "$(($(date +%s) + 1))" --filter "container=$1" --filter event=die \
    --format '{{index .Actor.Attributes "exitCode"}}' 2>/dev/null | tail -n1) || true
  printf '%s' "${code:-unknown}"
}

# wait_healthy CONTAINER PORT BUDGET SINCE: 0 once GET /health on where it publishes PORT answers
# 200 (health_addr is then that HOST:PORT); else 1 with fail_reason, at once when it exits or
# restarts (SINCE: the unix time it was started, for its exit code).
wait_healthy() {
  local c=$1 port=$2 budget=$3 since=$4 deadline=$(($3 + SECONDS)) st status code restarts addr="" last="no answer" id
  id=$(docker inspect --format '{{.Id}}' "$c" 2>/dev/null) || id=$c
  while :; do
    if ! st=$(docker inspect --format '{{.State.Status}} {{.State.ExitCode}} {{.RestartCount}}' "$c" 2>&1); then
      fail_reason="is gone ($st)"
      return 1
    fi
    read -r status code restarts <<<"$st"
    case $status in
      exited | dead)
        fail_reason="exited with code $code"
        return 1
        ;;
      restarting)
        fail_reason="exited with code $code and is restarting"
        return 1
        ;;
    esac
    if ((restarts > 0)); then
      fail_reason="exited with code $(exit_code_since "$id" "$since") and was restarted ($restarts time(s))"
      return 1
    fi
    if [[ $status == running ]]; then
      [[ -n $addr ]] || addr=$(published_addr "$c" "$port") || addr=""
      if [[ -n $addr ]]; then
        code=$(http_status "$addr")
        if [[ $code == 200 ]]; then
          health_addr=$addr
          return 0
        fi
        [[ $code == 000 ]] && last="no answer" || last="HTTP $code"
      fi
    fi
    if ((SECONDS >= deadline)); then
      fail_reason="did not answer /health within ${budget}s (still $status; last probe: $last)"
      return 1
    fi
    sleep 0.5
  done
}
