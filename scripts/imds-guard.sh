#!/usr/bin/env bash
# Keeps the host-network containers of an EC2 host away from the instance metadata service. The
# TLS front (Caddy) and the TURN relay (coturn) share the host's network, so the hop limit of 1 that
# keeps bridged containers such as neko from IMDSv2 does not reach them: one compromised process
# there could read user-data (the host's SSH private key) and the instance role's credentials.
# This rejects every packet to 169.254.169.254 from the given uids (an iptables owner match in the
# OUTPUT chain, which also sees host-network containers' sockets): Caddy runs as TLS_UID and
# turnserver drops to nobody (lib/caddy.ts, lib/turn.ts). root, the login user (the ECR credential
# helper and the AWS CLI run as them) and the system's own users keep their access.
#
# The rules live in a chain of their own, NEKO-IMDS, filled afresh on every run, with one jump to
# it from OUTPUT: running twice changes nothing, and another uid list replaces the old one. Run by
# neko-imds-guard.service before Docker at every boot (rules do not survive a reboot), and by the
# setup step (host-bootstrap.sh). Prints one line on stderr: what is rejected.
#
# Usage: imds-guard.sh UID [UID ...]
# Env:   IMDS_ADDRESS  the address to guard (default 169.254.169.254; tests only)
set -euo pipefail

me=imds-guard
die() {
  printf '%s: %.1000s\n' "$me" "$*" >&2
  exit 1
}
(($# > 0)) || { echo "usage: imds-guard.sh UID [UID ...]" >&2; exit 2; }
for uid in "$@"; do
  [[ $uid =~ ^[0-9]+$ && $uid != 0 ]] || die "'$uid' is not a uid other than root's"
done
address=${IMDS_ADDRESS:-169.254.169.254}
chain=NEKO-IMDS
command -v iptables >/dev/null 2>&1 || die "iptables is missing (on AL2023: dnf install -y iptables-nft)"
ipt() { iptables -w 10 "$@"; }

ipt -N "$chain" 2>/dev/null || true
ipt -F "$chain"
for uid in "$@"; do
  ipt -A "$chain" -m owner --uid-owner "$uid" -j REJECT
done
ipt -C OUTPUT -d "$address/32" -j "$chain" 2>/dev/null || ipt -I OUTPUT 1 -d "$address/32" -j "$chain"

# What is in force now, read back from the kernel.
rules=$(ipt -S "$chain" | grep -c -- '-j REJECT' || true)
((rules == $#)) || die "NEKO-IMDS holds $rules rules instead of $#: $(ipt -S "$chain" | tr '\n' ' ')"
printf '%s: %.1000s\n' "$me" "packets from uids $* to $address are rejected (iptables chain $chain)" >&2
