#!/usr/bin/env bash
# Stops this neko host after IDLE_MINUTES without a connected neko session, an SSH session or a
# deploy. Run every minute as root by a systemd timer (installed by the host's user-data); the
# instance's shutdown behaviour is "stop", so powering off stops it and only its volume is billed
# until the wake-on-visit link (or the next `pulumi up`) starts it again.
#
# Usage: host-idle-stop.sh IDLE_MINUTES
# Env:   NEKO_STATE_DIR  written by the deploy (default /var/lib/neko-infra/host):
#                          api-token  neko's static admin API token (NEKO_SESSION_API_TOKEN), 0600
#                          neko-url   where neko answers on this host, e.g. http://127.0.0.1:8080
#                          deploying  exists while a deploy runs (its mtime: when it began)
#        IDLE_STAMP      file whose mtime is the last busy moment (default NEKO_STATE_DIR/last-busy)
#        IDLE_SHUTDOWN   command that stops the machine (default: systemctl poweroff)
#
# Busy: a neko user or admin is connected (GET <neko-url>/api/stats: total_users, total_admins),
# an SSH session is open, or a deploy began less than 30 minutes ago. neko not answering (its
# container being replaced, or broken) is not busy, only logged: a broken neko must not keep a GPU
# host running. The first run after a boot counts as busy (the boot was the activity).
# Prints one line per run. The token goes to curl on standard input, never on a command line.
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
now=$(date +%s)

# neko's connected sessions, or why it could not tell: sets $neko_busy (0/1) and $neko_note.
ask_neko() {
  neko_busy=0
  local url token="" body users admins space='[[:space:]]*'
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
  url=${url%/}/api/stats
  # -q: no ~/.curlrc; --noproxy: the token goes to this host only; -H @-: the header from stdin.
  if ! body=$(printf 'Authorization: Bearer %s\n' "$token" |
    curl -q --silent --show-error --fail --noproxy '*' --proto =http,https \
      --connect-timeout 3 --max-time 5 -H @- "$url" 2>&1); then
    neko_note="neko not answering at $url: ${body//$'\n'/ }"
    return
  fi
  if [[ $body =~ [{,]$space\"total_users\"$space:$space([0-9]+) ]]; then users=${BASH_REMATCH[1]}; fi
  if [[ $body =~ [{,]$space\"total_admins\"$space:$space([0-9]+) ]]; then admins=${BASH_REMATCH[1]}; fi
  if [[ -z ${users-} || -z ${admins-} ]]; then
    neko_note="neko not answering at $url: no total_users/total_admins in its answer: ${body:0:200}"
    neko_note=${neko_note//$'\n'/ }
    return
  fi
  users=$((10#$users)) admins=$((10#$admins))
  neko_note="neko: $users user(s), $admins admin(s) connected"
  ((users + admins == 0)) || neko_busy=1
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

# When this machine booted (epoch seconds), from the kernel.
boot_time() {
  local key value _
  while read -r key value _; do
    if [[ $key == btime ]]; then echo "$value"; return; fi
  done </proc/stat
  echo 0
}

mkdir -p "$(dirname "$stamp")"
neko_note=""
neko_busy=0
if [[ ! -e $stamp ]] || (($(stat -c %Y "$stamp") < $(boot_time))); then
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
