#!/usr/bin/env bash
# Builds a stand-in for an official image the TLS tests cannot pull (no registry but npm, Debian
# and the Go proxy is reachable) and loads it into a Docker engine under the production name, so
# the scripts under test need no test-only names.
#
#   standin-image.sh caddy  NAME    Caddy v2.11.9 built from its Go module (tests/harness/go-tool.sh),
#                                   static; as the official image: /usr/bin/caddy, XDG_CONFIG_HOME=/config,
#                                   XDG_DATA_HOME=/data, WORKDIR /srv, runs as root, /usr/bin/caddy
#                                   with the file capability cap_net_bind_service=+ep (the official
#                                   Dockerfile's setcap), busybox's chown, rm and wget as on Alpine,
#                                   CMD caddy run --config /etc/caddy/Caddyfile --adapter caddyfile
#   standin-image.sh coturn NAME    Debian's coturn 4.6.1 turnserver with the shared libraries ldd
#                                   names (and the loader), /bin/sh and a few applets from
#                                   busybox-static, nobody (65534) and nogroup (65533) as in the
#                                   official Alpine image, USER nobody:nogroup, CMD turnserver
#
# Env: DOCKER_HOST (the engine to load into), DOCKER_BIN (default /usr/bin/docker).
# Prints the image ID as its only line on stdout. The image is a single layer made with
# `docker import` from a root file system assembled in a temporary directory.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh disable=SC1091
source "$here/lib.sh"

(($# == 2)) || {
  echo "usage: ${0##*/} caddy|coturn NAME" >&2
  exit 2
}
kind=$1
name=$2
docker_bin=${DOCKER_BIN:-/usr/bin/docker}
need "$docker_bin" tar /bin/busybox setcap

root=$(mktemp -d "${TMPDIR:-/tmp}/standin-$kind.XXXXXX")
trap 'rm -rf "$root"' EXIT

# applets NAME...: busybox applets as symlinks in /bin.
applets() {
  local a
  mkdir -p "$root/bin"
  cp /bin/busybox "$root/bin/busybox"
  for a in "$@"; do ln -sf busybox "$root/bin/$a"; done
}

# with_libraries BINARY: BINARY and every shared library ldd names (and the loader), same paths.
with_libraries() {
  local bin=$1 lib
  mkdir -p "$root$(dirname "$bin")"
  cp -L "$bin" "$root$bin"
  while read -r lib; do
    [[ -n $lib ]] || continue
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done < <(ldd "$bin" | grep -o '/[^ ]*' | sort -u)
}

changes=()
case $kind in
caddy)
  caddy=$("$here/go-tool.sh" caddy)
  mkdir -p "$root/usr/bin" "$root/etc/caddy" "$root/config/caddy" "$root/data/caddy" "$root/srv" "$root/tmp"
  chmod 1777 "$root/tmp"
  cp "$caddy" "$root/usr/bin/caddy"
  # As the official image: a non-root Caddy may bind 80 and 443.
  setcap cap_net_bind_service=+ep "$root/usr/bin/caddy"
  applets sh chown rm wget
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
  printf 'root:x:0:\n' >"$root/etc/group"
  changes=(
    --change 'ENV PATH=/usr/bin:/bin'
    --change 'ENV XDG_CONFIG_HOME=/config'
    --change 'ENV XDG_DATA_HOME=/data'
    --change 'WORKDIR /srv'
    --change 'CMD ["caddy", "run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]'
  )
  ;;
coturn)
  need /usr/bin/turnserver ldd
  with_libraries /usr/bin/turnserver
  # getpwnam/getgrnam for proc-user and chown: glibc's files NSS module, loaded at run time.
  for lib in /lib/x86_64-linux-gnu/libnss_files.so.2 /usr/lib/x86_64-linux-gnu/libnss_files.so.2; do
    if [[ -e $lib ]]; then
      mkdir -p "$root$(dirname "$lib")"
      cp -L "$lib" "$root$lib"
    fi
  done
  applets sh cat cp chmod chown id kill ls mkdir mv rm sleep wget
  mkdir -p "$root/etc" "$root/run" "$root/tmp" "$root/var/lib/coturn" "$root/var/lib/turn"
  ln -s /run "$root/var/run"
  chmod 1777 "$root/tmp"
  chown 65534:65533 "$root/var/lib/coturn" "$root/var/lib/turn"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65533:\nnobody:x:65534:\n' >"$root/etc/group"
  printf 'passwd: files\ngroup: files\nhosts: files\n' >"$root/etc/nsswitch.conf"
  changes=(
    --change 'ENV PATH=/usr/bin:/bin'
    --change 'USER nobody:nogroup'
    --change 'CMD ["turnserver", "--log-file=stdout"]'
  )
  ;;
*)
  echo "usage: ${0##*/} caddy|coturn NAME" >&2
  exit 2
  ;;
esac

# --xattrs: the file capability travels as security.capability.
id=$(tar -C "$root" --numeric-owner --xattrs --xattrs-include='security.capability' -cf - . | "$docker_bin" import "${changes[@]}" \
  --message "neko-infra test stand-in ($kind)" - "$name") ||
  die "docker import of the $kind stand-in as $name failed"
log "loaded the $kind stand-in as $name ($id)"
printf '%s\n' "$id"
