#!/usr/bin/env bash
# A PATH shaped like a Mac's for the scripts that run on an operator's machine: makes DIR/bin with a
# symlink to every executable of /usr/local/sbin /usr/local/bin /usr/sbin /usr/bin /sbin /bin (the
# first of a name wins, as on PATH) except the GNU-only tools macOS lacks, with
#
#   bash  -> bash 3.2.48 (macOS's /bin/bash line): ${NEKO_INFRA_SHARED:-<repo>/../shared}/tools/bash-3.2.48/bash
#   tar   -> bsdtar (Debian's libarchive-tools), as macOS's tar is
#   sh    left as this machine's (/bin/sh)
#
# and prints DIR/bin, the only line on stdout: use it as the whole PATH (PATH=$(bsd-path.sh DIR)).
#
#   bsd-path.sh DIR        (DIR/bin is made anew on every run; DIR may exist)
#
# Left out (a Mac has none of them without Homebrew's coreutils): timeout gtimeout flock sha1sum
# sha224sum sha256sum sha384sum sha512sum b2sum md5sum setsid nproc stdbuf numfmt tac. `shasum`
# (perl's, as on macOS) stays. Not imitated: GNU options of the tools macOS also has (stat -c,
# sed -i without a suffix, date -d, readlink -f, base64 -w, grep -P, find -printf, xargs -r) still
# work here; a static check (tests/unit) looks for those. See tests/harness/README.md.
set -euo pipefail

die() {
  echo "bsd-path: error: $*" >&2
  exit 1
}
(($# == 1)) || {
  echo "usage: bsd-path.sh DIR" >&2
  exit 2
}
dir=$(realpath -m -- "$1")
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
shared=${NEKO_INFRA_SHARED:-$here/../../../shared}
bash32=$shared/tools/bash-3.2.48/bash
bsdtar=/usr/bin/bsdtar

[[ -x $bash32 ]] || die "no bash 3.2.48 at $bash32 (set NEKO_INFRA_SHARED to the shared folder that holds tools/bash-3.2.48/bash)"
# shellcheck disable=SC2016 # expanded by that bash
version=$("$bash32" -c 'echo "$BASH_VERSION"' </dev/null 2>&1) || die "$bash32 does not run: $version"
[[ $version == 3.2.48* ]] || die "$bash32 is bash $version, not 3.2.48"
[[ -x $bsdtar ]] || die "no $bsdtar (run tools/install-deps.sh, or apt-get install libarchive-tools)"
[[ -x /usr/bin/shasum ]] || die "no /usr/bin/shasum (run tools/install-deps.sh, or apt-get install perl)"

# DIR/bin is ours to replace only when this script made it (the marker); never someone's bin.
bin=$dir/bin
marker=$dir/.bsd-path
if [[ -e $bin && ! -f $marker ]]; then
  die "$bin exists and was not made by bsd-path.sh (no $marker): choose another DIR"
fi
mkdir -p "$dir"
: >"$marker"
rm -rf "$bin" "$bin.new"
mkdir "$bin.new"

lacking=" timeout gtimeout flock sha1sum sha224sum sha256sum sha384sum sha512sum b2sum md5sum setsid nproc stdbuf numfmt tac "
for d in /usr/local/sbin /usr/local/bin /usr/sbin /usr/bin /sbin /bin; do
  [[ -d $d ]] || continue
  for f in "$d"/*; do
    name=${f##*/}
    [[ -f $f && -x $f ]] || continue
    [[ $lacking != *" $name "* ]] || continue
    [[ ! -e $bin.new/$name && ! -L $bin.new/$name ]] || continue
    ln -s "$f" "$bin.new/$name"
  done
done
ln -sfn "$bash32" "$bin.new/bash"
ln -sfn "$bsdtar" "$bin.new/tar"
mv "$bin.new" "$bin"
printf '%s\n' "$bin"
