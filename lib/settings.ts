/**
 * Stack settings: every `neko-infra:*` config key, parsed and validated once, up front.
 *
 * `parseSettings` is pure: it takes the raw config map (as Pulumi hands it to a program) and the
 * list of keys stored as secrets, and returns typed settings or throws a `SettingsError` listing
 * every problem at once, each naming its config key. Nothing here touches Pulumi resources, so
 * bad input never reaches a cloud API.
 */
import * as path from "path";
import { z } from "zod";
import { isArmInstanceType, gpuInstanceProblem } from "./instanceTypes";

export const PROJECT = "neko-infra";

/** The top-level config keys this program reads, each a structured object. */
export const CONFIG_KEYS = ["builder", "image", "registry", "host", "neko"] as const;
type ConfigKey = (typeof CONFIG_KEYS)[number];

/** Fields that carry credentials: they must be stored with `pulumi config set --secret`. */
const SECRET_FIELDS: Record<ConfigKey, string[]> = {
  builder: ["privateKey"],
  image: [],
  registry: ["password"],
  host: ["privateKey"],
  neko: ["userPassword", "adminPassword"],
};

// ---------------------------------------------------------------- field types

const cidr = z.string().refine(isCidr, {
  message: "not a CIDR: expected an IPv4 or IPv6 network such as 203.0.113.7/32 or 2001:db8::/64",
});

const port = z.number().int().min(1).max(65535);

/** OpenSSH public key line, as `ssh-keyscan` or `ssh-keygen -y` print it. */
const publicKeyLine = z.string().regex(/^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/]+={0,3}( .*)?$/, {
  message: "not an OpenSSH public key line: expected e.g. 'ssh-ed25519 AAAAC3Nza...'",
});

const privateKey = z.string().regex(/-----BEGIN [A-Z ]*PRIVATE KEY-----/, {
  message: "not a PEM/OpenSSH private key (no '-----BEGIN ... PRIVATE KEY-----' line)",
});

const hostName = z
  .string()
  .min(1)
  .regex(/^[A-Za-z0-9.:_-]+$/, { message: "not a host name or IP address" });

const instanceType = z.string().regex(/^[a-z][a-z0-9-]*\.[a-z0-9]+$/, {
  message: "not an EC2 instance type such as c6i.2xlarge",
});

const sshFields = {
  host: hostName,
  port: port.default(22),
  user: z
    .string()
    .regex(/^[a-z_][a-z0-9_-]*$/, { message: "not a user name" })
    .default("root"),
  privateKey,
  hostKey: publicKeyLine,
};

// ---------------------------------------------------------------- builder

const builderEc2 = z.strictObject({
  kind: z.literal("ec2"),
  enabled: z.boolean().default(true),
  instanceType: instanceType.default("c6i.2xlarge"),
  spot: z.boolean().default(false),
  volumeSize: z.number().int().min(30).max(16384).default(100),
  sshCidrs: z.array(cidr).min(1, {
    message: "required for kind ec2: the networks Pulumi connects from over SSH (e.g. your address as 203.0.113.7/32)",
  }),
  allowSshFromAnywhere: z.boolean().default(false),
  maxJobs: z.union([z.number().int().min(1), z.literal("auto")]).default("auto"),
  /** Minutes without a build or SSH session after which the builder stops itself; 0 never. */
  idleMinutes: z.number().int().min(0).max(1440).default(30),
  /** A signed S3 binary cache that outlives the builder, so a new builder starts warm. */
  cache: z.boolean().default(true),
  publicKey: publicKeyLine.optional(),
  privateKey: privateKey.optional(),
});

const builderSsh = z.strictObject({ kind: z.literal("ssh"), enabled: z.boolean().default(true), ...sshFields });
const builderLocal = z.strictObject({
  kind: z.literal("local"),
  enabled: z.boolean().default(true),
  /** Nix `builders` line(s) to send the build to (e.g. a Mac's x86_64 builder); unset: nix.conf decides. */
  remoteBuilders: z
    .string()
    .regex(/^(ssh|ssh-ng):\/\/\S+( \S+){0,7}(\s*;\s*(ssh|ssh-ng):\/\/\S+( \S+){0,7})*$/, {
      message: "not a Nix builders line: expected 'ssh-ng://user@host x86_64-linux /path/to/key maxJobs ...', several separated by ';'",
    })
    .optional(),
});

const builder = withDefaultKind("ec2", z.discriminatedUnion("kind", [builderEc2, builderSsh, builderLocal]));

// ---------------------------------------------------------------- image

const image = z.strictObject({
  flake: z.string({ error: "required: a flake reference such as github:owner/neko/<rev> or ./path/to/checkout" }).min(1),
  attr: z
    .string()
    .regex(/^[A-Za-z0-9_][A-Za-z0-9_.'-]*$/, { message: "not a flake output attribute name" })
    .default("image-x86_64"),
});

// ---------------------------------------------------------------- registry

const registryEcr = z.strictObject({
  kind: z.literal("ecr"),
  repository: z
    .string()
    .regex(/^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:\/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$/, {
      message: "not an ECR repository name (lower case letters, digits, . _ - and /)",
    })
    .max(256)
    .default("neko"),
  keepImages: z.number().int().min(1).max(1000).default(10),
  scanOnPush: z.boolean().default(true),
  forceDelete: z.boolean().default(false),
});

const registryOci = z.strictObject({
  kind: z.literal("oci"),
  url: z.string().regex(/^[A-Za-z0-9.-]+(:\d+)?(\/[a-z0-9._-]+)+$/, {
    message: "not a repository URL: expected host[:port]/path, e.g. registry.example.com/team/neko (no scheme)",
  }),
  username: z.string().min(1).optional(),
  password: z.string().min(1).optional(),
  insecure: z.boolean().default(false),
});

const registry = withDefaultKind("ecr", z.discriminatedUnion("kind", [registryEcr, registryOci]));

// ---------------------------------------------------------------- host

const hostEc2 = z.strictObject({
  kind: z.literal("ec2"),
  gpu: z.boolean().default(false),
  instanceType: instanceType.optional(),
  volumeSize: z.number().int().min(8).max(16384).optional(),
  sshCidrs: z.array(cidr).min(1, {
    message: "required for kind ec2: the networks Pulumi connects from over SSH to run the container",
  }),
  allowSshFromAnywhere: z.boolean().default(false),
  clientCidrs: z.array(cidr).min(1, {
    message: "required for kind ec2: the networks allowed to open neko (0.0.0.0/0 for everyone, stated explicitly)",
  }),
});

const hostSsh = z.strictObject({
  kind: z.literal("ssh"),
  gpu: z.boolean().default(false),
  publicAddress: hostName.optional(),
  ...sshFields,
});

const hostNone = z.strictObject({ kind: z.literal("none") });

const host = withDefaultKind("ec2", z.discriminatedUnion("kind", [hostEc2, hostSsh, hostNone]));

// ---------------------------------------------------------------- neko

/** Environment names that neko-infra sets itself, or that switch neko v3 into legacy (v2) mode. */
const MANAGED_ENV =
  /^(NEKO_SERVER_BIND|NEKO_WEBRTC_(EPR|UDPMUX|TCPMUX|NAT1TO1|ICELITE)|NEKO_DESKTOP_SCREEN|NEKO_MEMBER_MULTIUSER_(USER|ADMIN)_PASSWORD|NEKO_CAPTURE_VIDEO_(CODEC|PIPELINE))$/;
const LEGACY_ENV = /^NEKO_(EPR|NAT1TO1|PASSWORD|PASSWORD_ADMIN|SCREEN|UDPMUX|TCPMUX|ICELITE|BIND|VIDEO_CODEC|VIDEO|ICESERVERS|ICESERVER)$/;

const neko = z.strictObject({
  httpPort: port.default(8080),
  webrtc: z
    .strictObject({
      mode: z.enum(["epr", "mux"]).default("epr"),
      epr: z
        .string()
        .regex(/^\d+-\d+$/, { message: "not a port range: expected LOW-HIGH such as 52000-52100" })
        .check((ctx) => {
          const problem = /^\d+-\d+$/.test(ctx.value) ? rangeProblem(ctx.value) : undefined;
          if (problem) ctx.issues.push({ code: "custom", message: problem, input: ctx.value });
        })
        .default("52000-52100"),
      udpMux: port.default(52000),
      tcpMux: port.optional(),
    })
    .prefault({}),
  screen: z
    .string()
    .regex(/^\d{3,5}x\d{3,5}@\d{1,3}$/, { message: "not a screen mode: expected WIDTHxHEIGHT@RATE such as 1920x1080@30" })
    .default("1920x1080@30"),
  iceLite: z.boolean().default(true),
  videoCodec: z.enum(["vp8", "vp9", "h264"]).optional(),
  nvencElement: z.enum(["nvh264enc", "nvautogpuh264enc"]).default("nvh264enc"),
  userPassword: z.string().min(8).optional(),
  adminPassword: z.string().min(8).optional(),
  env: z
    .record(z.string().regex(/^[A-Z_][A-Z0-9_]*$/, { message: "not an environment variable name" }), z.string())
    .check((ctx) => {
      for (const name of Object.keys(ctx.value)) {
        const problem = envNameProblem(name);
        if (problem) ctx.issues.push({ code: "custom", message: problem, input: ctx.value, path: [name] });
      }
    })
    .default({}),
});

const SECTIONS = {
  builder: builder.prefault({}),
  image: image,
  registry: registry.prefault({}),
  host: host.prefault({}),
  neko: neko.prefault({}),
};

/** The accepted `kind` values per section, for the message when a kind is wrong. */
const KINDS: Partial<Record<ConfigKey, string[]>> = {
  builder: ["ec2", "ssh", "local"],
  registry: ["ecr", "oci"],
  host: ["ec2", "ssh", "none"],
};

// ---------------------------------------------------------------- types

type Raw = { [K in ConfigKey]: z.output<(typeof SECTIONS)[K]> };
export type BuilderSettings = Raw["builder"];
export type ImageSettings = Raw["image"] & {
  /** Absolute directory of a flake on the operator's machine, when `flake` names one. */
  localPath?: string;
};
export type RegistrySettings = Raw["registry"];
export type HostSettings =
  (z.infer<typeof hostEc2> & { instanceType: string; volumeSize: number }) | z.infer<typeof hostSsh> | z.infer<typeof hostNone>;
export type NekoSettings = Raw["neko"] & { videoCodec: "vp8" | "vp9" | "h264"; portRange: { low: number; high: number } };

export interface Settings {
  builder: BuilderSettings;
  image: ImageSettings;
  registry: RegistrySettings;
  host: HostSettings;
  neko: NekoSettings;
}

export class SettingsError extends Error {
  constructor(public readonly problems: string[]) {
    super(
      `invalid stack configuration (${problems.length} problem${problems.length === 1 ? "" : "s"}):\n` +
        problems.map((p) => `  - ${p}`).join("\n"),
    );
    this.name = "SettingsError";
  }
}

export interface SettingsInput {
  /** Every config value of the stack, keyed `project:key`, as strings (objects as JSON). */
  config: Record<string, string>;
  /** Keys whose value is stored as a secret. */
  secretKeys: string[];
  /** Directory that relative flake paths are resolved from (the Pulumi project directory). */
  projectDir: string;
  /** Whether a file exists; injected so tests need no file system. */
  fileExists: (p: string) => boolean;
}

// ---------------------------------------------------------------- parsing

export function parseSettings(input: SettingsInput): Settings {
  const problems: string[] = [];
  const raw: Record<string, unknown> = {};

  for (const [fullKey, value] of Object.entries(input.config)) {
    if (!fullKey.startsWith(`${PROJECT}:`)) continue; // aws:region and friends belong to providers
    const key = fullKey.slice(PROJECT.length + 1);
    if (!(CONFIG_KEYS as readonly string[]).includes(key)) {
      problems.push(`${fullKey}: unknown key; neko-infra reads ${CONFIG_KEYS.map((k) => `${PROJECT}:${k}`).join(", ")}`);
      continue;
    }
    try {
      raw[key] = JSON.parse(value);
    } catch {
      problems.push(`${fullKey}: must be an object (set its fields with \`pulumi config set --path '${key}.<field>' ...\`)`);
    }
  }

  for (const key of CONFIG_KEYS) {
    const value = raw[key];
    if (value === undefined) continue;
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      problems.push(`${PROJECT}:${key}: must be an object (set its fields with \`pulumi config set --path '${key}.<field>' ...\`)`);
      delete raw[key];
      continue;
    }
    const isSecret = input.secretKeys.includes(`${PROJECT}:${key}`);
    for (const field of SECRET_FIELDS[key]) {
      if ((value as Record<string, unknown>)[field] !== undefined && !isSecret) {
        problems.push(
          `${PROJECT}:${key}.${field}: given in plain text; store it as a secret: pulumi config set --secret --path '${key}.${field}' <value>`,
        );
      }
    }
  }
  // Each section is parsed on its own, so one broken section does not hide the problems of another.
  const parsed: Partial<Raw> = {};
  for (const key of CONFIG_KEYS) {
    if (problems.some((p) => p.startsWith(`${PROJECT}:${key}:`) && p.includes("must be an object"))) continue;
    const result = SECTIONS[key].safeParse(raw[key] === undefined && key === "image" ? {} : raw[key], { reportInput: true });
    if (result.success) (parsed as Record<string, unknown>)[key] = result.data;
    else for (const issue of result.error.issues) problems.push(...describeIssue(key, issue));
  }
  const settings = finish(parsed, input, problems);
  if (problems.length) throw new SettingsError(problems);
  return settings as Settings;
}

/**
 * Cross-field rules and derived values that a per-field schema cannot express. Sections that did not
 * parse are skipped (their problems are already listed); the result is complete only when no
 * problem was added.
 */
function finish(s: Partial<Raw>, input: SettingsInput, problems: string[]): Partial<Settings> {
  const gpu = s.host !== undefined && s.host.kind !== "none" && s.host.gpu;
  return {
    builder: s.builder && checkBuilder(s.builder, problems),
    image: s.image && checkImage(s.image, input, problems),
    registry: s.registry && checkRegistry(s.registry, problems),
    host: s.host && checkHost(s.host, problems),
    neko: s.neko && checkNeko(s.neko, gpu, problems),
  };
}

const key = (k: string) => `${PROJECT}:${k}`;

function checkBuilder(b: BuilderSettings, problems: string[]): BuilderSettings {
  if (b.kind !== "ec2") return b;
  if (isArmInstanceType(b.instanceType)) {
    problems.push(
      `${key("builder.instanceType")}: ${b.instanceType} is an arm64 (Graviton) type; the builder runs the x86_64 Amazon Linux 2023 AMI because neko images are built for x86_64-linux only`,
    );
  }
  if (!b.allowSshFromAnywhere) problems.push(...worldOpen(b.sshCidrs, "builder"));
  if ((b.publicKey === undefined) !== (b.privateKey === undefined)) {
    problems.push(
      `${key("builder.publicKey")}: publicKey and privateKey go together: give both, or neither to let Pulumi generate the key`,
    );
  }
  return b;
}

function checkImage(i: Raw["image"], input: SettingsInput, problems: string[]): ImageSettings {
  const local = localFlakePath(i.flake, input.projectDir);
  if (local === undefined) return i;
  if (!input.fileExists(path.join(local, "flake.nix"))) {
    problems.push(`${key("image.flake")}: no flake.nix in ${local} (a local flake is a directory holding flake.nix)`);
  }
  return { ...i, localPath: local };
}

function checkRegistry(r: RegistrySettings, problems: string[]): RegistrySettings {
  if (r.kind === "oci" && (r.username === undefined) !== (r.password === undefined)) {
    problems.push(`${key("registry.username")}: username and password go together: give both, or neither for a registry without auth`);
  }
  return r;
}

function checkHost(h: Raw["host"], problems: string[]): HostSettings {
  if (h.kind !== "ec2") return h;
  const type = h.instanceType ?? (h.gpu ? "g4dn.xlarge" : "t3.xlarge");
  const volumeSize = h.volumeSize ?? (h.gpu ? 100 : 30);
  const minVolume = h.gpu ? 75 : 16;
  if (h.gpu) {
    const problem = gpuInstanceProblem(type);
    if (problem) problems.push(`${key("host.instanceType")}: ${problem}`);
  } else if (isArmInstanceType(type)) {
    problems.push(`${key("host.instanceType")}: ${type} is an arm64 (Graviton) type; neko images are linux/amd64 only`);
  } else if (gpuInstanceProblem(type) === undefined) {
    problems.push(
      `${key("host.instanceType")}: ${type} is a GPU type but host.gpu is false; set host.gpu: true to use its GPU (and the GPU AMI)`,
    );
  }
  if (volumeSize < minVolume) {
    problems.push(
      `${key("host.volumeSize")}: ${volumeSize} GB is below the ${minVolume} GB the ${h.gpu ? "Deep Learning GPU" : "Amazon Linux 2023"} AMI needs`,
    );
  }
  if (!h.allowSshFromAnywhere) problems.push(...worldOpen(h.sshCidrs, "host"));
  return { ...h, instanceType: type, volumeSize };
}

function checkNeko(n: Raw["neko"], gpu: boolean, problems: string[]): NekoSettings {
  const range = parseRange(n.webrtc.epr);
  if (n.webrtc.mode === "epr") {
    if (n.httpPort >= range.low && n.httpPort <= range.high) {
      problems.push(`${key("neko.webrtc.epr")}: ${n.webrtc.epr} overlaps neko.httpPort ${n.httpPort}`);
    }
  } else {
    if (n.webrtc.udpMux === n.httpPort) problems.push(`${key("neko.webrtc.udpMux")}: ${n.webrtc.udpMux} is also neko.httpPort`);
    if (n.webrtc.tcpMux === n.httpPort) {
      problems.push(`${key("neko.webrtc.tcpMux")}: ${n.webrtc.tcpMux} is also neko.httpPort (both TCP)`);
    }
  }
  return { ...n, videoCodec: n.videoCodec ?? (gpu ? "h264" : "vp8"), portRange: range };
}

// ---------------------------------------------------------------- helpers

/** Accept `kind` missing (use the default) and report the accepted kinds when it is wrong. */
function withDefaultKind<T extends z.ZodType>(defaultKind: string, inner: T) {
  return z.preprocess((v) => {
    if (v && typeof v === "object" && !Array.isArray(v) && (v as { kind?: unknown }).kind === undefined) {
      return { ...(v as object), kind: defaultKind };
    }
    return v;
  }, inner);
}

function describeIssue(section: ConfigKey, issue: z.core.$ZodIssue): string[] {
  const where = [`${PROJECT}:${section}`, ...issue.path.map(String)].join(".");
  switch (issue.code) {
    case "unrecognized_keys":
      return issue.keys.map((k) => `${where}.${k}: unknown key`);
    case "invalid_union":
      if (KINDS[section] && issue.path.at(-1) === "kind") {
        return [`${where}: must be one of ${KINDS[section]!.join(", ")}`];
      }
      return [`${where}: ${issue.message}`];
    case "invalid_type":
      if (issue.input === undefined && !issue.message.startsWith("required")) {
        return [`${where}: required (${issue.message.replace(/^Invalid input: /, "")})`];
      }
      return [`${where}: ${issue.message}`];
    default:
      return [`${where}: ${issue.message}`];
  }
}

function worldOpen(cidrs: string[], section: "builder" | "host"): string[] {
  return cidrs
    .filter((c) => c === "0.0.0.0/0" || c === "::/0")
    .map(
      (c) =>
        `${PROJECT}:${section}.sshCidrs: ${c} opens SSH to the whole internet; list your own networks, or set ${section}.allowSshFromAnywhere: true to mean it`,
    );
}

function rangeProblem(spec: string): string | undefined {
  const { low, high } = parseRange(spec);
  if (low > high) return `${spec} has its low port above its high port`;
  if (low < 1024 || high > 65535) return `${spec} must lie within 1024-65535`;
  if (high - low + 1 > 1000) return `${spec} spans ${high - low + 1} ports; at most 1000 (each is published one by one)`;
  return undefined;
}

function envNameProblem(name: string): string | undefined {
  if (MANAGED_ENV.test(name)) return "set by neko-infra from the neko settings; use those instead";
  if (LEGACY_ENV.test(name)) return "a neko v2 name: it switches neko into legacy mode and overrides v3 settings";
  if (/PASSWORD|SECRET|TOKEN/.test(name)) return "looks like a credential; neko.env is stored and shown in plain text";
  return undefined;
}

export function parseRange(spec: string): { low: number; high: number } {
  const [low, high] = spec.split("-").map(Number);
  return { low, high };
}

/** The absolute directory of a flake on the operator's machine, or undefined for a remote flake ref. */
export function localFlakePath(flake: string, projectDir: string): string | undefined {
  const ref = flake.startsWith("path:") ? flake.slice("path:".length) : flake;
  if (flake.startsWith("path:") || ref.startsWith("/") || ref.startsWith("./") || ref.startsWith("../") || ref === ".") {
    return path.resolve(projectDir, ref.split(/[?#]/)[0]);
  }
  return undefined;
}

export function isCidr(value: string): boolean {
  const m = /^(.+)\/(\d{1,3})$/.exec(value);
  if (!m) return false;
  const [, addr, bitsText] = m;
  const bits = Number(bitsText);
  if (/^\d+\.\d+\.\d+\.\d+$/.test(addr)) {
    return addr.split(".").every((o) => /^\d{1,3}$/.test(o) && Number(o) <= 255) && bits <= 32;
  }
  if (addr.includes(":")) {
    const halves = addr.split("::");
    if (halves.length > 2) return false;
    const groups = halves.flatMap((h) => (h === "" ? [] : h.split(":")));
    if (!groups.every((g) => /^[0-9a-fA-F]{1,4}$/.test(g))) return false;
    if (halves.length === 1 ? groups.length !== 8 : groups.length > 7) return false;
    return bits <= 128;
  }
  return false;
}
