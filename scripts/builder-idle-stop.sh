#!/usr/bin/env bash
# Stops this builder after IDLE_MINUTES without a Nix build or an SSH session. Run every minute by
# the neko-builder-idle systemd timer (installed by the builder's user-data); the instance's
# shutdown behaviour is "stop", so powering off stops it and the next `pulumi up` starts it again.
#
# Usage: builder-idle-stop.sh IDLE_MINUTES
# Env:   IDLE_STAMP     file whose mtime is the last busy moment (default /var/lib/neko-infra/last-busy)
#        IDLE_SHUTDOWN  command that stops the machine (default: systemctl poweroff)
# The first run after a boot counts as busy (the boot was the activity): a stamp older than the
# boot is from before the last stop, and would stop a freshly woken builder at once.
set -euo pipefail

(($# == 1)) || { echo "usage: builder-idle-stop.sh IDLE_MINUTES" >&2; exit 2; }
minutes=$1
stamp=${IDLE_STAMP:-/var/lib/neko-infra/last-busy}
shutdown_cmd=${IDLE_SHUTDOWN:-systemctl poweroff}

# Why this machine is busy, or nothing when it is idle.
busy_reason() {
  local procs
  procs=$(ps -eo user=,args=)
  # a build or copy: the nix client, the daemon serving a client, a build user's process, a push
  if grep -qE '^\S+ +(\S*/)?(nix|nix-build|nix-store|skopeo)( |$)' <<<"$procs"; then echo "nix/skopeo running"; return; fi
  if grep -qE '^\S+ +(\S*/)?nix-daemon .*--stdio' <<<"$procs"; then echo "nix-daemon serving a client"; return; fi
  if grep -qE '^nixbld' <<<"$procs"; then echo "a build user is running a builder"; return; fi
  # someone (or Pulumi) logged in over SSH: sshd names session processes "sshd: user@..."
  # (OpenSSH 9.8+: "sshd-session: user@...")
  if grep -qE '^\S+ +sshd(-session)?: [^ ]+@' <<<"$procs"; then echo "an SSH session is open"; return; fi
}

mkdir -p "$(dirname "$stamp")"
boot=$(sed -n 's/^btime \([0-9][0-9]*\)$/\1/p' /proc/stat) # when this machine booted (epoch s)
if [[ ! -e $stamp ]] || (($(stat -c %Y "$stamp") < ${boot:-0})); then
  touch "$stamp"
  echo "builder-idle-stop: busy (first run after boot)"
  exit 0
fi
reason=$(busy_reason)
if [[ -n $reason ]]; then
  touch "$stamp"
  echo "builder-idle-stop: busy ($reason)"
  exit 0
fi
idle=$(($(date +%s) - $(stat -c %Y "$stamp")))
if ((idle >= minutes * 60)); then
  echo "builder-idle-stop: idle for ${idle}s (limit ${minutes} min): stopping"
  $shutdown_cmd
else
  echo "builder-idle-stop: idle for ${idle}s of $((minutes * 60))s"
fi
