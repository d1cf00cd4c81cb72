#!/usr/bin/env bash
# `npm run builder:down -- STACK` / `npm run builder:up -- STACK`: turn a stack's Nix builder off
# (instance, security group, IAM role and profile, key pair and the registry's push grant are
# deleted; its Elastic IP and keys stay) or back on, and nothing else.
#
#   tools/builder-toggle.sh down|up STACK [--any-changes] [pulumi flags...]
#
#   1. pulumi config set --path builder.enabled false|true --stack STACK   (Pulumi.STACK.yaml)
#   2. pulumi preview: when something besides the builder would change (program or config changes
#      not deployed yet), put builder.enabled back and stop instead of deploying them unreviewed;
#      --any-changes deploys them too
#   3. pulumi up --yes --stack STACK   (skipped when the preview has no change)
#
# Other flags go to both preview and up, e.g. `--policy-pack policy --policy-pack-config
# policy/config/dev.json`. State: PULUMI_BACKEND_URL, else (outside CI) ~/.pulumi-neko-infra like
# tools/up.sh. NEKO_INFRA_PROJECT_DIR: the Pulumi project (default: this repository).
set -euo pipefail

usage() {
  echo "usage: tools/builder-toggle.sh down|up STACK [--any-changes] [pulumi flags...]" >&2
  exit 2
}
(($# >= 2)) || usage
case $1 in
  down) enabled=false ;;
  up) enabled=true ;;
  *) usage ;;
esac
action=$1
stack=$2
shift 2
any_changes=0
flags=()
for arg in "$@"; do
  if [[ $arg == --any-changes ]]; then any_changes=1; else flags+=("$arg"); fi
done
log() { echo "builder-toggle: $*" >&2; }

cd "${NEKO_INFRA_PROJECT_DIR:-$(dirname "$0")/..}"

if [[ -z ${PULUMI_BACKEND_URL:-} && -z ${PULUMI_ACCESS_TOKEN:-} ]]; then
  if [[ -n ${CI:-} ]]; then
    log "neither PULUMI_BACKEND_URL nor PULUMI_ACCESS_TOKEN is set: in CI the state backend is not guessed"
    exit 1
  fi
  export PULUMI_BACKEND_URL="file://$HOME/.pulumi-neko-infra"
  mkdir -p "$HOME/.pulumi-neko-infra"
  log "state in $PULUMI_BACKEND_URL (set PULUMI_BACKEND_URL for another backend)"
fi
if ! command -v pulumi >/dev/null 2>&1; then
  log "pulumi is not installed: see https://www.pulumi.com/docs/install/"
  exit 1
fi
[[ -d node_modules ]] || npm ci --no-audit --no-fund

# What to put back when nothing is deployed (empty: the key was not set).
previous=$(pulumi config get --path builder.enabled --stack "$stack" 2>/dev/null || true)
restore() {
  if [[ -n $previous ]]; then
    pulumi config set --path builder.enabled "$previous" --stack "$stack"
  else
    pulumi config rm --path builder.enabled --stack "$stack"
  fi
  log "$stack: nothing deployed; builder.enabled is back to ${previous:-unset}"
}
pulumi config set --path builder.enabled "$enabled" --stack "$stack"

log "$stack: previewing builder $action"
if ! preview=$(pulumi preview --json --non-interactive --stack "$stack" ${flags[@]+"${flags[@]}"} 2>&1); then
  # The JSON holds the whole plan: show only the errors, a few lines each.
  printf '%s' "$preview" | node -e '
    const text = require("fs").readFileSync(0, "utf8");
    let doc; try { doc = JSON.parse(text.slice(text.indexOf("{"))); } catch { doc = undefined; }
    const errors = (doc?.diagnostics ?? []).filter((d) => d.severity === "error").map((d) => d.message.trim());
    const lines = errors.length ? errors : text.trim().split("\n").slice(-10);
    for (const e of lines) console.error(e.split("\n").slice(0, 12).map((l) => "  " + l).join("\n"));' || true
  log "$stack: preview failed (above); nothing was changed"
  restore
  exit 1
fi
# One line per change: "builder|other OP URN". Builder resources are the ones named builder-* or
# *-builder-* (the NixBuilder's children, the registry's push grant to its role), and the wake
# steps (*-wake), whose only input that changes with the builder is the builder's own description.
changes=$(printf '%s' "$preview" | node -e '
  const doc = JSON.parse(require("fs").readFileSync(0, "utf8"));
  for (const s of doc.steps ?? []) {
    if (s.op === "same" || s.op === "read") continue;
    const name = s.urn.split("::").pop();
    const builder = /(^|-)builder(-|$)/.test(name) || (/-wake$/.test(name) && s.op === "update");
    console.log((builder ? "builder" : "other") + " " + s.op + " " + s.urn);
  }')

if [[ -z $changes ]]; then
  log "$stack: nothing to change (the builder is already $action)"
  exit 0
fi
printf '%s\n' "$changes" >&2
if grep -q '^other ' <<<"$changes" && ((any_changes == 0)); then
  log "$stack: changes besides the builder are pending (lines marked 'other' above): deploy them with"
  log "  npm run up -- $stack (or the deploy workflow) first, or pass --any-changes to apply them too"
  restore
  exit 1
fi

out=$(mktemp "${TMPDIR:-/tmp}/builder-toggle-XXXXXX.log")
if ! pulumi up --yes --non-interactive --skip-preview --stack "$stack" ${flags[@]+"${flags[@]}"} >"$out" 2>&1; then
  grep -E '(^|[[:space:]])error:' "$out" | head -n 12 | sed 's/^/  /' >&2 || true
  log "$stack: pulumi up failed (the lines above; the whole output is in $out)"
  exit 1
fi
grep -E '^\s+[-+~]|Resources:|Duration:' "$out" | tail -n 20 >&2 || true
rm -f "$out"
log "$stack: builder $action"
