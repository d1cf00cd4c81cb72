import { containerSpec, dockerRunArgs, healthBudgetSeconds, nekoEnv, nekoPorts, nvencPipeline, publishedPorts } from "../../lib/neko";
import { nekoIngress, sshIngress } from "../../lib/network";
import { NekoSettings, parseSettings } from "../../lib/settings";

function neko(overrides: Record<string, unknown> = {}, gpu = false): NekoSettings {
  return parseSettings({
    config: {
      "neko-infra:image": JSON.stringify({ flake: "github:o/r" }),
      "neko-infra:builder": JSON.stringify({ kind: "local" }),
      "neko-infra:host": JSON.stringify({
        kind: "ssh",
        gpu,
        host: "h",
        privateKey: "-----BEGIN OPENSSH PRIVATE KEY-----\nx",
        hostKey: "ssh-ed25519 AAAA",
      }),
      "neko-infra:neko": JSON.stringify(overrides),
    },
    secretKeys: ["neko-infra:host"],
    projectDir: "/p",
    fileExists: () => false,
  }).neko;
}

const V2_NAMES = /^NEKO_(EPR|NAT1TO1|PASSWORD|PASSWORD_ADMIN|SCREEN|ICELITE|UDPMUX|TCPMUX|BIND|VIDEO_CODEC)$/;

describe("ports", () => {
  test("EPR mode: HTTP over TCP and the whole UDP range", () => {
    expect(nekoPorts(neko())).toEqual([
      { from: 8080, to: 8080, protocol: "tcp", purpose: "neko HTTP and WebSocket" },
      { from: 52000, to: 52100, protocol: "udp", purpose: "WebRTC media (EPR)" },
    ]);
  });

  test("mux mode: one UDP port, plus a TCP port when configured", () => {
    const ports = nekoPorts(neko({ webrtc: { mode: "mux", udpMux: 59000, tcpMux: 59001 } }));
    expect(ports.map((p) => [p.from, p.to, p.protocol])).toEqual([
      [8080, 8080, "tcp"],
      [59000, 59000, "udp"],
      [59001, 59001, "tcp"],
    ]);
  });

  test("published ports are 1:1 and one per port of each range", () => {
    const published = publishedPorts(nekoPorts(neko({ webrtc: { epr: "52000-52002" } })));
    expect(published).toEqual([
      { internal: 8080, external: 8080, protocol: "tcp" },
      { internal: 52000, external: 52000, protocol: "udp" },
      { internal: 52001, external: 52001, protocol: "udp" },
      { internal: 52002, external: 52002, protocol: "udp" },
    ]);
  });

  test("security group rules cover exactly the published ports, split by address family", () => {
    const n = neko({ httpPort: 9000, webrtc: { epr: "53000-53010" } });
    const rules = nekoIngress(nekoPorts(n), ["198.51.100.0/24", "2001:db8::/32"]);
    const covered = rules.flatMap((r) => Array.from({ length: r.toPort - r.fromPort + 1 }, (_, i) => `${r.fromPort + i}/${r.protocol}`));
    const published = containerSpec(n, { publicAddress: "203.0.113.5", gpu: false }, "r@sha256:x").ports.map(
      (p) => `${p.external}/${p.protocol}`,
    );
    expect(covered.sort()).toEqual(published.sort());
    expect(rules.every((r) => r.cidrBlocks.join() === "198.51.100.0/24" && r.ipv6CidrBlocks.join() === "2001:db8::/32")).toBe(true);
  });

  test("SSH rule is port 22 from the given networks only", () => {
    expect(sshIngress(["198.51.100.24/32"])).toMatchObject({
      protocol: "tcp",
      fromPort: 22,
      toPort: 22,
      cidrBlocks: ["198.51.100.24/32"],
      ipv6CidrBlocks: [],
    });
  });
});

describe("environment", () => {
  test("x86: v3 names, bind on the HTTP port, NAT 1:1 to the public address, VP8", () => {
    const env = nekoEnv(neko({ screen: "1280x720@30" }), { publicAddress: "203.0.113.20", gpu: false });
    expect(env).toEqual({
      NEKO_SERVER_BIND: ":8080",
      NEKO_WEBRTC_EPR: "52000-52100",
      NEKO_WEBRTC_NAT1TO1: "203.0.113.20",
      NEKO_WEBRTC_ICELITE: "1",
      NEKO_DESKTOP_SCREEN: "1280x720@30",
      NEKO_CAPTURE_VIDEO_CODEC: "vp8",
    });
  });

  test("GPU: NVIDIA env and an NVENC H.264 pipeline", () => {
    const env = nekoEnv(neko({}, true), { publicAddress: "203.0.113.20", gpu: true });
    expect(env).toMatchObject({ NVIDIA_VISIBLE_DEVICES: "all", NVIDIA_DRIVER_CAPABILITIES: "all", NEKO_CAPTURE_VIDEO_CODEC: "h264" });
    expect(env.NEKO_CAPTURE_VIDEO_PIPELINE).toContain("cudaupload ! cudaconvert");
    expect(env.NEKO_CAPTURE_VIDEO_PIPELINE).toContain("nvh264enc");
  });

  test("drivers 590+ use nvautogpuh264enc", () => {
    expect(nvencPipeline("nvautogpuh264enc")).toContain("nvautogpuh264enc");
    expect(nvencPipeline("nvautogpuh264enc")).not.toContain("nvh264enc ");
  });

  test("GPU with VP8 chosen explicitly sets no H.264 pipeline", () => {
    const env = nekoEnv(neko({ videoCodec: "vp8" }, true), { publicAddress: "a", gpu: true });
    expect(env.NEKO_CAPTURE_VIDEO_PIPELINE).toBeUndefined();
  });

  test("mux mode sets UDPMUX/TCPMUX and no EPR", () => {
    const env = nekoEnv(neko({ webrtc: { mode: "mux", udpMux: 59000, tcpMux: 59001 } }), { publicAddress: "a", gpu: false });
    expect(env).toMatchObject({ NEKO_WEBRTC_UDPMUX: "59000", NEKO_WEBRTC_TCPMUX: "59001" });
    expect(env.NEKO_WEBRTC_EPR).toBeUndefined();
  });

  test("ICE lite off is written as 0; extra env is passed through", () => {
    const env = nekoEnv(neko({ iceLite: false, env: { NEKO_DESKTOP_INPUT_ENABLED: "1" } }), { publicAddress: "a", gpu: false });
    expect(env.NEKO_WEBRTC_ICELITE).toBe("0");
    expect(env.NEKO_DESKTOP_INPUT_ENABLED).toBe("1");
  });

  test.each([[false], [true]])("never a v2 name (gpu=%s)", (gpu) => {
    const names = Object.keys(nekoEnv(neko({}, gpu), { publicAddress: "a", gpu }));
    expect(names.filter((n) => V2_NAMES.test(n))).toEqual([]);
  });
});

describe("container", () => {
  const ref = "123456789012.dkr.ecr.eu-central-1.amazonaws.com/neko@sha256:" + "a".repeat(64);

  test("x86: amd64, 2 GB shm, no GPU, restart unless-stopped, healthcheck on /health", () => {
    const spec = containerSpec(neko(), { publicAddress: "203.0.113.20", gpu: false }, ref);
    expect(spec).toMatchObject({
      name: "neko",
      image: ref,
      platform: "linux/amd64",
      shmSizeMb: 2048,
      restart: "unless-stopped",
      gpus: undefined,
    });
    expect(spec.healthcheck).toEqual(["CMD-SHELL", "wget -q -O - http://127.0.0.1:8080/health || exit 1"]);
  });

  test("GPU: gpus all", () => {
    expect(containerSpec(neko({}, true), { publicAddress: "a", gpu: true }, ref).gpus).toBe("all");
  });

  test("the health budget is neko's own: start period plus retries of interval and timeout", () => {
    expect(healthBudgetSeconds()).toBe(30 + 8 * (10 + 5));
  });

  test("docker run arguments carry the same ports, env, platform and healthcheck", () => {
    const spec = containerSpec(neko({ webrtc: { epr: "52000-52001" } }), { publicAddress: "203.0.113.20", gpu: true }, ref);
    const args = dockerRunArgs(spec, { bindAddress: "127.0.0.1", extraEnv: { NEKO_MEMBER_MULTIUSER_USER_PASSWORD: "u" } });
    expect(args.slice(0, 8)).toEqual(["run", "--detach", "--name", "neko", "--platform", "linux/amd64", "--restart", "unless-stopped"]);
    const values = (flag: string) => args.flatMap((a, i) => (args[i - 1] === flag ? [a] : []));
    expect(values("--publish")).toEqual(["127.0.0.1:8080:8080/tcp", "127.0.0.1:52000:52000/udp", "127.0.0.1:52001:52001/udp"]);
    expect(values("--gpus")).toEqual(["all"]);
    expect(values("--shm-size")).toEqual(["2048m"]);
    expect(values("--env")).toContain("NEKO_WEBRTC_NAT1TO1=203.0.113.20");
    expect(values("--env")).toContain("NEKO_MEMBER_MULTIUSER_USER_PASSWORD=u");
    expect(values("--health-cmd")).toEqual([spec.healthcheck[1]]);
    expect(args[args.length - 1]).toBe(ref);
  });
});
