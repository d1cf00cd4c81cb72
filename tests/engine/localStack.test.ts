/**
 * The `local` stack through the real Pulumi engine (CLI, Node.js language host, command provider
 * from tools/pulumi-offline.sh) with a file backend: ssh builder = the namespaced builder of the
 * real-tool harness, oci registry = the harness registry, host kind none. Registers no AWS or
 * docker resource. Changes are read from the engine's JSON events, never from timing.
 */
import { execFileSync, spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { stringify } from "yaml";
import { fixtureCopy, uniqueMarker } from "../realtool/support";

const ROOT = path.join(__dirname, "..", "..");
const HARNESS = path.join(ROOT, "tests", "harness");
jest.setTimeout(600_000);

const work = fs.mkdtempSync(path.join(os.tmpdir(), "neko-infra-engine-"));
const project = path.join(work, "project");
// A store path no earlier run left in the local store (test a checks it is not there).
const flake = fixtureCopy(work, uniqueMarker("engine"));
const builderState = path.join(work, "builder");
const registryState = path.join(work, "registry");
const env: NodeJS.ProcessEnv = {
  ...process.env,
  PULUMI_BACKEND_URL: `file://${work}/state`,
  PULUMI_CONFIG_PASSPHRASE: "engine-test",
  PULUMI_SKIP_UPDATE_CHECK: "true",
  PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION: "true",
  PULUMI_NODEJS_TRANSPILE_ONLY: "true", // tsc --noEmit type-checks once for the whole tree
  PULUMI_HOME: path.join(work, "pulumi-home"),
  NEKO_INFRA_SSH_DIR: path.join(work, "ssh"),
};
let harness: Record<string, string> = {};
/** Wall seconds per kind of run: `up` that creates everything, `up` with nothing to do, and so on. */
const timings: Record<string, number[]> = { "up (create)": [], "up (no change)": [], "preview (no change)": [], destroy: [] };

interface Run {
  status: number;
  stdout: string;
  stderr: string;
  seconds: number;
}

function pulumi(args: string[], input?: string): Run {
  const start = process.hrtime.bigint();
  const r = spawnSync("pulumi", [...args, "--stack", "local", "--non-interactive"], {
    cwd: project,
    env,
    input,
    encoding: "utf8",
    maxBuffer: 64 << 20,
  });
  if (r.error) throw new Error(`cannot run pulumi (build it with: bash tools/pulumi-offline.sh): ${r.error.message}`);
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr, seconds: Number(process.hrtime.bigint() - start) / 1e9 };
}

function must(r: Run, what: string): Run {
  if (r.status !== 0) throw new Error(`${what} exited ${r.status}\n${r.stdout.slice(-4000)}\n${r.stderr.slice(-4000)}`);
  return r;
}

/** Operations per resource name from `up --json` engine events (resOutputsEvent carries the op). */
function ops(r: Run): Record<string, string> {
  const result: Record<string, string> = {};
  for (const line of r.stdout.split("\n")) {
    if (!line.startsWith("{")) continue;
    const ev = JSON.parse(line);
    const md = ev.resOutputsEvent?.metadata ?? ev.resOpFailedEvent?.metadata;
    if (!md || md.type === "pulumi:pulumi:Stack" || md.type.startsWith("pulumi:providers:")) continue;
    // a replacement shows as create-replacement, replace, delete-replaced: one "replace"
    result[md.urn.split("::").pop()] = /replace/.test(md.op) ? "replace" : md.op;
  }
  return result;
}

function changed(r: Run): Record<string, string> {
  return Object.fromEntries(Object.entries(ops(r)).filter(([, op]) => op !== "same"));
}

function summary(r: Run): Record<string, number> {
  const line = r.stdout.split("\n").find((l) => l.includes('"summaryEvent"'));
  if (!line) throw new Error(`no summary event in pulumi output:\n${r.stdout.slice(-2000)}\n${r.stderr.slice(-2000)}`);
  return JSON.parse(line).summaryEvent.resourceChanges;
}

function up(what: string, kind?: "up (create)" | "up (no change)"): Run {
  const r = must(pulumi(["up", "--yes", "--skip-preview", "--json"]), what);
  if (kind) timings[kind].push(r.seconds);
  return r;
}

function outputs(): Record<string, string> {
  return JSON.parse(must(pulumi(["stack", "output", "--json"]), "stack output").stdout);
}

function resourceCount(): number {
  const state = JSON.parse(must(pulumi(["stack", "export"]), "stack export").stdout);
  return (state.deployment.resources ?? []).length;
}

function writeStackConfig(overrides: Record<string, unknown> = {}) {
  const config = {
    "neko-infra:builder": { kind: "ssh", host: harness.BUILDER_ADDR, user: harness.BUILDER_USER, hostKey: harness.BUILDER_HOST_KEY },
    "neko-infra:image": { flake, attr: "image" },
    "neko-infra:registry": { kind: "oci", url: `${harness.REGISTRY_ADDR}/neko`, username: harness.REGISTRY_USER, insecure: true },
    "neko-infra:host": { kind: "none" },
    ...overrides,
  };
  fs.writeFileSync(path.join(project, "Pulumi.local.yaml"), stringify({ config }));
  must(
    pulumi(["config", "set", "--secret", "--path", "builder.privateKey"], fs.readFileSync(harness.BUILDER_KEY, "utf8")),
    "config set key",
  );
  must(pulumi(["config", "set", "--secret", "--path", "registry.password"], harness.REGISTRY_PASSWORD), "config set password");
}

function sourceEnv(file: string): Record<string, string> {
  const out = execFileSync("bash", ["-c", `set -a; source "$1"; env -0`, "_", file]).toString();
  return Object.fromEntries(
    out
      .split("\0")
      .filter(Boolean)
      .map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)]),
  );
}

function skopeoDigest(ref: string): { digest: string; platform: string } {
  const out = execFileSync("skopeo", [
    "inspect",
    "--tls-verify=false",
    "--creds",
    `${harness.REGISTRY_USER}:${harness.REGISTRY_PASSWORD}`,
    `docker://${ref}`,
  ]).toString();
  const doc = JSON.parse(out);
  return { digest: doc.Digest, platform: `${doc.Os}/${doc.Architecture}` };
}

beforeAll(() => {
  execFileSync("pulumi", ["version"], { env }); // fails loudly without the toolchain
  execFileSync("bash", [path.join(HARNESS, "builder.sh"), "start", builderState], { stdio: "inherit" });
  const b = sourceEnv(path.join(builderState, "env"));
  execFileSync("bash", [path.join(HARNESS, "registry.sh"), "start", registryState, `${b.HOST_SIDE_ADDR}:5000`], { stdio: "inherit" });
  harness = { ...b, ...sourceEnv(path.join(registryState, "env")) };

  fs.mkdirSync(project);
  fs.mkdirSync(path.join(work, "state"));
  for (const f of ["index.ts", "Pulumi.yaml", "package.json", "tsconfig.json"]) fs.copyFileSync(path.join(ROOT, f), path.join(project, f));
  for (const d of ["lib", "components", "scripts"]) fs.cpSync(path.join(ROOT, d), path.join(project, d), { recursive: true });
  fs.symlinkSync(path.join(ROOT, "node_modules"), path.join(project, "node_modules"));

  must(pulumi(["stack", "init"]), "stack init");
  writeStackConfig();
});

function stopServices() {
  spawnSync("bash", [path.join(HARNESS, "registry.sh"), "stop", registryState], { stdio: "inherit" });
  spawnSync("bash", [path.join(HARNESS, "builder.sh"), "stop", builderState], { stdio: "inherit" });
}

afterAll(() => {
  try {
    if (fs.existsSync(path.join(project, "Pulumi.local.yaml"))) pulumi(["destroy", "--yes", "--skip-preview"]);
  } finally {
    stopServices();
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    console.log(
      "engine timings (s, median of this run): " +
        Object.entries(timings)
          .filter(([, xs]) => xs.length)
          .map(([k, xs]) => `${k} ${median(xs).toFixed(1)} (n=${xs.length})`)
          .join(", "),
    );
    fs.rmSync(work, { recursive: true, force: true });
  }
});

let firstRef = "";

test("a. up builds on the builder and pushes; imageRef carries the digest skopeo sees", () => {
  const r = up("first up", "up (create)");
  expect(summary(r)).toEqual({ create: 8 }); // the stack and the seven below
  expect(changed(r)).toEqual({
    builder: "create",
    "builder-ready": "create",
    image: "create",
    "image-ship": "create",
    "image-build": "create",
    registry: "create",
    "registry-push": "create",
  });
  const o = outputs();
  expect(o.imageRef).toMatch(new RegExp(`^${harness.REGISTRY_ADDR.replace(/\./g, "\\.")}/neko@sha256:[0-9a-f]{64}$`));
  expect(o.storePath).toMatch(/^\/nix\/store\/[0-9a-z]{32}-/);
  expect(skopeoDigest(o.imageRef)).toEqual({ digest: o.imageRef.split("@")[1], platform: "linux/amd64" });
  // the archive was built on the builder, in its own store, not here
  expect(fs.existsSync(o.storePath)).toBe(false);
  firstRef = o.imageRef;
});

test("b. right after, preview expects no changes and a second up runs no command", () => {
  const p = pulumi(["preview", "--expect-no-changes"]);
  timings["preview (no change)"].push(p.seconds);
  must(p, "preview --expect-no-changes");
  for (let i = 0; i < 2; i++) timings["preview (no change)"].push(must(pulumi(["preview", "--expect-no-changes"]), "preview").seconds);
  const r = up("second up", "up (no change)");
  expect(changed(r)).toEqual({});
  expect(Object.keys(summary(r))).toEqual(["same"]);
});

test("c. changing the flake's content rebuilds and pushes exactly once, nothing else", () => {
  fs.writeFileSync(path.join(flake, "www", "version"), "2");
  const r = up("up after a content change");
  // the copy of the flake is replaced (its trigger, the content hash, changed); the rest updates
  expect(changed(r)).toEqual({ "image-ship": "replace", "image-build": "update", "registry-push": "update" });
  const ref = outputs().imageRef;
  expect(ref).not.toBe(firstRef);
  expect(skopeoDigest(ref).digest).toBe(ref.split("@")[1]);
  expect(changed(up("up after that", "up (no change)"))).toEqual({});
  firstRef = ref;
});

test("a failing build fails the up with Nix's error, and leaves the stack as it was", () => {
  writeStackConfig({ "neko-infra:image": { flake, attr: "broken" } });
  const r = pulumi(["up", "--yes", "--skip-preview"]);
  expect(r.status).not.toBe(0);
  expect(r.stdout + r.stderr).toContain("fixture build failure");
  expect(r.stdout + r.stderr).toContain("nix-build: building");
  writeStackConfig();
  must(pulumi(["preview", "--expect-no-changes"]), "preview after restoring the attr");
  expect(outputs().imageRef).toBe(firstRef);
});

test("d. builder.enabled: false removes the builder-side resources only; imageRef unchanged", () => {
  writeStackConfig({
    "neko-infra:builder": {
      kind: "ssh",
      enabled: false,
      host: harness.BUILDER_ADDR,
      user: harness.BUILDER_USER,
      hostKey: harness.BUILDER_HOST_KEY,
    },
  });
  const r = up("up with the builder disabled");
  expect(changed(r)).toEqual({ "builder-ready": "delete" });
  expect(outputs().imageRef).toBe(firstRef);
  writeStackConfig();
  expect(changed(up("up with the builder enabled again"))).toEqual({ "builder-ready": "create" });
  expect(outputs().imageRef).toBe(firstRef);
});

test("e. bad config fails with the settings error, exit non-zero, nothing registered", () => {
  const before = resourceCount();
  writeStackConfig({ "neko-infra:host": { kind: "none", gpu: true }, "neko-infra:neko": { webrtc: { epr: "9000-8000" } } });
  for (const cmd of [["preview"], ["up", "--yes", "--skip-preview"]]) {
    const r = pulumi(cmd);
    expect(r.status).not.toBe(0);
    expect(r.stdout + r.stderr).toContain("invalid stack configuration (2 problems)");
    expect(r.stdout + r.stderr).toContain("neko-infra:host.gpu: unknown key");
    expect(r.stdout + r.stderr).toContain("neko-infra:neko.webrtc.epr: 9000-8000 has its low port above its high port");
  }
  expect(resourceCount()).toBe(before);
  writeStackConfig();
  must(pulumi(["preview", "--expect-no-changes"]), "preview after restoring the config");
});

test("f. destroy leaves an empty stack and no process behind", () => {
  const r = must(pulumi(["destroy", "--yes", "--skip-preview"]), "destroy");
  timings.destroy.push(r.seconds);
  expect(resourceCount()).toBe(0);
  // NEKO_INFRA_BENCH_CYCLES=N (tools/bench-engine.sh) repeats create, no-op preview and destroy.
  for (let i = 1; i < Number(process.env.NEKO_INFRA_BENCH_CYCLES ?? 1); i++) {
    up("benchmark up", "up (create)");
    up("benchmark no-op up", "up (no change)");
    timings["preview (no change)"].push(must(pulumi(["preview", "--expect-no-changes"]), "benchmark preview").seconds);
    timings.destroy.push(must(pulumi(["destroy", "--yes", "--skip-preview"]), "benchmark destroy").seconds);
  }
  stopServices();
  const leftovers = execFileSync("ps", ["-eo", "pid,args"])
    .toString()
    .split("\n")
    .filter((l) => l.includes(work) && !l.includes("ps -eo"));
  expect(leftovers).toEqual([]);
});
