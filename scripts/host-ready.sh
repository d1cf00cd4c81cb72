#!/usr/bin/env bash
# Tells AWS that neko answers on this EC2 host: once neko's /health answers 200 after a boot, tags
# this instance neko-infra:ready=<epoch seconds>. The wake-on-visit function cannot reach neko
# itself (port 443 may admit only the client networks), so it sends a visitor on to neko when that
# tag is newer than the instance's last launch. Run by neko-ready.service (host-bootstrap.sh) at
# every boot, and started by the setup step so a first deploy is tagged too. The host's role may
# set this one tag on this one instance and nothing else (lib/wake.ts hostReadyPolicy).
#
# Usage: host-ready.sh [BUDGET_SECONDS]   (default 1800: how long to wait for /health)
# Env:   NEKO_STATE_DIR  where the deploy wrote neko-url (default /var/lib/neko-infra/host)
#        IMDS_ENDPOINT   the instance metadata service (default http://169.254.169.254)
#        IMDS_WAIT_SECONDS  how long to retry the metadata service before giving up (default 60)
#        EC2_ENDPOINT    another EC2 endpoint for the AWS CLI (tests: a fake on loopback)
# Exit 0: tagged. Exit 1: the metadata service never answered (installed on EC2 hosts only, so
# that is a fault, not "elsewhere"), neko did not answer within the budget, or tagging failed (the
# cause and the fix are printed). The AWS CLI takes the instance role's credentials from the
# metadata service.
set -euo pipefail

me=host-ready
log() { printf '%s: %.1000s\n' "$me" "$*" >&2; }
budget=${1:-1800}
[[ $budget =~ ^[0-9]+$ ]] || { echo "usage: host-ready.sh [BUDGET_SECONDS]" >&2; exit 2; }
state_dir=${NEKO_STATE_DIR:-/var/lib/neko-infra/host}
imds=${IMDS_ENDPOINT:-http://169.254.169.254}
tag=neko-infra:ready

# One metadata value (IMDSv2: a session token first; the instance requires it).
metadata() {
  local token
  token=$(curl -q -fsS --noproxy '*' --max-time 3 -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 300" "$imds/latest/api/token")
  curl -q -fsS --noproxy '*' --max-time 3 -H "X-aws-ec2-metadata-token: $token" "$imds/latest/meta-data/$1"
}

imds_wait=${IMDS_WAIT_SECONDS:-60}
[[ $imds_wait =~ ^[0-9]+$ ]] || { log "IMDS_WAIT_SECONDS must be a number of seconds, not '$imds_wait'"; exit 2; }
imds_deadline=$((SECONDS + imds_wait))
until instance=$(metadata instance-id 2>&1) && region=$(metadata placement/region 2>&1); do
  if ((SECONDS >= imds_deadline)); then
    log "the instance metadata service at $imds did not answer within ${imds_wait}s (${region:-$instance}): this host cannot tell the wake link that neko is ready, so visitors see \"neko did not come up\" after 15 minutes"
    log "fix: the instance needs its metadata endpoint enabled with IMDSv2 (pulumi up restores the instance's metadata options)"
    exit 1
  fi
  region=""
  sleep 2
done
command -v aws >/dev/null 2>&1 || {
  log "the AWS CLI is missing: the wake link cannot tell when neko is ready (install awscli; AL2023 ships it)"
  exit 1
}

deadline=$((SECONDS + budget))
url=""
while :; do
  if [[ -z $url && -r $state_dir/neko-url ]]; then
    url=$(<"$state_dir/neko-url")
    url=${url//[$'\r\n\t ']/}
  fi
  if [[ -n $url ]] && [[ $(curl -q -s -o /dev/null -w '%{http_code}' --noproxy '*' --max-time 3 "${url%/}/health" || true) == 200 ]]; then
    break
  fi
  if ((SECONDS >= deadline)); then
    if [[ -z $url ]]; then
      log "no $state_dir/neko-url after ${budget}s: neko was never deployed here (run pulumi up)"
    else
      log "neko did not answer ${url%/}/health within ${budget}s: see journalctl -u neko-restore; the wake page says so to visitors"
    fi
    exit 1
  fi
  sleep 2
done

now=$(date +%s)
endpoint=()
[[ -z ${EC2_ENDPOINT:-} ]] || endpoint=(--endpoint-url "$EC2_ENDPOINT")
if ! out=$(aws ec2 create-tags ${endpoint[@]+"${endpoint[@]}"} --region "$region" --resources "$instance" \
  --tags "Key=$tag,Value=$now" 2>&1); then
  log "tagging $instance $tag failed: ${out//$'\n'/ }"
  log "fix: the host role needs ec2:CreateTags on this instance for the tag key $tag (pulumi up restores it)"
  exit 1
fi
log "neko answers at ${url%/}/health: tagged $instance $tag=$now"
