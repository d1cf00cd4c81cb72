#!/usr/bin/env bash
# `npm run ssh -- STACK host|builder [ssh args]`: SSH into a stack's EC2 host or builder with the
# key Pulumi generated and its host key pinned. The key is read from the stack's secret outputs
# (hostSsh / builderSsh) into a private temp directory that is removed when ssh exits.
set -euo pipefail

(($# >= 2)) || { echo "usage: npm run ssh -- STACK host|builder [ssh args]" >&2; exit 2; }
stack=$1
machine=$2
shift 2
case $machine in host | builder) ;; *) echo "ssh: host or builder, not '$machine'" >&2; exit 2 ;; esac
cd "$(dirname "$0")/.."
if [[ -z ${PULUMI_BACKEND_URL:-} && -z ${PULUMI_ACCESS_TOKEN:-} ]]; then
  export PULUMI_BACKEND_URL="file://$HOME/.pulumi-neko-infra"
fi

if ! access=$(pulumi stack output "${machine}Ssh" --show-secrets --json --stack "$stack" 2>&1); then
  echo "ssh: no ${machine}Ssh output in stack $stack (only EC2 machines have one): $access" >&2
  exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
field() { node -e 'const c = JSON.parse(process.argv[1]); process.stdout.write(String(c[process.argv[2]]))' "$access" "$1"; }
host=$(field host)
port=$(field port)
(umask 077 && field privateKey >"$tmp/id" && printf '\n' >>"$tmp/id")
if [[ $port == 22 ]]; then who=$host; else who="[$host]:$port"; fi
printf '%s %s\n' "$who" "$(field hostKey)" >"$tmp/known_hosts"
ssh -i "$tmp/id" -o IdentitiesOnly=yes -o UserKnownHostsFile="$tmp/known_hosts" -o StrictHostKeyChecking=yes \
  -p "$port" "$(field user)@$host" "$@"
