/**
 * Stack settings: every `neko-infra:*` config key, parsed and validated once, up front.
 *
 * `parseSettings` is pure: it takes the raw config map (as Pulumi hands it to a program) and the
 * list of keys stored as secrets, and returns typed settings or throws a `SettingsError` listing
 * every problem at once. Each problem names its key in the form `pulumi config set --path` takes
 * (`neko-infra:host.sshCidrs[0]`) and says what to do. Nothing here touches Pulumi resources, so
 * bad input never reaches a cloud API.
 */
import * as path from "path";
import { z } from "zod";
import { gpuInstanceProblem, isArmInstanceType } from "./instanceTypes";
import { describeIssue, didYouMean, dottedKeyHint, KindFields, keyOf } from "./settingsMessages";
import { documentationRange, isCidr, isPrivateAddress, isIpAddress } from "./addresses";

export { isCidr } from "./addresses";

export const PROJECT = "neko-infra";

/** The top-level config keys this program reads, each a structured object. */
export const CONFIG_KEYS = ["builder", "image", "registry", "host", "neko"] as const;
export type ConfigKey = (typeof CONFIG_KEYS)[number];

/** Fields that carry credentials: they must be stored with `pulumi config set --secret`. */
const SECRET_FIELDS: Record<ConfigKey, string[]> = {
  builder: ["privateKey"],
  image: [],
  registry: ["password"],
  host: ["privateKey"],
  neko: ["userPassword", "adminPassword", "turnPassword", "apiToken"],
};

/** Let's Encrypt's production directory: the default ACME server of the TLS front. */
export const LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory";

// ---------------------------------------------------------------- field types

const cidr = z.string().refine(isCidr, {
  message: "not a CIDR: expected an IPv4 or IPv6 network such as 100.64.7.9/32 or 2a01:4f8::/64",
});

const port = z.number().int().min(1).max(65535);

const KEY_LINE = /^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/]+={0,3}( .*)?$/;

/** OpenSSH public key line, as `ssh-keygen -y` prints it (a login key: any type OpenSSH takes). */
const publicKeyLine = z.string().regex(KEY_LINE, { message: "not an OpenSSH public key line: expected e.g. 'ssh-ed25519 AAAAC3Nza...'" });

/**
 * A pinned host key. RSA cannot work: Pulumi's command provider offers only `ssh-rsa` (SHA-1)
 * signatures for RSA host keys, which OpenSSH 8.8 and later refuse.
 */
const hostKeyLine = publicKeyLine.refine((k) => !k.startsWith("ssh-rsa "), {
  message:
    "an RSA host key cannot be used (Pulumi's command provider only offers SHA-1 RSA signatures, which OpenSSH 8.8+ refuses); pin the host's ed25519 key instead: ssh-keyscan -t ed25519 <host>",
});

const privateKey = z.string().regex(/-----BEGIN [A-Z ]*PRIVATE KEY-----/, {
  message:
    "not a PEM/OpenSSH private key (no '-----BEGIN ... PRIVATE KEY-----' line); set it from the file: pulumi config set --secret --path <key> < ~/.ssh/id_ed25519",
});

const hostName = z
  .string()
  .min(1)
  .regex(/^[A-Za-z0-9.:_-]+$/, { message: "not a host name or IP address" });

const domainName = z.string().regex(/^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$/, {
  message: "not a DNS name such as neko.example.com (lower case)",
});

const instanceType = z.string().regex(/^[a-z][a-z0-9-]*\.[a-z0-9]+$/, {
  message: "not an EC2 instance type such as c6i.2xlarge",
});

const subnetId = z.string().regex(/^subnet-[0-9a-f]{8,17}$/, { message: "not a subnet ID such as subnet-0123456789abcdef0" });

const portRange = z
  .string()
  .regex(/^\d+-\d+$/, { message: "not a port range: expected LOW-HIGH such as 52000-52100" })
  .check((ctx) => {
    const problem = /^\d+-\d+$/.test(ctx.value) ? rangeProblem(ctx.value) : undefined;
    if (problem) ctx.issues.push({ code: "custom", message: problem, input: ctx.value });
  });

const shellCommand = z.string().min(1).max(4096);

const sshFields = {
  host: hostName,
  port: port.default(22),
  user: z
    .string()
    .regex(/^[a-z_][a-z0-9_-]*$/, { message: "not a user name" })
    .default("root"),
  privateKey,
  hostKey: hostKeyLine,
};

/** What networks may reach an EC2 machine (shared by builder and host). */
const ec2Access = {
  sshCidrs: z.array(cidr),
  allowSshFromAnywhere: z.boolean().default(false),
  /** Accept 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24 and 2001:db8::/32 (they route nowhere). */
  allowDocumentationRanges: z.boolean().default(false),
  subnetId: subnetId.optional(),
};

// ---------------------------------------------------------------- builder

const builderEc2 = z.strictObject({
  kind: z.literal("ec2"),
  enabled: z.boolean().default(true),
  instanceType: instanceType.default("c6i.2xlarge"),
  /**
   * Spot builders are gone: a persistent request expires after 7 days and then terminates its
   * stopped instance, one stopped by an interruption cannot be started by StartInstances, and the
   * builder idles most of the time anyway (see the README's costs). `false` is still accepted.
   */
  spot: z
    .boolean()
    .refine((v) => v === false, {
      message:
        "spot builders are not supported any more (a persistent spot request expires after 7 days and terminates its stopped builder; an interrupted one cannot be started again); the builder runs on demand and stops itself when idle: pulumi config rm --path builder.spot",
    })
    .optional(),
  volumeSize: z.number().int().min(30).max(16384).default(100),
  ...ec2Access,
  maxJobs: z.union([z.number().int().min(1), z.literal("auto")]).default("auto"),
  /** Minutes without a build or SSH session after which the builder stops itself; 0 never. */
  idleMinutes: z.number().int().min(0).max(1440).default(30),
  /** A signed S3 binary cache that outlives the builder, so a new builder starts warm. */
  cache: z.boolean().default(true),
  publicKey: publicKeyLine.optional(),
  privateKey: privateKey.optional(),
  /** Seconds a fresh or woken builder may take to finish its bootstrap (installing Nix takes minutes). */
  readyTimeout: z.number().int().min(30).max(7200).default(1200),
});

const builderSsh = z.strictObject({
  kind: z.literal("ssh"),
  enabled: z.boolean().default(true),
  ...sshFields,
  /** Run on the operator's machine when the builder does not answer (wake-on-LAN, a script...). */
  wakeCommand: shellCommand.optional(),
  /** Seconds to wait for the builder to answer after the wake command. */
  readyTimeout: z.number().int().min(5).max(7200).default(300),
});

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

// ---------------------------------------------------------------- image

const image = z.strictObject({
  flake: z.string({ error: "required: a flake reference such as github:owner/neko/<commit> or ./path/to/checkout" }).min(1),
  /**
   * The flake output to build: a docker-archive (`dockerTools.buildLayeredImage`). In
   * G-structure/neko `image-x86_64` is the base image without a browser; `chromium-x86_64` has one.
   */
  attr: z
    .string()
    .regex(/^[A-Za-z0-9_][A-Za-z0-9_.'-]*$/, { message: "not a flake output attribute name" })
    .default("chromium-x86_64"),
  /** Accept a `github:` (or other git) ref without a commit: it is never re-fetched, so builds go stale silently. */
  allowUnpinned: z.boolean().default(false),
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

/** `docker load` into the local Docker engine: the local stack, where builder and host are this machine. */
const registryDocker = z.strictObject({ kind: z.literal("docker") });

// ---------------------------------------------------------------- host

/** The TLS front (Caddy) of a host with a public address. */
const tlsFields = {
  /** HTTPS with an automatic certificate (Let's Encrypt); default on where the address is public. */
  tls: z.boolean().optional(),
  /** A DNS name that points at the host: the certificate is for it instead of the IP address. */
  domain: domainName.optional(),
  /** Contact address given to the ACME server (expiry notices). */
  acmeEmail: z.email({ message: "not an email address" }).optional(),
  /** ACME directory URL (a private CA, or Let's Encrypt's staging server while testing). */
  acmeServer: z.url({ protocol: /^https$/, message: "not an https:// ACME directory URL" }).default(LETS_ENCRYPT),
  /** PEM root certificate of a private ACME server (trusted for the ACME connection only). */
  acmeRootCert: z
    .string()
    .regex(/-----BEGIN CERTIFICATE-----/, { message: "not a PEM certificate" })
    .optional(),
};

const hostEc2 = z.strictObject({
  kind: z.literal("ec2"),
  gpu: z.boolean().default(false),
  instanceType: instanceType.optional(),
  volumeSize: z.number().int().min(8).max(16384).optional(),
  ...ec2Access,
  clientCidrs: z.array(cidr),
  ...tlsFields,
  /** Minutes without a connected neko session after which the host stops itself; 0 never. */
  idleMinutes: z.number().int().min(0).max(1440).default(30),
  /** A link that starts a sleeping host and forwards to neko (an AWS Lambda function URL). */
  wakeOnVisit: z.boolean().default(true),
  /** GB of the EBS volume holding the browser profile (outlives the instance). */
  profileSize: z.number().int().min(1).max(1024).default(10),
  /** Seconds a fresh or woken host may take to finish its bootstrap. */
  readyTimeout: z.number().int().min(30).max(7200).default(900),
});

const hostSsh = z.strictObject({
  kind: z.literal("ssh"),
  gpu: z.boolean().default(false),
  publicAddress: hostName.optional(),
  ...sshFields,
  ...tlsFields,
  wakeCommand: shellCommand.optional(),
  readyTimeout: z.number().int().min(5).max(7200).default(300),
});

/** The Docker engine of the machine running `pulumi up` (the local stack). */
const hostLocal = z.strictObject({
  kind: z.literal("local"),
  gpu: z.boolean().default(false),
  /** Address neko's HTTP port is published on; 127.0.0.1 keeps it to this machine. */
  bindAddress: z.union([z.literal("127.0.0.1"), z.literal("0.0.0.0"), z.ipv4()]).default("127.0.0.1"),
  /** The address WebRTC clients reach (NEKO_WEBRTC_NAT1TO1). */
  publicAddress: hostName.default("127.0.0.1"),
});

const hostNone = z.strictObject({ kind: z.literal("none") });

// ---------------------------------------------------------------- neko

/** Environment names that neko-infra sets itself, or that switch neko v3 into legacy (v2) mode. */
const MANAGED_ENV =
  /^(NEKO_SERVER_(BIND|PROXY)|NEKO_WEBRTC_(EPR|UDPMUX|TCPMUX|NAT1TO1|ICELITE|ICESERVERS_FRONTEND|ICESERVERS_BACKEND)|NEKO_DESKTOP_SCREEN|NEKO_MEMBER_MULTIUSER_(USER|ADMIN)_PASSWORD|NEKO_CAPTURE_VIDEO_(CODEC|PIPELINE)|NEKO_SESSION_API_TOKEN)$/;
const LEGACY_ENV = /^NEKO_(EPR|NAT1TO1|PASSWORD|PASSWORD_ADMIN|SCREEN|UDPMUX|TCPMUX|ICELITE|BIND|VIDEO_CODEC|VIDEO|ICESERVERS|ICESERVER)$/;

const turn = z.preprocess(
  (v) => (typeof v === "boolean" ? { enabled: v } : v),
  z.strictObject({
    enabled: z.boolean().default(true),
    /** TURN over UDP and TCP. */
    port: port.default(3478),
    /** TURN over TLS (the host's certificate); needs host TLS. */
    tlsPort: port.default(5349),
    /** UDP ports coturn relays media on (opened to the clients). */
    relayPorts: portRange.default("49160-49200"),
  }),
);

const neko = z.strictObject({
  httpPort: port.default(8080),
  webrtc: z
    .strictObject({
      mode: z.enum(["epr", "mux"]).default("epr"),
      epr: portRange.default("52000-52100"),
      udpMux: port.default(52000),
      tcpMux: port.optional(),
    })
    .prefault({}),
  screen: z
    .string()
    .regex(/^\d{3,5}x\d{3,5}@\d{1,3}$/, { message: "not a screen mode: expected WIDTHxHEIGHT@RATE such as 1920x1080@30" })
    .default("1920x1080@30"),
  /** Default: on, unless a TURN relay is configured (neko needs full ICE then). */
  iceLite: z.boolean().optional(),
  /** av1 and h265 are neko codecs too: accepted here only to be refused with the reason (checkNeko). */
  videoCodec: z.enum(["vp8", "vp9", "h264", "av1", "h265"], { message: "must be vp8, vp9 or h264" }).optional(),
  /** `auto`: `nvautogpuh264enc` on NVIDIA drivers 590 and later, `nvh264enc` before (read on the host). */
  nvencElement: z.enum(["auto", "nvh264enc", "nvautogpuh264enc"]).default("auto"),
  userPassword: z.string().min(8).optional(),
  adminPassword: z.string().min(8).optional(),
  turnPassword: z.string().min(16).optional(),
  /** neko's API token (the idle check asks neko who is connected); generated when unset. */
  apiToken: z.string().min(16).optional(),
  turn: turn.optional(),
  /** Keep the browser profile across image updates and host replacement. */
  persistProfile: z.boolean().default(true),
  /** Where the image's browser keeps its profile, inside the container. */
  profileDir: z
    .string()
    .regex(/^\/[A-Za-z0-9._/-]+$/, { message: "not an absolute path" })
    .default("/home/neko/.config/chromium"),
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

// ---------------------------------------------------------------- sections

/** Each section's kinds and their schemas: the messages name fields that belong to another kind. */
const KINDS = {
  builder: { default: "ec2", schemas: { ec2: builderEc2, ssh: builderSsh, local: builderLocal } },
  registry: { default: "ecr", schemas: { ecr: registryEcr, oci: registryOci, docker: registryDocker } },
  host: { default: "ec2", schemas: { ec2: hostEc2, ssh: hostSsh, local: hostLocal, none: hostNone } },
} as const;

const kindFields: Partial<Record<ConfigKey, KindFields>> = Object.fromEntries(
  Object.entries(KINDS).map(([section, k]) => [
    section,
    Object.fromEntries(Object.entries(k.schemas).map(([kind, schema]) => [kind, Object.keys(schema.shape)])),
  ]),
);

const SECTIONS = {
  builder: withDefaultKind("builder", z.discriminatedUnion("kind", [builderEc2, builderSsh, builderLocal])).prefault({}),
  image: image,
  registry: withDefaultKind("registry", z.discriminatedUnion("kind", [registryEcr, registryOci, registryDocker])).prefault({}),
  host: withDefaultKind("host", z.discriminatedUnion("kind", [hostEc2, hostSsh, hostLocal, hostNone])).prefault({}),
  neko: neko.prefault({}),
};

/** The fields of the sections without kinds, for "did you mean". */
const plainFields: Partial<Record<ConfigKey, string[]>> = { image: Object.keys(image.shape), neko: Object.keys(neko.shape) };
const nestedFields: Partial<Record<ConfigKey, Record<string, string[]>>> = {
  neko: { webrtc: ["mode", "epr", "udpMux", "tcpMux"], turn: ["enabled", "port", "tlsPort", "relayPorts"] },
};

// ---------------------------------------------------------------- types

type Raw = { [K in ConfigKey]: z.output<(typeof SECTIONS)[K]> };
export type BuilderSettings = Raw["builder"];
export type ImageSettings = Raw["image"] & {
  /** Absolute directory of a flake on the operator's machine, when `flake` names one. */
  localPath?: string;
};
export type RegistrySettings = Raw["registry"];

/** Resolved TLS front: on with its certificate's subject, or off. */
export type TlsSettings =
  { enabled: false } | { enabled: true; subject: string; domain?: string; email?: string; acmeServer: string; acmeRootCert?: string };

type TlsFieldNames = keyof typeof tlsFields;
export type HostSettings =
  | (Omit<z.infer<typeof hostEc2>, TlsFieldNames> & { instanceType: string; volumeSize: number; tlsFront: TlsSettings })
  | (Omit<z.infer<typeof hostSsh>, TlsFieldNames> & { tlsFront: TlsSettings })
  | (z.infer<typeof hostLocal> & { tlsFront: TlsSettings })
  | z.infer<typeof hostNone>;

export interface TurnSettings {
  enabled: boolean;
  port: number;
  tlsPort: number;
  relayPorts: { low: number; high: number };
}

export type NekoSettings = Omit<Raw["neko"], "turn" | "iceLite"> & {
  videoCodec: "vp8" | "vp9" | "h264";
  iceLite: boolean;
  portRange: { low: number; high: number };
  turn: TurnSettings;
};

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
  const broken = new Set<ConfigKey>();

  for (const [fullKey, value] of Object.entries(input.config)) {
    if (!fullKey.startsWith(`${PROJECT}:`)) continue; // aws:region and friends belong to providers
    const name = fullKey.slice(PROJECT.length + 1);
    if (!(CONFIG_KEYS as readonly string[]).includes(name)) {
      problems.push(dottedKeyHint(name, CONFIG_KEYS) ?? unknownTopLevel(name));
      continue;
    }
    try {
      raw[name] = JSON.parse(value);
    } catch {
      raw[name] = value; // a plain string: reported below as "must be an object"
    }
  }

  for (const section of CONFIG_KEYS) {
    const value = raw[section];
    if (value === undefined) continue;
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      problems.push(`${keyOf(section)}: must be an object; set its fields with pulumi config set --path '${section}.<field>' <value>`);
      broken.add(section);
      continue;
    }
    const isSecret = input.secretKeys.includes(`${PROJECT}:${section}`);
    for (const field of SECRET_FIELDS[section]) {
      if ((value as Record<string, unknown>)[field] !== undefined && !isSecret) {
        problems.push(
          `${keyOf(`${section}.${field}`)}: given in plain text; store it as a secret: pulumi config set --secret --path '${section}.${field}' <value>`,
        );
      }
    }
  }

  // Each section is parsed on its own, so one broken section does not hide the problems of another.
  const parsed: Partial<Raw> = {};
  for (const section of CONFIG_KEYS) {
    if (broken.has(section)) continue;
    const value = raw[section] === undefined && section === "image" ? {} : raw[section];
    const result = SECTIONS[section].safeParse(value, { reportInput: true });
    if (result.success) {
      (parsed as Record<string, unknown>)[section] = result.data;
      continue;
    }
    const kind = kindOf(section, value);
    for (const issue of result.error.issues) {
      problems.push(
        ...describeIssue(section, issue, {
          kind,
          kinds: kindFields[section],
          fields: plainFields[section],
          nested: nestedFields[section],
        }),
      );
    }
  }
  const settings = finish(parsed, input, problems);
  if (problems.length) throw new SettingsError(problems);
  return settings as Settings;
}

function unknownTopLevel(name: string): string {
  const hint = didYouMean(name, CONFIG_KEYS);
  return `${keyOf(name)}: unknown key${hint || `; neko-infra reads ${CONFIG_KEYS.map((k) => keyOf(k)).join(", ")}`}`;
}

function kindOf(section: ConfigKey, value: unknown): string | undefined {
  if (!(section in KINDS)) return undefined;
  const kind = value && typeof value === "object" ? (value as { kind?: unknown }).kind : undefined;
  return typeof kind === "string" ? kind : KINDS[section as keyof typeof KINDS].default;
}

/**
 * Cross-field rules and derived values that a per-field schema cannot express. Sections that did not
 * parse are skipped (their problems are already listed); the result is complete only when no
 * problem was added.
 */
function finish(s: Partial<Raw>, input: SettingsInput, problems: string[]): Partial<Settings> {
  const host = s.host && checkHost(s.host, problems);
  const gpu = host !== undefined && host.kind !== "none" && host.gpu;
  const neko = s.neko && checkNeko(s.neko, gpu, host, problems);
  const out: Partial<Settings> = {
    builder: s.builder && checkBuilder(s.builder, problems),
    image: s.image && checkImage(s.image, input, problems),
    registry: s.registry && checkRegistry(s.registry, problems),
    host,
    neko,
  };
  checkCombination(out, problems);
  return out;
}

function checkBuilder(b: BuilderSettings, problems: string[]): BuilderSettings {
  if (b.kind !== "ec2") return b;
  if (isArmInstanceType(b.instanceType)) {
    problems.push(
      `${keyOf("builder.instanceType")}: ${b.instanceType} is an arm64 (Graviton) type; the builder runs the x86_64 Amazon Linux 2023 AMI because neko images are built for x86_64-linux only`,
    );
  }
  problems.push(...accessProblems("builder", b));
  if ((b.publicKey === undefined) !== (b.privateKey === undefined)) {
    problems.push(
      `${keyOf("builder.publicKey")}: publicKey and privateKey go together: give both, or neither to let Pulumi generate the key`,
    );
  }
  return b;
}

function checkImage(i: Raw["image"], input: SettingsInput, problems: string[]): ImageSettings {
  const local = localFlakePath(i.flake, input.projectDir);
  if (local === undefined) {
    const unpinned = unpinnedFlakeProblem(i.flake);
    if (unpinned && !i.allowUnpinned) problems.push(`${keyOf("image.flake")}: ${unpinned}`);
    return i;
  }
  if (!input.fileExists(path.join(local, "flake.nix"))) {
    problems.push(`${keyOf("image.flake")}: no flake.nix in ${local} (a local flake is a directory holding flake.nix)`);
  }
  return { ...i, localPath: local };
}

function checkRegistry(r: RegistrySettings, problems: string[]): RegistrySettings {
  if (r.kind === "oci" && (r.username === undefined) !== (r.password === undefined)) {
    problems.push(`${keyOf("registry.username")}: username and password go together: give both, or neither for a registry without auth`);
  }
  return r;
}

function checkHost(h: Raw["host"], problems: string[]): HostSettings {
  if (h.kind === "none") return h;
  if (h.kind === "local") return { ...h, tlsFront: { enabled: false } };
  const tlsFront = resolveTls(h, problems);
  const { tls: _tls, domain: _d, acmeEmail: _e, acmeServer: _s, acmeRootCert: _r, ...rest } = h;
  if (rest.kind === "ssh") return { ...rest, tlsFront };

  const type = rest.instanceType ?? (rest.gpu ? "g4dn.xlarge" : "t3.xlarge");
  const volumeSize = rest.volumeSize ?? (rest.gpu ? 100 : 30);
  const minVolume = rest.gpu ? 75 : 16;
  if (rest.gpu) {
    const problem = gpuInstanceProblem(type);
    if (problem) problems.push(`${keyOf("host.instanceType")}: ${problem}`);
  } else if (isArmInstanceType(type)) {
    problems.push(`${keyOf("host.instanceType")}: ${type} is an arm64 (Graviton) type; neko images are linux/amd64 only`);
  } else if (gpuInstanceProblem(type) === undefined) {
    problems.push(
      `${keyOf("host.instanceType")}: ${type} is a GPU type but host.gpu is false; set it to use the GPU (and the GPU AMI): pulumi config set --path host.gpu true`,
    );
  }
  if (volumeSize < minVolume) {
    problems.push(
      `${keyOf("host.volumeSize")}: ${volumeSize} GB is below the ${minVolume} GB the ${rest.gpu ? "Deep Learning GPU" : "Amazon Linux 2023"} AMI needs`,
    );
  }
  problems.push(...accessProblems("host", rest, rest.clientCidrs));
  return { ...rest, instanceType: type, volumeSize, tlsFront };
}

/** TLS is on by default where the address is public; a public CA cannot validate a private address. */
function resolveTls(h: z.infer<typeof hostEc2> | z.infer<typeof hostSsh>, problems: string[]): TlsSettings {
  const address = h.kind === "ssh" ? (h.publicAddress ?? h.host) : undefined; // ec2: an Elastic IP, public
  const publicAddress = address === undefined || !isIpAddress(address) || !isPrivateAddress(address);
  const enabled = h.tls ?? (h.domain !== undefined || publicAddress);
  if (!enabled) return { enabled: false };
  if (h.domain === undefined && !publicAddress && h.acmeServer === LETS_ENCRYPT) {
    problems.push(
      `${keyOf("host.tls")}: ${address} is a private address, which Let's Encrypt cannot reach; set host.domain (a name that resolves to the host), host.acmeServer (a private ACME server), or pulumi config set --path host.tls false`,
    );
  }
  const subject = h.domain ?? address ?? "";
  return { enabled: true, subject, domain: h.domain, email: h.acmeEmail, acmeServer: h.acmeServer, acmeRootCert: h.acmeRootCert };
}

function checkNeko(n: Raw["neko"], gpu: boolean, host: HostSettings | undefined, problems: string[]): NekoSettings {
  const range = parseRange(n.webrtc.epr);
  const t = n.turn ?? { enabled: false, port: 3478, tlsPort: 5349, relayPorts: "49160-49200" };
  const turnSettings: TurnSettings = { enabled: t.enabled, port: t.port, tlsPort: t.tlsPort, relayPorts: parseRange(t.relayPorts) };
  if (t.enabled && n.iceLite === true) {
    problems.push(
      `${keyOf("neko.iceLite")}: ICE lite must be off with a TURN relay (neko.turn): remove it (pulumi config rm --path neko.iceLite) and neko-infra turns it off`,
    );
  }
  const tls = host !== undefined && host.kind !== "none" && host.tlsFront.enabled;
  if (t.enabled && host?.kind === "none") problems.push(`${keyOf("neko.turn")}: a TURN relay needs a host (host.kind is none)`);

  // One list of every port the host listens on: no two uses may share a port and protocol.
  const uses: { key: string; what: string; protocol: "tcp" | "udp"; low: number; high: number }[] = [
    { key: "neko.httpPort", what: "neko's HTTP port", protocol: "tcp", low: n.httpPort, high: n.httpPort },
  ];
  if (n.webrtc.mode === "epr") {
    uses.push({ key: "neko.webrtc.epr", what: "the WebRTC range", protocol: "udp", low: range.low, high: range.high });
  } else {
    uses.push({ key: "neko.webrtc.udpMux", what: "the WebRTC UDP mux port", protocol: "udp", low: n.webrtc.udpMux, high: n.webrtc.udpMux });
    if (n.webrtc.tcpMux !== undefined) {
      uses.push({
        key: "neko.webrtc.tcpMux",
        what: "the WebRTC TCP mux port",
        protocol: "tcp",
        low: n.webrtc.tcpMux,
        high: n.webrtc.tcpMux,
      });
    }
  }
  if (tls) {
    uses.push({ key: "host.tls", what: "HTTP (ACME and the redirect)", protocol: "tcp", low: 80, high: 80 });
    uses.push({ key: "host.tls", what: "HTTPS", protocol: "tcp", low: 443, high: 443 });
  }
  if (t.enabled) {
    for (const protocol of ["udp", "tcp"] as const) uses.push({ key: "neko.turn.port", what: "TURN", protocol, low: t.port, high: t.port });
    if (tls) uses.push({ key: "neko.turn.tlsPort", what: "TURN over TLS", protocol: "tcp", low: t.tlsPort, high: t.tlsPort });
    const r = turnSettings.relayPorts;
    uses.push({ key: "neko.turn.relayPorts", what: "the TURN relay range", protocol: "udp", low: r.low, high: r.high });
  }
  for (let i = 0; i < uses.length; i++) {
    for (let j = 0; j < i; j++) {
      const [a, b] = [uses[i], uses[j]];
      if (a.protocol === b.protocol && a.low <= b.high && b.low <= a.high && a.key !== b.key) {
        const at = a.low === a.high ? `${a.low}` : `${a.low}-${a.high}`;
        problems.push(`${keyOf(a.key)}: ${at}/${a.protocol} (${a.what}) clashes with ${b.what} (${keyOf(b.key)}); choose another port`);
      }
    }
  }
  let videoCodec = n.videoCodec ?? (gpu ? "h264" : "vp8");
  if (videoCodec === "av1" || videoCodec === "h265") {
    problems.push(
      `${keyOf("neko.videoCodec")}: ${videoCodec} is a codec neko knows, but neko-infra has no pipeline for it that the rollout's candidate check proves: use vp8, vp9 or h264 (${gpu ? "NVENC on this GPU host" : "x264enc"}): pulumi config set --path neko.videoCodec h264`,
    );
    videoCodec = "vp8";
  }
  const { turn: _t, iceLite, ...rest } = n;
  return {
    ...rest,
    iceLite: iceLite ?? !t.enabled,
    videoCodec,
    portRange: range,
    turn: turnSettings,
  };
}

/** Rules that span sections. */
function checkCombination(s: Partial<Settings>, problems: string[]): void {
  if (s.registry?.kind === "docker") {
    if (s.builder && s.builder.kind !== "local") {
      problems.push(
        `${keyOf("registry.kind")}: docker loads the image into this machine's Docker engine, so the image must be built here: use builder.kind local (with builder.remoteBuilders for a remote x86_64 machine), or registry.kind ecr or oci`,
      );
    }
    if (s.host && s.host.kind !== "local" && s.host.kind !== "none") {
      problems.push(
        `${keyOf("registry.kind")}: docker serves only a host of kind local; a ${s.host.kind} host pulls from a registry: use registry.kind ecr or oci`,
      );
    }
  }
  if (s.host?.kind === "local" && s.registry?.kind === "ecr") {
    problems.push(
      `${keyOf("registry.kind")}: a local host cannot pull from ECR without AWS credentials for Docker; use registry.kind docker (or oci)`,
    );
  }
  if (s.host?.kind === "local" && s.neko?.turn.enabled) {
    problems.push(`${keyOf("neko.turn")}: a TURN relay serves clients on other networks; a local host has none (use host.kind ec2 or ssh)`);
  }
}

// ---------------------------------------------------------------- helpers

/** Accept `kind` missing (use the default). */
function withDefaultKind<T extends z.ZodType>(section: keyof typeof KINDS, inner: T) {
  return z.preprocess((v) => {
    if (v && typeof v === "object" && !Array.isArray(v) && (v as { kind?: unknown }).kind === undefined) {
      return { ...(v as object), kind: KINDS[section].default };
    }
    return v;
  }, inner);
}

interface Access {
  sshCidrs: string[];
  allowSshFromAnywhere: boolean;
  allowDocumentationRanges: boolean;
}

function accessProblems(section: "builder" | "host", a: Access, clientCidrs?: string[]): string[] {
  const problems: string[] = [];
  const lists: [string, string[]][] = [[`${section}.sshCidrs`, a.sshCidrs]];
  if (clientCidrs) lists.push([`${section}.clientCidrs`, clientCidrs]);
  if (a.sshCidrs.length === 0) {
    problems.push(
      `${keyOf(`${section}.sshCidrs`)}: required for kind ec2: the networks Pulumi connects from over SSH, e.g. pulumi config set --path '${section}.sshCidrs[0]' "$(curl -s https://checkip.amazonaws.com)/32"`,
    );
  }
  if (clientCidrs && clientCidrs.length === 0) {
    problems.push(
      `${keyOf("host.clientCidrs")}: required for kind ec2: the networks allowed to open neko (state 0.0.0.0/0 explicitly for everyone): pulumi config set --path 'host.clientCidrs[0]' <cidr>`,
    );
  }
  a.sshCidrs.forEach((c, i) => {
    if ((c === "0.0.0.0/0" || c === "::/0") && !a.allowSshFromAnywhere) {
      problems.push(
        `${keyOf(`${section}.sshCidrs[${i}]`)}: ${c} opens SSH to the whole internet; list your own networks, or set ${section}.allowSshFromAnywhere: true to mean it`,
      );
    }
  });
  if (!a.allowDocumentationRanges) {
    for (const [key, cidrs] of lists) {
      cidrs.forEach((c, i) => {
        const range = documentationRange(c);
        if (range) {
          problems.push(
            `${keyOf(`${key}[${i}]`)}: ${c} lies in ${range}, a documentation range that routes nowhere (an unedited example?); put your own network here, or set ${section}.allowDocumentationRanges: true`,
          );
        }
      });
    }
  }
  return problems;
}

/** Why a remote flake ref is not pinned to a commit, or undefined when it is (or cannot tell). */
export function unpinnedFlakeProblem(flake: string): string | undefined {
  const rev = /(^|[/?&])(rev=)?[0-9a-f]{40}([?&#]|$)/;
  if (/^(github|gitlab|sourcehut):/.test(flake)) {
    const parts = flake.split(/[?#]/)[0].split("/");
    if (/^[0-9a-f]{40}$/.test(parts[2] ?? "") || /[?&]rev=[0-9a-f]{40}/.test(flake)) return undefined;
    return `${flake} is not pinned to a commit: Nix caches the branch it resolves to, so later pushes to it are not built. Pin it (${parts.slice(0, 2).join("/")}/<40-hex commit>) or set image.allowUnpinned: true`;
  }
  if (/^git\+/.test(flake) && !rev.test(flake)) {
    return `${flake} is not pinned to a commit: add ?rev=<40-hex commit>, or set image.allowUnpinned: true`;
  }
  return undefined;
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
