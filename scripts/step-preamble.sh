#!/usr/bin/env bash
# What every step's script starts with: lib/shell.ts puts this file between the step's `export`
# lines and the script itself, on the Command's standard input. Defined once, here:
#
# - Every line the step prints is capped at STEP_LINE_MAX characters (default 2000), saying so.
#   The command provider reads a command's output in lines of at most 64 KiB, and a longer line
#   makes the step hang for ever (neither its timeout nor the remote `timeout` ends it): a build
#   log, a container log or cloud-init's log can hold such a line. The filters ignore SIGTERM, so
#   the script's own last words, when its time budget runs out, still get through.
# - SIGTERM (timeout(1) enforcing the step's budget, STEP_BUDGET; or whoever stopped it) ends the
#   script with one line saying what it was doing: the script keeps `doing` up to date, and may
#   define its own `on_term` (the trap calls it by name).
# - What the script lists in `step_tmp` is removed when it exits, and its exit status survives
#   that: bash 3.2 (a Mac's) ends a script that hit an error with its EXIT trap's status, which made
#   failed steps look green.
set -euo pipefail

# A shell loop, not awk or cut: those buffer a pipe's input or output (mawk waits for a full
# block), which would hold back the progress lines a long step prints.
step_cap_lines() {
  trap '' TERM INT
  local line max=${STEP_LINE_MAX:-2000}
  while IFS= read -r line || [[ -n $line ]]; do
    if ((${#line} > max)); then
      printf '%s [... line cut at %s characters]\n' "${line:0:max}" "$max"
    else
      printf '%s\n' "$line"
    fi
  done
}
exec > >(step_cap_lines) 2> >(step_cap_lines >&2)

doing="starting"
on_term() {
  trap - TERM
  local why="was stopped (SIGTERM)"
  [[ -z ${STEP_BUDGET:-} ]] || why="ran out of its time budget ($STEP_BUDGET)"
  echo "${STEP_SCRIPT:-step}: $why after ${SECONDS}s while $doing" >&2
  exit 143
}
trap on_term TERM

step_tmp=()
step_exit() {
  local rc=$?
  rm -rf ${step_tmp[@]+"${step_tmp[@]}"}
  exit "$rc"
}
trap step_exit EXIT
