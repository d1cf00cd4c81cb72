#!/usr/bin/env bash
# Installs the Debian packages the real-tool and real-engine suites drive, and
# writes the Nix settings those suites need on a machine without internet.
set -euo pipefail

packages=(
  nix-bin busybox-static git jq
  openssh-server openssh-client iproute2
  docker-registry apache2-utils skopeo docker.io
  shellcheck cloud-init curl procps
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Nix: flakes on, no public cache (unreachable here: every build would wait on it),
# no build users (single-user root), and a static shell for test derivations.
mkdir -p /etc/nix
cat >/etc/nix/nix.conf <<'CONF'
experimental-features = nix-command flakes
substituters =
build-users-group =
extra-sandbox-paths = /bin/sh=/bin/busybox /bin/busybox
CONF
echo "install-deps: ok" >&2
