#!/usr/bin/env bash
# Runs neko on this Docker host without ever replacing a good neko by a bad one: the new container is
# first started beside the running one as a candidate (no public port) and must answer /health (and,
# on GPU hosts, load its H.264 encoder); only then is the running neko stopped and replaced. If the
# replacement does not come up healthy, the previous container is started again. The browser profile
# is a volume (or host directory) that every container of this name mounts, with Chromium's stale
# lock files cleared before each start.
#
# Usage: neko-rollout.sh IMAGE_REF        (repo@sha256:... is pulled; sha256:<id> must be loaded)
# Env (from the program, lib/neko.ts rolloutEnv):
#   NEKO_NAME (neko), NEKO_HTTP_PORT, NEKO_HEALTH_SECONDS (150)
#   NEKO_PUBLISH     `docker run --publish` values, one per line (final container only)
#   NEKO_RUN_ARGS    further `docker run` options, one per line, no secrets
#   NEKO_ENV         the container's environment, NAME=value lines (secret: goes to --env-file)
#   NEKO_PROFILE, NEKO_PROFILE_DIR   the profile (volume name or host directory) and where it mounts
#   NEKO_NVENC       auto|nvh264enc|nvautogpuh264enc on GPU hosts, with NEKO_PIPELINE_NVH264ENC and
#                    NEKO_PIPELINE_NVAUTOGPUH264ENC: the encoder to prove and the pipeline to run
#   NEKO_STATE_DIR   where the host's idle check finds neko (api-token, neko-url, deploying)
#   NEKO_API_TOKEN   neko's API token, for that idle check (secret)
#   REGISTRY_USER / REGISTRY_PASSWORD   log in for this pull only
# Stdout: one line, what runs now. Progress and failures on stderr; nothing secret on either.
set -euo pipefail

(($# == 1)) || { echo "usage: neko-rollout.sh IMAGE_REF" >&2; exit 2; }
ref=$1
name=${NEKO_NAME:-neko}
candidate=$name-candidate
previous=$name-previous
port=${NEKO_HTTP_PORT:?neko-rollout: NEKO_HTTP_PORT is not set}
budget=${NEKO_HEALTH_SECONDS:-150}
state=${NEKO_STATE_DIR:-}

log() { echo "neko-rollout: $*" >&2; }
die() { echo "neko-rollout: $*" >&2; exit 1; }
doing="starting"
trap 'echo "neko-rollout: ran out of its time budget while $doing" >&2; exit 124' TERM

tmp=$(mktemp -d)
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
  rm -rf "$tmp"
  [[ -z $state ]] || rm -f "$state/deploying"
}
trap cleanup EXIT
(umask 077 && printf '%s' "${NEKO_ENV:-}" >"$tmp/env")

# One rollout per container name and host at a time.
lock_dir=${state:-${XDG_RUNTIME_DIR:-/tmp}}
mkdir -p "$lock_dir"
exec 9>"$lock_dir/neko-rollout-$name.lock"
doing="waiting for another rollout of $name on this host"
flock -w 300 9 || die "another rollout of $name has been running on this host for 5 minutes; try again when it is done"
[[ -z $state ]] || touch "$state/deploying" # the idle check leaves a deploying host alone

# ------------------------------------------------------------------ the image

doing="getting the image $ref"
if [[ $ref == sha256:* ]]; then
  docker image inspect "$ref" >/dev/null 2>&1 ||
    die "the image $ref is not in this Docker engine (registry kind docker loads it where it was built: build on this machine)"
elif [[ $ref == *@sha256:* ]]; then
  if [[ -n ${REGISTRY_PASSWORD:-} ]]; then
    export DOCKER_CONFIG=$tmp/docker
    printf '%s' "$REGISTRY_PASSWORD" |
      docker login --username "${REGISTRY_USER:?neko-rollout: REGISTRY_USER is not set}" --password-stdin "${ref%%/*}" >/dev/null 2>"$tmp/err" ||
      die "the registry ${ref%%/*} refused the login: $(tail -n1 "$tmp/err")"
  fi
  if ! docker image inspect "$ref" >/dev/null 2>&1; then
    log "pulling $ref"
    docker pull --quiet --platform linux/amd64 "$ref" >/dev/null 2>"$tmp/err" &
    pull=$!
    started=$SECONDS
    while kill -0 "$pull" 2>/dev/null; do
      sleep 1
      if (((SECONDS - started) % 30 == 0)); then log "still pulling $ref ($((SECONDS - started)) s)"; fi
    done
    wait "$pull" || die "pulling $ref failed: $(tail -n2 "$tmp/err")"
  fi
else
  die "$ref is not pinned (expected repository@sha256:<digest>, or sha256:<image id> for a loaded image)"
fi
platform=$(docker image inspect --format '{{.Os}}/{{.Architecture}}' "$ref")
[[ $platform == linux/amd64 ]] || die "$ref is a $platform image; neko hosts run linux/amd64 only"
image=$(docker image inspect --format '{{.Id}}' "$ref")

# ------------------------------------------------------------------ the encoder (GPU hosts)

element=""
if [[ -n ${NEKO_NVENC:-} ]]; then
  element=$NEKO_NVENC
  if [[ $element == auto ]]; then
    driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n1 || true)
    [[ $driver =~ ^[0-9]+ ]] || die "cannot read the NVIDIA driver version (nvidia-smi: ${driver:-no answer}); set neko-infra:neko.nvencElement"
    # neko's docs: nvautogpuh264enc for drivers 590 and later, nvh264enc before.
    if ((${driver%%.*} >= 590)); then element=nvautogpuh264enc; else element=nvh264enc; fi
    log "NVIDIA driver $driver: encoder $element"
  fi
  case $element in
    nvh264enc) pipeline=${NEKO_PIPELINE_NVH264ENC:?} ;;
    nvautogpuh264enc) pipeline=${NEKO_PIPELINE_NVAUTOGPUH264ENC:?} ;;
    *) die "NEKO_NVENC must be auto, nvh264enc or nvautogpuh264enc, not '$element'" ;;
  esac
  printf 'NEKO_CAPTURE_VIDEO_PIPELINE=%s\n' "$pipeline" >>"$tmp/env"
fi

# ------------------------------------------------------------------ what runs, and what should

lines() { [[ -z $1 ]] || printf '%s\n' "$1"; }
mapfile -t publish < <(lines "${NEKO_PUBLISH:-}")
mapfile -t run_args < <(lines "${NEKO_RUN_ARGS:-}")
profile_args=()
if [[ -n ${NEKO_PROFILE:-} ]]; then
  [[ $NEKO_PROFILE != /* ]] || mkdir -p "$NEKO_PROFILE" || die "cannot create the profile directory $NEKO_PROFILE"
  profile_args=(--volume "$NEKO_PROFILE:${NEKO_PROFILE_DIR:?neko-rollout: NEKO_PROFILE_DIR is not set}")
fi
spec=$({
  printf '%s\n' "$image" "${NEKO_PUBLISH:-}" "${NEKO_RUN_ARGS:-}" "${NEKO_PROFILE:-}" "${NEKO_PROFILE_DIR:-}"
  cat "$tmp/env"
} | sha256sum | cut -c1-16)
label=neko-infra.spec

if [[ -n $state ]]; then
  (umask 077 && printf '%s' "${NEKO_API_TOKEN:-}" >"$state/api-token")
  printf 'http://127.0.0.1:%s\n' "$port" >"$state/neko-url"
fi

exists() { docker container inspect "$1" >/dev/null 2>&1; }
short() { local id=${1#sha256:}; printf '%s' "${id:0:12}"; }

# Leftovers of an interrupted run: a candidate goes; a lone previous is the last good one.
exists "$candidate" && docker rm -f "$candidate" >/dev/null
if exists "$previous"; then
  if exists "$name"; then docker rm -f "$previous" >/dev/null; else docker rename "$previous" "$name"; fi
fi

# /health answers `true` on ADDRESS:PORT. Fails with the reason when the container exits or
# restarts, or at the budget. Progress every 15 s.
wait_healthy() {
  local container=$1 address=$2 since=$3 started=$SECONDS status restarts code
  while :; do
    if [[ -n $address && $(curl -fsS --max-time 3 "http://$address/health" 2>/dev/null || true) == true ]]; then return 0; fi
    read -r status restarts code < <(docker inspect --format '{{.State.Status}} {{.RestartCount}} {{.State.ExitCode}}' "$container" 2>/dev/null || echo "gone 0 0")
    if [[ $status == exited || $status == dead || $status == gone ]]; then
      why="exited with code $code"
      return 1
    fi
    if [[ $status == restarting ]] || ((restarts > 0)); then
      code=$(docker events --since "$since" --until "$(date +%s)" --filter "container=$container" --filter event=die \
        --format '{{index .Actor.Attributes "exitCode"}}' 2>/dev/null | tail -n1)
      why="keeps crashing (exit code ${code:-unknown}, restarted $restarts time(s))"
      return 1
    fi
    if ((SECONDS - started >= budget)); then
      why="did not answer /health within ${budget}s (status $status)"
      return 1
    fi
    if (((SECONDS - started) % 15 == 0 && SECONDS > started)); then log "waiting for $container to answer /health ($((SECONDS - started)) s of ${budget}s)"; fi
    sleep 1
  done
}

container_logs() { docker logs --tail 30 "$1" 2>&1 | sed 's/^/  | /' || true; }

# Chromium refuses a profile whose lock names another host or a dead process.
clear_locks() {
  [[ -n ${NEKO_PROFILE:-} ]] || return 0
  local dir=$NEKO_PROFILE_DIR
  docker run --rm --user 0 --entrypoint rm "${profile_args[@]}" "$1" -f "$dir/SingletonLock" "$dir/SingletonCookie" "$dir/SingletonSocket" >/dev/null 2>&1 ||
    log "warning: could not clear the profile's lock files (the browser may refuse the profile)"
}

current=""
if exists "$name"; then
  current=$(docker inspect --format '{{.Image}}' "$name")
  running_spec=$(docker inspect --format "{{index .Config.Labels \"$label\"}}" "$name")
  if [[ $running_spec == "$spec" && $(docker inspect --format '{{.State.Status}}' "$name") == running ]] &&
    [[ $(curl -fsS --max-time 3 "http://127.0.0.1:$port/health" 2>/dev/null || true) == true ]]; then
    echo "$name runs $ref (image $(short "$image"), unchanged)"
    exit 0
  fi
fi

# ------------------------------------------------------------------ the candidate

doing="checking the candidate $candidate"
log "starting $candidate from $ref beside the running neko"
candidate_args=()
for a in "${run_args[@]}"; do [[ $a == --restart=* ]] || candidate_args+=("$a"); done
since=$(date +%s)
docker run --detach --name "$candidate" --restart=no --publish "127.0.0.1::$port/tcp" "${candidate_args[@]}" \
  --env-file "$tmp/env" "$image" >/dev/null 2>"$tmp/err" || die "cannot start $candidate: $(tail -n2 "$tmp/err")"
# (none when it already exited: wait_healthy then reports how)
probe=$(docker port "$candidate" "$port/tcp" 2>/dev/null | head -n1 || true)
why=""
ok=1
wait_healthy "$candidate" "$probe" "$since" || ok=0
if ((ok)) && [[ -n $element ]]; then
  if ! docker exec "$candidate" gst-inspect-1.0 "$element" >/dev/null 2>"$tmp/gst"; then
    libs=$(docker exec "$candidate" sh -c 'ls /usr/lib64/libnvidia-encode.so* /usr/lib64/libcuda.so* /usr/lib/x86_64-linux-gnu/libnvidia-encode.so* /usr/lib/x86_64-linux-gnu/libcuda.so* 2>/dev/null' || true)
    why="cannot load the encoder $element ($(tail -n1 "$tmp/gst")); NVIDIA libraries in the container: ${libs:-none (is the NVIDIA runtime configured? --gpus needs it)}"
    ok=0
  fi
fi
if ((!ok)); then
  log "the candidate $why; its last log lines:"
  container_logs "$candidate" >&2
  docker rm -f "$candidate" >/dev/null
  die "$ref was not deployed: the candidate $why; the running neko${current:+ ($(short "$current"))} was not touched"
fi
docker rm -f "$candidate" >/dev/null

# ------------------------------------------------------------------ the swap

doing="replacing $name"
if [[ -n $current ]]; then
  log "replacing $name ($(short "$current")) with $(short "$image")"
  docker stop --time 10 "$name" >/dev/null
  docker rename "$name" "$previous"
fi
start_final() {
  clear_locks "$image"
  docker run --detach --name "$name" "${publish[@]/#/--publish=}" "${run_args[@]}" "${profile_args[@]}" \
    --label "$label=$spec" --env-file "$tmp/env" "$image" >/dev/null 2>"$tmp/err"
}
since=$(date +%s)
if start_final && wait_healthy "$name" "127.0.0.1:$port" "$since"; then
  exists "$previous" && docker rm -f "$previous" >/dev/null
  echo "$name runs $ref (image $(short "$image")${current:+, replaced $(short "$current")})"
  exit 0
fi
why=${why:-could not start: $(tail -n2 "$tmp/err")}
container_logs "$name" >"$tmp/new.log"
docker rm -f "$name" >/dev/null 2>&1 || true
if [[ -z $current ]]; then
  cat "$tmp/new.log" >&2
  die "$ref was not deployed: $name $why (the lines above)"
fi

# ------------------------------------------------------------------ the rollback

doing="rolling back to $(short "$current")"
log "$(short "$image") $why; rolling back to $(short "$current")"
docker rename "$previous" "$name"
clear_locks "$current"
since=$(date +%s)
docker start "$name" >/dev/null
rolled_back=1
wait_healthy "$name" "127.0.0.1:$port" "$since" || rolled_back=0
echo "neko-rollout: the new container's last log lines:" >&2
cat "$tmp/new.log" >&2
if ((rolled_back)); then
  die "$ref was rolled back: it passed as a candidate but $name $why once it took over; the previous image $(short "$current") runs again"
fi
echo "neko-rollout: the previous container's last log lines:" >&2
container_logs "$name" >&2
die "$ref failed ($why) and the previous image $(short "$current") did not come back either"
