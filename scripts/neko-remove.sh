#!/usr/bin/env bash
# Removes the neko container of this Docker host and whatever an interrupted neko-rollout.sh left
# (NAME-candidate, NAME-previous), for `pulumi destroy`. The browser profile (a volume or a host
# directory) is kept. Waits for a neko-rollout.sh of the same name (same lock) first.
#
# Usage: bash -s   (env as `export` lines at the top of standard input)
# Env:   NEKO_NAME (default neko), NEKO_STATE_DIR and NEKO_LOCK_SECONDS as for neko-rollout.sh
# stdout: one line, `NAME removed (N container(s))`.
set -euo pipefail

die() {
  echo "neko-remove: $*" >&2
  exit 1
}

main() {
  local name=${NEKO_NAME:-neko} lock_seconds=${NEKO_LOCK_SECONDS:-300} c n=0 out
  [[ $name =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] || die "NEKO_NAME '$name' is not a container name"
  out=$(docker version --format '{{.Server.Version}}' 2>&1) || die "cannot reach the Docker engine: ${out##*$'\n'}"

  local lock_dir=${NEKO_STATE_DIR:-${XDG_RUNTIME_DIR:-/tmp}}
  if [[ -d $lock_dir ]]; then
    exec 9>>"$lock_dir/neko-rollout-$name.lock"
    flock -w "$lock_seconds" 9 || die "a neko-rollout for $name still ran after ${lock_seconds}s; nothing was removed"
  fi

  for c in "$name-candidate" "$name" "$name-previous"; do
    docker container inspect "$c" >/dev/null 2>&1 || continue
    # A clean stop lets the browser close its profile; only the candidate's throwaway profile
    # volume goes with its container.
    docker stop "$c" >/dev/null || die "could not stop $c"
    if [[ $c == "$name-candidate" ]]; then
      docker rm --volumes "$c" >/dev/null || die "could not remove $c"
    else
      docker rm "$c" >/dev/null || die "could not remove $c"
    fi
    echo "neko-remove: removed $c" >&2
    n=$((n + 1))
  done
  echo "$name removed ($n container(s))"
}

main "$@" </dev/null
