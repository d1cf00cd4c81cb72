#!/usr/bin/env bash
# Pulls an image by digest for linux/amd64 on this Docker host and prints its image ID.
#
# Usage: pull-image.sh IMAGE_REF
# Env:   REGISTRY_USER / REGISTRY_PASSWORD  optional: log in for this pull only (a throwaway
#        DOCKER_CONFIG), otherwise the host's own credentials (the ECR credential helper) are used.
set -euo pipefail

die() { echo "pull-image: $*" >&2; exit 1; }
(($# == 1)) || { echo "usage: pull-image.sh IMAGE_REF" >&2; exit 2; }
ref=$1
[[ $ref == *@sha256:* ]] || die "$ref is not pinned by digest (expected REPOSITORY@sha256:...)"
registry=${ref%%/*}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [[ -n ${REGISTRY_PASSWORD:-} ]]; then
  export DOCKER_CONFIG=$tmp
  printf '%s' "$REGISTRY_PASSWORD" |
    docker login --username "${REGISTRY_USER:?pull-image: REGISTRY_USER is not set}" --password-stdin "$registry" >/dev/null 2>"$tmp/err" ||
    die "the registry $registry refused the login: $(tail -n1 "$tmp/err")"
fi

docker pull --quiet --platform linux/amd64 "$ref" >/dev/null 2>"$tmp/err" ||
  die "pulling $ref failed: $(tail -n2 "$tmp/err")"
platform=$(docker image inspect --format '{{.Os}}/{{.Architecture}}' "$ref")
[[ $platform == linux/amd64 ]] || die "$ref is a $platform image; this host runs linux/amd64"
docker image inspect --format '{{.Id}}' "$ref"
