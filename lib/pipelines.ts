/**
 * neko's capture pipelines (NEKO_CAPTURE_VIDEO_PIPELINE), one per encoder. neko replaces
 * `{display}` with its X display and reads frames from `appsink name=appsink`; the rollout's
 * candidate check (scripts/neko-check-lib.sh) runs the same text for a few frames, with
 * `num-buffers` on the source and `fakesink` for the appsink.
 *
 * Without a pipeline neko streams its built-in VP8 one whatever NEKO_CAPTURE_VIDEO_CODEC says, so
 * every codec gets one here, VP8 included (neko's default, written out so the check can run it).
 */
import type { NekoSettings } from "./settings";

export type VideoCodec = NekoSettings["videoCodec"];
export type NvencElement = "nvh264enc" | "nvautogpuh264enc";

/** neko's kbit/s default (`video_bitrate`); its legacy pipelines derive the encoders' rates from it. */
const BITRATE = 3072;
/** As neko's own pipelines: the X screen at 25 frames/s, converted, queued. */
const SOURCE = "ximagesrc display-name={display} show-pointer=true use-damage=false ! video/x-raw,framerate=25/1 ! videoconvert ! queue";
const SINK = "appsink name=appsink";
/**
 * neko offers H.264 as constrained baseline (`profile-level-id=42e01f` in its SDP): the encoder is
 * asked for that profile, as in neko's own H.264 pipelines.
 */
const H264_TAIL = "h264parse config-interval=-1 ! video/x-h264,stream-format=byte-stream,profile=constrained-baseline";

/**
 * Hardware H.264 through NVENC; `nvautogpuh264enc` is the element for NVIDIA drivers 590 and later.
 * Frames go to the encoder in system memory as NV12, which both elements take: no `cudaupload !
 * cudaconvert`, since `cudaconvert` exists only where libnvrtc (the CUDA toolkit) loads, and the
 * Nix-built image has none.
 */
export function nvencPipeline(element: NvencElement): string {
  const encoder =
    element === "nvh264enc"
      ? "nvh264enc name=encoder preset=2 gop-size=25 spatial-aq=true temporal-aq=true bitrate=4096 vbv-buffer-size=4096 rc-mode=6"
      : "nvautogpuh264enc name=encoder bitrate=4096";
  return `${SOURCE} ! video/x-raw,format=NV12 ! ${encoder} ! ${H264_TAIL} ! ${SINK}`;
}

/**
 * Software encoders (GStreamer's good and ugly plugins, in neko's images), with the parameters of
 * neko's own pipelines for them (`capture_pipeline.go`).
 */
export function cpuPipeline(codec: VideoCodec): string {
  switch (codec) {
    case "vp8":
      return (
        `${SOURCE} ! vp8enc target-bitrate=${BITRATE * 650} cpu-used=4 end-usage=cbr threads=4 deadline=1 undershoot=95 ` +
        `buffer-size=${BITRATE * 4} buffer-initial-size=${BITRATE * 2} buffer-optimal-size=${BITRATE * 3} keyframe-max-dist=25 ` +
        `min-quantizer=4 max-quantizer=20 ! ${SINK}`
      );
    case "vp9":
      return `${SOURCE} ! vp9enc target-bitrate=${BITRATE * 1000} cpu-used=-5 threads=4 deadline=1 keyframe-max-dist=30 auto-alt-ref=true ! ${SINK}`;
    case "h264":
      return (
        `${SOURCE} ! video/x-raw,format=NV12 ! x264enc threads=4 bitrate=${BITRATE} key-int-max=60 vbv-buf-capacity=${BITRATE} ` +
        `byte-stream=true tune=zerolatency speed-preset=veryfast ! video/x-h264,stream-format=byte-stream,profile=constrained-baseline ! ${SINK}`
      );
  }
}

/**
 * The NEKO_CAPTURE_VIDEO_PIPELINE neko's environment carries: the software one for the codec, or
 * none on a GPU host streaming H.264, where the rollout sets the NVENC pipeline of the encoder it
 * chose for the host's driver (NEKO_NVENC, from {@link nvencPipeline}).
 */
export function capturePipeline(codec: VideoCodec, gpu: boolean): string | undefined {
  if (gpu && codec === "h264") return undefined;
  return cpuPipeline(codec);
}
