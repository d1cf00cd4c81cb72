#!/usr/bin/env bash
# Stops this neko host after IDLE_MINUTES in which nobody used neko, no SSH session was open and no
# deploy ran. Run every minute as root by a systemd timer (installed by the host's user-data); the
# instance's shutdown behaviour is "stop", so powering off stops it and only its volume is billed
# until the wake-on-visit link (or the next `pulumi up`) starts it again.
#
# Usage: host-idle-stop.sh IDLE_MINUTES
# Env:   NEKO_STATE_DIR  written by the deploy (default /var/lib/neko-infra/host):
#                          api-token  neko's static admin API token (NEKO_SESSION_API_TOKEN), 0600
#                          neko-url   where neko answers on this host, e.g. http://127.0.0.1:8080
#                          deploying  exists while a deploy runs (its mtime: when it began)
#                        and kept here between runs: idle-control (who held control at the last
#                        run), idle-pictures (digests of the desktop's recent pictures, never the
#                        pictures)
#        IDLE_STAMP      file whose mtime is the last busy moment (default NEKO_STATE_DIR/last-busy)
#        IDLE_SHUTDOWN   command that stops the machine (default: systemctl poweroff)
#
# Busy: someone uses neko, an SSH session is open, or a deploy began less than 30 minutes ago.
# "Uses neko" is input, and neko v3's API reports no input times (GET /api/stats: has_host,
# host_id, total_users, total_admins; GET /api/sessions: when each tab connected and started
# watching; neither changes while a viewer types). An open tab alone is no use: a forgotten tab
# stays connected, watching, and even keeps control, for ever. So, with at least one viewer
# connected, a run is busy when
#   - someone took control since the last run (host_id is set and differs from the last run's;
#     control lost because its tab disconnected does not count: a reconnecting tab is no use), or
#   - someone can give input (someone holds control, or implicit hosting is on: GET
#     /api/room/settings; neko drops input from a viewer without control otherwise) and the
#     desktop shows a picture it has not shown in the last IDLE_MINUTES (GET
#     /api/room/screen/shot.jpg, compared by SHA-256 with the digests of earlier runs). The
#     memory absorbs what changes by itself in a loop (a blinking caret, a carousel); a playing
#     video counts as use while someone holds control. Mouse moves that change nothing on the
#     screen are not seen (neko's screenshot holds no pointer).
# A tab that only watches (nobody in control) is idle, whatever it shows. neko not answering (its
# container being replaced, or broken) is not busy, only logged: a broken neko must not keep a GPU
# host running; neither is a screenshot that fails. The first run after a boot counts as busy (the
# boot was the activity). Prints one line per run. The token goes to curl on standard input, never
# on a command line.
set -euo pipefail

if (($# != 1)) || ! [[ $1 =~ ^[0-9]+$ ]]; then
  echo "usage: host-idle-stop.sh IDLE_MINUTES" >&2
  exit 2
fi
minutes=$1
state_dir=${NEKO_STATE_DIR:-/var/lib/neko-infra/host}
stamp=${IDLE_STAMP:-$state_dir/last-busy}
shutdown_cmd=${IDLE_SHUTDOWN:-systemctl poweroff}
deploy_max_age=1800
max_pictures=240
now=$(date +%s)
base="" token=""
space='[[:space:]]*'

# GET <neko-url>PATH with the API token: the body on stdout, curl's error on stderr.
# -q: no ~/.curlrc; --noproxy: the token goes to this host only; -H @-: the header from stdin.
neko_get() {
  printf 'Authorization: Bearer %s\n' "$token" |
    curl -q --silent --show-error --fail --noproxy '*' --proto =http,https \
      --connect-timeout 3 --max-time 5 -H @- "$base$1"
}

# The value of "KEY" ($1) in the JSON object $2, into $field: a string's content (escapes kept), a
# number, true or false. Only keys that open a member count (a look-alike inside a string has its
# quotes escaped). Returns 1 when absent.
json_field() {
  field=""
  [[ $2 =~ [{,]$space\"$1\"$space:$space(\"(([^\"\\]|\\.)*)\"|[0-9]+|true|false) ]] || return 1
  field=${BASH_REMATCH[1]}
  if [[ $field == \"* ]]; then field=${BASH_REMATCH[2]}; fi
}

# Replaces FILE ($1) with standard input.
save() {
  cat >"$1.new"
  mv -f "$1.new" "$1"
}

# Whether the desktop shows a picture it did not show in the last IDLE_MINUTES: returns 0 when it
# is new, 1 when it was seen, 2 when there is no picture (why in $picture_note). Remembers the
# picture's digest (only the digest) with this run's time in $state_dir/idle-pictures.
desktop_is_new() {
  local list=$state_dir/idle-pictures err=$state_dir/idle-picture-error sum t s kept="" new=0
  # pipefail: a failing curl fails the pipeline; its error goes to a file (the body is binary)
  if ! sum=$(neko_get /api/room/screen/shot.jpg 2>"$err" | sha256sum); then
    picture_note="no screenshot: $(head -c 200 "$err" | tr '\n' ' ')"
    rm -f "$err"
    return 2
  fi
  rm -f "$err"
  sum=${sum%% *}
  if [[ -r $list ]]; then
    while read -r t s; do
      [[ $t =~ ^[0-9]+$ && $s =~ ^[0-9a-f]{64}$ ]] || continue
      ((now - t < minutes * 60 + 60)) || continue
      kept+="$t $s"$'\n'
      [[ $s != "$sum" ]] || new=1
    done <"$list"
  fi
  printf '%s%s %s\n' "$kept" "$now" "$sum" | tail -n "$max_pictures" | save "$list"
  return "$new"
}

# Whether someone uses neko: sets $neko_busy (0/1) and $neko_note (what neko said, or why it could
# not tell). Remembers who holds control in $state_dir/idle-control.
ask_neko() {
  local url body users admins host="" last_host=""
  neko_busy=0
  if [[ ! -r $state_dir/neko-url || ! -r $state_dir/api-token ]]; then
    neko_note="neko not deployed yet (no neko-url or api-token in $state_dir)"
    return
  fi
  url=$(<"$state_dir/neko-url")
  url=${url//[$'\r\n\t ']/}
  IFS= read -r token <"$state_dir/api-token" || true
  token=${token//[$'\r\t ']/}
  if [[ -z $url || -z $token ]]; then
    neko_note="neko not deployed yet (empty neko-url or api-token in $state_dir)"
    return
  fi
  base=${url%/}
  if ! body=$(neko_get /api/stats 2>&1); then
    neko_note="neko not answering at $base/api/stats: ${body//$'\n'/ }"
    neko_note=${neko_note:0:400}
    return
  fi
  if json_field total_users "$body" && [[ $field =~ ^[0-9]+$ ]]; then users=$((10#$field)); fi
  if json_field total_admins "$body" && [[ $field =~ ^[0-9]+$ ]]; then admins=$((10#$field)); fi
  if [[ -z ${users-} || -z ${admins-} ]]; then
    neko_note="neko not answering at $base/api/stats: no total_users/total_admins in its answer: ${body:0:200}"
    neko_note=${neko_note//$'\n'/ }
    return
  fi
  # has_host is false when nobody holds control (host_id is then left out)
  if json_field has_host "$body" && [[ $field == true ]] && json_field host_id "$body"; then host=${field:0:80}; fi
  if [[ -r $state_dir/idle-control ]]; then IFS= read -r last_host <"$state_dir/idle-control" || true; fi
  printf '%s\n' "$host" | save "$state_dir/idle-control"
  neko_note="neko: $users user(s), $admins admin(s) connected"
  ((users + admins > 0)) || return 0
  if [[ -n $host && $host != "$last_host" ]]; then
    neko_note+="; $host took control"
    neko_busy=1
  elif [[ -n $host ]]; then
    neko_note+="; $host in control"
  elif body=$(neko_get /api/room/settings 2>&1) && json_field implicit_hosting "$body" && [[ $field == true ]]; then
    neko_note+="; nobody in control, implicit hosting on"
  else
    neko_note+="; nobody in control"
    return 0
  fi
  picture_note=""
  if desktop_is_new; then
    neko_note+="; the desktop shows a new picture"
    neko_busy=1
  elif [[ -n $picture_note ]]; then
    neko_note+="; $picture_note"
  else
    neko_note+="; the desktop shows no new picture"
  fi
}

# Why this host is busy, into $reason (empty when idle); neko's state is in $neko_note either way.
find_busy_reason() {
  local flag=$state_dir/deploying age procs
  reason=""
  if [[ -e $flag ]]; then
    age=$((now - $(stat -c %Y "$flag")))
    if ((age < deploy_max_age)); then reason="a deploy is running: $flag is ${age}s old"; return; fi
    neko_note+="; ignoring $flag, ${age}s old: a deploy that never finished"
  fi
  # someone (or Pulumi) logged in over SSH: sshd names session processes "sshd: user@..."
  # (OpenSSH 9.8+: "sshd-session: user@...")
  procs=$(ps -eo args=)
  if grep -qE '^sshd(-session)?: [^ ]+@' <<<"$procs"; then reason="an SSH session is open"; return; fi
  if ((neko_busy)); then reason=$neko_note; fi
}

mkdir -p "$(dirname "$stamp")"
neko_note=""
neko_busy=0
boot=$(sed -n 's/^btime \([0-9][0-9]*\)$/\1/p' /proc/stat) # when this machine booted (epoch s)
if [[ ! -e $stamp ]] || (($(stat -c %Y "$stamp") < ${boot:-0})); then
  touch "$stamp"
  echo "host-idle-stop: busy (first run after boot)"
  exit 0
fi
if (($(stat -c %Y "$stamp") > now + 60)); then
  # the clock was set back: such a stamp would keep the host up until the clock catches up
  touch "$stamp"
  echo "host-idle-stop: busy (last-busy stamp was in the future; reset)"
  exit 0
fi
ask_neko
find_busy_reason
if [[ -n $reason ]]; then
  touch "$stamp"
  echo "host-idle-stop: busy ($reason)"
  exit 0
fi
idle=$((now - $(stat -c %Y "$stamp")))
if ((idle >= minutes * 60)); then
  echo "host-idle-stop: idle for ${idle}s (limit ${minutes} min): stopping (${neko_note})"
  $shutdown_cmd
else
  echo "host-idle-stop: idle for ${idle}s of $((minutes * 60))s (${neko_note})"
fi
