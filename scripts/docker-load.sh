#!/usr/bin/env bash
# shellcheck disable=SC2034 # `doing` is read by on_term, from scripts/step-preamble.sh
# The local stack's registry: loads a docker-archive from this machine's Nix store into this
# machine's Docker engine, tagged NAME:<store path hash>, and prints the image ID (sha256:...): the
# only line on stdout. A store path already loaded is found by its tag: nothing is read or loaded.
#
# Usage: docker-load.sh STORE_PATH NAME        (NAME e.g. neko-infra/neko)
# Env:   DOCKER_HOST etc. as the docker CLI reads them.
set -euo pipefail

die() { echo "docker-load: $*" >&2; exit 1; }
(($# == 2)) || { echo "usage: docker-load.sh STORE_PATH NAME" >&2; exit 2; }
store_path=$1
name=$2
base=$(basename "$store_path")
ref="$name:${base%%-*}"
doing="starting"


[[ $store_path == /nix/store/* && $base == *-* ]] || die "$store_path is not a Nix store path"
[[ $name =~ ^[a-z0-9]+([._/-][a-z0-9]+)*$ ]] || die "$name is not a Docker image name (lowercase, e.g. neko-infra/neko)"
command -v docker >/dev/null 2>&1 || die "docker is not on PATH for $(id -un)@$(hostname)"

tmp=$(mktemp -d)
step_tmp+=("$tmp") # removed on exit (scripts/step-preamble.sh)

bounded() { # bounded SECONDS CMD...: timeout(1) where the machine has it (macOS has not)
  if command -v timeout >/dev/null 2>&1; then timeout "$@"; else "${@:2}"; fi
}

doing="asking the Docker engine for $ref"
if ! bounded 30 docker version --format '{{.Server.Version}}' >/dev/null 2>"$tmp/err"; then
  die "the Docker engine does not answer $(id -un)@$(hostname) (DOCKER_HOST=${DOCKER_HOST:-its default socket}): $(grep -v '^[[:space:]]*$' "$tmp/err" | tail -n 1 || echo "no answer within 30s")"
fi

# Already loaded (a re-run): the tag names this store path, whose content never changes.
if found=$(docker image inspect --format '{{.Id}} {{.Os}}/{{.Architecture}}' "$ref" 2>/dev/null); then
  read -r id platform <<<"$found"
  [[ $platform == linux/amd64 ]] || die "$ref is a $platform image; neko runs linux/amd64 only"
  echo "docker-load: $ref is already loaded ($id)" >&2
  echo "$id"
  exit 0
fi

[[ -e $store_path ]] || die "no image archive at $store_path on $(hostname) (garbage-collected, or built elsewhere?)"
echo "docker-load: loading $store_path into the Docker engine as $ref" >&2

# Read the archive's manifest and image config (small JSON members) before loading anything: it
# must be a docker-archive of a linux/amd64 image.
doing="reading $store_path"
mkdir "$tmp/meta"
if tar --version 2>/dev/null | grep -q GNU; then wild=(--wildcards); else wild=(); fi
if ! tar -xf "$store_path" -C "$tmp/meta" ${wild[@]+"${wild[@]}"} 'manifest.json' '*.json' 2>"$tmp/err" || [[ ! -f $tmp/meta/manifest.json ]]; then
  die "$store_path is not a docker-archive (no manifest.json in it): $(grep -v -m 1 'Exiting with failure' "$tmp/err" || echo "tar found no manifest.json")"
fi
json_field() { # json_field KEY FILE: the first "KEY": "value" in FILE
  grep -o "\"$1\"[[:space:]]*:[[:space:]]*\"[^\"]*\"" "$2" | head -n 1 | sed -E 's/.*"([^"]*)"$/\1/'
}
config=$(json_field Config "$tmp/meta/manifest.json")
[[ -n $config && $config != */* && -f $tmp/meta/$config ]] ||
  die "$store_path is not a docker-archive: its manifest.json names no image config"
platform="$(json_field os "$tmp/meta/$config")/$(json_field architecture "$tmp/meta/$config")"
[[ $platform == linux/amd64 ]] || die "$store_path is a $platform image; neko runs linux/amd64 only"
if command -v sha256sum >/dev/null 2>&1; then
  config_id="sha256:$(sha256sum "$tmp/meta/$config" | cut -d' ' -f1)"
else
  config_id="sha256:$(shasum -a 256 "$tmp/meta/$config" | cut -d' ' -f1)"
fi

# What the engine calls the image. With the classic image store its ID is the config's digest (then
# an image loaded under another name is found and only tagged); with the containerd image store
# (Docker Engine 29 installs, Docker Desktop 4.34+) it is the manifest's, so after a load the image
# is found by what `docker load` says it loaded: "Loaded image: NAME:TAG" for a tagged archive,
# "Loaded image ID: sha256:..." for an untagged one.
image=$config_id
if ! docker image inspect "$image" >/dev/null 2>&1; then
  doing="loading $store_path into the Docker engine"
  if ! out=$(docker load --quiet --input "$store_path" 2>"$tmp/err"); then
    die "docker load of $store_path failed: $(grep -v '^[[:space:]]*$' "$tmp/err" | tail -n 3)"
  fi
  image=$(printf '%s\n' "$out" | sed -nE 's/^Loaded image( ID)?: //p' | tail -n 1)
  [[ -n $image ]] || die "docker load of $store_path did not say what it loaded: $(printf '%s' "$out" | tail -n 2)"
fi
loaded=$(docker image inspect --format '{{.Id}} {{.Os}}/{{.Architecture}}' "$image" 2>"$tmp/err") ||
  die "the Docker engine has no image $image after loading $store_path: $(tail -n 1 "$tmp/err")"
read -r id platform <<<"$loaded"
[[ $platform == linux/amd64 ]] || die "the Docker engine reads $store_path as a $platform image; neko runs linux/amd64 only"
docker tag "$id" "$ref"
echo "docker-load: done: $ref is $id, in ${SECONDS}s" >&2
echo "$id"
