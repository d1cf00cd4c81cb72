#!/usr/bin/env bash
# Installs the Debian packages the real-tool and real-engine suites drive (as root; tests/run.sh
# calls it only for those suites). It writes no configuration: the suites' Nix settings are
# tests/harness/nix/nix.conf, read through NIX_CONF_DIR, so /etc/nix/nix.conf stays the machine's.
set -euo pipefail

packages=(
  nix-bin busybox-static git
  openssh-server openssh-client iproute2
  docker-registry apache2-utils skopeo docker.io
  shellcheck cloud-init curl procps coturn openssl sudo xz-utils
  # awscli: the AWS CLI v2 that AL2023 ships, for scripts/host-ready.sh (against a fake EC2)
  awscli
  # runc: the current engine's runtime (tests/harness/dockerd.sh, DOCKERD_ENGINE=current);
  # bsdtar and shasum: a Mac's tar and checksum tool (tests/harness/bsd-path.sh)
  runc libarchive-tools perl
  # iptables: scripts/imds-guard.sh (in a network namespace of the test's own); setcap (libcap2-bin):
  # the Caddy stand-in's file capability, as the official image has (tests/harness/standin-image.sh)
  iptables libcap2-bin
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

echo "install-deps: ok" >&2
