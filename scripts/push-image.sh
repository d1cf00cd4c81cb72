#!/usr/bin/env bash
# Pushes a docker-archive from this machine's Nix store to a registry and prints the image reference
# by digest (REPOSITORY@sha256:...): the only line on stdout. The tag is the store path's hash, so a
# store path already pushed is found by its tag and nothing is uploaded again.
#
# Usage: push-image.sh STORE_PATH REPOSITORY
# Env:   REGISTRY_AUTH      ecr (token fetched here with the aws CLI and this machine's role),
#                           basic (REGISTRY_USER / REGISTRY_PASSWORD) or none (default)
#        REGISTRY_INSECURE  1 to talk plain HTTP / skip TLS verification (test registries only)
set -euo pipefail

die() { echo "push-image: $*" >&2; exit 1; }
(($# == 2)) || { echo "usage: push-image.sh STORE_PATH REPOSITORY" >&2; exit 2; }
store_path=$1
repo=$2
auth=${REGISTRY_AUTH:-none}
registry=${repo%%/*}

command -v skopeo >/dev/null 2>&1 || die "skopeo is not installed on $(hostname)"
[[ -e $store_path ]] || die "no image archive at $store_path on $(hostname) (garbage-collected, or built elsewhere?)"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tls=(--dest-tls-verify=true)
src_tls=(--tls-verify=true)
if [[ ${REGISTRY_INSECURE:-0} == 1 ]]; then
  tls=(--dest-tls-verify=false)
  src_tls=(--tls-verify=false)
fi

# What is being pushed must be a linux/amd64 docker-archive: neko hosts run nothing else.
if ! platform=$(skopeo inspect --format '{{.Os}}/{{.Architecture}}' "docker-archive:$store_path" 2>"$tmp/err"); then
  die "$store_path is not a readable docker-archive: $(tail -n1 "$tmp/err")"
fi
[[ $platform == linux/amd64 ]] || die "$store_path is a $platform image; neko hosts run linux/amd64 only"

case $auth in
  ecr)
    region=$(sed -nE 's/^[0-9]+\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com$/\1/p' <<<"$registry")
    [[ -n $region ]] || die "$registry is not an ECR registry host"
    user=AWS
    password=""
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
  (umask 077 && printf '{"auths":{"%s":{"auth":"%s"}}}\n' "$registry" "$(printf '%s:%s' "$user" "$password" | base64 -w0)" >"$tmp/auth.json")
  creds=(--authfile "$tmp/auth.json")
fi

name=$(basename "$store_path")
tag=${name%%-*}

# Already there (a re-run, or immutable tags): reuse the digest the registry holds.
if digest=$(skopeo inspect "${creds[@]}" "${src_tls[@]}" --format '{{.Digest}}' "docker://$repo:$tag" 2>/dev/null); then
  echo "push-image: $repo:$tag is already in the registry" >&2
  echo "$repo@$digest"
  exit 0
fi

if ! skopeo copy --quiet "${creds[@]}" "${tls[@]}" --digestfile "$tmp/digest" \
  "docker-archive:$store_path" "docker://$repo:$tag" 2>"$tmp/err"; then
  err=$(cat "$tmp/err")
  # Reachability first: an address or port can itself contain "401".
  case $err in
    *"connection refused"* | *"no such host"* | *timeout* | *"no route"*)
      die "the registry $registry is unreachable: $(tail -n1 <<<"$err")" ;;
    *unauthorized* | *"authentication required"* | *denied* | *"status code 401"* | *"401 Unauthorized"*)
      die "the registry $registry refused the credentials (${auth} auth): $(tail -n1 <<<"$err")" ;;
    *) die "pushing $store_path to $repo:$tag failed: $(tail -n3 <<<"$err")" ;;
  esac
fi
echo "$repo@$(cat "$tmp/digest")"
