#!/usr/bin/env bash
# Waits until a container reports healthy. Fails at once when it exits or restarts (a crashing
# server does not get better by waiting), or after TIMEOUT seconds, with its last log lines.
#
# Usage: wait-healthy.sh CONTAINER TIMEOUT_SECONDS
set -euo pipefail

(($# == 2)) || { echo "usage: wait-healthy.sh CONTAINER TIMEOUT_SECONDS" >&2; exit 2; }
name=$1
timeout=$2

fail() {
  echo "wait-healthy: container $name $1; its last log lines:" >&2
  docker logs --tail 40 "$name" 2>&1 | sed 's/^/  | /' >&2 || true
  exit 1
}

deadline=$((SECONDS + timeout))
while :; do
  state=$(docker inspect --format '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{.RestartCount}} {{.State.ExitCode}}' "$name" 2>&1) ||
    { echo "wait-healthy: no container named $name: $state" >&2; exit 1; }
  read -r status health restarts code <<<"$state"
  case "$status/$health" in
    running/healthy | running/none)
      echo "$name is $status ($health)"
      exit 0
      ;;
    exited/* | dead/*) fail "exited with code $code" ;;
    restarting/*) fail "is restarting (exit code $code)" ;;
  esac
  ((restarts == 0)) || fail "has restarted $restarts time(s) (last exit code $code)"
  [[ $health != unhealthy ]] || fail "is unhealthy"
  ((SECONDS < deadline)) || fail "is not healthy after ${timeout}s (status $status, health $health)"
  sleep 2
done
