#!/usr/bin/env bash
# What runs on this machine, for `npm run status` (tools/status.js judges it; this only reports).
# Run on the machine itself: over SSH for ec2 and ssh machines (`bash -s -- ROLE` with this script
# on standard input), as a plain `bash` here for a local one. Reads what the steps record, changes
# nothing, starts nothing, never prints a secret.
#
# Usage: neko-status.sh host [NAME] | builder
# stdout: facts, one `key value...` a line, each at most 300 characters:
#   both       now EPOCH | boot EPOCH | idle-minutes N | idle-stamp EPOCH | idle-timer none
#   host       docker VERSION | docker-error MESSAGE
#              specs DIR | specs none        (where neko-rollout.sh recorded the specs)
#              current HASH                  (the spec of the last neko that answered /health)
#              deploy-KEY VALUE              (SPECS/deployed: time outcome ref image spec shown screenshot)
#              container absent | container STATUS EXIT_CODE STARTED_AT FINISHED_AT
#              container-image ID | container-spec LABEL | container-stack LABEL
#              leftover NAME-candidate | leftover NAME-previous
#              health HTTP_CODE HOST:PORT | health none
#              stats USERS ADMINS | stats-error MESSAGE
#              screenshot PATH BYTES EPOCH | screenshot-missing PATH
#              deploying EPOCH               (a rollout runs now)
#   builder    nix VERSION | nix none | store-paths N | store-free-kb N
# Env: NEKO_STATE_DIR (the host's state directory, as neko-rollout.sh's; unset: its defaults).
# neko's API token (for who is connected) goes to curl on standard input, never on a command line.
set -euo pipefail

role=${1:-}
name=${2:-neko}
case $role in host | builder) ;; *)
  echo "usage: neko-status.sh host [NAME] | builder" >&2
  exit 2
  ;;
esac

# One fact a line, capped (a docker error can be long).
fact() {
  local line="$*"
  line=${line//[$'\r\n\t']/ }
  printf '%s\n' "${line:0:300}"
}

# A file's modification time in epoch seconds (GNU and BSD date both take -r FILE).
mtime() { date -r "$1" +%s 2>/dev/null || echo 0; }

boot_time() {
  local key value _
  if [[ -r /proc/stat ]]; then
    while read -r key value _; do
      if [[ $key == btime ]]; then
        echo "$value"
        return
      fi
    done </proc/stat
  fi
  # macOS: "{ sec = 1764750000, usec = 0 } Thu Dec  3 ..."
  value=$(sysctl -n kern.boottime 2>/dev/null || true)
  value=${value#*sec = }
  echo "${value%%,*}"
}

# The idle stop the setup step installed: its minutes (from the unit's ExecStart) and the stamp.
idle_facts() {
  local unit=/etc/systemd/system/neko-$1-idle.service stamp=$2 line
  if [[ -r $unit ]]; then
    while IFS= read -r line; do
      [[ $line != ExecStart=* ]] || fact "idle-minutes ${line##* }"
    done <"$unit"
    [[ ! -e $stamp ]] || fact "idle-stamp $(mtime "$stamp")"
  else
    fact "idle-timer none"
  fi
}

fact "now $(date +%s)"
b=$(boot_time)
[[ ! $b =~ ^[0-9]+$ ]] || fact "boot $b"

if [[ $role == builder ]]; then
  if v=$(nix --version 2>/dev/null); then fact "nix $v"; else fact "nix none"; fi
  if [[ -d /nix/store ]]; then
    # shellcheck disable=SC2012 # a count of names, not a parse of them
    fact "store-paths $(ls /nix/store | wc -l | tr -d ' ')"
    fact "store-free-kb $(df -Pk /nix/store | awk 'NR == 2 { print $4 }')"
  fi
  idle_facts builder /var/lib/neko-infra/last-busy
  exit 0
fi

# ---------------------------------------------------------------- the host

if ! v=$(docker version --format '{{.Server.Version}}' 2>&1); then
  fact "docker-error ${v##*$'\n'}"
  exit 0
fi
fact "docker $v"

# The state directory as neko-rollout.sh chooses it: the one that holds NAME's specs.
state=""
for d in ${NEKO_STATE_DIR:-} /var/lib/neko-infra/host "${XDG_STATE_HOME:-${HOME:-/nonexistent}/.local/state}/neko-infra"; do
  if [[ -d $d/$name-specs ]]; then
    state=$d
    break
  fi
done
specs=$state/$name-specs
current=""
if [[ -z $state ]]; then
  fact "specs none"
else
  fact "specs $specs"
  [[ ! -r $specs/current ]] || current=$(<"$specs/current")
  [[ -z $current ]] || fact "current $current"
  if [[ -r $specs/deployed ]]; then
    while read -r key value; do
      [[ ! $key =~ ^[a-z]+$ ]] || fact "deploy-$key $value"
    done <"$specs/deployed"
  fi
  [[ ! -e $state/deploying ]] || fact "deploying $(mtime "$state/deploying")"
fi

for c in "$name-candidate" "$name-previous"; do
  if docker container inspect "$c" >/dev/null 2>&1; then fact "leftover $c"; fi
done

if ! st=$(docker container inspect --format '{{.State.Status}} {{.State.ExitCode}} {{.State.StartedAt}} {{.State.FinishedAt}}' "$name" 2>/dev/null); then
  fact "container absent"
else
  fact "container $st"
  fact "container-image $(docker container inspect --format '{{.Image}}' "$name")"
  fact "container-spec $(docker container inspect --format '{{index .Config.Labels "neko-infra.spec"}}' "$name")"
  fact "container-stack $(docker container inspect --format '{{index .Config.Labels "neko-infra.stack"}}' "$name")"
  # /health where the recorded spec publishes neko's HTTP port (0.0.0.0 and :: asked on loopback).
  port=""
  if [[ -n $current && -r $specs/$current.args ]]; then
    while read -r key value; do [[ $key != http-port ]] || port=$value; done <"$specs/$current.args"
  fi
  addr=""
  if [[ -n $port && ${st%% *} == running ]]; then
    addr=$(docker port "$name" "$port/tcp" 2>/dev/null | head -n 1) || addr=""
    case $addr in
      0.0.0.0:*) addr=127.0.0.1:${addr##*:} ;;
      "[::]:"* | :::*) addr="[::1]:${addr##*:}" ;;
    esac
  fi
  if [[ -z $addr ]]; then
    fact "health none"
  else
    fact "health $(curl -q -s -o /dev/null -w '%{http_code}' --noproxy '*' --max-time 5 "http://$addr/health" 2>/dev/null || true) $addr"
    # Who is connected: neko's API with the token the deploy left here (api-token, or the spec's env file).
    token=""
    if [[ -r $state/api-token ]]; then
      IFS= read -r token <"$state/api-token" || true
    elif [[ -r $specs/$current.env ]]; then
      while IFS= read -r line; do
        [[ $line != NEKO_SESSION_API_TOKEN=* ]] || token=${line#*=}
      done <"$specs/$current.env"
    fi
    token=${token//[$'\r\t ']/}
    if [[ -z $token ]]; then
      fact "stats-error no API token recorded on this machine"
    elif body=$(printf 'Authorization: Bearer %s\n' "$token" |
      curl -q -s -S --fail --noproxy '*' --max-time 5 -H @- "http://$addr/api/stats" 2>&1); then
      sp='[[:space:]]*'
      if [[ $body =~ \"total_users\"$sp:$sp([0-9]+) ]]; then users=${BASH_REMATCH[1]}; else users=""; fi
      if [[ $body =~ \"total_admins\"$sp:$sp([0-9]+) ]]; then admins=${BASH_REMATCH[1]}; else admins=""; fi
      if [[ -n $users && -n $admins ]]; then fact "stats $users $admins"; else fact "stats-error no total_users/total_admins in neko's answer"; fi
    else
      fact "stats-error GET /api/stats: ${body//$token/[secret]}"
    fi
  fi
fi

if [[ -n $state && -r $specs/deployed ]]; then
  shot=""
  while read -r key value; do [[ $key != screenshot ]] || shot=$value; done <"$specs/deployed"
  [[ $shot != \~/* ]] || shot=${HOME:-}/${shot#\~/}
  if [[ -n $shot && -f $shot ]]; then
    fact "screenshot $shot $(wc -c <"$shot" | tr -d ' ') $(mtime "$shot")"
  elif [[ -n $shot ]]; then
    fact "screenshot-missing $shot"
  fi
fi
idle_facts host "${state:-/var/lib/neko-infra/host}/last-busy"
