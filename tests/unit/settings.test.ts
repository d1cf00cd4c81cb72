import { parseSettings, SettingsError, SettingsInput, isCidr, localFlakePath } from "../../lib/settings";
import { stackConfig } from "../support/stack";
import { configOf } from "../support/settings";

const P = "neko-infra";
const KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----";
const HOSTKEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB9nDl2ZH6Tz5R5bLPMbUE6EaF7HFGWU2mmKDzHgDm4G";

/** A valid minimal config; each bad case below changes one thing. */
function base(): Record<string, Record<string, unknown>> {
  return {
    builder: { kind: "ec2", sshCidrs: ["100.64.7.9/32"] },
    image: { flake: "github:G-structure/neko/8bd6b3bd1674044d0cba441214e04118268bc1cc" },
    registry: { kind: "ecr" },
    host: { kind: "ec2", sshCidrs: ["100.64.7.9/32"], clientCidrs: ["0.0.0.0/0"] },
    neko: {},
  };
}

function input(cfg: Record<string, unknown>, secretKeys: string[] = [], files: string[] = []): SettingsInput {
  return {
    config: configOf(cfg),
    secretKeys: secretKeys.map((k) => `${P}:${k}`),
    projectDir: "/work/project",
    fileExists: (p) => files.includes(p),
  };
}

function problems(cfg: Record<string, unknown>, secretKeys: string[] = []): string[] {
  try {
    parseSettings(input(cfg, secretKeys));
  } catch (e) {
    if (e instanceof SettingsError) return e.problems;
    throw e;
  }
  return [];
}

function edit(f: (c: Record<string, Record<string, any>>) => void): Record<string, unknown> {
  const c = base();
  f(c);
  return c;
}

describe("valid settings", () => {
  test("the minimal config gets the documented defaults", () => {
    const s = parseSettings(input(base()));
    expect(s.builder).toEqual({
      kind: "ec2",
      enabled: true,
      instanceType: "c6i.2xlarge",
      volumeSize: 100,
      sshCidrs: ["100.64.7.9/32"],
      allowSshFromAnywhere: false,
      allowDocumentationRanges: false,
      maxJobs: "auto",
      idleMinutes: 30,
      cache: true,
      readyTimeout: 1200,
    });
    // G-structure/neko's image-x86_64 has no browser; chromium-x86_64 has one.
    expect(s.image).toEqual({ flake: base().image.flake, attr: "chromium-x86_64", allowUnpinned: false });
    expect(s.registry).toEqual({ kind: "ecr", repository: "neko", keepImages: 10, scanOnPush: true, forceDelete: false });
    expect(s.host).toMatchObject({
      kind: "ec2",
      gpu: false,
      instanceType: "t3.xlarge",
      volumeSize: 30,
      idleMinutes: 30,
      wakeOnVisit: true,
      profileSize: 10,
      tlsFront: { enabled: true, acmeServer: "https://acme-v02.api.letsencrypt.org/directory" },
    });
    expect(s.neko).toMatchObject({
      httpPort: 8080,
      screen: "1920x1080@30",
      iceLite: true,
      videoCodec: "vp8",
      nvencElement: "auto",
      persistProfile: true,
      profileDir: "/home/neko/.config/chromium",
      webrtc: { mode: "epr", epr: "52000-52100" },
      portRange: { low: 52000, high: 52100 },
      turn: { enabled: false },
    });
  });

  test("kind may be left out: ec2 builder, ecr registry, ec2 host", () => {
    const c = base();
    delete c.builder.kind;
    delete c.registry.kind;
    delete c.host.kind;
    const s = parseSettings(input(c));
    expect([s.builder.kind, s.registry.kind, s.host.kind]).toEqual(["ec2", "ecr", "ec2"]);
  });

  test("a GPU host defaults to g4dn.xlarge, 100 GB and H.264", () => {
    const s = parseSettings(input(edit((c) => (c.host.gpu = true))));
    expect(s.host).toMatchObject({ instanceType: "g4dn.xlarge", volumeSize: 100 });
    expect(s.neko.videoCodec).toBe("h264");
  });

  test.each(["dev", "prod"])("Pulumi.%s.yaml parses once its example addresses are replaced", (stack) => {
    const cfg = stackConfig(stack, { realAddresses: true });
    const s = parseSettings({ config: cfg, secretKeys: [], projectDir: "/p", fileExists: () => false });
    expect(s.host.kind).toBe("ec2");
    expect(s.host.kind === "ec2" && s.host.gpu).toBe(stack === "prod");
    expect(s.builder.kind === "ec2" && s.builder.spot).toBeFalsy();
  });

  test.each(["dev", "prod"])("Pulumi.%s.yaml as shipped fails on its example addresses, naming each", (stack) => {
    const e = (() => {
      try {
        parseSettings({ config: stackConfig(stack), secretKeys: [], projectDir: "/p", fileExists: () => false });
      } catch (err) {
        return err as SettingsError;
      }
      throw new Error("the unedited stack file parsed");
    })();
    expect(e.problems.length).toBeGreaterThan(0);
    for (const p of e.problems)
      expect(p).toMatch(/^neko-infra:(builder|host)\.(sshCidrs|clientCidrs)\[\d+\]: \S+ lies in .*documentation range/);
  });

  test("Pulumi.local.yaml parses: local builder, docker registry, local host on loopback", () => {
    const s = parseSettings({ config: stackConfig("local"), secretKeys: [], projectDir: "/p", fileExists: () => true });
    expect([s.builder.kind, s.registry.kind, s.host.kind]).toEqual(["local", "docker", "local"]);
    expect(s.host).toMatchObject({ bindAddress: "127.0.0.1", tlsFront: { enabled: false } });
  });

  test("documentation ranges pass when allowed explicitly", () => {
    const c = edit((c) => Object.assign(c.host, { clientCidrs: ["203.0.113.0/24"], allowDocumentationRanges: true }));
    expect(problems(c)).toEqual([]);
  });

  test("TURN turns ICE lite off, and takes `true` as shorthand", () => {
    const s = parseSettings(input(edit((c) => (c.neko.turn = true))));
    expect(s.neko.iceLite).toBe(false);
    expect(s.neko.turn).toEqual({ enabled: true, port: 3478, tlsPort: 5349, relayPorts: { low: 49160, high: 49200 } });
  });

  test("an ssh host on a private address has no TLS by default; a domain or a public address turns it on", () => {
    const ssh = (extra: object) =>
      parseSettings(
        input(
          edit((c) => (c.host = { kind: "ssh", host: "10.0.0.5", privateKey: KEY, hostKey: HOSTKEY, ...extra })),
          ["host"],
        ),
      ).host;
    expect(ssh({})).toMatchObject({ tlsFront: { enabled: false } });
    expect(ssh({ domain: "neko.example.com" })).toMatchObject({ tlsFront: { enabled: true, subject: "neko.example.com" } });
    expect(ssh({ publicAddress: "100.100.100.100" })).toMatchObject({ tlsFront: { enabled: false } }); // CGNAT: private
    expect(ssh({ publicAddress: "8.8.4.4" })).toMatchObject({ tlsFront: { enabled: true, subject: "8.8.4.4" } });
  });

  test("a github: flake pinned by commit or ?rev= is accepted; allowUnpinned accepts a branch", () => {
    const rev = "8bd6b3bd1674044d0cba441214e04118268bc1cc";
    for (const flake of [`github:o/neko/${rev}`, `github:o/neko?rev=${rev}`, `git+https://example.com/neko.git?rev=${rev}`]) {
      expect(problems(edit((c) => (c.image.flake = flake)))).toEqual([]);
    }
    expect(problems(edit((c) => Object.assign(c.image, { flake: "github:o/neko/main", allowUnpinned: true })))).toEqual([]);
  });

  test("secrets given as secrets are accepted", () => {
    const c = edit((c) => {
      c.registry = { kind: "oci", url: "127.0.0.1:5000/neko", username: "u", password: "p4ssw0rd!" };
      c.builder = { kind: "ssh", host: "10.0.0.2", privateKey: KEY, hostKey: HOSTKEY };
    });
    const s = parseSettings(input(c, ["registry", "builder"]));
    expect(s.registry).toMatchObject({ kind: "oci", username: "u", password: "p4ssw0rd!", insecure: false });
    expect(s.builder).toMatchObject({ kind: "ssh", port: 22, user: "root" });
  });

  test("a local flake resolves against the project directory and must hold flake.nix", () => {
    const c = edit((c) => (c.image.flake = "./neko"));
    const s = parseSettings(input(c, [], ["/work/project/neko/flake.nix"]));
    expect(s.image.localPath).toBe("/work/project/neko");
    expect(problems(c)).toEqual([`${P}:image.flake: no flake.nix in /work/project/neko (a local flake is a directory holding flake.nix)`]);
  });

  test("aws: keys belong to the provider and are ignored", () => {
    const i = input(base());
    i.config["aws:region"] = "eu-central-1";
    expect(() => parseSettings(i)).not.toThrow();
  });
});

// One config key wrong at a time; each must be reported with its key and what is accepted.
const BAD: [string, Record<string, unknown>, string][] = [
  ["unknown top-level key", { ...base(), weather: {} }, `${P}:weather: unknown key; neko-infra reads`],
  [
    "unknown field",
    edit((c) => (c.builder.instanceTyp = "c6i.large")),
    `${P}:builder.instanceTyp: unknown key; did you mean 'instanceType'?`,
  ],
  ["section not an object", { ...base(), neko: "big" }, `${P}:neko: must be an object`],
  ["wrong builder kind", edit((c) => (c.builder.kind = "docker")), `${P}:builder.kind: must be one of ec2, ssh, local`],
  ["wrong host kind", edit((c) => (c.host.kind = "k8s")), `${P}:host.kind: must be one of ec2, ssh, local, none`],
  ["wrong registry kind", edit((c) => (c.registry.kind = "gcr")), `${P}:registry.kind: must be one of ecr, oci, docker`],
  ["missing flake ref", edit((c) => delete c.image.flake), `${P}:image.flake: required: a flake reference`],
  ["empty image section", { ...base(), image: undefined }, `${P}:image.flake: required`],
  ["CIDR that does not parse", edit((c) => (c.builder.sshCidrs = ["198.51.100.300/32"])), `${P}:builder.sshCidrs[0]: not a CIDR`],
  ["CIDR without prefix", edit((c) => (c.host.clientCidrs = ["198.51.100.7"])), `${P}:host.clientCidrs[0]: not a CIDR`],
  [
    "SSH open to the world",
    edit((c) => (c.builder.sshCidrs = ["0.0.0.0/0"])),
    `${P}:builder.sshCidrs[0]: 0.0.0.0/0 opens SSH to the whole internet`,
  ],
  [
    "host SSH open to the world (IPv6)",
    edit((c) => (c.host.sshCidrs = ["::/0"])),
    `${P}:host.sshCidrs[0]: ::/0 opens SSH to the whole internet`,
  ],
  ["no SSH networks for an ec2 builder", edit((c) => (c.builder.sshCidrs = [])), `${P}:builder.sshCidrs: required for kind ec2`],
  ["no client networks for an ec2 host", edit((c) => delete c.host.clientCidrs), `${P}:host.clientCidrs: required`],
  [
    "arm64 builder",
    edit((c) => (c.builder.instanceType = "c7g.2xlarge")),
    `${P}:builder.instanceType: c7g.2xlarge is an arm64 (Graviton) type`,
  ],
  ["arm64 x86 host", edit((c) => (c.host.instanceType = "t4g.large")), `${P}:host.instanceType: t4g.large is an arm64 (Graviton) type`],
  [
    "AMD GPU host",
    edit((c) => Object.assign(c.host, { gpu: true, instanceType: "g4ad.xlarge" })),
    `${P}:host.instanceType: g4ad.xlarge has an AMD GPU`,
  ],
  [
    "GPU host without a GPU",
    edit((c) => Object.assign(c.host, { gpu: true, instanceType: "c6i.xlarge" })),
    `${P}:host.instanceType: c6i.xlarge has no NVIDIA GPU`,
  ],
  [
    "GPU type without gpu: true",
    edit((c) => (c.host.instanceType = "g5.xlarge")),
    `${P}:host.instanceType: g5.xlarge is a GPU type but host.gpu is false`,
  ],
  [
    "GPU volume too small",
    edit((c) => Object.assign(c.host, { gpu: true, volumeSize: 50 })),
    `${P}:host.volumeSize: 50 GB is below the 75 GB`,
  ],
  ["not an instance type", edit((c) => (c.builder.instanceType = "large")), `${P}:builder.instanceType: not an EC2 instance type`],
  [
    "UDP range low > high",
    edit((c) => (c.neko.webrtc = { epr: "52100-52000" })),
    `${P}:neko.webrtc.epr: 52100-52000 has its low port above its high port`,
  ],
  [
    "neko's HTTP port on the HTTPS port of the TLS front",
    edit((c) => Object.assign(c.neko, { httpPort: 443 })),
    `${P}:host.tls: 443/tcp (HTTPS) clashes with neko's HTTP port (neko-infra:neko.httpPort)`,
  ],
  [
    "TURN port inside the WebRTC range",
    edit((c) => (c.neko.turn = { port: 52010 })),
    `${P}:neko.turn.port: 52010/udp (TURN) clashes with the WebRTC range (neko-infra:neko.webrtc.epr)`,
  ],
  [
    "TURN relay range overlapping the WebRTC range",
    edit((c) => (c.neko.turn = { relayPorts: "52050-52150" })),
    `${P}:neko.turn.relayPorts: 52050-52150/udp (the TURN relay range) clashes with the WebRTC range`,
  ],
  [
    "TURN with ICE lite given explicitly",
    edit((c) => Object.assign(c.neko, { turn: true, iceLite: true })),
    `${P}:neko.iceLite: ICE lite must be off with a TURN relay`,
  ],
  [
    "TURN without a host",
    edit((c) => Object.assign(c, { host: { kind: "none" }, neko: { turn: true } })),
    `${P}:neko.turn: a TURN relay needs a host`,
  ],
  ["UDP range not a range", edit((c) => (c.neko.webrtc = { epr: "52000:52100" })), `${P}:neko.webrtc.epr: not a port range`],
  ["UDP range too wide", edit((c) => (c.neko.webrtc = { epr: "20000-40000" })), `${P}:neko.webrtc.epr: 20000-40000 spans 20001 ports`],
  [
    "TCP mux port on the HTTP port",
    edit((c) => (c.neko.webrtc = { mode: "mux", tcpMux: 8080 })),
    `${P}:neko.webrtc.tcpMux: 8080/tcp (the WebRTC TCP mux port) clashes with neko's HTTP port`,
  ],
  ["port out of range", edit((c) => (c.neko.httpPort = 70000)), `${P}:neko.httpPort: Too big`],
  ["bad screen", edit((c) => (c.neko.screen = "1080p")), `${P}:neko.screen: not a screen mode`],
  ["v2 env name", edit((c) => (c.neko.env = { NEKO_SCREEN: "1280x720@30" })), `${P}:neko.env.NEKO_SCREEN: a neko v2 name`],
  ["managed env name", edit((c) => (c.neko.env = { NEKO_WEBRTC_EPR: "1-2" })), `${P}:neko.env.NEKO_WEBRTC_EPR: set by neko-infra`],
  ["credential in env", edit((c) => (c.neko.env = { TURN_PASSWORD: "x" })), `${P}:neko.env.TURN_PASSWORD: looks like a credential`],
  [
    "registry password in plain text",
    edit((c) => (c.registry = { kind: "oci", url: "r.example.com/neko", username: "u", password: "p4ssw0rd!" })),
    `${P}:registry.password: given in plain text; store it as a secret: pulumi config set --secret --path 'registry.password'`,
  ],
  ["neko password in plain text", edit((c) => (c.neko.adminPassword = "correct horse")), `${P}:neko.adminPassword: given in plain text`],
  [
    "ssh builder key in plain text",
    edit((c) => (c.builder = { kind: "ssh", host: "h", privateKey: KEY, hostKey: HOSTKEY })),
    `${P}:builder.privateKey: given in plain text`,
  ],
  ["ssh builder without host key", edit((c) => (c.builder = { kind: "ssh", host: "h" })), `${P}:builder.hostKey: required`],
  [
    "registry URL with scheme",
    edit((c) => (c.registry = { kind: "oci", url: "https://r.example.com/neko" })),
    `${P}:registry.url: not a repository URL`,
  ],
  [
    "username without password",
    edit((c) => (c.registry = { kind: "oci", url: "r.example.com/neko", username: "u" })),
    `${P}:registry.username: username and password go together`,
  ],
  ["bad ECR name", edit((c) => (c.registry.repository = "Neko")), `${P}:registry.repository: not an ECR repository name`],
  ["half a user key pair", edit((c) => (c.builder.publicKey = HOSTKEY)), `${P}:builder.publicKey: publicKey and privateKey go together`],
  [
    "bad builders line",
    edit((c) => (c.builder = { kind: "local", remoteBuilders: "builder.example.com x86_64-linux" })),
    `${P}:builder.remoteBuilders: not a Nix builders line`,
  ],
  [
    "field of another kind",
    edit((c) => (c.builder = { kind: "local", instanceType: "c6i.large" })),
    `${P}:builder.instanceType: applies to kind ec2, but builder.kind is local`,
  ],
  [
    "text for a boolean",
    edit((c) => (c.builder.cache = "yes")),
    `${P}:builder.cache: "yes" is text; use true or false: pulumi config set --path 'builder.cache' true`,
  ],
  [
    "a spot builder (no longer supported: it strands)",
    edit((c) => (c.builder.spot = true)),
    `${P}:builder.spot: spot builders are not supported any more (a persistent spot request expires after 7 days and terminates its stopped builder; an interrupted one cannot be started again); the builder runs on demand and stops itself when idle: pulumi config rm --path builder.spot`,
  ],
  [
    "documentation range in sshCidrs",
    edit((c) => (c.builder.sshCidrs = ["198.51.100.24/32"])),
    `${P}:builder.sshCidrs[0]: 198.51.100.24/32 lies in 198.51.100.0/24, a documentation range`,
  ],
  [
    "documentation range in clientCidrs (IPv6)",
    edit((c) => (c.host.clientCidrs = ["0.0.0.0/0", "2001:db8:10::/48"])),
    `${P}:host.clientCidrs[1]: 2001:db8:10::/48 lies in 2001:db8::/32, a documentation range`,
  ],
  [
    "unpinned github flake",
    edit((c) => (c.image.flake = "github:G-structure/neko")),
    `${P}:image.flake: github:G-structure/neko is not pinned to a commit`,
  ],
  [
    "branch instead of a commit",
    edit((c) => (c.image.flake = "github:G-structure/neko/main")),
    `${P}:image.flake: github:G-structure/neko/main is not pinned`,
  ],
  [
    "RSA host key",
    edit((c) => (c.builder = { kind: "ssh", host: "h", hostKey: "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC" })),
    `${P}:builder.hostKey: an RSA host key cannot be used`,
  ],
  [
    "dotted key set without --path",
    { ...base(), "host.gpu": "true" },
    `${P}:host.gpu: set without --path, so it is a key of its own named 'host.gpu'; move it: pulumi config rm 'host.gpu' && pulumi config set --path 'host.gpu' <value>`,
  ],
  ["misspelled top-level key", { ...base(), hots: {} }, `${P}:hots: unknown key; did you mean 'host'?`],
  ["misspelled nested field", edit((c) => (c.neko.webrtc = { mdoe: "mux" })), `${P}:neko.webrtc.mdoe: unknown key; did you mean 'mode'?`],
  [
    "field of another host kind",
    edit((c) => Object.assign(c.host, { bindAddress: "0.0.0.0" })),
    `${P}:host.bindAddress: applies to kind local, but host.kind is ec2`,
  ],
  [
    "number given as text",
    edit((c) => (c.builder.volumeSize = "200")),
    `${P}:builder.volumeSize: "200" is text; give the number itself: pulumi config set --path 'builder.volumeSize' 200`,
  ],
  [
    "docker registry with a remote builder",
    edit((c) => (c.registry = { kind: "docker" })),
    `${P}:registry.kind: docker loads the image into this machine's Docker engine, so the image must be built here`,
  ],
  [
    "TLS on an ssh host with a private address and no private ACME server",
    edit((c) => (c.host = { kind: "ssh", host: "192.168.1.20", privateKey: KEY, hostKey: HOSTKEY, tls: true })),
    `${P}:host.tls: 192.168.1.20 is a private address, which Let's Encrypt cannot reach`,
  ],
  ["bad domain", edit((c) => (c.host.domain = "Neko.Example")), `${P}:host.domain: not a DNS name`],
  ["bad subnet", edit((c) => (c.host.subnetId = "subnet-xyz")), `${P}:host.subnetId: not a subnet ID`],
];

describe("bad settings", () => {
  test(`covers at least 20 cases (${BAD.length})`, () => expect(BAD.length).toBeGreaterThanOrEqual(20));

  test.each(BAD)("%s", (_what, cfg, expected) => {
    const found = problems(cfg, []);
    if (!found.some((p) => p.startsWith(expected)))
      throw new Error(`expected a problem starting\n  ${expected}\ngot\n  ${found.join("\n  ")}`);
  });

  test("every problem is reported at once, each on its own line naming its key", () => {
    const cfg = {
      ...base(),
      bogus: {},
      builder: { kind: "ec2", sshCidrs: ["0.0.0.0/0"], instanceType: "m7g.large" },
      host: { kind: "ec2", sshCidrs: ["10.0.0.0/8"], clientCidrs: ["nope"], gpu: true, instanceType: "t3.large" },
      neko: { webrtc: { epr: "9-1" }, env: { NEKO_PASSWORD: "x" } },
    };
    let err: SettingsError | undefined;
    try {
      parseSettings(input(cfg));
    } catch (e) {
      err = e as SettingsError;
    }
    expect(err).toBeInstanceOf(SettingsError);
    // host.instanceType (t3.large with gpu: true) is not among them: a section's cross-field
    // rules run once its fields parse, and host.clientCidrs does not.
    expect(err!.problems.map((p) => p.split(": ")[0]).sort()).toEqual(
      [
        `${P}:bogus`,
        `${P}:builder.instanceType`,
        `${P}:builder.sshCidrs[0]`,
        `${P}:host.clientCidrs[0]`,
        `${P}:neko.webrtc.epr`,
        `${P}:neko.env.NEKO_PASSWORD`,
      ].sort(),
    );
    expect(err!.message).toMatch(/^invalid stack configuration \(6 problems\):\n {2}- neko-infra:bogus/);
  });
});

describe("helpers", () => {
  test.each([
    ["10.0.0.0/8", true],
    ["203.0.113.7/32", true],
    ["0.0.0.0/0", true],
    ["2001:db8::/32", true],
    ["::/0", true],
    ["fe80::1:2:3:4:5:6/64", true],
    ["10.0.0.0", false],
    ["10.0.0.256/8", false],
    ["10.0.0.0/33", false],
    ["2001:db8::/129", false],
    ["1:2:3:4:5:6:7:8:9/64", false],
    ["a::b::c/64", false],
    ["example.com/24", false],
  ])("isCidr(%s) = %s", (value, ok) => expect(isCidr(value)).toBe(ok));

  test.each([
    ["./neko", "/p/neko"],
    ["../neko", "/neko"],
    ["/abs/neko", "/abs/neko"],
    ["path:./x", "/p/x"],
    [".", "/p"],
    ["github:G-structure/neko", undefined],
    ["git+https://example.com/neko.git", undefined],
  ])("localFlakePath(%s)", (flake, expected) => expect(localFlakePath(flake, "/p")).toBe(expected));
});
