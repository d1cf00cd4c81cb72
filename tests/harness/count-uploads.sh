#!/usr/bin/env bash
# Prints the number of completed blob uploads in a registry.sh log.
#
#   count-uploads.sh LOGFILE [REPO]     REPO (e.g. neko) limits the count to one repository
#
# distribution 2.8 logs one msg="response completed" line per request. A blob
# upload ends with
#   PUT  /v2/<repo>/blobs/uploads/<uuid>?...&digest=sha256:...   -> 201
# (after POST .../blobs/uploads/ -> 202 and PATCH -> 202), or, monolithic,
#   POST /v2/<repo>/blobs/uploads/?digest=sha256:...             -> 201.
# Not uploads: HEAD /v2/<repo>/blobs/sha256:... (200 = blob exists, which is
# all a second push of the same image does; 404 = missing), cross-repository
# mounts (POST ...?mount=...&from=... -> 201) and manifest PUTs.
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 ]]; then
  echo "usage: ${0##*/} LOGFILE [REPO]" >&2
  exit 2
fi
log=$1
repo=${2:-}
[[ -r $log ]] || {
  echo "${0##*/}: error: cannot read registry log '$log'" >&2
  exit 1
}

awk -v repo="$repo" '
  !/msg="response completed"/ { next }
  !/http\.response\.status=201( |$)/ { next }
  {
    method = ""; uri = ""
    if (match($0, /http\.request\.method=[A-Z]+/)) method = substr($0, RSTART + 20, RLENGTH - 20)
    if (match($0, /http\.request\.uri="?[^" ]+/)) { uri = substr($0, RSTART + 17, RLENGTH - 17); sub(/^"/, "", uri) }
    if (uri !~ /^\/v2\/.+\/blobs\/uploads\//) next
    if (repo != "" && index(uri, "/v2/" repo "/blobs/uploads/") != 1) next
    if (method == "PUT") { n++; next }
    if (method == "POST" && uri ~ /[?&]digest=/ && uri !~ /[?&]mount=/) n++
  }
  END { print n + 0 }
' "$log"
