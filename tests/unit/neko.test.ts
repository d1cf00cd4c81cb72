import { execFileSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { envFile, HOST_STATE_DIR, nekoEnv, nekoSecretEnv, nvencPipeline, removeCommand, rolloutEnv } from "../../lib/neko";
import { hostIngress, sshIngress } from "../../lib/network";
import { cpuPipeline } from "../../lib/pipelines";
import { hostPorts, publishArgs } from "../../lib/ports";
import { NekoSettings, parseSettings } from "../../lib/settings";
import { portabilityFindings } from "../support/portability";
import { configOf } from "../support/settings";

function neko(overrides: Record<string, unknown> = {}, gpu = false): NekoSettings {
  return parseSettings({
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
      neko: overrides,
    }),
    secretKeys: ["neko-infra:host"],
    projectDir: "/p",
    fileExists: () => true,
  }).neko;
}

const V2_NAMES = /^NEKO_(EPR|NAT1TO1|PASSWORD|PASSWORD_ADMIN|SCREEN|ICELITE|UDPMUX|TCPMUX|BIND|VIDEO_CODEC|PROXY)$/;
const rt = (o: Partial<{ publicAddress: string; gpu: boolean; tls: boolean }> = {}) => ({
  publicAddress: "100.64.0.20",
  gpu: false,
  tls: false,
  ...o,
});

describe("one port list", () => {
  test("EPR without TLS: neko's HTTP port and the UDP range, both for the clients", () => {
    expect(hostPorts(neko(), { tls: false }).map((p) => [p.from, p.to, p.protocol, p.exposure, p.service])).toEqual([
      [8080, 8080, "tcp", "clients", "neko"],
      [52000, 52100, "udp", "clients", "neko"],
    ]);
  });

  test("with TLS neko's HTTP port is loopback only; 80 is open to everyone (ACME), 443 to the clients", () => {
    const ports = hostPorts(neko(), { tls: true });
    expect(ports.find((p) => p.from === 8080)!.exposure).toBe("loopback");
    expect(ports.filter((p) => p.service === "tls").map((p) => [p.from, p.exposure])).toEqual([
      [80, "everyone"],
      [443, "clients"],
    ]);
  });

  test("TURN adds its ports, its relay range and the hairpin of relayed media to neko", () => {
    const ports = hostPorts(neko({ turn: true }), { tls: true });
    expect(ports.filter((p) => p.service === "turn").map((p) => `${p.from}-${p.to}/${p.protocol} ${p.exposure}`)).toEqual([
      "3478-3478/udp clients",
      "3478-3478/tcp clients",
      "5349-5349/tcp clients",
      "49160-49200/udp self",
    ]);
    expect(ports.filter((p) => p.service === "neko" && p.exposure === "self").map((p) => `${p.from}-${p.to}`)).toEqual(["52000-52100"]);
  });

  test("no TURN over TLS without the TLS front", () => {
    expect(hostPorts(neko({ turn: true }), { tls: false }).some((p) => p.from === 5349)).toBe(false);
  });

  test("mux mode: one UDP port, plus a TCP port when configured", () => {
    const ports = hostPorts(neko({ webrtc: { mode: "mux", udpMux: 59000, tcpMux: 59001 } }), { tls: false });
    expect(ports.map((p) => [p.from, p.to, p.protocol])).toEqual([
      [8080, 8080, "tcp"],
      [59000, 59000, "udp"],
      [59001, 59001, "tcp"],
    ]);
  });

  test("published ports are 1:1 ranges, loopback ones bound to 127.0.0.1, the rest to the given address", () => {
    expect(publishArgs(hostPorts(neko(), { tls: true }))).toEqual(["127.0.0.1:8080:8080/tcp", "52000-52100:52000-52100/udp"]);
    expect(publishArgs(hostPorts(neko(), { tls: false }), "127.0.0.1")).toEqual([
      "127.0.0.1:8080:8080/tcp",
      "127.0.0.1:52000-52100:52000-52100/udp",
    ]);
  });

  test("the security group opens exactly what is published to clients, and nothing loopback", () => {
    const n = neko({ httpPort: 9000, webrtc: { epr: "53000-53010" } });
    const ports = hostPorts(n, { tls: false });
    const rules = hostIngress(ports, ["100.64.0.0/24", "fd00::/8"], "100.64.0.20");
    const covered = rules.flatMap((r) => Array.from({ length: r.toPort - r.fromPort + 1 }, (_, i) => `${r.fromPort + i}/${r.protocol}`));
    const published = publishArgs(ports).flatMap((a) => {
      const [range, protocol] = a.split(":").slice(-1)[0].split("/");
      const [lo, hi] = range.split("-").map(Number);
      return Array.from({ length: (hi ?? lo) - lo + 1 }, (_, i) => `${lo + i}/${protocol}`);
    });
    expect(covered.sort()).toEqual(published.sort());
    expect(rules.every((r) => r.cidrBlocks.join() === "100.64.0.0/24" && r.ipv6CidrBlocks.join() === "fd00::/8")).toBe(true);
    expect(hostIngress(hostPorts(n, { tls: true }), ["100.64.0.0/24"], "x").some((r) => r.fromPort === 9000)).toBe(false);
  });

  test("the hairpin rules admit only the host's own address", () => {
    const rules = hostIngress(hostPorts(neko({ turn: true }), { tls: false }), ["0.0.0.0/0"], "100.64.0.20");
    expect(rules.filter((r) => /relay|TURN relay/.test(r.description)).every((r) => r.cidrBlocks.join() === "100.64.0.20/32")).toBe(true);
  });

  test("SSH rule is port 22 from the given networks only", () => {
    expect(sshIngress(["100.64.0.24/32"])).toMatchObject({
      protocol: "tcp",
      fromPort: 22,
      toPort: 22,
      cidrBlocks: ["100.64.0.24/32"],
      ipv6CidrBlocks: [],
    });
  });
});

describe("environment", () => {
  test("x86: v3 names, bind on the HTTP port, NAT 1:1 to the public address, VP8", () => {
    expect(nekoEnv(neko({ screen: "1280x720@30" }), rt())).toEqual({
      NEKO_SERVER_BIND: ":8080",
      NEKO_WEBRTC_EPR: "52000-52100",
      NEKO_WEBRTC_NAT1TO1: "100.64.0.20",
      NEKO_WEBRTC_ICELITE: "1",
      NEKO_DESKTOP_SCREEN: "1280x720@30",
      NEKO_CAPTURE_VIDEO_CODEC: "vp8",
      // neko's own VP8 pipeline, written out: the candidate check runs it (lib/pipelines.ts).
      NEKO_CAPTURE_VIDEO_PIPELINE: cpuPipeline("vp8"),
    });
  });

  test("behind the TLS front neko trusts the proxy's headers", () => {
    expect(nekoEnv(neko(), rt({ tls: true })).NEKO_SERVER_PROXY).toBe("true");
    expect(nekoEnv(neko(), rt()).NEKO_SERVER_PROXY).toBeUndefined();
  });

  test("GPU: NVIDIA env and the driver's library directories on the search path", () => {
    expect(nekoEnv(neko({}, true), rt({ gpu: true }))).toMatchObject({
      NVIDIA_VISIBLE_DEVICES: "all",
      NVIDIA_DRIVER_CAPABILITIES: "all",
      LD_LIBRARY_PATH: "/usr/lib64:/usr/lib/x86_64-linux-gnu",
      NEKO_CAPTURE_VIDEO_CODEC: "h264",
    });
  });

  test("secrets: passwords, the API token and both ICE server lists", () => {
    const ice = [{ urls: ["turn:100.64.0.20:3478?transport=udp"], username: "neko", credential: "c" }];
    expect(nekoSecretEnv({ userPassword: "u", adminPassword: "a", apiToken: "t", iceServers: ice })).toEqual({
      NEKO_MEMBER_MULTIUSER_USER_PASSWORD: "u",
      NEKO_MEMBER_MULTIUSER_ADMIN_PASSWORD: "a",
      NEKO_SESSION_API_TOKEN: "t",
      NEKO_WEBRTC_ICESERVERS_FRONTEND: JSON.stringify(ice),
      NEKO_WEBRTC_ICESERVERS_BACKEND: JSON.stringify(ice),
    });
  });

  test("drivers 590+ use nvautogpuh264enc; neither NVENC pipeline needs the CUDA toolkit", () => {
    expect(nvencPipeline("nvautogpuh264enc")).toContain("! video/x-raw,format=NV12 ! nvautogpuh264enc name=encoder ");
    expect(nvencPipeline("nvautogpuh264enc")).not.toContain("nvh264enc ");
    expect(nvencPipeline("nvh264enc")).toContain("! video/x-raw,format=NV12 ! nvh264enc name=encoder ");
    for (const e of ["nvh264enc", "nvautogpuh264enc"] as const) expect(nvencPipeline(e)).not.toMatch(/cudaupload|cudaconvert/);
  });

  test("GPU: no capture pipeline in neko's environment for H.264 (the rollout sets the NVENC one), a software one for VP8", () => {
    expect(nekoEnv(neko({}, true), rt({ gpu: true })).NEKO_CAPTURE_VIDEO_PIPELINE).toBeUndefined();
    expect(nekoEnv(neko({ videoCodec: "vp8" }, true), rt({ gpu: true })).NEKO_CAPTURE_VIDEO_PIPELINE).toBe(cpuPipeline("vp8"));
    expect(nekoEnv(neko({ videoCodec: "h264" }), rt()).NEKO_CAPTURE_VIDEO_PIPELINE).toBe(cpuPipeline("h264"));
  });

  test("mux mode sets UDPMUX/TCPMUX and no EPR", () => {
    const env = nekoEnv(neko({ webrtc: { mode: "mux", udpMux: 59000, tcpMux: 59001 } }), rt());
    expect(env).toMatchObject({ NEKO_WEBRTC_UDPMUX: "59000", NEKO_WEBRTC_TCPMUX: "59001" });
    expect(env.NEKO_WEBRTC_EPR).toBeUndefined();
  });

  test("ICE lite off is written as 0; extra env is passed through", () => {
    const env = nekoEnv(neko({ iceLite: false, env: { NEKO_DESKTOP_INPUT_ENABLED: "1" } }), rt());
    expect(env.NEKO_WEBRTC_ICELITE).toBe("0");
    expect(env.NEKO_DESKTOP_INPUT_ENABLED).toBe("1");
  });

  test.each([[false], [true]])("never a v2 name (gpu=%s)", (gpu) => {
    const names = Object.keys({
      ...nekoEnv(neko({}, gpu), rt({ gpu, tls: true })),
      ...nekoSecretEnv({ userPassword: "u", adminPassword: "a", apiToken: "t" }),
    });
    expect(names.filter((n) => V2_NAMES.test(n))).toEqual([]);
  });

  test("an env file cannot carry a line break", () => {
    expect(envFile({ A: "1", B: "x=y" })).toBe("A=1\nB=x=y\n");
    expect(() => envFile({ A: "1\nB=2" })).toThrow(/A holds a line break/);
  });
});

describe("rollout", () => {
  test("x86 with TLS: neko published on loopback, 2 GB shm, fixed hostname, profile and state dir", () => {
    const env = rolloutEnv(neko(), rt({ tls: true }), {
      bindAddress: "",
      profile: "/var/lib/neko-infra/profile",
      stackTag: "neko-infra/dev",
      stateDir: "/s",
    });
    expect(env).toEqual({
      NEKO_NAME: "neko",
      NEKO_PUBLISH: "127.0.0.1:8080:8080/tcp\n52000-52100:52000-52100/udp",
      NEKO_RUN_ARGS: "--shm-size=2g\n--hostname=neko\n--restart=no\n--label=neko-infra.stack=neko-infra/dev",
      NEKO_HTTP_PORT: "8080",
      NEKO_HEALTH_SECONDS: "150",
      NEKO_PROFILE: "/var/lib/neko-infra/profile",
      NEKO_PROFILE_DIR: "/home/neko/.config/chromium",
      NEKO_STATE_DIR: "/s",
      NEKO_SCREENSHOT: "/s/screenshot.jpg",
    });
  });

  test("a host without a state directory (this machine) keeps the screenshot in the operator's cache, per stack", () => {
    expect(rolloutEnv(neko(), rt(), { bindAddress: "127.0.0.1", stackTag: "neko-infra/dev" }).NEKO_SCREENSHOT).toBe(
      "~/.cache/neko-infra/screenshots/dev/last.jpg",
    );
  });

  test("GPU with H.264: all GPUs, the encoder chosen on the host, both pipelines at hand", () => {
    const env = rolloutEnv(neko({}, true), rt({ gpu: true }), { bindAddress: "", stackTag: "t" });
    expect(env.NEKO_RUN_ARGS.split("\n")).toContain("--gpus=all");
    expect(env.NEKO_NVENC).toBe("auto");
    expect(env.NEKO_PIPELINE_NVH264ENC).toBe(nvencPipeline("nvh264enc"));
    expect(env.NEKO_PIPELINE_NVAUTOGPUH264ENC).toBe(nvencPipeline("nvautogpuh264enc"));
  });

  test("GPU with VP8 chosen explicitly checks no encoder", () => {
    expect(rolloutEnv(neko({ videoCodec: "vp8" }, true), rt({ gpu: true }), { bindAddress: "", stackTag: "t" }).NEKO_NVENC).toBeUndefined();
  });

  test("persistProfile: false mounts no profile", () => {
    const env = rolloutEnv(neko({ persistProfile: false }), rt(), { bindAddress: "", profile: "p", stackTag: "t" });
    expect(env.NEKO_PROFILE).toBeUndefined();
  });

  test("neko is never started twice: --restart=no on every host, no other restart policy", () => {
    for (const gpu of [false, true]) {
      const args = rolloutEnv(neko({}, gpu), rt({ gpu }), { bindAddress: "", stackTag: "t" }).NEKO_RUN_ARGS.split("\n");
      expect(args.filter((a) => a.startsWith("--restart"))).toEqual(["--restart=no"]);
    }
  });

  test("neko-restore.sh (a local host runs it by hand, on a Mac too): no bash 4 construct, no unguarded GNU-only tool", () => {
    const text = fs.readFileSync(path.join(__dirname, "../../scripts/neko-restore.sh"), "utf8");
    expect(portabilityFindings(text)).toEqual([]);
  });
});

describe("what destroy runs on an ssh or local host (removeCommand), run by a real sh", () => {
  const roots: string[] = [];
  afterAll(() => roots.forEach((r) => fs.rmSync(r, { recursive: true, force: true })));
  /** A machine in a directory: a state directory, a user's home, a docker that records its calls. */
  function machine(hostStateWritable: boolean) {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), "neko-remove-"));
    roots.push(root);
    const host = path.join(root, "var-lib-neko-infra-host");
    if (hostStateWritable) fs.mkdirSync(path.join(host, "neko-specs"), { recursive: true });
    const xdg = path.join(root, "state");
    fs.mkdirSync(path.join(xdg, "neko-infra", "neko-specs"), { recursive: true });
    const home = path.join(root, "home");
    for (const stack of ["dev", "prod"]) fs.mkdirSync(path.join(home, ".cache/neko-infra/screenshots", stack), { recursive: true });
    fs.mkdirSync(path.join(root, "bin"));
    fs.writeFileSync(path.join(root, "bin", "docker"), `#!/bin/sh\necho "docker $*" >>"${root}/calls"\n`, { mode: 0o755 });
    const cmd = removeCommand("dev").replace(HOST_STATE_DIR, host);
    const run = (env: Record<string, string> = {}) =>
      execFileSync("/bin/sh", ["-c", cmd], { env: { PATH: `${root}/bin:/usr/bin:/bin`, HOME: home, XDG_STATE_HOME: xdg, ...env } });
    return { root, host, xdg, home, run };
  }

  test("the specs go from the host's state directory where the rollout could write it; another stack's screenshots stay", () => {
    const m = machine(true);
    m.run();
    expect(fs.readFileSync(path.join(m.root, "calls"), "utf8")).toBe("docker rm -f neko neko-candidate neko-previous\n");
    expect(fs.existsSync(path.join(m.host, "neko-specs"))).toBe(false);
    expect(fs.existsSync(path.join(m.xdg, "neko-infra", "neko-specs"))).toBe(true); // not where this rollout wrote
    expect(fs.readdirSync(path.join(m.home, ".cache/neko-infra/screenshots"))).toEqual(["prod"]);
  });

  test("without it, from the user's state directory; with NEKO_STATE_DIR, from there", () => {
    const m = machine(false);
    m.run();
    expect(fs.existsSync(path.join(m.xdg, "neko-infra", "neko-specs"))).toBe(false);
    const given = path.join(m.root, "given");
    fs.mkdirSync(path.join(given, "neko-specs"), { recursive: true });
    m.run({ NEKO_STATE_DIR: given });
    expect(fs.existsSync(path.join(given, "neko-specs"))).toBe(false);
  });

  test("a stack name is all it takes, and only a plain one", () => {
    expect(() => removeCommand("dev; rm -rf /")).toThrow(/not a stack name/);
  });
});
