#!/usr/bin/env bash
# shellcheck disable=SC2034 # `doing` is read by on_term, from scripts/step-preamble.sh
# Pushes a docker-archive from this machine's Nix store to a registry and prints the image reference
# by digest (REPOSITORY@sha256:...): the only line on stdout. The tag is the store path's hash, so a
# store path already pushed is found by its tag and nothing is uploaded again.
#
# Usage: push-image.sh STORE_PATH REPOSITORY
# Env:   REGISTRY_AUTH      ecr (token fetched here with the aws CLI and this machine's role),
#                           basic (REGISTRY_USER / REGISTRY_PASSWORD) or none (default)
#        REGISTRY_INSECURE  1 to talk plain HTTP / skip TLS verification (test registries only)
# stderr (shown by Pulumi and kept in its state) gets a start line, a done line or the cause of a
# failure, never a credential: the password lives in a variable and a 0600 file, and tool output is
# scrubbed of it before it is shown.
set -euo pipefail

password=""
auth_b64=""
# Prints its arguments, the password and its base64 form (should a tool ever echo them) replaced.
scrub() {
  local m="$*"
  [[ -n $password ]] && m=${m//"$password"/[password]}
  [[ -n $auth_b64 ]] && m=${m//"$auth_b64"/[credentials]}
  printf '%s\n' "$m"
}
die() { scrub "push-image: $*" >&2; exit 1; }
# skopeo's last error lines without its log prefix (time="..." level=fatal msg="...").
skopeo_error() { tail -n "${1:-1}" "$tmp/err" | sed -E 's/^time="[^"]*" level=[a-z]+ msg="(.*)"$/\1/'; }
(($# == 2)) || { echo "usage: push-image.sh STORE_PATH REPOSITORY" >&2; exit 2; }
store_path=$1
repo=$2
auth=${REGISTRY_AUTH:-none}
registry=${repo%%/*}
name=$(basename "$store_path")
tag=${name%%-*}
doing="starting"


echo "push-image: pushing $store_path from $(hostname) to $repo:$tag" >&2
command -v skopeo >/dev/null 2>&1 || die "skopeo is not installed on $(hostname)"
[[ -e $store_path ]] || die "no image archive at $store_path on $(hostname) (garbage-collected, or built elsewhere?)"

tmp=$(mktemp -d)
step_tmp+=("$tmp") # removed on exit (scripts/step-preamble.sh)
tls=(--dest-tls-verify=true)
src_tls=(--tls-verify=true)
if [[ ${REGISTRY_INSECURE:-0} == 1 ]]; then
  tls=(--dest-tls-verify=false)
  src_tls=(--tls-verify=false)
fi

# What is being pushed must be a linux/amd64 docker-archive: neko hosts run nothing else.
doing="reading $store_path"
if ! platform=$(skopeo inspect --format '{{.Os}}/{{.Architecture}}' "docker-archive:$store_path" 2>"$tmp/err"); then
  die "$store_path is not a readable docker-archive: $(skopeo_error)"
fi
[[ $platform == linux/amd64 ]] || die "$store_path is a $platform image; neko hosts run linux/amd64 only"

case $auth in
  ecr)
    region=$(sed -nE 's/^[0-9]+\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com$/\1/p' <<<"$registry")
    [[ -n $region ]] || die "$registry is not an ECR registry host"
    user=AWS
    doing="getting an ECR token for $registry"
    for _ in 1 2 3 4 5 6; do # a freshly attached role can take a few seconds to be usable
      password=$(aws ecr get-login-password --region "$region" 2>"$tmp/err") && break
      sleep 5
    done
    [[ -n $password ]] || die "cannot get an ECR token for $registry: $(tail -n1 "$tmp/err")"
    ;;
  basic)
    user=${REGISTRY_USER:?push-image: REGISTRY_USER is not set}
    password=${REGISTRY_PASSWORD:?push-image: REGISTRY_PASSWORD is not set}
    ;;
  none) user="" password="" ;;
  *) die "REGISTRY_AUTH must be ecr, basic or none, not '$auth'" ;;
esac

creds=()
if [[ -n $user ]]; then
  auth_b64=$(printf '%s:%s' "$user" "$password" | base64 | tr -d '\n')
  (umask 077 && printf '{"auths":{"%s":{"auth":"%s"}}}\n' "$registry" "$auth_b64" >"$tmp/auth.json")
  creds=(--authfile "$tmp/auth.json")
fi

# Already there (a re-run, or immutable tags): reuse the digest the registry holds.
doing="looking for $repo:$tag in the registry"
if digest=$(skopeo inspect ${creds[@]+"${creds[@]}"} "${src_tls[@]}" --format '{{.Digest}}' "docker://$repo:$tag" 2>/dev/null); then
  echo "push-image: $repo:$tag is already in the registry" >&2
  echo "push-image: done: $repo@$digest (nothing uploaded)" >&2
  echo "$repo@$digest"
  exit 0
fi

# skopeo refuses to copy without a trust policy, and skopeo from nixpkgs installs none where
# Amazon Linux has none (/etc/containers/policy.json): bring our own. The source is the archive
# this builder just built, so nothing is to be verified: accept it, as containers' default does.
printf '{"default":[{"type":"insecureAcceptAnything"}]}\n' >"$tmp/policy.json"
doing="uploading $store_path to $repo:$tag"
if ! skopeo --policy "$tmp/policy.json" copy --quiet ${creds[@]+"${creds[@]}"} "${tls[@]}" --digestfile "$tmp/digest" \
  "docker-archive:$store_path" "docker://$repo:$tag" 2>"$tmp/err"; then
  err=$(cat "$tmp/err")
  # Reachability first: an address or port can itself contain "401".
  case $err in
    *"connection refused"* | *"no such host"* | *timeout* | *"no route"*)
      die "the registry $registry is unreachable: $(skopeo_error)" ;;
    *unauthorized* | *"authentication required"* | *denied* | *"status code 401"* | *"401 Unauthorized"*)
      die "the registry $registry refused the credentials (${auth} auth): $(skopeo_error)" ;;
    *) die "pushing $store_path to $repo:$tag failed: $(skopeo_error 3)" ;;
  esac
fi
echo "push-image: done: $repo@$(cat "$tmp/digest") in ${SECONDS}s" >&2
echo "$repo@$(cat "$tmp/digest")"
