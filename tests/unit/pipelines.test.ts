/**
 * lib/pipelines.ts: one capture pipeline per encoder, each in the shape neko and the candidate
 * check (scripts/neko-check-lib.sh) both read: neko's {display} on an ximagesrc first, neko's
 * appsink last. (They are run for real only in the candidate: the real-tool tests run them through
 * the fixture's gst-launch-1.0 stand-in, and GStreamer 1.22 with Xvfb ran the software ones.)
 */
import { capturePipeline, cpuPipeline, nvencPipeline } from "../../lib/pipelines";
import { parseSettings, SettingsError } from "../../lib/settings";
import { configOf } from "../support/settings";

const ALL = [
  ["vp8", cpuPipeline("vp8")],
  ["vp9", cpuPipeline("vp9")],
  ["h264", cpuPipeline("h264")],
  ["nvh264enc", nvencPipeline("nvh264enc")],
  ["nvautogpuh264enc", nvencPipeline("nvautogpuh264enc")],
] as const;

/** The element names of a pipeline description: the first word of each `!` segment that is not caps. */
const elements = (p: string) =>
  p
    .split(" ! ")
    .map((s) => s.trim().split(" ")[0])
    .filter((w) => !w.includes("/"));

describe("capture pipelines", () => {
  test.each(ALL)("%s: neko's {display} on its X source, 25 frames/s, neko's appsink last", (_name, p) => {
    expect(p.startsWith("ximagesrc display-name={display} show-pointer=true use-damage=false ! video/x-raw,framerate=25/1 ! ")).toBe(true);
    expect(p.endsWith(" ! appsink name=appsink")).toBe(true);
    expect(p.match(/\{display\}/g)).toHaveLength(1); // neko replaces the first one only
    expect(p).not.toMatch(/num-buffers|fakesink|["'\n]/); // the check adds its own; no quoting: words split on blanks
  });

  test("each codec its encoder", () => {
    expect(elements(cpuPipeline("vp8"))).toEqual(["ximagesrc", "videoconvert", "queue", "vp8enc", "appsink"]);
    expect(elements(cpuPipeline("vp9"))).toEqual(["ximagesrc", "videoconvert", "queue", "vp9enc", "appsink"]);
    expect(elements(cpuPipeline("h264"))).toEqual(["ximagesrc", "videoconvert", "queue", "x264enc", "appsink"]);
    expect(elements(nvencPipeline("nvh264enc"))).toEqual(["ximagesrc", "videoconvert", "queue", "nvh264enc", "h264parse", "appsink"]);
    expect(elements(nvencPipeline("nvautogpuh264enc"))).toEqual([
      "ximagesrc",
      "videoconvert",
      "queue",
      "nvautogpuh264enc",
      "h264parse",
      "appsink",
    ]);
  });

  test("H.264 is constrained baseline, as neko's SDP offers it (profile-level-id=42e01f); x264 tuned for latency", () => {
    for (const p of [cpuPipeline("h264"), nvencPipeline("nvh264enc"), nvencPipeline("nvautogpuh264enc")]) {
      expect(p).toContain("video/x-h264,stream-format=byte-stream,profile=constrained-baseline ! appsink name=appsink");
    }
    expect(cpuPipeline("h264")).toMatch(/x264enc .*tune=zerolatency/);
  });

  test("NVENC takes NV12 in system memory: no cudaupload, no cudaconvert (which needs libnvrtc, the CUDA toolkit)", () => {
    for (const e of ["nvh264enc", "nvautogpuh264enc"] as const) {
      expect(nvencPipeline(e)).toContain(`videoconvert ! queue ! video/x-raw,format=NV12 ! ${e} name=encoder`);
      expect(nvencPipeline(e)).not.toMatch(/cuda/);
    }
  });

  test("neko's environment: the software pipeline of the codec, none for H.264 on a GPU (the rollout sets the NVENC one)", () => {
    expect(capturePipeline("vp8", false)).toBe(cpuPipeline("vp8"));
    expect(capturePipeline("vp9", false)).toBe(cpuPipeline("vp9"));
    expect(capturePipeline("h264", false)).toBe(cpuPipeline("h264"));
    expect(capturePipeline("h264", true)).toBeUndefined();
    expect(capturePipeline("vp8", true)).toBe(cpuPipeline("vp8"));
  });
});

describe("neko.videoCodec", () => {
  const parse = (neko: Record<string, unknown>, gpu = false) =>
    parseSettings({
      config: configOf({
        image: { flake: "./x" },
        builder: { kind: "local" },
        registry: { kind: "oci", url: "r.example.com/neko" },
        host: {
          kind: "ssh",
          gpu,
          host: "h.example.com",
          privateKey: "-----BEGIN OPENSSH PRIVATE KEY-----\nx",
          hostKey: "ssh-ed25519 AAAA",
        },
        neko,
      }),
      secretKeys: ["neko-infra:host"],
      projectDir: "/p",
      fileExists: () => true,
    });
  const problems = (neko: Record<string, unknown>, gpu = false): string[] => {
    try {
      parse(neko, gpu);
      return [];
    } catch (e) {
      if (e instanceof SettingsError) return e.problems;
      throw e;
    }
  };

  test.each(["vp8", "vp9", "h264"])("%s: a pipeline for it", (codec) => {
    expect(parse({ videoCodec: codec }).neko.videoCodec).toBe(codec);
  });

  test.each(["av1", "h265"])("%s (a codec neko knows, without a pipeline here): refused naming the key and the fix", (codec) => {
    expect(problems({ videoCodec: codec })).toEqual([
      `neko-infra:neko.videoCodec: ${codec} is a codec neko knows, but neko-infra has no pipeline for it that the rollout's candidate check proves: use vp8, vp9 or h264 (x264enc): pulumi config set --path neko.videoCodec h264`,
    ]);
    expect(problems({ videoCodec: codec }, true)[0]).toContain("use vp8, vp9 or h264 (NVENC on this GPU host)");
  });

  test("anything else: the values it takes", () => {
    expect(problems({ videoCodec: "mjpeg" })).toEqual(["neko-infra:neko.videoCodec: must be vp8, vp9 or h264"]);
  });
});
