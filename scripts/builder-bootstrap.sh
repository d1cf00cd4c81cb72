#!/usr/bin/env bash
# shellcheck disable=SC2154 # marker: set by scripts/setup-lib.sh, which lib/shell.ts puts before this script
# The builder's setup step: run as root over SSH (sudo -n for ec2-user) on an Amazon Linux 2023
# builder, on its first `up` and again whenever this script or its settings change (no reboot:
# user-data holds only the host key). Installs Nix with flakes, makes SSH_USER a trusted user
# (remote builds and store copies need it) with MAX_JOBS builds at once, installs skopeo from
# nixpkgs with a trust policy (skopeo from nixpkgs brings none, and `skopeo copy` refuses to run
# without one), puts both on the PATH of non-interactive SSH shells, proves skopeo can copy, and
# installs the idle stop. The marker is scripts/setup-lib.sh's: `ok nix=<v> skopeo=<v>` last.
#
# Usage: builder-bootstrap.sh SSH_USER MAX_JOBS IDLE_MINUTES
# Env:   IDLE_STOP_SCRIPT    the text of builder-idle-stop.sh (with IDLE_MINUTES > 0)
#        NEKO_INFRA_NIXPKGS  where skopeo comes from (default below)
#        NEKO_INFRA_MARKER   see setup-lib.sh
set -euo pipefail
SETUP_NAME=builder-bootstrap

# skopeo is not in AL2023's core repositories, so it comes from nixpkgs. A release branch, not
# nixpkgs-unstable: it keeps getting security fixes but no breaking upgrades, so every builder gets
# the same skopeo major version. A release is supported until a month after the next one is out
# (YY.05 until the end of December, YY.11 until the end of June): move to 26.11 by then.
nixpkgs=${NEKO_INFRA_NIXPKGS:-github:NixOS/nixpkgs/nixos-26.05}
# Where the Determinate installer puts Nix (the `nix` of this shell is not on PATH yet), and our own
# profile for skopeo: the installer's default profile stays as it made it.
nix_bin=/nix/var/nix/profiles/default/bin
tools_profile=/nix/var/nix/profiles/neko-infra-tools

(($# == 3)) || { echo "usage: builder-bootstrap.sh SSH_USER MAX_JOBS IDLE_MINUTES" >&2; exit 2; }
user=$1
max_jobs=$2
idle_minutes=$3
[[ $max_jobs == auto || $max_jobs =~ ^[1-9][0-9]*$ ]] || { echo "$SETUP_NAME: MAX_JOBS must be auto or a number, not '$max_jobs'" >&2; exit 2; }
[[ $idle_minutes =~ ^[0-9]+$ ]] || { echo "$SETUP_NAME: IDLE_MINUTES must be a number, not '$idle_minutes'" >&2; exit 2; }
trap on_exit EXIT

step "removing the marker of an earlier run"
rm -f "$marker"
wait_for_cloud_init

step "installing git"
dnf install -y -q git-core

if [[ ! -x $nix_bin/nix ]]; then
  step "downloading the Nix installer"
  installer=$(mktemp)
  # A pinned release of the installer (v3.14.0, December 2025), not whatever is newest on the day
  # a builder is created: builders made months apart get the same installer.
  curl --proto '=https' --tlsv1.2 -sSfL https://install.determinate.systems/nix/tag/v3.14.0 -o "$installer"
  step "installing Nix"
  sh "$installer" install linux --no-confirm --init systemd \
    --extra-conf "extra-experimental-features = nix-command flakes" \
    --extra-conf "builders-use-substitutes = true"
  rm -f "$installer"
fi

# Our settings in a file of our own, included from the installer's configuration: a change of
# MAX_JOBS (or of the user) takes effect on a running builder, with a restart of the daemon only.
step "configuring Nix (trusted-users = root $user, max-jobs = $max_jobs)"
conf_changed=0
printf '# Written by neko-infra (scripts/builder-bootstrap.sh)\ntrusted-users = root %s\nmax-jobs = %s\n' "$user" "$max_jobs" |
  write_file /etc/nix/neko-infra.conf 0644 && conf_changed=1
include_in=/etc/nix/nix.conf
[[ ! -f /etc/nix/nix.custom.conf ]] || include_in=/etc/nix/nix.custom.conf
if ! grep -qxF '!include neko-infra.conf' "$include_in" 2>/dev/null; then
  printf '!include neko-infra.conf\n' >>"$include_in"
  conf_changed=1
fi
if ((conf_changed)); then
  systemctl try-restart nix-daemon.service
fi

step "installing skopeo from $nixpkgs"
"$nix_bin/nix" profile install --profile "$tools_profile" "$nixpkgs#skopeo"

# ssh runs commands without a login shell: link the tools where every shell looks.
step "linking nix and skopeo into /usr/local/bin"
mkdir -p /usr/local/bin
for tool in "$nix_bin"/* "$tools_profile/bin/skopeo"; do
  ln -sf "$tool" "/usr/local/bin/$(basename "$tool")"
done

# The trust policy containers' tools read by default; push-image.sh brings its own too.
step "writing /etc/containers/policy.json"
mkdir -p /etc/containers
if [[ ! -f /etc/containers/policy.json ]]; then
  printf '{"default":[{"type":"insecureAcceptAnything"}]}\n' | write_file /etc/containers/policy.json 0644 || true
fi

# One real copy as SSH_USER: `skopeo inspect` works without a policy, `skopeo copy` does not.
step "checking that skopeo can copy an image"
check=$(mktemp -d)
config='{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
digest=$(printf '%s' "$config" | sha256sum | cut -d' ' -f1)
mkdir -p "$check/src/blobs/sha256"
printf '%s' "$config" >"$check/src/blobs/sha256/$digest"
manifest='{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:'$digest'","size":'${#config}'},"layers":[]}'
mdigest=$(printf '%s' "$manifest" | sha256sum | cut -d' ' -f1)
printf '%s' "$manifest" >"$check/src/blobs/sha256/$mdigest"
printf '{"imageLayoutVersion":"1.0.0"}' >"$check/src/oci-layout"
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"check"}}]}' \
  "$mdigest" "${#manifest}" >"$check/src/index.json"
chown -R "$user" "$check"
if ! out=$(cd / && runuser -u "$user" -- /usr/local/bin/skopeo copy --quiet "oci:$check/src:check" "dir:$check/dst" 2>&1); then
  rm -rf "$check"
  echo "$SETUP_NAME: skopeo cannot copy an image as $user: $(tail -n 1 <<<"$out" | sed -E 's/^time="[^"]*" level=[a-z]+ msg="(.*)"$/\1/' | cut -c1-300)" >&2
  exit 1
fi
rm -rf "$check"

idle_timer builder "$idle_minutes"

step "checking nix and skopeo"
nix_version=$(/usr/local/bin/nix --version)
skopeo_version=$(/usr/local/bin/skopeo --version)
nix_version=${nix_version##* }
skopeo_version=${skopeo_version#skopeo version }

step "writing the marker"
write_marker "ok nix=$nix_version skopeo=${skopeo_version%% *}"
echo "$SETUP_NAME: ready: nix $nix_version, skopeo ${skopeo_version%% *}" >&2
