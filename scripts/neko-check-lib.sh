#!/usr/bin/env bash
# shellcheck disable=SC2034,SC2154 # fail_reason and phase are read, tmp is set, by neko-rollout.sh
# What neko-rollout.sh proves on its candidate beyond GET /health, which answers as soon as neko's
# HTTP server runs and says nothing about the capture pipeline or the desktop. lib/shell.ts puts
# this file before neko-rollout.sh on the step's standard input.
#
# check_candidate CONTAINER HOST:PORT ENV_FILE, once the candidate answers /health:
#   1. Its capture pipeline encodes. NEKO_CAPTURE_VIDEO_PIPELINE from ENV_FILE (what neko will
#      run) runs inside the candidate as `gst-launch-1.0 <pipeline> ! fakesink`: neko's {display}
#      filled in, `num-buffers=N` on the source, fakesink for neko's appsink; it must end after
#      N frames. `gst-inspect-1.0 ELEMENT` proves only that an element loads; this proves that
#      every element is there and that they link, negotiate and encode (e.g. no cudaconvert
#      without libnvrtc, an NVENC encoder that cannot open the GPU).
#   2. Its desktop is not blank. GET /api/room/screen/shot.jpg (neko v3 serves it to admins; the
#      API token, NEKO_SESSION_API_TOKEN in ENV_FILE, is one), decoded by the candidate's own
#      GStreamer to 64x36 grey levels. A picture of one uniform colour (or no picture) is asked
#      for again every 2 s (a browser draws its window seconds after /health), then refused after
#      NEKO_SCREENSHOT_SECONDS.
# keep_screenshot, after a successful swap: the candidate's last screenshot to NEKO_SCREENSHOT
#   (default NEKO_STATE_DIR/screenshot.jpg; a leading `~/` is $HOME), mode 0600, saying where.
#
# A failed check returns 1 with fail_reason ("the candidate ..." + it). Uses neko-rollout.sh's
# log, mask, trim, bounded, tmp (its private temp directory) and phase.
# Env: NEKO_SCREENSHOT          where a successful deploy keeps the screenshot (see above)
#      NEKO_SCREENSHOT_SECONDS  how long a blank desktop is given to draw (default 60)
set -euo pipefail

check_frames=25 # one second at neko's 25 frames/s
check_width=64
check_height=36
check_shot_seconds=${NEKO_SCREENSHOT_SECONDS:-60}
check_shot_to=${NEKO_SCREENSHOT:-}
# Checked before anything runs: a bad value must not stop a run with its candidate up.
if ! [[ $check_shot_seconds =~ ^[1-9][0-9]*$ ]]; then
  echo "${STEP_SCRIPT:-neko-rollout}: NEKO_SCREENSHOT_SECONDS must be a positive number of seconds, got '$check_shot_seconds'" >&2
  exit 1
fi
if [[ -n $check_shot_to && $check_shot_to != /* && $check_shot_to != \~/* ]]; then
  echo "${STEP_SCRIPT:-neko-rollout}: NEKO_SCREENSHOT must be an absolute path or start with ~/, got '$check_shot_to'" >&2
  exit 1
fi

# The value of the last NAME= line of an env file (empty when there is none).
check_env_value() {
  local line value=""
  while IFS= read -r line; do
    [[ $line != "$2="* ]] || value=${line#*=}
  done <"$1"
  printf '%s' "$value"
}

# The X display neko uses in CONTAINER: NEKO_DESKTOP_DISPLAY, else DISPLAY (the image's).
check_display() {
  local line display="" neko_display=""
  while IFS= read -r line; do
    case $line in
      DISPLAY=*) display=${line#DISPLAY=} ;;
      NEKO_DESKTOP_DISPLAY=*) neko_display=${line#NEKO_DESKTOP_DISPLAY=} ;;
    esac
  done < <(docker inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$1" 2>/dev/null || true)
  printf '%s' "${neko_display:-$display}"
}

# What the NVIDIA libraries look like from inside CONTAINER (for an NVENC pipeline that failed).
check_nvidia_libs() {
  local libs
  # shellcheck disable=SC2016 # expanded by the container's shell
  local probe='IFS=:; out=""
    for lib in libnvidia-encode libcuda; do
      found=""
      for d in /usr/lib64 /usr/lib/x86_64-linux-gnu /run/opengl-driver/lib $LD_LIBRARY_PATH; do
        for f in "$d/$lib".so*; do [ -e "$f" ] && found=${found:-$f}; done
      done
      out="$out${out:+, }$lib: ${found:-not visible}"
    done
    echo "$out"'
  libs=$(bounded 30 docker exec "$1" sh -c "$probe" 2>&1) || libs="libraries not checked: ${libs##*$'\n'}"
  printf '%s (looked in /usr/lib64, /usr/lib/x86_64-linux-gnu, /run/opengl-driver/lib, LD_LIBRARY_PATH)' "$libs"
}

# check_pipeline CONTAINER ENV_FILE: 0 once neko's pipeline ran check_frames frames in CONTAINER.
check_pipeline() {
  local c=$1 pipeline display desc first rest last word encoder="" expect=1 rc=0 err hint=""
  local -a words=()
  pipeline=$(check_env_value "$2" NEKO_CAPTURE_VIDEO_PIPELINE)
  if [[ -z $pipeline ]]; then
    log "no NEKO_CAPTURE_VIDEO_PIPELINE: neko streams its built-in VP8 pipeline, which the candidate check does not run"
    return 0
  fi
  phase="running the candidate's capture pipeline for $check_frames frames"
  desc=$pipeline
  if [[ $desc == *"{display}"* ]]; then
    display=$(check_display "$c")
    if [[ -z $display ]]; then
      fail_reason="has no X display for its capture pipeline's {display}: neither NEKO_DESKTOP_DISPLAY nor DISPLAY is set in it"
      return 1
    fi
    desc=${desc/"{display}"/$display} # neko replaces the first one only
  fi
  last=$(trim "${desc##*!}")
  if [[ $desc != *!* || $last != appsink* ]]; then
    fail_reason="cannot run NEKO_CAPTURE_VIDEO_PIPELINE: it does not end in 'appsink name=appsink', where neko takes its frames from"
    return 1
  fi
  desc=$(trim "${desc%!*}")
  first=${desc%%!*}
  rest=${desc#"$first"}
  [[ $first == *num-buffers=* ]] || first="$(trim "$first") num-buffers=$check_frames "
  desc="$first$rest ! fakesink"
  # gst-launch-1.0 joins its arguments into the description, one word each (a single argument
  # with blanks is one word to it): neko's pipelines hold no quoted values.
  read -r -a words <<<"$desc"
  for word in ${words[@]+"${words[@]}"}; do
    if [[ $word == "!" ]]; then
      expect=1
    elif ((expect)); then
      expect=0
      [[ -n $encoder || $word != *enc ]] || encoder=$word
    fi
  done
  bounded 120 docker exec "$c" gst-launch-1.0 ${words[@]+"${words[@]}"} >"$tmp/gst.out" 2>&1 || rc=$?
  if ((rc == 0)); then
    log "the candidate's capture pipeline encodes: $check_frames frames through ${encoder:-its encoder} (gst-launch-1.0 ... ! fakesink)"
    return 0
  fi
  err=$(awk '/^(ERROR|WARNING: erroneous pipeline)/ { print; exit }' "$tmp/gst.out")
  [[ -n $err ]] || err=$(grep -v '^[[:space:]]*$' "$tmp/gst.out" | tail -n 1 || true)
  ((rc != 124)) || err="did not end within 120s${err:+ (last: $err)}"
  err=$(printf '%s' "${err:-exit code $rc, no message}" | cut -c1-300 | mask)
  case $err in
    *'no element "cudaconvert"'*)
      hint="; cudaconvert exists only where libnvrtc (the CUDA toolkit) loads: the image must ship it, or the pipeline do without (videoconvert ! video/x-raw,format=NV12 ! nvh264enc, as neko-infra's own)"
      ;;
  esac
  [[ $encoder != nv* ]] || hint="$hint; $(check_nvidia_libs "$c")"
  fail_reason="cannot run its capture pipeline for $check_frames frames (gst-launch-1.0 in the candidate: $err)$hint"
  return 1
}

# check_grey_levels CONTAINER JPEG: "COUNT MIN MAX" of its grey levels at check_width x
# check_height, decoded by CONTAINER's GStreamer; 1 with the decoder's message when it cannot.
check_grey_levels() {
  local rc=0 err
  bounded 60 docker exec -i "$1" gst-launch-1.0 -q fdsrc fd=0 ! jpegdec ! videoconvert ! videoscale add-borders=false \
    ! "video/x-raw,format=GRAY8,width=$check_width,height=$check_height" ! fdsink fd=1 <"$2" >"$tmp/shot.grey" 2>"$tmp/gst.out" || rc=$?
  if ((rc != 0)); then
    err=$(awk '/^(ERROR|WARNING)/ { print; exit }' "$tmp/gst.out")
    printf '%s' "${err:-exit code $rc}" | cut -c1-300 | mask
    return 1
  fi
  od -A n -t u1 -v "$tmp/shot.grey" | awk '
    { for (i = 1; i <= NF; i++) { n++; if (n == 1 || $i < min) min = $i; if (n == 1 || $i > max) max = $i } }
    END { printf "%d %d %d", n, min, max }'
}

# check_screenshot CONTAINER HOST:PORT ENV_FILE: 0 once a screenshot of the desktop is not one
# uniform colour (kept in $tmp/screenshot.jpg).
check_screenshot() {
  local c=$1 addr=$2 token esc code deadline last="no answer" levels n min max size
  token=$(check_env_value "$3" NEKO_SESSION_API_TOKEN)
  if [[ -z $token ]]; then
    fail_reason="cannot be checked for a blank desktop: NEKO_ENV has no NEKO_SESSION_API_TOKEN (neko serves GET /api/room/screen/shot.jpg to admins; the API token is one)"
    return 1
  fi
  phase="taking a screenshot of the candidate's desktop (up to ${check_shot_seconds}s)"
  # On curl's standard input as a config line, never on its command line.
  esc=${token//\\/\\\\}
  esc=${esc//\"/\\\"}
  deadline=$((SECONDS + check_shot_seconds))
  while :; do
    rm -f "$tmp/shot.jpg"
    code=$(printf 'header = "Authorization: Bearer %s"\n' "$esc" |
      curl -s -K - -o "$tmp/shot.jpg" -w '%{http_code}' --max-time 10 "http://$addr/api/room/screen/shot.jpg" 2>/dev/null) || true
    case $code in
      200)
        size=$(wc -c <"$tmp/shot.jpg" | tr -d ' ')
        if [[ $(od -A n -t x1 -N 2 "$tmp/shot.jpg" | tr -d ' \n') != ffd8 ]]; then
          last="not a JPEG ($size bytes)"
        elif ! levels=$(check_grey_levels "$c" "$tmp/shot.jpg"); then
          fail_reason="cannot be checked for a blank desktop: its own GStreamer cannot decode its screenshot (fdsrc ! jpegdec ! videoconvert ! videoscale ! fdsink: $levels)"
          return 1
        else
          read -r n min max <<<"$levels"
          if ((n != check_width * check_height)); then
            last="a screenshot that decoded to $n grey levels, not $((check_width * check_height))"
          elif ((max - min > 4)); then
            cp "$tmp/shot.jpg" "$tmp/screenshot.jpg"
            log "the candidate's desktop is not blank: its screenshot ($size bytes) has grey levels $min to $max"
            return 0
          else
            last="one uniform colour (grey level $min to $max)"
          fi
        fi
        ;;
      401 | 403)
        fail_reason="refused neko-infra's API token: GET /api/room/screen/shot.jpg answered HTTP $code"
        return 1
        ;;
      "" | 000) last="no answer" ;;
      *) last="HTTP $code" ;;
    esac
    ((SECONDS < deadline)) || break
    sleep 2
  done
  fail_reason="shows a blank desktop: its screenshot (GET /api/room/screen/shot.jpg) was $last for ${check_shot_seconds}s"
  return 1
}

# check_candidate CONTAINER HOST:PORT ENV_FILE: both checks (see the top).
check_candidate() {
  check_pipeline "$1" "$3" && check_screenshot "$1" "$2" "$3"
}

# After a successful swap: the candidate's screenshot where the operator finds it.
keep_screenshot() {
  local to=$check_shot_to
  [[ -f $tmp/screenshot.jpg ]] || return 0
  [[ -n $to || -z ${NEKO_STATE_DIR:-} ]] || to=$NEKO_STATE_DIR/screenshot.jpg
  if [[ -z $to ]]; then
    log "neither NEKO_SCREENSHOT nor NEKO_STATE_DIR is set: the candidate's screenshot was not kept"
    return 0
  fi
  [[ $to != \~/* ]] || to=${HOME:-}/${to#\~/}
  if (umask 077 && mkdir -p "$(dirname "$to")" && cp "$tmp/screenshot.jpg" "$to.new") 2>/dev/null && mv -f "$to.new" "$to"; then
    log "the new desktop as its candidate showed it: $to (on $(uname -n))"
  else
    log "could not keep the candidate's screenshot as $to"
  fi
}
