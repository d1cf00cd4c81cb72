/**
 * The whole pipeline through the real Pulumi engine (CLI and language host built from Go modules,
 * the real command provider v1.2.1): an `ssh` builder that sleeps and is woken by its
 * wake command (the namespaced builder of tests/harness, its own /nix and sshd), an OCI registry
 * (htpasswd, tests/harness/registry.sh) and a `local` host (the harness's dockerd). Everything the
 * program registers here is a Command: no AWS, docker, tls or random resource (the secrets are
 * given). What each `up` did is read from the engine's JSON events.
 */
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { fixtureCopy, freeNekoPorts, uniqueMarker } from "../realtool/support";
import { changed, HARNESS, httpGet, must, ops, processesUnder, Project, startService, stopService, summary } from "./support";

jest.setTimeout(900_000);

const p = new Project("engine");
const flake = fixtureCopy(p.work, uniqueMarker("engine-pipeline"));
const builderState = path.join(p.work, "builder");
const registryState = path.join(p.work, "registry");
const dockerState = path.join(p.work, "docker");
const wakeLog = path.join(p.work, "wakes.log");
let h: Record<string, string> = {};
let ports: { httpPort: number; epr: string };
const secrets = { userPassword: "user-pass-1234", adminPassword: "admin-pass-1234", apiToken: "api-token-0123456789abcdef" };

function configure(overrides: Record<string, unknown> = {}) {
  p.configure(
    {
      "neko-infra:builder": {
        kind: "ssh",
        host: h.BUILDER_ADDR,
        user: h.BUILDER_USER,
        hostKey: h.BUILDER_HOST_KEY,
        // what an operator would give: a command that starts the machine (here, its sshd)
        wakeCommand: `bash ${HARNESS}/builder.sh wake ${builderState} && echo woken >>${wakeLog}`,
        readyTimeout: 60,
      },
      "neko-infra:image": { flake, attr: "image" },
      "neko-infra:registry": { kind: "oci", url: `${h.REGISTRY_ADDR}/neko`, username: h.REGISTRY_USER, insecure: true },
      "neko-infra:host": { kind: "local" },
      "neko-infra:neko": { httpPort: ports.httpPort, webrtc: { epr: ports.epr } },
      ...overrides,
    },
    {
      "builder.privateKey": fs.readFileSync(h.BUILDER_KEY, "utf8"),
      "registry.password": h.REGISTRY_PASSWORD,
      "neko.userPassword": secrets.userPassword,
      "neko.adminPassword": secrets.adminPassword,
      "neko.apiToken": secrets.apiToken,
    },
  );
}

const wakes = () => (fs.existsSync(wakeLog) ? fs.readFileSync(wakeLog, "utf8").trim().split("\n").filter(Boolean).length : 0);

beforeAll(async () => {
  must(p.pulumi(["version"]), "pulumi version"); // fails loudly without the toolchain
  const b = startService("builder.sh", builderState);
  const r = startService("registry.sh", registryState, [`${b.HOST_SIDE_ADDR}:5000`]);
  const d = startService("dockerd.sh", dockerState, [r.REGISTRY_ADDR]);
  h = { ...b, ...r, ...d };
  p.env.DOCKER_HOST = d.DOCKER_HOST;
  ports = await freeNekoPorts("127.0.0.1", 3);
  must(p.pulumi(["stack", "init"]), "stack init");
  configure();
});

afterAll(() => {
  try {
    if (fs.existsSync(path.join(p.dir, "Pulumi.engine.yaml"))) p.pulumi(["destroy", "--yes", "--skip-preview"]);
  } finally {
    stopService("dockerd.sh", dockerState);
    stopService("registry.sh", registryState);
    stopService("builder.sh", builderState);
    console.log(`engine timings (s, median of this run): ${p.medians()}`);
    p.remove();
  }
});

const STEPS = [
  "image-ship-wake",
  "image-ship",
  "image-build-wake",
  "image-build",
  "registry-push-wake",
  "registry-push",
  "host-neko-wake",
  "host-neko",
];

test("a. the first up builds on the builder, pushes, and neko answers on the published port", async () => {
  const r = p.up("first up", "up (create)");
  expect(summary(r)).toEqual({ create: 5 + STEPS.length }); // the stack, four components, the steps
  expect(Object.keys(changed(r)).sort()).toEqual(["builder", "host", "image", "registry", ...STEPS].sort());
  const o = p.outputs();
  expect(o.imageRef).toMatch(new RegExp(`^${h.REGISTRY_ADDR.replace(/\./g, "\\.")}/neko@sha256:[0-9a-f]{64}$`));
  expect(o.url).toBe(`http://localhost:${ports.httpPort}/`);
  // the archive was built on the builder, in its own store, not here
  expect(fs.existsSync(o.storePath)).toBe(false);
  expect(await httpGet(ports.httpPort, "/health")).toBe("true");
  expect(await httpGet(ports.httpPort, "/version")).toContain("engine-pipeline");
});

test("b. nothing changed: preview expects no changes, up runs no command, also with --refresh", () => {
  // NEKO_INFRA_BENCH_CYCLES (tools/bench-engine.sh) repeats the no-change runs for steadier medians.
  const cycles = Number(process.env.NEKO_INFRA_BENCH_CYCLES ?? 3);
  for (let i = 0; i < cycles; i++) must(p.pulumi(["preview", "--expect-no-changes"], undefined, "preview (no change)"), "preview");
  for (let i = 1; i < cycles; i++) expect(changed(p.up("no-change up", "up (no change)"))).toEqual({});
  // A preview writes nothing: not into the project, not into its own empty TMPDIR (but for ts-node's
  // compile cache, which the language host keeps there for any TypeScript program).
  const tmp = fs.mkdtempSync(path.join(p.work, "preview-tmp-"));
  const before = files(p.dir);
  must(p.pulumi(["preview", "--refresh", "--expect-no-changes"], undefined, undefined, { TMPDIR: tmp }), "preview --refresh");
  expect(files(p.dir)).toEqual(before);
  expect(fs.readdirSync(tmp).filter((f) => !f.startsWith("ts-node-"))).toEqual([]);
  expect(changed(p.up("second up", "up (no change)"))).toEqual({});
  const refreshed = must(p.pulumi(["up", "--yes", "--skip-preview", "--refresh", "--json"]), "up --refresh");
  expect(changed(refreshed)).toEqual({});
  expect(wakes()).toBe(0);
});

test("c. a sleeping builder: a no-op up leaves it asleep; a flake change wakes it once, builds and pushes once, and rolls neko over", async () => {
  execFileSync("bash", [path.join(HARNESS, "builder.sh"), "sleep", builderState], { stdio: "inherit" });
  must(p.pulumi(["preview", "--expect-no-changes"]), "preview with the builder asleep");
  expect(changed(p.up("no-op up with the builder asleep"))).toEqual({});
  expect(wakes()).toBe(0);

  const before = p.outputs().imageRef;
  fs.writeFileSync(path.join(flake, "www", "version"), "engine-pipeline-2\n");
  const r = p.up("up after a content change");
  expect(wakes()).toBe(1);
  // each step's wake step runs (the first wakes the builder, the others find it awake), the copy
  // of the flake is replaced (its trigger, the content hash, changed), the rest update
  expect(changed(r)).toEqual({
    "image-ship-wake": "replace",
    "image-ship": "replace",
    "image-build-wake": "replace",
    "image-build": "update",
    "registry-push-wake": "replace",
    "registry-push": "update",
    "host-neko-wake": "replace",
    "host-neko": "update",
  });
  expect(p.outputs().imageRef).not.toBe(before);
  expect(await httpGet(ports.httpPort, "/version")).toBe("engine-pipeline-2");
  expect(changed(p.up("up after that", "up (no change)"))).toEqual({});
});

/** When the running neko started: a rollout that changes nothing must not restart it. */
const startedAt = () =>
  execFileSync("/usr/bin/docker", ["inspect", "--format", "{{.State.StartedAt}}", "neko"], {
    env: { ...process.env, DOCKER_HOST: h.DOCKER_HOST },
  })
    .toString()
    .trim();

test("d. an image that crashes fails the up at its candidate; the running neko keeps serving", async () => {
  const started = startedAt();
  configure({ "neko-infra:image": { flake, attr: "image-crash" } });
  const r = p.pulumi(["up", "--yes", "--skip-preview"]);
  expect(r.status).not.toBe(0);
  const out = r.stdout + r.stderr;
  expect(out).toMatch(/neko-rollout: the candidate neko-candidate exited with code 1/);
  expect(out).toContain("neko: fatal: cannot open display");
  expect(out).toContain("the new image was not rolled out; the running neko was not touched");
  expect(out).not.toContain(secrets.adminPassword);
  expect(await httpGet(ports.httpPort, "/version")).toBe("engine-pipeline-2");
  expect(startedAt()).toBe(started);
  configure();
  // The failed step may run again (the engine keeps what a failed update was asked for); it finds
  // the image it asks for running and restarts nothing.
  const back = p.up("up with the good image again");
  if (ops(back)["host-neko"] === "update") expect(back.stdout).toMatch(/neko unchanged sha256:[0-9a-f]{64} http:/);
  expect(startedAt()).toBe(started);
  must(p.pulumi(["preview", "--expect-no-changes"]), "preview after restoring the attr");
});

test("e. builder.enabled: false changes only the builder's side; changing the image then fails with the way out", () => {
  configure({
    "neko-infra:builder": {
      kind: "ssh",
      enabled: false,
      host: h.BUILDER_ADDR,
      user: h.BUILDER_USER,
      hostKey: h.BUILDER_HOST_KEY,
      wakeCommand: `bash ${HARNESS}/builder.sh wake ${builderState} && echo woken >>${wakeLog}`,
      readyTimeout: 60,
    },
  });
  const r = p.up("up with the builder disabled");
  // the wake steps learn that the builder is off (an update that runs nothing); no step runs
  expect(changed(r)).toEqual({ "image-ship-wake": "update", "image-build-wake": "update", "registry-push-wake": "update" });
  fs.writeFileSync(path.join(flake, "www", "version"), "engine-pipeline-3\n");
  const failed = p.pulumi(["up", "--yes", "--skip-preview"]);
  expect(failed.status).not.toBe(0);
  expect(failed.stdout + failed.stderr).toContain("the builder is disabled (builder.enabled: false)");
  expect(failed.stdout + failed.stderr).toContain("npm run builder:up -- engine");
  fs.writeFileSync(path.join(flake, "www", "version"), "engine-pipeline-2\n");
  configure();
  expect(changed(p.up("up with the builder enabled again"))).toEqual({
    "image-ship-wake": "update",
    "image-build-wake": "update",
    "registry-push-wake": "update",
  });
});

test("f. bad config fails with the settings error, exit non-zero, nothing registered", () => {
  const before = p.resourceCount();
  configure({ "neko-infra:host": { kind: "local", gpu: "yes" }, "neko-infra:neko": { webrtc: { epr: "9000-8000" } } });
  for (const cmd of [["preview"], ["up", "--yes", "--skip-preview"]]) {
    const r = p.pulumi(cmd);
    expect(r.status).not.toBe(0);
    const out = r.stdout + r.stderr;
    expect(out).toContain("invalid stack configuration (2 problems)");
    expect(out).toContain(`neko-infra:host.gpu: "yes" is text; use true or false: pulumi config set --path 'host.gpu' true`);
    expect(out).toContain("neko-infra:neko.webrtc.epr: 9000-8000 has its low port above its high port");
  }
  expect(p.resourceCount()).toBe(before);
  configure();
  must(p.pulumi(["preview", "--expect-no-changes"]), "preview after restoring the config");
});

test("g. destroy, from a machine that never ran the program, takes neko off the host and leaves an empty stack and no process behind", async () => {
  // Another machine: a directory with only the project and stack files (no program, no scripts, no
  // node_modules, nothing the program could have written) and a fresh Pulumi home.
  const elsewhere = fs.mkdtempSync(path.join(p.work, "elsewhere-"));
  for (const f of ["Pulumi.yaml", "Pulumi.engine.yaml"]) fs.copyFileSync(path.join(p.dir, f), path.join(elsewhere, f));
  const r = must(
    p.pulumi(["destroy", "--yes", "--skip-preview"], undefined, "destroy", { PULUMI_HOME: path.join(elsewhere, ".pulumi") }, elsewhere),
    "destroy",
  );
  expect(r.status).toBe(0);
  expect(p.resourceCount()).toBe(0);
  expect(await httpGet(ports.httpPort, "/health")).toBeUndefined();
  stopService("dockerd.sh", dockerState);
  stopService("registry.sh", registryState);
  stopService("builder.sh", builderState);
  expect(processesUnder(p.work)).toEqual([]);
});

/** Every path below `dir` (symlinks not followed), sorted. */
function files(dir: string): string[] {
  return (fs.readdirSync(dir, { recursive: true }) as string[]).filter((f) => !f.startsWith("node_modules")).sort();
}
