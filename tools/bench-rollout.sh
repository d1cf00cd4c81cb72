#!/usr/bin/env bash
# Measures what an image update costs on a Docker host, with the harness's registry and dockerd
# and two fixture images (tests/fixtures/flake#layered) that differ only in their small /www layer:
#
#   downtime   seconds /health on the public port fails, seen by a poller at 50 ms, per update:
#              (a) scripts/neko-rollout.sh (candidate, then swap)
#              (b) a plain replace: docker rm -f, then docker run of the new image (what
#                  @pulumi/docker's Container replacement did), until /health answers
#   bytes      what the host pulls from the registry (blob and manifest GETs in its log) for the
#              first image and for the update, next to the whole image's size
#
# Usage: bash tools/bench-rollout.sh [CYCLES]   (default 5 updates each way; prints medians)
# Needs root (the harness's dockerd), nix with the fixture flake's settings, skopeo, curl.
set -euo pipefail
cd "$(dirname "$0")/.."
cycles=${1:-5}
[[ $cycles =~ ^[1-9][0-9]*$ ]] || {
  echo "usage: bash tools/bench-rollout.sh [CYCLES]" >&2
  exit 2
}
log() { echo "bench-rollout: $*" >&2; }
die() {
  log "$*"
  exit 1
}
[[ $(id -u) == 0 ]] || die "needs root (tests/harness/dockerd.sh)"

state=$(mktemp -d /tmp/nbr-XXXXXX) # short: dockerd's socket path lives under it
poller=""
outs=()
cleanup() {
  [[ -z $poller ]] || kill "$poller" 2>/dev/null || true
  ((${#outs[@]} == 0)) || nix store delete "${outs[@]}" >/dev/null 2>&1 || true
  tests/harness/dockerd.sh stop "$state/docker" >/dev/null 2>&1 || log "stopping dockerd failed (state in $state)"
  tests/harness/registry.sh stop "$state/registry" >/dev/null 2>&1 || log "stopping the registry failed (state in $state)"
  rm -rf "$state"
}
trap cleanup EXIT

# ---------------------------------------------------------------- services and images

for _ in 1 2 3 4 5; do
  port=$((20000 + RANDOM % 30000))
  if tests/harness/registry.sh start "$state/registry" "127.0.0.1:$port" >"$state/registry-start.log" 2>&1; then break; fi
done
[[ -f $state/registry/env ]] || die "the registry did not start: $(tail -n1 "$state/registry-start.log")"
# shellcheck source=/dev/null
source "$state/registry/env"
tests/harness/dockerd.sh start "$state/docker" "$REGISTRY_ADDR" >"$state/dockerd-start.log" 2>&1 ||
  die "dockerd did not start: $(tail -n1 "$state/dockerd-start.log")"
# shellcheck source=/dev/null
source "$state/docker/env"
export DOCKER_HOST DOCKER_CONFIG
export PATH="${DOCKER_BIN%/*}:$PATH" # the Debian client, as the script's `docker`

refs=()
for v in a b; do
  mkdir "$state/flake-$v"
  cp -r tests/fixtures/flake/. "$state/flake-$v/"
  echo "bench-$v" >"$state/flake-$v/www/version"
  out=$(nix build --json --no-link "path:$state/flake-$v#layered" | jq -r '.[0].outputs.out')
  outs+=("$out")
  skopeo copy --quiet --dest-tls-verify=false --dest-creds "$REGISTRY_USER:$REGISTRY_PASSWORD" \
    --digestfile "$state/digest-$v" "docker-archive:$out" "docker://$REGISTRY_ADDR/neko:bench-$v" >&2
  refs+=("$REGISTRY_ADDR/neko@$(cat "$state/digest-$v")")
done
log "images: ${refs[*]}"

# ---------------------------------------------------------------- helpers

http_port=$((port + 1))
while curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$http_port/" || [[ $? != 7 ]]; do http_port=$((http_port + 1)); done
url=http://127.0.0.1:$http_port/health
publish="127.0.0.1:$http_port:$http_port/tcp"
run_args=$'--shm-size=64m\n--hostname=neko\n--restart=no'
env_lines="NEKO_SERVER_BIND=:$http_port"

# neko-rollout.sh as the Command runs it: `bash -s -- REF`, export lines then the script on stdin.
rollout() {
  {
    printf 'export %s=%q\n' NEKO_HTTP_PORT "$http_port" NEKO_PUBLISH "$publish" NEKO_RUN_ARGS "$run_args" \
      NEKO_ENV "$env_lines" NEKO_PROFILE "$state/profile" NEKO_PROFILE_DIR /home/neko/.config/chromium \
      NEKO_STATE_DIR "$state/neko" REGISTRY_USER "$REGISTRY_USER" REGISTRY_PASSWORD "$REGISTRY_PASSWORD"
    cat scripts/neko-rollout.sh
  } | bash -s -- "$1" >/dev/null 2>"$state/rollout.err" || {
    cat "$state/rollout.err" >&2
    die "neko-rollout.sh $1 failed"
  }
}

# What @pulumi/docker's replacement did: remove (SIGKILL), run the new image, wait for /health.
plain_replace() {
  local -a args=() line
  while IFS= read -r line; do args+=("$line"); done <<<"$run_args"
  printf '%s\n' "$env_lines" >"$state/plain.env"
  docker rm --force neko >/dev/null
  docker run --detach --name neko --env-file "$state/plain.env" --publish "$publish" \
    --volume "$state/profile:/home/neko/.config/chromium" "${args[@]}" "$1" >/dev/null 2>"$state/run.err" ||
    die "plain replace: docker run failed: $(tail -n1 "$state/run.err")"
  local deadline=$((SECONDS + 60))
  until [[ $(curl -s --max-time 1 "$url" || true) == true ]]; do
    ((SECONDS < deadline)) || die "plain replace: $1 did not answer /health within 60s"
    sleep 0.02
  done
}

# One probe of /health about every 50 ms: `EPOCHREALTIME status` lines into FILE.
poll() {
  while :; do
    local t=$EPOCHREALTIME code
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 0.5 "$url" || true)
    echo "$t $code"
    sleep 0.04
  done >"$1"
}

# Seconds of failed probes in FILE: from each failed probe to the next probe.
downtime() {
  awk '{ if (n++ && bad) down += $1 - t; t = $1; bad = ($2 != 200) } END { printf "%.2f\n", down }' "$1"
}

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

measure() { # measure FILE CMD...: runs CMD with the poller on; FILE.result: its downtime and wall time
  poll "$1" &
  poller=$!
  sleep 0.2
  local t0=$EPOCHREALTIME
  "${@:2}"
  local t1=$EPOCHREALTIME
  sleep 0.3
  kill "$poller"
  wait "$poller" 2>/dev/null || true
  poller=""
  echo "$(downtime "$1") $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')" >"$1.result"
}

# Bytes of GET responses for /v2/neko/ in the registry log after line FROM.
pulled_bytes() {
  tail -n +"$(($1 + 1))" "$REGISTRY_LOG" | awk '
    /msg="response completed"/ && /http\.request\.method=GET/ && /http\.request\.uri="?\/v2\/neko\/(blobs|manifests)\// {
      if (match($0, /http\.response\.written=[0-9]+/)) n += substr($0, RSTART + 22, RLENGTH - 22)
    }
    END { print n + 0 }'
}
log_lines() { wc -l <"$REGISTRY_LOG"; }

# ---------------------------------------------------------------- bytes pulled

mark=$(log_lines)
rollout "${refs[0]}"
first_bytes=$(pulled_bytes "$mark")
mark=$(log_lines)
rollout "${refs[1]}"
update_bytes=$(pulled_bytes "$mark")
whole=$(skopeo inspect --raw --tls-verify=false --creds "$REGISTRY_USER:$REGISTRY_PASSWORD" "docker://${refs[1]}" |
  jq '[.config.size] + [.layers[].size] | add')
layers=$(skopeo inspect --raw --tls-verify=false --creds "$REGISTRY_USER:$REGISTRY_PASSWORD" "docker://${refs[1]}" |
  jq -r '[.layers[].size | tostring] | join(" + ")')
unpacked=$(docker image inspect --format '{{.Size}}' "${refs[1]}")

# ---------------------------------------------------------------- downtime

a_down=() a_wall=() b_down=() b_wall=()
for ((i = 0; i < cycles; i++)); do
  ref=${refs[i % 2]} # the other image than the one running (refs[1] runs now)
  measure "$state/poll-a-$i" rollout "$ref"
  read -r d w <"$state/poll-a-$i.result"
  a_down+=("$d") a_wall+=("$w")
  log "cycle $((i + 1)) (a) neko-rollout.sh: down ${d}s, run ${w}s"
done
ids=("$(docker image inspect --format '{{.Id}}' "${refs[0]}")" "$(docker image inspect --format '{{.Id}}' "${refs[1]}")")
for ((i = 0; i < cycles; i++)); do
  measure "$state/poll-b-$i" plain_replace "${ids[(i + cycles) % 2]}"
  read -r d w <"$state/poll-b-$i.result"
  b_down+=("$d") b_wall+=("$w")
  log "cycle $((i + 1)) (b) plain replace: down ${d}s, run ${w}s"
done

echo "image update, $cycles cycles each (medians; /health polled every ~50 ms):"
echo "  (a) neko-rollout.sh:  downtime $(printf '%s\n' "${a_down[@]}" | median) s, whole run $(printf '%s\n' "${a_wall[@]}" | median) s"
echo "  (b) plain replace:    downtime $(printf '%s\n' "${b_down[@]}" | median) s, whole run $(printf '%s\n' "${b_wall[@]}" | median) s"
echo "bytes pulled from the registry:"
echo "  first image:                 $first_bytes"
echo "  update (one small layer):    $update_bytes"
echo "  whole image (compressed):    $whole (config + layers $layers); unpacked $unpacked"
