#!/usr/bin/env bash
# `npm run up -- STACK [pulumi up flags]`: `pulumi up` on STACK, with local file state unless
# PULUMI_BACKEND_URL says otherwise. Creates the stack on first use.
set -euo pipefail

(($# >= 1)) || { echo "usage: npm run up -- STACK [pulumi up flags]" >&2; exit 2; }
stack=$1
shift
cd "$(dirname "$0")/.."

if [[ -z ${PULUMI_BACKEND_URL:-} ]]; then
  export PULUMI_BACKEND_URL="file://$HOME/.pulumi-neko-infra"
  mkdir -p "$HOME/.pulumi-neko-infra"
  echo "up: state in $PULUMI_BACKEND_URL (set PULUMI_BACKEND_URL for another backend)" >&2
fi
if ! command -v pulumi >/dev/null 2>&1; then
  echo "up: pulumi is not installed: see https://www.pulumi.com/docs/install/ (offline: PATH=\$(bash tools/pulumi-offline.sh):\$PATH)" >&2
  exit 1
fi
[[ -d node_modules ]] || npm ci --no-audit --no-fund
pulumi stack select --create "$stack"
pulumi up --stack "$stack" "$@"
