#!/usr/bin/env bash
# Builds one flake output with Nix and prints its store path: the only line on stdout.
#
# Usage: nix-build.sh FLAKE_REF ATTR
# Env:   NIX_BUILDERS  optional Nix `builders` line(s); when set the build is sent to them
#                      (--max-jobs 0), as an operator on a Mac does with a remote x86_64 builder.
#        NIX_CACHE, NIX_CACHE_PUBLIC_KEY  optional binary cache (store URI, e.g. s3://bucket?region=r)
#                      to substitute from, trusting paths signed with that key;
#        NIX_CACHE_SECRET_KEY  with it, the output is signed and uploaded there after the build.
#        NEKO_INFRA_LOG_DIR  where the build log goes (default ~/.cache/neko-infra/logs).
#        NIX_BUILD_PROGRESS_SECONDS  seconds between progress lines on stderr (default 30).
# The full log is written to a file on this machine, never to stdout: Pulumi keeps stdout in state,
# and shows stderr and puts it into error messages, so stderr gets the log's path, a progress line
# every NIX_BUILD_PROGRESS_SECONDS, and on failure the cause and the log's last lines.
set -euo pipefail

die() { echo "nix-build: $*" >&2; exit 1; }
(($# == 2)) || { echo "usage: nix-build.sh FLAKE_REF ATTR" >&2; exit 2; }
flake=$1
attr=$2
interval=${NIX_BUILD_PROGRESS_SECONDS:-30}
[[ $interval =~ ^[1-9][0-9]*$ ]] || die "NIX_BUILD_PROGRESS_SECONDS must be a whole number of seconds, not '$interval'"
secret=${NIX_CACHE_SECRET_KEY:-}

command -v nix >/dev/null 2>&1 || die "nix is not on PATH for $(id -un)@$(hostname) (is the builder bootstrapped?)"
# Every Nix command: flakes on whatever this machine's nix.conf says, and the x86_64-linux outputs
# whatever this machine is (a Mac resolves packages.aarch64-darwin.* by itself; neko's image is
# built for x86_64-linux only, on a remote builder there).
nix_flags=(--extra-experimental-features "nix-command flakes" --system x86_64-linux)

# ---------------------------------------------------------------- what it is doing, and how far

elapsed() {
  local s=$((SECONDS))
  if ((s >= 3600)); then
    printf '%dh%02dm%02ds' $((s / 3600)) $((s % 3600 / 60)) $((s % 60))
  elif ((s >= 60)); then
    printf '%dm%02ds' $((s / 60)) $((s % 60))
  else
    printf '%ds' "$s"
  fi
}

# The phase, in a file: the progress reporter runs in a background subshell.
phase() { printf '%s\n' "$*" >"$tmp/phase"; }

# The log's last line, printable and short: what Nix or the builder said last (not Nix's note
# that it was interrupted: the signal that stopped it is reported on its own).
last_line() {
  local l
  l=$(grep -v -e '^[[:space:]]*$' -e 'interrupted by the user' "$log" | tail -n 1 | tr '\r' '\n' | tail -n 1 | tr -cd '[:print:]\t' | cut -c 1-160) || true
  printf '%s' "$l"
}

# Derivations built so far: those whose outputs (listed in $tmp/outputs, one derivation a line, by
# `plan` below) all exist. Prints "BUILT TOTAL", or nothing when the plan is unknown.
built_of_total() {
  [[ -s $tmp/outputs ]] || return 0
  local total=0 built=0 p ok
  local -a outs
  while read -r -a outs; do
    total=$((total + 1))
    ok=1
    for p in ${outs[@]+"${outs[@]}"}; do [[ -e $p ]] || ok=0; done
    ((ok)) && built=$((built + 1))
  done <"$tmp/outputs"
  echo "$built $total"
}

# One line: the phase and, while building, derivations built of the total, paths fetched of the
# total, and the log's last line.
status() {
  local what counts fetched started
  what=$(cat "$tmp/phase" 2>/dev/null || echo "starting")
  if [[ $what == building* ]]; then
    counts=$(built_of_total)
    started=$(grep -c "^building '/nix/store/" "$log" || true)
    if [[ -n $counts ]]; then
      what+=": ${counts% *} of ${counts#* } derivations built"
    else
      what+=": $started derivations started"
    fi
    if [[ -s $tmp/fetch ]]; then
      fetched=$(grep -c "^copying path '/nix/store/[^']*' from '" "$log" || true)
      what+=", $fetched of $(wc -l <"$tmp/fetch" | tr -d ' ') paths fetched"
    fi
    what+="; last log line: $(last_line)"
  fi
  printf '%s' "$what"
}

# A progress line every $interval seconds until stopped. Its sleep writes nowhere and is killed with
# it, so nothing holds stderr open after the script has finished.
progress_loop() {
  local sl=""
  trap 'kill "$sl" 2>/dev/null; exit 0' TERM
  while :; do
    sleep "$interval" >/dev/null 2>&1 &
    sl=$!
    wait "$sl" || true
    echo "nix-build: [$(elapsed)] $(status)" >&2
  done
}
stop_monitor() {
  if [[ -n $monitor ]]; then
    kill "$monitor" 2>/dev/null || true
    wait "$monitor" 2>/dev/null || true
    monitor=""
  fi
}

# On every exit; the exit status survives it (bash 3.2 would end with the trap's last status).
cleanup() {
  local rc=$?
  stop_monitor
  rm -rf "$tmp"
  exit "$rc"
}

# Stopped by SIGTERM: by timeout(1) when the step's time budget ran out (STEP_BUDGET, from
# lib/shell.ts), else by whoever stopped it. Say which and what it was doing.
on_term() {
  trap - TERM
  local why="was stopped (SIGTERM)"
  [[ -z ${STEP_BUDGET:-} ]] || why="ran out of its time budget ($STEP_BUDGET)"
  echo "nix-build: $why after $(elapsed) while $(status)" >&2
  echo "nix-build: full log: $where" >&2
  exit 143
}

# Prints lines, the cache's signing key (should a tool ever echo it) replaced.
redacted() {
  local l
  while IFS= read -r l; do
    [[ -n $secret ]] && l=${l//"$secret"/[secret key]}
    printf '%s\n' "$l"
  done
}

bounded() { # bounded SECONDS CMD...: timeout(1) where the machine has it (macOS has not)
  if command -v timeout >/dev/null 2>&1; then timeout "$@"; else "${@:2}"; fi
}

# Why a remote builder refused us: Nix only says "remote machines may not have all required system
# features"; the ssh error (e.g. "Permission denied (publickey)") is what the operator needs.
diagnose_builders() {
  local line uri key hostkey store err
  while IFS= read -r line; do
    read -r uri _ key _ _ _ _ hostkey <<<"$line"
    [[ -n ${uri:-} ]] || continue
    store=$uri
    [[ -n ${key:-} && $key != - ]] && store+="?ssh-key=$key"
    if [[ -n ${hostkey:-} && $hostkey != - ]]; then
      [[ $store == *\?* ]] && store+="&" || store+="?"
      store+="base64-ssh-public-host-key=$hostkey"
    fi
    if ! err=$(NIX_SSHOPTS="${NIX_SSHOPTS:-} -o BatchMode=yes -o ConnectTimeout=10" bounded 30 nix "${nix_flags[@]}" store ping --store "$store" 2>&1 >/dev/null); then
      echo "nix-build: remote builder $uri cannot be used: $(grep -m1 -E 'Permission denied|Host key verification failed|Connection refused|timed out|No route|Could not resolve|REMOTE HOST IDENTIFICATION' <<<"$err" || tail -n1 <<<"$err")" >&2
    fi
  done < <(tr ';' '\n' <<<"$NIX_BUILDERS")
}

# With a multi-user Nix (a daemon, as on every Mac) --builders counts only for the daemon's
# trusted users: for anyone else it is ignored, --max-jobs 0 still holds, and the build fails with
# "unable to start any build". Succeeds when the builders will be used, or when it cannot tell.
builders_honoured() {
  [[ $(id -u) != 0 ]] || return 0
  [[ ${NIX_REMOTE:-} == daemon || -S /nix/var/nix/daemon-socket/socket ]] || return 0 # single-user: no daemon to ask
  local trusted u me groups
  # Nix 2.19+ says so (`nix store info`), 2.15-2.18 too (`nix store ping`), on stdout or stderr
  # by version, as 1/0 or true/false.
  trusted=$({ nix "${nix_flags[@]}" store info 2>&1 || nix "${nix_flags[@]}" store ping 2>&1; } |
    sed -n 's/^Trusted: //p' | head -n 1) || true
  case $trusted in
    1 | true) return 0 ;;
    0 | false) return 1 ;;
  esac
  # An older Nix does not say: its trusted-users (names, @groups, *).
  me=$(id -un)
  groups=" $(id -Gn) "
  for u in $(nix "${nix_flags[@]}" show-config 2>/dev/null | sed -n 's/^trusted-users = //p'); do
    [[ $u != "$me" && $u != '*' ]] || return 0
    [[ $u != @* || $groups != *" ${u#@} "* ]] || return 0
  done
  return 1
}

# ---------------------------------------------------------------- does the flake have ATTR?

# Nix resolves ATTR as packages.<system>.ATTR, legacyPackages.<system>.ATTR, then ATTR. Only when
# Nix itself says none exists is that the answer; any other failure is left to the build to report.
list_packages() {
  # Image-looking first: dockerTools images carry imageName, and names say image/docker/oci.
  # shellcheck disable=SC2016 # a Nix expression, not shell
  local expr='ps: builtins.concatStringsSep " " (map (n: let v = builtins.tryEval (ps.${n} ? imageName); in (if (v.success && v.value) || builtins.match ".*(image|docker|oci|container).*" n != null then "0:" else "1:") + n) (builtins.attrNames ps))'
  local names
  names=$(nix "${nix_flags[@]}" eval --raw "$flake#packages.x86_64-linux" --apply "$expr" 2>>"$log") ||
    names=$(nix "${nix_flags[@]}" eval --raw "$flake#packages.x86_64-linux" --apply 'ps: builtins.concatStringsSep " " (map (n: "1:" + n) (builtins.attrNames ps))' 2>>"$log") ||
    return 1
  tr ' ' '\n' <<<"$names" | sort -t: -k1,1 -s | cut -d: -f2- | paste -sd' ' - | sed 's/ /, /g'
}

# What will be built and fetched (the totals of the progress lines). A dry run evaluates again and
# asks the caches; if it fails or takes too long, progress lines count without totals.
plan() {
  local drvs
  bounded 300 nix "${nix_flags[@]}" "${args[@]}" --dry-run 2>"$tmp/dry" >/dev/null || return 0
  cat "$tmp/dry" >>"$log"
  awk '/will be built:$/ { s = "b"; next } /will be fetched/ { s = "f"; next }
       /^  \/nix\/store\// { if (s == "b") print $1 > b; else if (s == "f") print $1 > f; next } { s = "" }' \
    b="$tmp/drvs" f="$tmp/fetch" "$tmp/dry"
  [[ -s $tmp/drvs ]] || return 0
  # A .drv file is one line, `Derive([("out","/nix/store/...","",""),...],...`: its outputs are the
  # store paths in the first list.
  drvs=$(cat "$tmp/drvs")
  # shellcheck disable=SC2086 # one word per store path
  awk '{ s = substr($0, 1, index($0, "]")); o = "";
         while (match(s, /"\/nix\/store\/[^"]*"/)) { o = o " " substr(s, RSTART + 1, RLENGTH - 2); s = substr(s, RSTART + RLENGTH) }
         print o }' $drvs >"$tmp/outputs" 2>/dev/null || rm -f "$tmp/outputs"
}

# ---------------------------------------------------------------- main

log_dir=${NEKO_INFRA_LOG_DIR:-${HOME:-/tmp}/.cache/neko-infra/logs}
mkdir -p "$log_dir"
log="$log_dir/build-$(date -u +%Y%m%dT%H%M%SZ)-$$.log"
: >"$log"
where="$(hostname):$log"
tmp=$(mktemp -d)
monitor=""
trap cleanup EXIT
trap on_term TERM
echo "nix-build: building $flake#$attr on $(hostname); full log: $where" >&2

args=(build --no-link --json --print-build-logs "$flake#$attr")
if [[ -n ${NIX_BUILDERS:-} ]]; then
  args+=(--max-jobs 0 --builders "$NIX_BUILDERS")
  # Nix's ssh has no connect timeout of its own: a builder that drops packets (stopped, firewalled)
  # would hold the build for the kernel's TCP timeout (over 2 minutes). BatchMode: never prompt.
  export NIX_SSHOPTS="${NIX_SSHOPTS:-} -o ConnectTimeout=10 -o BatchMode=yes"
fi
if [[ -n ${NIX_CACHE:-} ]]; then
  : "${NIX_CACHE_PUBLIC_KEY:?nix-build: NIX_CACHE is set but NIX_CACHE_PUBLIC_KEY is not}"
  args+=(--option extra-substituters "$NIX_CACHE" --option extra-trusted-public-keys "$NIX_CACHE_PUBLIC_KEY")
fi

if [[ -n ${NIX_BUILDERS:-} ]] && ! builders_honoured; then
  me=$(id -un)
  echo "nix-build: the Nix daemon ignores the remote builders (builder.remoteBuilders) for $me, who is not one of its trusted-users, so the build would fail with \"unable to start any build\"" >&2
  echo "nix-build: fix: add the line 'extra-trusted-users = $me' to /etc/nix/nix.custom.conf (Determinate Nix) or /etc/nix/nix.conf, then restart the daemon (macOS: sudo launchctl kickstart -k system/systems.determinate.nix-daemon, or system/org.nixos.nix-daemon; Linux: sudo systemctl restart nix-daemon); or give the daemon the builder in /etc/nix/machines and unset builder.remoteBuilders" >&2
  exit 1
fi

phase "checking that $flake has $attr"
if ! nix "${nix_flags[@]}" eval --raw "$flake#$attr" --apply 'x: ""' >/dev/null 2>"$tmp/eval"; then
  cat "$tmp/eval" >>"$log"
  if grep -q "does not provide attribute" "$tmp/eval"; then
    echo "nix-build: $flake has no output $attr for x86_64-linux (looked for packages.x86_64-linux.$attr, legacyPackages.x86_64-linux.$attr and $attr)" >&2
    if pkgs=$(list_packages) && [[ -n $pkgs ]]; then
      echo "nix-build: its x86_64-linux packages (images first): $pkgs" >&2
      echo "nix-build: set neko-infra:image.attr to the one that is the image, e.g. pulumi config set --path image.attr ${pkgs%%,*}" >&2
    else
      echo "nix-build: it has no packages.x86_64-linux output; set neko-infra:image.attr to the flake output that is a docker-archive image (pulumi config set --path image.attr NAME)" >&2
    fi
    echo "nix-build: full log: $where" >&2
    exit 1
  fi
fi

progress_loop >/dev/null &
monitor=$!
phase "evaluating $flake#$attr (what to build and fetch)"
plan
phase "building $flake#$attr"

if ! out=$(nix "${nix_flags[@]}" "${args[@]}" 2>>"$log"); then
  stop_monitor
  echo "nix-build: building $flake#$attr failed after $(elapsed) (full log: $where)" >&2
  if [[ -n ${NIX_BUILDERS:-} ]] && grep -q -E 'unable to start any build|required system features' "$log"; then
    diagnose_builders
  fi
  # The end of the log holds Nix's error and, before it, the failing builder's last output lines.
  echo "--- last lines of the build log ---" >&2
  grep -v -E "^(building|copying path) '|^copying [0-9]+ paths|^evaluating |^(this|these) .* will be (built|fetched)|^  /nix/store/" "$log" |
    tail -n 20 | redacted >&2
  exit 1
fi

store_path=$(grep -o '"out":"/nix/store/[^"]*"' <<<"$out" | head -n1 | cut -d'"' -f4)
[[ -n $store_path ]] || die "nix build succeeded but printed no output path for $flake#$attr: $out"

# Keep the result for the next builder: sign it and copy its closure to the cache. A failed upload
# costs only warmth, not this build: warn and go on. The key lives in a 0600 file, never in argv.
if [[ -n ${NIX_CACHE:-} && -n $secret ]]; then
  phase "uploading $store_path to the binary cache"
  keyfile="$tmp/cache-key"
  (umask 077 && printf '%s' "$secret" >"$keyfile")
  if ! { nix "${nix_flags[@]}" store sign --key-file "$keyfile" --recursive "$store_path" &&
    nix "${nix_flags[@]}" copy --to "$NIX_CACHE" "$store_path"; } 2>>"$log"; then
    echo "nix-build: warning: uploading $store_path to the binary cache failed (the build itself succeeded): $(tail -n1 "$log" | redacted)" >&2
  fi
  rm -f "$keyfile"
fi
stop_monitor
echo "nix-build: built $store_path in $(elapsed)" >&2
echo "$store_path"
