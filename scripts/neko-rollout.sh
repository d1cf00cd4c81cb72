#!/usr/bin/env bash
# Rolls an image out as the neko container on this Docker host, so that a bad image never takes
# the running neko down and the browser profile outlives every image.
#
#   1. a candidate container (no public ports, a throwaway profile) must answer /health, run its
#      capture pipeline for a few frames and show a desktop that is not blank (neko-check-lib.sh,
#      before this script on standard input), then survive a restart (stopped, started, /health
#      again), before anything running is touched;
#   2. then the swap: stop the running neko, keep it as NAME-previous, start the new one with the
#      ports and the profile; healthy -> drop the previous, else roll back: the previous neko is
#      created afresh from its recorded spec, never started again (see "Specs" below).
# Nothing restarts when the same spec already runs and answers /health.
#
# Specs. An image may be unable to start the same container twice (the Nix-built neko image's
# entrypoint creates its user with `getent || groupadd`, and has no getent: a second start exits
# 9). So no path here or on the host restarts an old neko container: every deployed spec is
# recorded in SPEC_DIR/NAME-specs/ (HASH.args: what follows `docker run --detach --name NAME
# --env-file HASH.env`, one `arg WORD` a line, then `image ID`; HASH.env: the environment, secrets
# included, 0600 in a 0700 directory, never printed; `current`: the HASH of the last neko that
# answered /health; `deployed`: the last deploy, for `npm run status`, no secret), and a rollback
# creates the previous neko afresh from its spec.
# scripts/neko-restore.sh reads the same files at boot and after each Docker restart. A restart
# check that fails is a loud warning only (the image is rolled out: nothing here depends on
# restarts), unless NEKO_REQUIRE_RESTART=1 or NEKO_RUN_ARGS asks Docker to restart the container
# (--restart=always, unless-stopped or on-failure): then the image is refused.
# SPEC_DIR is NEKO_STATE_DIR; unset, the host's state directory /var/lib/neko-infra/host when
# this user can write it (the host's setup step makes it, on EC2 and ssh hosts), else the
# user's ${XDG_STATE_HOME:-~/.local/state}/neko-infra (a local host). The lock is there too.
#
# Usage: bash -s -- IMAGE_REF   (the environment as `export` lines at the top of standard input)
#   IMAGE_REF  REPO@sha256:DIGEST (pulled for linux/amd64 unless the engine has it) or
#              sha256:IMAGE_ID (already in the engine, e.g. after `docker load`; never pulled)
# Env (all optional unless marked):
#   NEKO_HTTP_PORT      required: the port neko listens on in the container (GET /health -> 200)
#   NEKO_NAME           container name (default neko); NAME-candidate, NAME-previous during a run
#   NEKO_PUBLISH        `docker run --publish` values of the final container, one a line
#                       ([IP:][HOST:]PORT[-END][/PROTO]); one must publish NEKO_HTTP_PORT/tcp
#   NEKO_RUN_ARGS       further `docker run` options, one a line, each `--opt` or `--opt=value`
#                       (e.g. --shm-size=2g, --gpus=all; --restart=no: final only)
#   NEKO_ENV            secret: the container's environment, NAME=value lines (goes to --env-file)
#   NEKO_HEALTH_SECONDS budget of each wait for /health (default 150)
#   NEKO_LOCK_SECONDS   how long to wait for another run for the same NEKO_NAME (default 300)
#   NEKO_PROFILE        the browser profile on the host: a volume name or an absolute directory
#   NEKO_PROFILE_DIR    where it is mounted in the container (required with NEKO_PROFILE)
#   NEKO_NVENC          empty (no GPU), auto (by the driver: >= 590 nvautogpuh264enc, else
#                       nvh264enc), nvh264enc or nvautogpuh264enc; its pipeline, from
#                       NEKO_PIPELINE_NVH264ENC / NEKO_PIPELINE_NVAUTOGPUH264ENC, becomes the
#                       container's NEKO_CAPTURE_VIDEO_PIPELINE
#   NEKO_STATE_DIR      directory for the lock, the specs and what runs: api-token (0600, from
#                       the secret NEKO_API_TOKEN), neko-url (the health/API base URL), deploying
#   NEKO_SCREENSHOT, NEKO_SCREENSHOT_SECONDS  the candidate's screenshot: see neko-check-lib.sh
#   NEKO_REQUIRE_RESTART  1: refuse an image whose candidate does not survive a restart (default:
#                       roll it out with a warning)
#   REGISTRY_USER, REGISTRY_PASSWORD (secret)  log in for this pull only
#   NEKO_FRONT_URL      the HTTPS front's URL (https://SUBJECT/, tls-front.sh): once neko answers,
#                       its /health must answer 200 through the front too (connecting to
#                       127.0.0.1:443 with SUBJECT's name), within NEKO_FRONT_SECONDS (default 60)
#   NEKO_FRONT_CA_FILE  tests only: the CA bundle that verifies the front (default: the system's)
#   NEKO_SHOWN_DIGEST   the digest of the non-secret spec previews show (lib/spec.ts shownDigest),
#                       recorded as what this run deployed for `npm run status`
# stdout: one line `NAME OUTCOME IMAGE_ID URL`, OUTCOME = unchanged | started | replaced.
# Everything else goes to stderr; secret values never do (they are masked in container logs).
set -euo pipefail

me=neko-rollout
spec_label=neko-infra.spec
log() { echo "$me: $*" >&2; }
die() {
  log "$*"
  exit 1
}
# For failures before the candidate: nothing on the host changed.
die_untouched() {
  if docker container inspect "$name" >/dev/null 2>&1; then
    die "$*; the running $name was not touched"
  fi
  die "$*; nothing was started"
}

# ---------------------------------------------------------------- inputs

# Secrets: read, then no longer exported, so no child process carries them in its environment.
env_text=${NEKO_ENV:-}
registry_password=${REGISTRY_PASSWORD:-}
api_token=${NEKO_API_TOKEN:-}
export -n NEKO_ENV REGISTRY_PASSWORD NEKO_API_TOKEN

name=${NEKO_NAME:-neko}
cand=$name-candidate
prev=$name-previous
http_port=${NEKO_HTTP_PORT:-}
health_seconds=${NEKO_HEALTH_SECONDS:-150}
lock_seconds=${NEKO_LOCK_SECONDS:-300}
profile=${NEKO_PROFILE:-}
profile_dir=${NEKO_PROFILE_DIR:-}
nvenc=${NEKO_NVENC:-}
state_dir=${NEKO_STATE_DIR:-}
require_restart=${NEKO_REQUIRE_RESTART:-0}
# Where the specs and the lock live (see "Specs" above); set by choose_spec_dir.
host_state_dir=/var/lib/neko-infra/host
spec_dir=""
specs=""
restart_policy=no

tmp=""
phase="starting"
stage=prepare # prepare | candidate | swap | finished: what an interruption has to undo
had_prev=0
prev_image=""
secrets=()
publish=()
final_args=()
cand_args=()
element=""
pipeline=""
health_addr=""
fail_reason=""
profile_args=()
spec=""
image_id=""
lock_held=""

trim() {
  local s=$1
  s=${s#"${s%%[![:space:]]*}"}
  printf '%s' "${s%"${s##*[![:space:]]}"}"
}

check_inputs() {
  [[ $name =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] || die "NEKO_NAME '$name' is not a container name"
  if ! [[ $http_port =~ ^[1-9][0-9]{0,4}$ ]] || ((http_port > 65535)); then
    die "NEKO_HTTP_PORT must be a port number, got '$http_port'"
  fi
  [[ $health_seconds =~ ^[1-9][0-9]*$ ]] || die "NEKO_HEALTH_SECONDS must be a positive number of seconds, got '$health_seconds'"
  [[ $lock_seconds =~ ^[0-9]+$ ]] || die "NEKO_LOCK_SECONDS must be a number of seconds, got '$lock_seconds'"
  [[ $require_restart =~ ^[01]?$ ]] || die "NEKO_REQUIRE_RESTART must be 1, 0 or empty, got '$require_restart'"

  local line n=0 spec proto cport lo hi http_published=0
  while IFS= read -r line; do
    n=$((n + 1))
    line=$(trim "$line")
    [[ -n $line ]] || continue
    [[ $line =~ ^((([0-9]{1,3}\.){3}[0-9]{1,3}|\[[0-9A-Fa-f:]+\]):)?(([0-9]+(-[0-9]+)?)?:)?[0-9]+(-[0-9]+)?(/(tcp|udp|sctp))?$ ]] ||
      die "NEKO_PUBLISH line $n ('$line') is not [IP:][HOST_PORT:]PORT[/PROTO]"
    publish+=(--publish "$line")
    spec=${line%/*} proto=tcp
    [[ $line != */* ]] || proto=${line##*/}
    cport=${spec##*:} lo=${cport%-*} hi=${cport#*-}
    if [[ $proto == tcp ]] && ((10#$lo <= http_port && http_port <= 10#$hi)); then http_published=1; fi
  done <<<"${NEKO_PUBLISH:-}"
  ((http_published)) || die "NEKO_PUBLISH does not publish NEKO_HTTP_PORT $http_port/tcp: /health could not be checked"

  n=0
  while IFS= read -r line; do
    n=$((n + 1))
    line=$(trim "$line")
    [[ -n $line ]] || continue
    [[ $line =~ ^--[a-z][a-z0-9-]*(=.*)?$ ]] ||
      die "NEKO_RUN_ARGS line $n ('$line') is not one option --name or --name=value"
    case ${line%%=*} in
      --name | --publish | --publish-all | --env | --env-file | --detach | --rm | --interactive | --tty | --attach)
        die "NEKO_RUN_ARGS line $n: ${line%%=*} is neko-rollout's own (ports: NEKO_PUBLISH, environment: NEKO_ENV)"
        ;;
      --restart)
        # the candidate runs with --restart=no
        [[ $line =~ ^--restart=(no|always|unless-stopped|on-failure(:[0-9]+)?)$ ]] ||
          die "NEKO_RUN_ARGS line $n ('$line') is not --restart=no|always|unless-stopped|on-failure[:N]"
        restart_policy=${line#--restart=}
        final_args+=("$line")
        ;;
      *)
        final_args+=("$line")
        cand_args+=("$line")
        ;;
    esac
  done <<<"${NEKO_RUN_ARGS:-}"

  if [[ -n $profile ]]; then
    [[ $profile_dir =~ ^/[^:,]*$ ]] || die "NEKO_PROFILE_DIR must be an absolute path without ':' or ',' (got '$profile_dir')"
    if [[ $profile == /* ]]; then
      [[ $profile =~ ^/[^:,]*$ ]] || die "NEKO_PROFILE '$profile': a host directory without ':' or ','"
    else
      [[ $profile =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] || die "NEKO_PROFILE '$profile' is neither a volume name nor an absolute directory"
    fi
  fi
}

# NAME=value lines into the env file (0600 in a private directory): never echoed, never an argument.
write_env_file() {
  local line n=0 key value
  (umask 077 && : >"$tmp/env")
  while IFS= read -r line; do
    n=$((n + 1))
    line=${line%$'\r'}
    [[ -n ${line//[[:space:]]/} && $line != \#* ]] || continue
    [[ $line =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "NEKO_ENV line $n is not NAME=value (its text is not shown: it may be secret)"
    key=${line%%=*} value=${line#*=}
    if [[ -n $element && $key == NEKO_CAPTURE_VIDEO_PIPELINE ]]; then
      log "NEKO_ENV sets NEKO_CAPTURE_VIDEO_PIPELINE: replaced by the $element pipeline"
      continue
    fi
    if [[ $key =~ PASS|SECRET|TOKEN|KEY|CREDENTIAL|ICESERVERS ]] && ((${#value} >= 4)); then secrets+=("$value"); fi
    printf '%s\n' "$line" >>"$tmp/env"
  done <<<"$env_text"
  [[ -z $pipeline ]] || printf 'NEKO_CAPTURE_VIDEO_PIPELINE=%s\n' "$pipeline" >>"$tmp/env"
}

choose_encoder() {
  local out driver major var
  case $nvenc in
    "") return 0 ;;
    nvh264enc | nvautogpuh264enc) element=$nvenc ;;
    auto)
      out=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>&1) ||
        die_untouched "NEKO_NVENC=auto: nvidia-smi failed: ${out##*$'\n'}"
      driver=$(trim "${out%%$'\n'*}")
      major=${driver%%.*}
      [[ $major =~ ^[0-9]+$ ]] || die_untouched "NEKO_NVENC=auto: nvidia-smi reported driver version '$driver'"
      if ((major >= 590)); then element=nvautogpuh264enc; else element=nvh264enc; fi
      log "NVIDIA driver $driver: encoder $element"
      ;;
    *) die "NEKO_NVENC must be empty, auto, nvh264enc or nvautogpuh264enc (got '$nvenc')" ;;
  esac
  var=NEKO_PIPELINE_$(printf '%s' "$element" | tr '[:lower:]' '[:upper:]')
  pipeline=${!var:-}
  [[ -n $pipeline ]] || die "NEKO_NVENC chose $element but $var is not set"
  [[ $pipeline != *$'\n'* ]] || die "$var must be one line"
}

# ---------------------------------------------------------------- the image

registry_of() {
  local first=${1%%/*}
  if [[ $1 == */* && ($first == *.* || $first == *:* || $first == localhost) ]]; then
    printf '%s' "$first"
  else
    printf 'docker.io'
  fi
}

resolve_image() {
  local ref=$1 registry platform
  if [[ $ref =~ ^sha256:[0-9a-f]{64}$ ]]; then
    docker image inspect "$ref" >/dev/null 2>&1 ||
      die_untouched "image $ref is not in this Docker engine (an image ID is never pulled: load it first)"
  elif [[ $ref =~ ^[^@[:space:]]+@sha256:[0-9a-f]{64}$ ]] && docker image inspect "$ref" >/dev/null 2>&1; then
    # A digest names the content: no registry round trip (nor a still valid login) is needed.
    log "$ref is already in the engine"
  elif [[ $ref =~ ^[^@[:space:]]+@sha256:[0-9a-f]{64}$ ]]; then
    phase="pulling $ref"
    local -a cfg=()
    if [[ -n $registry_password ]]; then
      registry=$(registry_of "$ref")
      mkdir "$tmp/docker-config"
      cfg=(env "DOCKER_CONFIG=$tmp/docker-config")
      printf '%s' "$registry_password" |
        ${cfg[@]+"${cfg[@]}"} docker login --username "${REGISTRY_USER:-}" --password-stdin "$registry" >/dev/null 2>"$tmp/err" ||
        die_untouched "the registry $registry refused the login: $(docker_error "$tmp/err")"
    fi
    ${cfg[@]+"${cfg[@]}"} docker pull --quiet --platform linux/amd64 "$ref" >/dev/null 2>"$tmp/err" ||
      die_untouched "pulling $ref failed: $(docker_error "$tmp/err")"
    rm -rf "$tmp/docker-config"
  else
    die "IMAGE_REF must be REPOSITORY@sha256:DIGEST or sha256:IMAGE_ID, got '$ref'"
  fi
  platform=$(docker image inspect --format '{{.Os}}/{{.Architecture}}' "$ref")
  [[ $platform == linux/amd64 ]] || die_untouched "$ref is a $platform image; neko runs linux/amd64"
  image_id=$(docker image inspect --format '{{.Id}}' "$ref")
  log "image $image_id ($ref)"
}

spec_hash() {
  {
    printf 'image %s\nhttp %s\n' "$image_id" "$http_port"
    printf 'publish %s\n' ${publish[@]+"${publish[@]}"}
    printf 'run-arg %s\n' ${final_args[@]+"${final_args[@]}"}
    printf 'profile %s %s\n' "$profile" "$profile_dir"
    printf 'encoder %s\n' "$element"
    cat "$tmp/env"
  } | sha256_of_input
}

# bounded SECONDS CMD...: timeout(1) where the machine has it (macOS has not).
bounded() {
  if command -v timeout >/dev/null 2>&1; then timeout "$@"; else "${@:2}"; fi
}

# The SHA-256 of standard input, in hex: sha256sum, or shasum where there is none (macOS 14).
sha256_of_input() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum; else shasum -a 256; fi | cut -c1-64
}

# ---------------------------------------------------------------- containers

exists() { docker container inspect "$1" >/dev/null 2>&1; }

# A container's last log lines, masked and indented.
log_lines() {
  local lines
  lines=$(docker logs --tail 30 "$1" 2>&1 | mask) || true
  [[ -n ${lines//[[:space:]]/} ]] || lines="(none)"
  printf '%s\n' "$lines" | sed 's/^/    /'
}

tail_logs() { log_lines "$1" >&2; }

# clear_locks IMAGE [PROFILE]: the browser refuses a profile whose Singleton* files another
# container left behind. PROFILE (a volume or host directory; default NEKO_PROFILE) is cleared
# through a throwaway container of IMAGE.
clear_locks() {
  local p=${2-$profile}
  [[ -n $p ]] || return 0
  docker run --rm --network none --user 0 --entrypoint rm -v "$p:/p" "$1" \
    -f /p/SingletonLock /p/SingletonCookie /p/SingletonSocket >/dev/null 2>"$tmp/err" || {
    fail_reason="could not clear the profile's lock files: $(docker_error "$tmp/err")"
    return 1
  }
}

# ---------------------------------------------------------------- specs (see the header)

# SPEC_DIR: NEKO_STATE_DIR, else the host's state directory when writable, else the user's.
# Where the specs go (lib/neko.ts removeCommand looks in the same places when `destroy` takes
# neko off an ssh or local host).
choose_spec_dir() {
  if [[ -n $state_dir ]]; then
    spec_dir=$state_dir
  elif [[ -d $host_state_dir && -w $host_state_dir ]]; then
    spec_dir=$host_state_dir
  elif [[ -n ${XDG_STATE_HOME:-} ]]; then
    spec_dir=$XDG_STATE_HOME/neko-infra
  else
    [[ -n ${HOME:-} ]] || die "neither NEKO_STATE_DIR nor HOME is set: nowhere to record the spec"
    spec_dir=$HOME/.local/state/neko-infra
  fi
  specs=$spec_dir/$name-specs
  [[ -d $specs ]] || (umask 077 && mkdir -p "$specs")
}

# The spec label of container $1 (empty when it has none).
spec_of() {
  docker inspect --format "{{index .Config.Labels \"$spec_label\"}}" "$1" 2>/dev/null || true
}

recorded() { [[ -n $1 && -f $specs/$1.args && -f $specs/$1.env ]]; }

# Records the spec the swap is about to run (before it: a power cut in the swap leaves it there).
save_spec() {
  local a
  (umask 077 && cat "$tmp/env" >"$specs/$spec.env.new")
  mv -f "$specs/$spec.env.new" "$specs/$spec.env"
  {
    printf 'neko-infra-spec 1\nname %s\nhttp-port %s\nhealth-seconds %s\nprofile %s\n' \
      "$name" "$http_port" "$health_seconds" "$profile"
    for a in --label "$spec_label=$spec" ${publish[@]+"${publish[@]}"} ${profile_args[@]+"${profile_args[@]}"} \
      ${final_args[@]+"${final_args[@]}"}; do
      printf 'arg %s\n' "$a"
    done
    printf 'image %s\n' "$image_id"
  } >"$specs/$spec.args.new"
  mv -f "$specs/$spec.args.new" "$specs/$spec.args"
}

# The spec of a neko that answers /health becomes `current`; every other spec goes.
set_current() {
  local f h
  printf '%s\n' "$spec" >"$specs/current.new"
  mv -f "$specs/current.new" "$specs/current"
  for f in "$specs"/*.args "$specs"/*.env; do
    [[ -e $f ]] || continue
    h=${f##*/}
    h=${h%.*}
    [[ $h == "$spec" ]] || rm -f "$f"
  done
}

# fresh HASH: creates $name afresh from the recorded spec HASH (the profile's stale locks cleared
# first), not waited for; 1 with fail_reason when docker cannot create it.
fresh() {
  local hash=$1 line img="" prof=""
  local -a args=()
  while IFS= read -r line; do
    case ${line%% *} in
      arg) args+=("${line#* }") ;;
      image) img=${line#* } ;;
      profile) prof=${line#* } ;;
    esac
  done <"$specs/$hash.args"
  [[ -n $img ]] || {
    fail_reason="its spec $specs/$hash.args names no image"
    return 1
  }
  clear_locks "$img" "$prof" || log "$fail_reason (starting it anyway)"
  docker run --detach --name "$name" --env-file "$specs/$hash.env" ${args[@]+"${args[@]}"} "$img" >/dev/null 2>"$tmp/err" || {
    fail_reason="could not be created: $(docker_error "$tmp/err")"
    return 1
  }
}

# Brings NAME-previous back as NAME (no wait): a new container from its recorded spec, since an
# image may not start the same container twice; only a container deployed before specs were
# recorded (or whose spec docker refuses) is started again. 1 with fail_reason when neither works.
restore_previous() {
  local hash
  docker rm --force --volumes "$name" >/dev/null 2>&1 || true
  hash=$(spec_of "$prev")
  if recorded "$hash"; then
    if fresh "$hash"; then
      docker rm --force "$prev" >/dev/null 2>&1 || true
      log "created $name afresh from the previous spec (image $prev_image; its old container is not started again)"
      return 0
    fi
    log "the previous $name $fail_reason; starting its old container again"
    docker rm --force --volumes "$name" >/dev/null 2>&1 || true
  else
    log "$prev has no recorded spec (deployed before neko-rollout recorded them): starting its old container again"
  fi
  docker rename "$prev" "$name" 2>"$tmp/err" || {
    fail_reason="could not be renamed back: $(docker_error "$tmp/err")"
    return 1
  }
  clear_locks "$prev_image" || log "$fail_reason (starting it anyway)"
  docker start "$name" >/dev/null 2>"$tmp/err" || {
    fail_reason="could not be started again: $(docker_error "$tmp/err")"
    return 1
  }
}

# A leftover of an interrupted earlier run.
handle_leftovers() {
  if exists "$cand"; then
    log "removing $cand, left over by an interrupted run"
    docker rm --force --volumes "$cand" >/dev/null
  fi
  exists "$prev" || return 0
  prev_image=$(docker inspect --format '{{.Image}}' "$prev")
  if ! exists "$name"; then
    log "$prev without $name: an earlier run stopped during its swap; restoring the last good container first"
    if [[ $(docker inspect --format '{{.State.Running}}' "$prev") == true ]]; then
      docker rename "$prev" "$name"
    else
      restore_previous || die "the last good $name $fail_reason"
    fi
    return 0
  fi
  local addr
  if addr=$(published_addr "$name" "$http_port") && [[ $(http_status "$addr") == 200 ]]; then
    log "$prev left over next to a $name that answers /health: removing $prev"
    docker rm --force "$prev" >/dev/null
  else
    log "$prev left over next to a $name that does not answer /health: restoring $prev"
    restore_previous || die "the last good $name $fail_reason"
  fi
}

# ---------------------------------------------------------------- the rollout

candidate_failed() {
  log "the candidate $cand $1; its last log lines:"
  tail_logs "$cand"
  docker rm --force --volumes "$cand" >/dev/null 2>&1 || true
  if exists "$name"; then
    die "$2; the running $name was not touched"
  fi
  die "$2; no $name was running and none was started"
}

# The one-line fix for the image's authors, from the candidate's log: the Nix-built neko image's
# entrypoint creates its user with `getent ... || groupadd` and has no getent.
restart_fix() {
  local line user_exists=0
  while IFS= read -r line; do
    if [[ $line =~ (groupadd|useradd|addgroup|adduser):.*(already exists|in use) ]]; then user_exists=1; fi
  done < <(docker logs --tail 30 "$cand" 2>&1 || true)
  if ((user_exists)); then
    printf '%s' "the image cannot start the same container twice (its entrypoint is not idempotent): add getent to its runtime, or create the user with \`groupadd -f\` / \`id -u neko || useradd\`"
  else
    printf '%s' "the image cannot start the same container twice: its entrypoint fails in a container that ran before (see the log lines above); make its start idempotent"
  fi
}

# The last log line of container $1 that is not blank, masked.
last_log_line() {
  local line last=""
  while IFS= read -r line; do
    [[ -z ${line//[[:space:]]/} ]] || last=$line
  done < <(docker logs --tail 30 "$1" 2>&1 || true)
  printf '%s' "${last:-no log line}" | mask
}

# The candidate, stopped and started again, must answer /health again. One that cannot is an image
# no restart policy, `docker start` or daemon restart may bring back (none here does: see Specs).
restart_check() {
  local started
  started=$(date +%s)
  docker stop --time 10 "$cand" >/dev/null 2>"$tmp/err" || {
    fail_reason="could not be stopped: $(docker_error "$tmp/err")"
    return 1
  }
  docker start "$cand" >/dev/null 2>"$tmp/err" || {
    fail_reason="could not be started again: $(docker_error "$tmp/err")"
    return 1
  }
  wait_healthy "$cand" "$http_port" "$health_seconds" "$started" || {
    fail_reason="did not survive a restart: stopped and started again, it $fail_reason (its last log line: $(last_log_line "$cand"))"
    return 1
  }
}

# The restart check's verdict: passed; failed and refused (NEKO_REQUIRE_RESTART=1, or a restart
# policy in NEKO_RUN_ARGS that would start the container again); or failed with a loud warning.
restart_gate() {
  local why=""
  if restart_check; then
    log "the candidate survives a restart (stopped, started, /health again)"
    return 0
  fi
  ((!require_restart)) || why=" (NEKO_REQUIRE_RESTART=1)"
  [[ $restart_policy == no ]] || why=" (NEKO_RUN_ARGS has --restart=$restart_policy: Docker would start this container again, and it would fail)"
  [[ -z $why ]] || candidate_failed "$fail_reason" "$(restart_fix); the new image was not rolled out$why"
  log "WARNING: the candidate $cand $fail_reason; its last log lines:"
  tail_logs "$cand"
  log "WARNING: $(restart_fix)"
  log "WARNING: rolling it out anyway: $name's container is never started twice (--restart=no; a rollback creates it afresh, and so does neko-restore.sh at boot and after Docker restarts); NEKO_REQUIRE_RESTART=1 refuses such an image"
}

run_candidate() {
  local -a throwaway_profile=()
  [[ -z $profile ]] || throwaway_profile=(--volume "$profile_dir") # an anonymous volume: never the real profile
  stage=candidate
  phase="starting the candidate $cand"
  local started
  started=$(date +%s)
  if ! docker run --detach --name "$cand" --restart=no --env-file "$tmp/env" \
    --publish "127.0.0.1::$http_port" --label neko-infra.role=candidate \
    ${throwaway_profile[@]+"${throwaway_profile[@]}"} ${cand_args[@]+"${cand_args[@]}"} "$image_id" >/dev/null 2>"$tmp/err"; then
    candidate_failed "could not start: $(docker_error "$tmp/err")" "the new image was not rolled out"
  fi
  log "started the candidate $cand"
  phase="waiting up to ${health_seconds}s for the candidate $cand to answer /health"
  wait_healthy "$cand" "$http_port" "$health_seconds" "$started" ||
    candidate_failed "$fail_reason" "the new image was not rolled out"
  log "the candidate answers /health"
  # neko-check-lib.sh: the capture pipeline runs for a few frames, the desktop is not blank.
  check_candidate "$cand" "$health_addr" "$tmp/env" || candidate_failed "$fail_reason" "the new image was not rolled out"
  # Last: a candidate that fails it is left stopped.
  phase="restarting the candidate $cand (it must answer /health again)"
  restart_gate
  docker rm --force --volumes "$cand" >/dev/null
  stage=prepare
}

# Swap failed: put the previous container back (or, on a first deploy, remove the failed one).
roll_back() {
  local reason=$1 new_lines
  phase="rolling back to $prev"
  new_lines=$(log_lines "$name")
  if ((!had_prev)); then
    docker rm --force --volumes "$name" >/dev/null 2>&1 || true
    log "the new $name $reason; its last log lines:"
    printf '%s\n' "$new_lines" >&2
    die "first deploy failed: the failed $name was removed"
  fi
  local started
  started=$(date +%s)
  if restore_previous && wait_healthy "$name" "$http_port" "$health_seconds" "$started"; then
    log "the new $name $reason; its last log lines:"
    printf '%s\n' "$new_lines" >&2
    log "the previous $name answers /health again; its last log lines:"
    tail_logs "$name"
    stage=finished
    die "the update was rolled back: the new container failed after the swap; the previous image $prev_image runs again"
  fi
  log "the new $name $reason; its last log lines:"
  printf '%s\n' "$new_lines" >&2
  log "the previous $name, brought back, $fail_reason; its last log lines:"
  tail_logs "$name"
  stage=finished
  die "the update failed and so did the rollback: $name is down"
}

swap() {
  local started
  stage=swap
  if exists "$name"; then
    prev_image=$(docker inspect --format '{{.Image}}' "$name")
    phase="stopping the running $name"
    docker stop "$name" >/dev/null
    docker rename "$name" "$prev"
    had_prev=1
    log "stopped $name, kept as $prev"
  fi
  phase="starting the new $name"
  clear_locks "$image_id" || roll_back "did not start: $fail_reason"
  started=$(date +%s)
  if ! docker run --detach --name "$name" --env-file "$tmp/env" --label "$spec_label=$spec" \
    ${publish[@]+"${publish[@]}"} ${profile_args[@]+"${profile_args[@]}"} ${final_args[@]+"${final_args[@]}"} "$image_id" >/dev/null 2>"$tmp/err"; then
    roll_back "could not start: $(docker_error "$tmp/err")"
  fi
  phase="waiting up to ${health_seconds}s for the new $name to answer /health"
  wait_healthy "$name" "$http_port" "$health_seconds" "$started" || roll_back "$fail_reason"
  if ((had_prev)); then
    docker rm --force "$prev" >/dev/null
  fi
  stage=finished
}

# neko answers on its own port: so must the front, the address users have (tls-front.sh waited
# only for its certificate, since on a new host it comes before neko).
check_front() {
  local url=${NEKO_FRONT_URL:-} budget=${NEKO_FRONT_SECONDS:-60} deadline code="" err=""
  [[ -n $url ]] || return 0
  [[ $url =~ ^https://[^/]+/$ ]] || die "NEKO_FRONT_URL must be https://SUBJECT/, got '$url'"
  [[ $budget =~ ^[1-9][0-9]*$ ]] || die "NEKO_FRONT_SECONDS must be a positive number of seconds, got '$budget'"
  local -a curl_args=(-sS -o /dev/null -w '%{http_code}' --max-time 5 --connect-to ":443:127.0.0.1:443")
  [[ -z ${NEKO_FRONT_CA_FILE:-} ]] || curl_args+=(--cacert "$NEKO_FRONT_CA_FILE")
  phase="checking /health through the HTTPS front ${url}"
  deadline=$((SECONDS + budget))
  while :; do
    code=$(curl "${curl_args[@]}" "${url}health" 2>"$tmp/front.err") || true
    [[ $code != 200 ]] || break
    if ((SECONDS >= deadline)); then
      err=$(grep -v '^[[:space:]]*$' "$tmp/front.err" | tail -n 1 | cut -c1-200) || true
      die "$name answers /health on http://$health_addr, but ${url}health answered ${code:-nothing}${err:+ ($err)} within ${budget}s: is the HTTPS front running (docker logs neko-tls)?"
    fi
    sleep 1
  done
  log "${url}health answers 200 through the HTTPS front"
}

record_state() {
  [[ -n $state_dir ]] || {
    [[ -z $api_token ]] || log "NEKO_API_TOKEN is set but NEKO_STATE_DIR is not: the token was not recorded"
    return 0
  }
  if [[ -n $api_token ]]; then
    (umask 077 && printf '%s\n' "$api_token" >"$state_dir/api-token.new")
    mv -f "$state_dir/api-token.new" "$state_dir/api-token"
  fi
  printf 'http://%s\n' "$health_addr" >"$state_dir/neko-url.new"
  mv -f "$state_dir/neko-url.new" "$state_dir/neko-url"
}

# What `npm run status` reads (scripts/neko-status.sh): the last deploy, SPECS/deployed, one
# `key value` a line. An unchanged run keeps the record of the deploy that made what runs.
record_deploy() {
  [[ $1 != unchanged || ! -f $specs/deployed ]] || return 0
  printf 'time %s\noutcome %s\nref %s\nimage %s\nspec %s\nshown %s\nscreenshot %s\n' "$(date +%s)" "$1" "$2" \
    "$image_id" "$spec" "${NEKO_SHOWN_DIGEST:--}" "${NEKO_SCREENSHOT:-${state_dir:+$state_dir/screenshot.jpg}}" >"$specs/deployed.new"
  mv -f "$specs/deployed.new" "$specs/deployed"
}

# On every exit; the exit status survives it (bash 3.2 would end with the trap's last status).
cleanup() {
  local rc=$?
  rm -rf "$tmp"
  [[ -z $deploying ]] || rm -f "$deploying"
  [[ -z $lock_held ]] || rm -rf "$lock_held"
  exit "$rc"
}

on_signal() {
  trap - TERM INT
  log "ran out of its time budget (or was stopped) while $phase"
  case $stage in
    candidate)
      docker rm --force --volumes "$cand" >/dev/null 2>&1 || true
      log "removed $cand; the running $name was not touched"
      ;;
    swap)
      if exists "$prev"; then
        if restore_previous 2>/dev/null; then
          log "put the previous $name back (started; not waited for)"
        else
          log "could not put $prev back: the next run restores it"
        fi
      elif [[ -n $prev_image ]] && exists "$name" && [[ $(docker inspect --format '{{.State.Running}}' "$name") != true ]]; then
        # stopped, not yet renamed: brought back the same way
        if docker rename "$name" "$prev" 2>/dev/null && restore_previous 2>/dev/null; then
          log "put the stopped $name back (not waited for)"
        fi
      fi
      ;;
  esac
  exit 143
}

main() {
  (($# == 1)) || {
    echo "usage: bash -s -- IMAGE_REF (env: see the header of neko-rollout.sh)" >&2
    exit 2
  }
  [[ -n $http_port ]] || die "NEKO_HTTP_PORT is not set"
  check_inputs
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/neko-rollout.XXXXXX")
  deploying=""
  trap cleanup EXIT
  trap on_signal TERM INT
  [[ -n $registry_password ]] && secrets+=("$registry_password")
  [[ -n $api_token ]] && secrets+=("$api_token")

  local out
  out=$(docker version --format '{{.Server.Version}}' 2>&1) || die "cannot reach the Docker engine: ${out##*$'\n'}"

  if [[ -n $state_dir && ! -d $state_dir ]]; then (umask 077 && mkdir -p "$state_dir"); fi
  choose_spec_dir
  take_lock "$spec_dir/neko-rollout-$name.lock" || die_untouched "$fail_reason"
  # The host's idle check (host-idle-stop.sh) leaves a host alone while this flag is there.
  if [[ -n $state_dir ]]; then
    deploying=$state_dir/deploying
    touch "$deploying"
  fi

  choose_encoder
  write_env_file
  resolve_image "$1"
  spec=$(spec_hash)
  profile_args=()
  [[ -z $profile ]] || profile_args=(--volume "$profile:$profile_dir")
  if [[ $profile == /* && ! -d $profile ]]; then mkdir -p "$profile"; fi

  phase="checking what runs"
  handle_leftovers
  local addr
  if [[ $(docker inspect --format "{{.State.Running}} {{index .Config.Labels \"$spec_label\"}}" "$name" 2>/dev/null) == "true $spec" ]] &&
    addr=$(published_addr "$name" "$http_port") && [[ $(http_status "$addr") == 200 ]]; then
    health_addr=$addr
    save_spec # the same spec: recorded where it was not yet (a neko deployed before specs were)
    set_current
    record_state
    record_deploy unchanged "$1"
    check_front
    printf '%s unchanged %s http://%s\n' "$name" "$image_id" "$health_addr"
    return 0
  fi

  local outcome=started
  exists "$name" && outcome=replaced
  run_candidate
  save_spec
  swap
  set_current
  record_state
  record_deploy "$outcome" "$1"
  keep_screenshot
  check_front
  log "$name $outcome: $image_id answers /health on http://$health_addr"
  printf '%s %s %s http://%s\n' "$name" "$outcome" "$image_id" "$health_addr"
}

main "$@" </dev/null
