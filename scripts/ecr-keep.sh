#!/usr/bin/env bash
# shellcheck disable=SC2034 # `doing` is read by on_term, from scripts/step-preamble.sh
# Keeps the image this EC2 host runs in ECR: tags its digest TAG (running-<machine>), which the
# repository's lifecycle rule never expires (lib/registry.ts lifecyclePolicy), however many newer
# pushes failed their rollout. The tag moves off the image it was on, which the count rule may
# then expire. Run on the host after each successful rollout, with the instance role (ecr:PutImage
# on this repository; reading the manifest is a pull). Prints one line on stdout:
#   REPOSITORY@sha256:<12 hex> is tagged TAG
#
# Usage: ecr-keep.sh IMAGE_REF TAG
#        IMAGE_REF  <account>.dkr.ecr.<region>.amazonaws.com/<repository>@sha256:<64 hex>
# Env:   ECR_ENDPOINT  another ECR endpoint for the AWS CLI (tests: a fake on loopback)
set -euo pipefail

me="ecr-keep"
die() {
  printf '%s: %.1000s\n' "$me" "$*" >&2
  exit 1
}
(($# == 2)) || { echo "usage: ecr-keep.sh IMAGE_REF TAG" >&2; exit 2; }
ref=$1
tag=$2
doing="checking its arguments"
re='^([0-9]{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?/([a-z0-9._/-]+)@(sha256:[0-9a-f]{64})$'
[[ $ref =~ $re ]] || { echo "$me: '$ref' is not an ECR image reference by digest (ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPOSITORY@sha256:...)" >&2; exit 2; }
account=${BASH_REMATCH[1]} region=${BASH_REMATCH[2]} repo=${BASH_REMATCH[4]} digest=${BASH_REMATCH[5]}
[[ $tag =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || { echo "$me: '$tag' is not a valid image tag" >&2; exit 2; }
command -v aws >/dev/null 2>&1 || die "the AWS CLI is missing on $(hostname) (AL2023 ships it: dnf install -y awscli-2)"
command -v python3 >/dev/null 2>&1 || die "python3 is missing on $(hostname) (AL2023 ships it)"

tmp=$(mktemp -d)
step_tmp+=("$tmp") # removed on exit (scripts/step-preamble.sh)
ecr=(aws ecr --region "$region" --output json)
[[ -z ${ECR_ENDPOINT:-} ]] || ecr+=(--endpoint-url "$ECR_ENDPOINT")
short="$repo@${digest:0:19}"

# The manifest exactly as ECR holds it (its digest is what the tag must point at).
doing="reading the manifest of $short"
if ! "${ecr[@]}" batch-get-image --registry-id "$account" --repository-name "$repo" \
  --image-ids "imageDigest=$digest" >"$tmp/image.json" 2>"$tmp/err"; then
  die "reading $short failed: $(tr '\n' ' ' <"$tmp/err") -- fix: the host role needs ecr:BatchGetImage on $repo (pulumi up restores it)"
fi
if ! python3 - "$tmp" 2>"$tmp/err" <<'EOF'; then
import json, sys
out = sys.argv[1]
with open(out + "/image.json") as f:
    images = json.load(f).get("images") or []
if not images:
    sys.exit("no such image")
with open(out + "/manifest", "w", newline="") as f:
    f.write(images[0]["imageManifest"])
with open(out + "/media-type", "w") as f:
    f.write(images[0].get("imageManifestMediaType", ""))
EOF
  die "ECR holds no image $short ($(tail -n 1 "$tmp/err")): was it expired before this rollout finished?"
fi

doing="tagging $short $tag"
put=("${ecr[@]}" put-image --registry-id "$account" --repository-name "$repo" --image-tag "$tag"
  --image-manifest "file://$tmp/manifest" --image-digest "$digest")
media=$(<"$tmp/media-type")
[[ -z $media ]] || put+=(--image-manifest-media-type "$media")
if ! "${put[@]}" >/dev/null 2>"$tmp/err"; then
  # The tag is on this image already (a rollout of the same image again): nothing to do.
  grep -q 'ImageAlreadyExistsException' "$tmp/err" ||
    die "tagging $short $tag failed: $(tr '\n' ' ' <"$tmp/err") -- fix: the host role needs ecr:PutImage on $repo, and the repository's tag mutability must exclude running-* (pulumi up restores both)"
  echo "$me: $short carries $tag already" >&2
fi
echo "$short is tagged $tag"
