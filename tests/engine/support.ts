/**
 * The real Pulumi engine (CLI, Node.js language host and the real command provider v1.2.1, from
 * tools/pulumi-offline.sh) over a copy of this project with a file backend, and what the suites
 * read from it: the operation on each resource from `--json` engine events, never from timing.
 */
import { execFileSync, spawn, spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { stringify } from "yaml";

export const ROOT = path.join(__dirname, "..", "..");
export const HARNESS = path.join(ROOT, "tests", "harness");

export interface Run {
  status: number;
  stdout: string;
  stderr: string;
  seconds: number;
}

export class Project {
  readonly work: string;
  readonly dir: string;
  readonly env: NodeJS.ProcessEnv;
  /** Wall seconds per kind of run, for the suite's closing line. */
  readonly timings: Record<string, number[]> = {};

  constructor(
    readonly stack: string,
    opts: { env?: NodeJS.ProcessEnv; files?: string[] } = {},
  ) {
    this.work = fs.mkdtempSync(path.join(os.tmpdir(), "neko-infra-engine-"));
    this.dir = path.join(this.work, "project");
    fs.mkdirSync(this.dir);
    fs.mkdirSync(path.join(this.work, "state"));
    for (const f of ["index.ts", "Pulumi.yaml", "package.json", "tsconfig.json", ...(opts.files ?? [])]) {
      fs.copyFileSync(path.join(ROOT, f), path.join(this.dir, f));
    }
    for (const d of ["lib", "components", "scripts", "lambda", "tools"])
      fs.cpSync(path.join(ROOT, d), path.join(this.dir, d), { recursive: true });
    fs.symlinkSync(path.join(ROOT, "node_modules"), path.join(this.dir, "node_modules"));
    // The Debian docker client matches the harness's dockerd (the newer one on PATH may not).
    const bin = path.join(this.work, "bin");
    fs.mkdirSync(bin);
    fs.symlinkSync("/usr/bin/docker", path.join(bin, "docker"));
    this.env = {
      ...process.env,
      PATH: `${bin}:${process.env.PATH}`,
      PULUMI_BACKEND_URL: `file://${this.work}/state`,
      PULUMI_CONFIG_PASSPHRASE: "engine-test",
      PULUMI_SKIP_UPDATE_CHECK: "true",
      PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION: "true",
      PULUMI_NODEJS_TRANSPILE_ONLY: "true", // tsc --noEmit type-checks once for the whole tree
      PULUMI_HOME: path.join(this.work, "pulumi-home"),
      ...opts.env,
    };
  }

  /** `pulumi ARGS` for this stack; `env` adds to the project's environment, `cwd` runs it elsewhere. */
  pulumi(args: string[], input?: string, kind?: string, env: NodeJS.ProcessEnv = {}, cwd = this.dir): Run {
    const start = process.hrtime.bigint();
    const stackArgs = args[0] === "version" ? [] : ["--stack", this.stack, "--non-interactive"];
    const r = spawnSync("pulumi", [...args, ...stackArgs], {
      cwd,
      env: { ...this.env, ...env },
      input,
      encoding: "utf8",
      maxBuffer: 64 << 20,
    });
    if (r.error) throw new Error(`cannot run pulumi (build it with: bash tools/pulumi-offline.sh): ${r.error.message}`);
    const run = { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr, seconds: Number(process.hrtime.bigint() - start) / 1e9 };
    if (kind) (this.timings[kind] ??= []).push(run.seconds);
    return run;
  }

  /**
   * The same, without blocking this process: for tests that serve something (a fake AWS API) from
   * it while pulumi runs.
   */
  pulumiAsync(args: string[]): Promise<Run> {
    const start = process.hrtime.bigint();
    return new Promise((resolve, reject) => {
      const child = spawn("pulumi", [...args, "--stack", this.stack, "--non-interactive"], { cwd: this.dir, env: this.env });
      let stdout = "";
      let stderr = "";
      child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
      child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
      child.on("error", reject);
      child.on("close", (code) => resolve({ status: code ?? -1, stdout, stderr, seconds: Number(process.hrtime.bigint() - start) / 1e9 }));
    });
  }

  /** `pulumi up` as JSON events; fails the test with the output when it fails. */
  up(what: string, kind?: string): Run {
    return must(this.pulumi(["up", "--yes", "--skip-preview", "--json"], undefined, kind), what);
  }

  outputs(): Record<string, string> {
    return JSON.parse(must(this.pulumi(["stack", "output", "--json"]), "stack output").stdout);
  }

  resourceCount(): number {
    const state = JSON.parse(must(this.pulumi(["stack", "export"]), "stack export").stdout);
    return (state.deployment.resources ?? []).length;
  }

  /** Writes Pulumi.<stack>.yaml with these config objects, then the secrets through `config set --secret`. */
  configure(config: Record<string, unknown>, secrets: Record<string, string> = {}): void {
    fs.writeFileSync(path.join(this.dir, `Pulumi.${this.stack}.yaml`), stringify({ config }));
    for (const [key, value] of Object.entries(secrets)) {
      must(this.pulumi(["config", "set", "--secret", "--path", key], value), `config set ${key}`);
    }
  }

  medians(): string {
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    return Object.entries(this.timings)
      .map(([k, xs]) => `${k} ${median(xs).toFixed(1)} (n=${xs.length})`)
      .join(", ");
  }

  remove(): void {
    fs.rmSync(this.work, { recursive: true, force: true });
  }
}

export function must(r: Run, what: string): Run {
  if (r.status !== 0) throw new Error(`${what} exited ${r.status}\n${r.stdout.slice(-6000)}\n${r.stderr.slice(-4000)}`);
  return r;
}

/** Operation per resource name from `--json` engine events; a replacement counts as one "replace". */
export function ops(r: Run): Record<string, string> {
  const result: Record<string, string> = {};
  for (const line of r.stdout.split("\n")) {
    if (!line.startsWith("{")) continue;
    const ev = JSON.parse(line);
    const md = ev.resOutputsEvent?.metadata ?? ev.resOpFailedEvent?.metadata;
    if (!md || md.type === "pulumi:pulumi:Stack" || md.type.startsWith("pulumi:providers:")) continue;
    result[md.urn.split("::").pop()] = /replace/.test(md.op) ? "replace" : md.op;
  }
  return result;
}

export function changed(r: Run): Record<string, string> {
  return Object.fromEntries(Object.entries(ops(r)).filter(([, op]) => op !== "same"));
}

export function summary(r: Run): Record<string, number> {
  const line = r.stdout.split("\n").find((l) => l.includes('"summaryEvent"'));
  if (!line) throw new Error(`no summary event in pulumi output:\n${r.stdout.slice(-2000)}\n${r.stderr.slice(-2000)}`);
  return JSON.parse(line).summaryEvent.resourceChanges;
}

/** `export NAME=value` lines of a harness env file, read through bash. */
export function sourceEnv(file: string): Record<string, string> {
  const out = execFileSync("bash", ["-c", `set -a; source "$1"; env -0`, "_", file]).toString();
  return Object.fromEntries(
    out
      .split("\0")
      .filter(Boolean)
      .map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)]),
  );
}

/** Starts a harness service (tests/harness/<script> start STATE ...args) and returns its env. */
export function startService(
  script: string,
  state: string,
  args: string[] = [],
  env: NodeJS.ProcessEnv = process.env,
): Record<string, string> {
  execFileSync("bash", [path.join(HARNESS, script), "start", state, ...args], { stdio: "inherit", env });
  return sourceEnv(path.join(state, "env"));
}

export function stopService(script: string, state: string): void {
  spawnSync("bash", [path.join(HARNESS, script), "stop", state], { stdio: "inherit" });
}

/** Processes whose command line names `dir` (none may be left after a destroy). */
export function processesUnder(dir: string): string[] {
  return execFileSync("ps", ["-eo", "pid,args"])
    .toString()
    .split("\n")
    .filter((l) => l.includes(dir) && !l.includes("ps -eo"));
}

/** GET http://127.0.0.1:<port><path>, or undefined when nothing answers. */
export async function httpGet(port: number, p: string): Promise<string | undefined> {
  try {
    const r = await fetch(`http://127.0.0.1:${port}${p}`, { signal: AbortSignal.timeout(3000) });
    return r.ok ? (await r.text()).trim() : undefined;
  } catch {
    return undefined;
  }
}
