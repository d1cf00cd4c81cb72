/**
 * Helpers for the real-tool tests: run a script exactly as a Pulumi Command runs it (the command
 * line and stdin from `scriptCommand`; a local Command through `/bin/sh -c`, a remote one through
 * ssh), start and stop the services of tests/harness by PID, and build realistic settings.
 */
import { spawn } from "child_process";
import * as dgram from "dgram";
import * as fs from "fs";
import * as net from "net";
import * as os from "os";
import * as path from "path";
import { ScriptCommand } from "../../lib/shell";
import { parseSettings, Settings } from "../../lib/settings";
import { configOf } from "../support/settings";

export const REPO = path.resolve(__dirname, "..", "..");
export const HARNESS = path.join(REPO, "tests", "harness");
export const FIXTURE = path.join(REPO, "tests", "fixtures", "flake");
export const SCRIPTS = path.join(REPO, "scripts");

/** Commands the suites drive, and the Debian package of each (see tools/install-deps.sh). */
const TOOLS: Record<string, string> = {
  nix: "nix-bin",
  "/bin/busybox": "busybox-static",
  ssh: "openssh-client",
  "ssh-keygen": "openssh-client",
  "/usr/sbin/sshd": "openssh-server",
  ip: "iproute2",
  unshare: "util-linux",
  "/usr/bin/docker-registry": "docker-registry",
  htpasswd: "apache2-utils",
  skopeo: "skopeo",
  "/usr/sbin/dockerd": "docker.io",
  "/usr/bin/docker": "docker.io",
  "/usr/sbin/docker-proxy": "docker.io",
  shellcheck: "shellcheck",
  "cloud-init": "cloud-init",
  curl: "curl",
  python3: "python3-yaml",
  bash: "bash",
  "/usr/bin/aws": "awscli",
  "/usr/sbin/iptables": "iptables",
  "/usr/sbin/setcap": "libcap2-bin",
};

function onPath(cmd: string): boolean {
  if (cmd.startsWith("/")) return isExecutable(cmd);
  return (process.env.PATH ?? "").split(":").some((d) => d !== "" && isExecutable(path.join(d, cmd)));
}

function isExecutable(p: string): boolean {
  try {
    fs.accessSync(p, fs.constants.X_OK);
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

/**
 * Throws (so every test of the suite fails, loudly) when a tool is missing or we are not root.
 * Real-tool tests never skip: a missing tool is a broken CI machine, not a reason to pass.
 */
/** What a builder plus a registry from the harness need. */
export const BUILDER_AND_REGISTRY_TOOLS = [
  "nix",
  "/bin/busybox",
  "ssh",
  "ssh-keygen",
  "/usr/sbin/sshd",
  "ip",
  "unshare",
  "/usr/bin/docker-registry",
  "htpasswd",
  "skopeo",
  "curl",
  "bash",
];
/** ... and a dockerd. */
export const DOCKERD_TOOLS = ["/usr/sbin/dockerd", "/usr/bin/docker", "/usr/sbin/docker-proxy"];

export function requireTools(cmds: string[], needRoot = true): void {
  for (const c of cmds) if (!(c in TOOLS)) throw new Error(`requireTools: unknown tool ${c}`);
  const missing = cmds.filter((c) => !onPath(c));
  const problems: string[] = [];
  if (missing.length) {
    const pkgs = [...new Set(missing.map((c) => TOOLS[c]))].join(" ");
    problems.push(`missing ${missing.join(", ")}: run tools/install-deps.sh (or apt-get install ${pkgs})`);
  }
  if (needRoot && process.getuid?.() !== 0) problems.push("must run as root (network namespaces, mounts, dockerd)");
  if (cmds.includes("nix")) problems.push(...nixConfProblems());
  if (problems.length) throw new Error(`real-tool tests cannot run here:\n  - ${problems.join("\n  - ")}`);
}

/** The suites' own Nix configuration (tests/run.sh exports NIX_CONF_DIR to it). */
export const NIX_CONF_DIR = path.join(HARNESS, "nix");

/**
 * Nix in these suites reads $NIX_CONF_DIR/nix.conf (never the machine's /etc/nix/nix.conf): what is
 * wrong with it, each with the fix.
 */
function nixConfProblems(): string[] {
  const fix = `run the suites through \`npm test\` (tests/run.sh exports it), or export NIX_CONF_DIR=${NIX_CONF_DIR}`;
  const dir = process.env.NIX_CONF_DIR;
  if (!dir) return [`NIX_CONF_DIR is not set, so Nix would read the machine's /etc/nix/nix.conf: ${fix}`];
  const file = path.join(dir, "nix.conf");
  if (!fs.existsSync(file)) return [`NIX_CONF_DIR=${dir} holds no nix.conf: ${fix}`];
  const conf = fs.readFileSync(file, "utf8");
  const needs: [RegExp, string][] = [
    [/^[ \t]*experimental-features[ \t]*=.*[ \t]nix-command\b/m, "experimental-features = nix-command flakes"],
    [/^[ \t]*experimental-features[ \t]*=.*[ \t]flakes\b/m, "experimental-features = nix-command flakes"],
    [/^[ \t]*substituters[ \t]*=[ \t]*$/m, "substituters ="],
    [/^[ \t]*build-users-group[ \t]*=[ \t]*$/m, "build-users-group ="],
    [
      /^[ \t]*extra-sandbox-paths[ \t]*=(?=.*[ \t]\/bin\/sh=\/bin\/busybox\b)(?=.*[ \t]\/bin\/busybox\b)/m,
      "extra-sandbox-paths = /bin/sh=/bin/busybox /bin/busybox",
    ],
  ];
  const missing = [...new Set(needs.filter(([re]) => !re.test(conf)).map(([, line]) => line))];
  return missing.length ? [`${file} lacks ${missing.map((l) => `\`${l}\``).join(", ")}: ${fix}`] : [];
}

export interface Result {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  seconds: number;
  timedOut: boolean;
}

export interface RunOptions {
  input?: string;
  /** Added to this process's environment. */
  env?: Record<string, string>;
  timeoutMs?: number;
  cwd?: string;
}

/**
 * Runs a program to completion. It gets its own process group, so a timeout kills it and whatever
 * it started (by that group's id, which is the child's PID), never anything else.
 */
export function run(file: string, args: string[], opts: RunOptions = {}): Promise<Result> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      cwd: opts.cwd ?? REPO,
      env: { ...process.env, ...opts.env },
      stdio: ["pipe", "pipe", "pipe"],
      detached: true,
    });
    let stdout = "";
    let stderr = "";
    let timedOut = false;
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    // A program that fails before reading all of stdin (ssh refused) closes the pipe: not our error.
    child.stdin.on("error", () => undefined);
    child.stdin.end(opts.input ?? "");
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch {
        /* already gone */
      }
    }, opts.timeoutMs ?? 120_000);
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, seconds: (Date.now() - started) / 1000, timedOut });
    });
  });
}

/** A local Command: pulumi-command runs `/bin/sh -c <command>` with the script on stdin. */
export function runLocal(sc: ScriptCommand, env: Record<string, string> = {}, timeoutMs?: number): Promise<Result> {
  return run("/bin/sh", ["-c", sc.command], { input: sc.stdin, env, timeoutMs });
}

/** A remote Command: the command string over SSH, the script on stdin. */
export function runRemote(b: BuilderEnv, sc: ScriptCommand, timeoutMs?: number): Promise<Result> {
  return run("ssh", ["-F", b.BUILDER_SSH_CONFIG, "builder", sc.command], { input: sc.stdin, timeoutMs });
}

/** A plain shell command on the builder, for checks (not a script under test). */
export function onBuilder(b: BuilderEnv, cmd: string, input?: string): Promise<Result> {
  return run("ssh", ["-F", b.BUILDER_SSH_CONFIG, "builder", cmd], { input, timeoutMs: 60_000 });
}

/** Readable summary of a Result for assertion messages. */
export function show(r: Result): string {
  return `exit ${r.code}${r.signal ? ` (signal ${r.signal})` : ""}${r.timedOut ? " TIMED OUT" : ""} after ${r.seconds.toFixed(1)}s\n--- stdout ---\n${r.stdout}--- stderr ---\n${r.stderr}`;
}

/** `s` as a literal inside a RegExp. */
export function reEscape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
}

/** Fails with the whole output when the command did not succeed; returns stdout. */
export function ok(r: Result, what: string): string {
  if (r.code !== 0) throw new Error(`${what} failed: ${show(r)}`);
  return r.stdout;
}

// ---------------------------------------------------------------- harness services

export interface BuilderEnv {
  BUILDER_ADDR: string;
  BUILDER_PORT: string;
  BUILDER_USER: string;
  BUILDER_KEY: string;
  BUILDER_HOST_KEY: string;
  BUILDER_HOST_KEY_B64: string;
  BUILDER_KNOWN_HOSTS: string;
  BUILDER_SSH_CONFIG: string;
  HOST_SIDE_ADDR: string;
  BUILDER_NETNS: string;
}
export interface RegistryEnv {
  REGISTRY_ADDR: string;
  REGISTRY_USER: string;
  REGISTRY_PASSWORD: string;
  REGISTRY_LOG: string;
}
export interface DockerEnv {
  DOCKER_HOST: string;
  DOCKER_BIN: string;
  DOCKER_CONFIG: string;
}

/** Reads a harness env file (`export NAME=<bash-quoted value>` lines) through bash itself. */
export async function readEnvFile(file: string): Promise<Record<string, string>> {
  const script =
    'set -e; source "$1"; for n in $(sed -n "s/^export \\([A-Za-z_][A-Za-z0-9_]*\\)=.*/\\1/p" "$1"); do printf "%s\\0%s\\0" "$n" "${!n}"; done';
  const r = await run("bash", ["-c", script, "read-env", file], { timeoutMs: 10_000 });
  ok(r, `reading ${file}`);
  const parts = r.stdout.split("\0");
  const env: Record<string, string> = {};
  for (let i = 0; i + 1 < parts.length; i += 2) env[parts[i]] = parts[i + 1];
  return env;
}

type HarnessScript = "builder.sh" | "registry.sh" | "dockerd.sh";

/**
 * The services one test file uses, each in its own STATE_DIR under one temp directory. `stopAll`
 * stops every service whose start was attempted (a failed start cleans up after itself, and stop
 * is idempotent), newest first, then removes the directory.
 */
export class Services {
  readonly dir: string;
  private started: { script: HarnessScript; state: string }[] = [];

  constructor() {
    // Short: dockerd's unix socket path under it must stay below 108 bytes.
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), "nrt-"));
  }

  async start(script: HarnessScript, name: string, args: string[] = [], env: Record<string, string> = {}): Promise<Record<string, string>> {
    const state = path.join(this.dir, name);
    this.started.push({ script, state });
    const r = await run(path.join(HARNESS, script), ["start", state, ...args], { env, timeoutMs: 90_000 });
    if (r.code !== 0) throw new Error(`tests/harness/${script} start ${name} failed: ${show(r)}`);
    return readEnvFile(path.join(state, "env"));
  }

  async builder(name = "builder"): Promise<BuilderEnv> {
    return (await this.start("builder.sh", name)) as unknown as BuilderEnv;
  }

  async registry(name: string, listen: string, env: Record<string, string> = {}): Promise<RegistryEnv> {
    return (await this.start("registry.sh", name, [listen], env)) as unknown as RegistryEnv;
  }

  async dockerd(name: string, insecureRegistry: string): Promise<DockerEnv> {
    return (await this.start("dockerd.sh", name, [insecureRegistry])) as unknown as DockerEnv;
  }

  async stop(name: string): Promise<void> {
    const s = this.started.find((x) => x.state === path.join(this.dir, name));
    if (!s) throw new Error(`Services.stop: ${name} was never started`);
    const r = await run(path.join(HARNESS, s.script), ["stop", s.state], { timeoutMs: 90_000 });
    if (r.code !== 0) throw new Error(`tests/harness/${s.script} stop ${name} failed: ${show(r)}`);
  }

  async stopAll(): Promise<void> {
    const errors: string[] = [];
    for (const s of [...this.started].reverse()) {
      const r = await run(path.join(HARNESS, s.script), ["stop", s.state], { timeoutMs: 90_000 });
      if (r.code !== 0) errors.push(`tests/harness/${s.script} stop ${s.state}: ${show(r)}`);
    }
    this.started = [];
    // Left in place when a stop failed: it may still hold a mount or a socket worth looking at.
    if (errors.length) throw new Error(`stopping the harness failed (state kept in ${this.dir}):\n${errors.join("\n")}`);
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- fixtures and settings

/**
 * A copy of the fixture flake whose www/version holds `marker`: a store path and image digest no
 * earlier run produced, so a build cannot be answered from a store that already has it.
 */
export function fixtureCopy(parent: string, marker: string): string {
  const dir = fs.mkdtempSync(path.join(parent, "flake-"));
  fs.cpSync(FIXTURE, dir, { recursive: true });
  fs.writeFileSync(path.join(dir, "www", "version"), `${marker}\n`);
  return dir;
}

export function uniqueMarker(what: string): string {
  return `${what}-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;
}

/** The eight-field Nix `builders` line for a harness builder (with `key` instead of its own). */
export function buildersLine(b: BuilderEnv, o: { addr?: string; key?: string } = {}): string {
  return `ssh-ng://${b.BUILDER_USER}@${o.addr ?? b.BUILDER_ADDR} x86_64-linux ${o.key ?? b.BUILDER_KEY} 1 1 - - ${b.BUILDER_HOST_KEY_B64}`;
}

/**
 * Stack settings through the program's own parser (defaults, validation and derived values
 * included). `sections` holds the structured config objects; builder and registry are passed as
 * secrets since they may carry a key or password.
 */
export function settings(sections: { builder?: object; image: object; registry?: object; neko?: object }): Settings {
  return parseSettings({
    config: configOf({ builder: { kind: "local" }, host: { kind: "none" }, ...sections }),
    secretKeys: ["neko-infra:builder", "neko-infra:registry"],
    projectDir: REPO,
    fileExists: (p) => fs.existsSync(p),
  });
}

export async function countUploads(reg: RegistryEnv, repo?: string): Promise<number> {
  const r = await run(path.join(HARNESS, "count-uploads.sh"), repo ? [reg.REGISTRY_LOG, repo] : [reg.REGISTRY_LOG], { timeoutMs: 10_000 });
  const out = ok(r, "count-uploads.sh").trim();
  if (!/^\d+$/.test(out)) throw new Error(`count-uploads.sh printed ${JSON.stringify(out)}`);
  return Number(out);
}

/** `skopeo inspect` (JSON, or raw manifest) of a ref in a harness registry. */
export async function inspectRemote(reg: RegistryEnv, ref: string, raw = false): Promise<Result> {
  return run(
    "skopeo",
    [
      "inspect",
      ...(raw ? ["--raw"] : []),
      "--tls-verify=false",
      "--creds",
      `${reg.REGISTRY_USER}:${reg.REGISTRY_PASSWORD}`,
      `docker://${ref}`,
    ],
    { timeoutMs: 60_000 },
  );
}

// ---------------------------------------------------------------- ports

function tcpFree(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once("error", () => resolve(false));
    s.listen(port, host, () => s.close(() => resolve(true)));
  });
}

function udpFree(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = dgram.createSocket("udp4");
    s.once("error", () => {
      s.close();
      resolve(false);
    });
    s.bind(port, host, () => s.close(() => resolve(true)));
  });
}

/** A free TCP port on `host` (the kernel's choice). */
export function freeTcpPort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, host, () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** neko's ports for one test container: an HTTP port and a small EPR range, all free on `host`. */
export async function freeNekoPorts(host = "127.0.0.1", eprSize = 3): Promise<{ httpPort: number; epr: string }> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const http = 20000 + Math.floor(Math.random() * 30000);
    const low = http + 1;
    const candidates = [tcpFree(http, host), ...Array.from({ length: eprSize }, (_, i) => udpFree(low + i, host))];
    if ((await Promise.all(candidates)).every(Boolean)) return { httpPort: http, epr: `${low}-${low + eprSize - 1}` };
  }
  throw new Error(`no free TCP port followed by ${eprSize} free UDP ports on ${host}`);
}
