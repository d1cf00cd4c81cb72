#!/usr/bin/env bash
# `npm run up -- STACK [pulumi up flags]`: `pulumi up` on STACK, creating the stack on first use.
#
# State: PULUMI_BACKEND_URL, else a file backend in ~/.pulumi-neko-infra. Secrets passphrase:
# PULUMI_CONFIG_PASSPHRASE(_FILE), else (local stack only) one generated on first use and kept in
# ~/.pulumi-neko-infra/passphrase-local (0600). The Pulumi CLI: the one on PATH, else (no internet
# needed, Go required) the one tools/pulumi-offline.sh builds from Go modules. For the local stack,
# neko's passwords and API token are generated into the stack's config (as secrets) on first use,
# so no provider has to be downloaded to make them.
set -euo pipefail

(($# >= 1)) || { echo "usage: npm run up -- STACK [pulumi up flags]" >&2; exit 2; }
stack=$1
shift
cd "$(dirname "$0")/.."
log() { echo "up: $*" >&2; }

home=$HOME/.pulumi-neko-infra
if [[ -z ${PULUMI_BACKEND_URL:-} && -z ${PULUMI_ACCESS_TOKEN:-} ]]; then
  export PULUMI_BACKEND_URL="file://$home"
  mkdir -p "$home"
  log "state in $PULUMI_BACKEND_URL (set PULUMI_BACKEND_URL for another backend)"
fi
if [[ -z ${PULUMI_CONFIG_PASSPHRASE:-} && -z ${PULUMI_CONFIG_PASSPHRASE_FILE:-} ]]; then
  if [[ $stack != local ]]; then
    log "set PULUMI_CONFIG_PASSPHRASE (or PULUMI_CONFIG_PASSPHRASE_FILE): it encrypts the stack's secrets; keep it somewhere safe"
    exit 1
  fi
  mkdir -p "$home"
  if [[ ! -s $home/passphrase-local ]]; then
    (umask 077 && head -c 32 /dev/urandom | base64 >"$home/passphrase-local")
    log "generated the local stack's secrets passphrase: $home/passphrase-local"
  fi
  export PULUMI_CONFIG_PASSPHRASE_FILE="$home/passphrase-local"
fi

if ! command -v pulumi >/dev/null 2>&1; then
  if command -v go >/dev/null 2>&1 || [[ -x /usr/local/go/bin/go ]]; then
    log "no pulumi on PATH: building it from Go modules (minutes the first time, then cached; tools/pulumi-offline.sh)"
    PATH="$(bash tools/pulumi-offline.sh):$PATH"
    export PULUMI_SKIP_UPDATE_CHECK=true PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
  else
    log "pulumi is not installed: see https://www.pulumi.com/docs/install/ (or install Go to build it offline)"
    exit 1
  fi
fi
[[ -d node_modules ]] || npm ci --no-audit --no-fund --loglevel=error

pulumi stack select --create "$stack" >/dev/null
if [[ $stack == local ]]; then
  for key in neko.userPassword neko.adminPassword neko.apiToken; do
    if ! pulumi config get --path "$key" --stack "$stack" >/dev/null 2>&1; then
      head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 24 | pulumi config set --secret --path "$key" --stack "$stack"
      log "generated $key (pulumi config get --path $key --stack $stack shows it)"
    fi
  done
fi
pulumi up --stack "$stack" "$@"
