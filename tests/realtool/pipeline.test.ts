/**
 * The build and publish path against the real tools, each script run as its Pulumi Command runs it:
 * command line and stdin from `scriptCommand` (remote ones bounded by `timeout` on the machine, as
 * components/runScript.ts runs them), over SSH to a namespaced Nix builder (its own /nix), or
 * through `/bin/sh -c` on this machine. Services come from tests/harness.
 *
 * The tests of a describe run in order and hand results on (store path -> image ref).
 */
import * as fs from "fs";
import * as path from "path";
import { Settings } from "../../lib/settings";
import { pushEnv } from "../../lib/registry";
import { scriptCommand } from "../../lib/shell";
import {
  BUILDER_AND_REGISTRY_TOOLS,
  DOCKERD_TOOLS,
  BuilderEnv,
  buildersLine,
  DockerEnv,
  FIXTURE,
  fixtureCopy,
  freeTcpPort,
  inspectRemote,
  ok,
  onBuilder,
  RegistryEnv,
  requireTools,
  run,
  runLocal,
  runRemote,
  Services,
  settings,
  show,
  countUploads,
  reEscape,
  uniqueMarker,
} from "./support";

jest.setTimeout(120_000);

/** The budgets components/nixImage.ts and components/imageRegistry.ts give these steps. */
const BUILD_BUDGET = 7200;
const PUSH_BUDGET = 3600;
/** What imageRegistry.ts names the local stack's image (registry kind docker). */
const LOCAL_IMAGE_NAME = "neko-infra/neko";

const svc = new Services();
let b: BuilderEnv;
let reg: RegistryEnv;
let dk: DockerEnv;
/** Output of one step that a later step needs; a missing one names the step that failed. */
const handoff: Record<string, string> = {};
const need = (k: string): string => {
  const v = handoff[k];
  if (v === undefined) throw new Error(`prerequisite missing: ${k} (an earlier test failed)`);
  return v;
};
/** Store paths this suite added to the local store (removed again in afterAll). */
const localOutputs: string[] = [];

beforeAll(async () => {
  requireTools([...BUILDER_AND_REGISTRY_TOOLS, ...DOCKERD_TOOLS]);
  b = await svc.builder();
  reg = await svc.registry("registry", `${b.HOST_SIDE_ADDR}:${await freeTcpPort(b.HOST_SIDE_ADDR)}`);
  dk = await svc.dockerd("docker", reg.REGISTRY_ADDR);
}, 180_000);

afterAll(async () => {
  for (const p of localOutputs) await run("nix", ["store", "delete", p], { timeoutMs: 30_000 }).catch(() => undefined);
  await svc.stopAll();
}, 180_000);

/** The stack's settings for this run: an `ssh` builder, an `oci` registry with basic auth. */
function stack(): Settings {
  return settings({
    builder: {
      kind: "ssh",
      host: b.BUILDER_ADDR,
      port: Number(b.BUILDER_PORT),
      user: b.BUILDER_USER,
      privateKey: fs.readFileSync(b.BUILDER_KEY, "utf8"),
      hostKey: b.BUILDER_HOST_KEY,
    },
    image: { flake: FIXTURE, attr: "image" },
    registry: {
      kind: "oci",
      url: `${reg.REGISTRY_ADDR}/neko`,
      username: reg.REGISTRY_USER,
      password: reg.REGISTRY_PASSWORD,
      insecure: true,
    },
  });
}

/** Environment of a local Command on the operator's machine: keep build logs in the temp dir. */
const localEnv = () => ({ NEKO_INFRA_LOG_DIR: path.join(svc.dir, "logs") });
/** ... and for its Docker engine: the harness engine, its own (Debian, same version) client first on PATH. */
const dockerEnv = () => ({
  ...localEnv(),
  DOCKER_HOST: dk.DOCKER_HOST,
  DOCKER_CONFIG: dk.DOCKER_CONFIG,
  PATH: `${path.dirname(dk.DOCKER_BIN)}:${process.env.PATH}`,
});
const docker = (args: string[]) => run(dk.DOCKER_BIN, args, { env: dockerEnv(), timeoutMs: 60_000 });

/** A store path on this machine: `nix-build.sh` run locally, as for a `local` builder. */
async function buildHere(dir: string, attr: string): Promise<string> {
  const r = await runLocal(scriptCommand({ script: "nix-build.sh", args: [`path:${dir}`, attr] }), localEnv());
  const out = ok(r, `nix-build.sh ${attr} here`).trim();
  localOutputs.push(out);
  return out;
}

/** A nix-build.sh run's stderr: the log's path first, the done line last. */
function expectBuildStderr(stderr: string, ref: string, storePath: string, host = "\\S+") {
  const lines = stderr.trimEnd().split("\n");
  expect(lines[0]).toMatch(new RegExp(`^nix-build: building ${reEscape(ref)} on ${host}; full log: ${host}:/\\S+/build-\\S+\\.log$`));
  expect(lines[lines.length - 1]).toMatch(new RegExp(`^nix-build: built ${reEscape(storePath)} in \\d+s$`));
}

describe("build", () => {
  test("builder kind local with a remote builder: nix-build.sh builds on the builder, returns a local docker-archive", async () => {
    // A copy with its own www/version: a store path no store holds yet, so the build cannot be
    // answered locally and has to go to the builder.
    const dir = fixtureCopy(svc.dir, uniqueMarker("remote-build"));
    const s = settings({ builder: { kind: "local", remoteBuilders: buildersLine(b) }, image: { flake: dir, attr: "image" } });
    if (s.builder.kind !== "local" || !s.builder.remoteBuilders) throw new Error("expected a local builder with remoteBuilders");
    expect(s.image.localPath).toBe(dir);
    // As components/nixImage.ts: a local flake is built as path:<dir>, remoteBuilders -> NIX_BUILDERS.
    const sc = scriptCommand({
      script: "nix-build.sh",
      args: [`path:${s.image.localPath}`, s.image.attr],
      env: { NIX_BUILDERS: s.builder.remoteBuilders },
      budgetSeconds: BUILD_BUDGET,
    });
    // Secrets and settings travel on stdin: the command line names only what is built.
    expect(sc.command).toBe(`bash -s -- path:${dir} image`);
    const r = await runLocal(sc, localEnv());
    expect(show(r)).toMatch(/^exit 0 /);
    expect(r.stdout).toMatch(/^\/nix\/store\/[0-9a-z]{32}-neko-fixture-image\.tar\n$/);
    const out = r.stdout.trim();
    localOutputs.push(out);
    expectBuildStderr(r.stderr, `path:${dir}#image`, out);
    expect(fs.statSync(out).isFile()).toBe(true);
    const inspect = JSON.parse(ok(await run("skopeo", ["inspect", `docker-archive:${out}`]), "skopeo inspect docker-archive"));
    expect({ os: inspect.Os, arch: inspect.Architecture, layers: inspect.Layers.length }).toEqual({
      os: "linux",
      arch: "amd64",
      layers: 1,
    });
    // Built there: the builder's own store holds the output (it only gets what is copied or built there).
    expect(show(await onBuilder(b, `test -f ${out}`))).toMatch(/^exit 0 /);
  });

  test("builder kind local: a flake given relative to the project directory (./flake) builds the same", async () => {
    const parent = fs.mkdtempSync(path.join(svc.dir, "project-"));
    const dir = fixtureCopy(parent, uniqueMarker("relative"));
    const rel = `./${path.basename(dir)}`;
    const sc = scriptCommand({ script: "nix-build.sh", args: [`path:${rel}`, "image"] });
    expect(sc.command).toBe(`bash -s -- path:${rel} image`);
    const r = await run("/bin/sh", ["-c", sc.command], { input: sc.stdin, env: localEnv(), cwd: parent });
    expect(show(r)).toMatch(/^exit 0 /);
    const out = r.stdout.trim();
    localOutputs.push(out);
    expect(out).toBe(await buildHere(dir, "image"));
  });

  test("builder kind ssh: ship-flake.sh copies the flake (named relative to the project directory) to the builder, nix-build.sh there returns a store path on the builder", async () => {
    const s = stack();
    if (s.builder.kind !== "ssh") throw new Error("expected an ssh builder");
    const c = s.builder;
    // As components/nixImage.ts runs it: the directory as configured, relative to the project
    // directory (here svc.dir), e.g. ./neko.
    const rel = `./${path.basename(fixtureCopy(svc.dir, uniqueMarker("ship")))}`;
    const ship = scriptCommand({
      script: "ship-flake.sh",
      args: [rel, `${c.user}@${c.host}`, String(c.port)],
      env: { SSH_PRIVATE_KEY: c.privateKey, SSH_HOST_KEY: c.hostKey },
      budgetSeconds: 1800,
    });
    expect(ship.command).toBe(`bash -s -- ${rel} ${c.user}@${c.host} ${c.port}`);
    expect(ship.stdin).toContain("PRIVATE KEY");
    const shipped = await run("/bin/sh", ["-c", ship.command], { input: ship.stdin, env: localEnv(), cwd: svc.dir });
    expect(show(shipped)).toMatch(/^exit 0 /);
    expect(shipped.stdout).toMatch(/^\/nix\/store\/[0-9a-z]{32}-source\n$/);
    const source = shipped.stdout.trim();
    expect(shipped.stderr).toMatch(new RegExp(`^ship-flake: done: ${reEscape(source)} in \\d+s$`, "m"));
    expect(shipped.stderr).not.toContain("PRIVATE KEY");
    expect(show(await onBuilder(b, `test -f ${source}/flake.nix`))).toMatch(/^exit 0 /);
    handoff.flakeRef = `path:${source}`;

    const sc = scriptCommand({ script: "nix-build.sh", args: [handoff.flakeRef, s.image.attr], budgetSeconds: BUILD_BUDGET }, true);
    expect(sc.command).toBe(`timeout -k 15s ${BUILD_BUDGET}s bash -s -- ${handoff.flakeRef} image`);
    const built = await runRemote(b, sc);
    expect(show(built)).toMatch(/^exit 0 /);
    expect(built.stdout).toMatch(/^\/nix\/store\/[0-9a-z]{32}-neko-fixture-image\.tar\n$/);
    const image = built.stdout.trim();
    // The log is on the builder, where the operator can read it.
    expectBuildStderr(built.stderr, `${handoff.flakeRef}#image`, image);
    const logPath = /full log: \S+?:(\/\S+\.log)$/m.exec(built.stderr)![1];
    expect(logPath.startsWith("/root/.cache/neko-infra/logs/")).toBe(true);
    expect(show(await onBuilder(b, `test -s ${logPath}`))).toMatch(/^exit 0 /);
    const there = JSON.parse(ok(await onBuilder(b, `skopeo inspect docker-archive:${image}`), "skopeo inspect on the builder"));
    expect(`${there.Os}/${there.Architecture}`).toBe("linux/amd64");
    handoff.image = image;
  });

  test("builder kind ssh: the crashing variant builds the same way", async () => {
    const r = await runRemote(
      b,
      scriptCommand({ script: "nix-build.sh", args: [need("flakeRef"), "image-crash"], budgetSeconds: BUILD_BUDGET }, true),
    );
    expect(show(r)).toMatch(/^exit 0 /);
    expect(r.stdout).toMatch(/^\/nix\/store\/[0-9a-z]{32}-neko-fixture-image-crash\.tar\n$/);
    handoff.crashImage = r.stdout.trim();
  });

  test("a build that takes a while reports progress on stderr every NIX_BUILD_PROGRESS_SECONDS: built of total, the log's last line, elapsed time", async () => {
    // A fresh copy (a store path nobody built) of image-slow, whose build takes 6 s and logs each
    // second; progress every 2 s instead of 30.
    const dir = fixtureCopy(svc.dir, uniqueMarker("progress"));
    const s = stack();
    if (s.builder.kind !== "ssh") throw new Error("expected an ssh builder");
    const shipped = await runLocal(
      scriptCommand({
        script: "ship-flake.sh",
        args: [dir, `${s.builder.user}@${s.builder.host}`, String(s.builder.port)],
        env: { SSH_PRIVATE_KEY: s.builder.privateKey, SSH_HOST_KEY: s.builder.hostKey },
      }),
    );
    const ref = `path:${ok(shipped, "ship-flake.sh").trim()}`;
    const r = await runRemote(
      b,
      scriptCommand(
        { script: "nix-build.sh", args: [ref, "image-slow"], env: { NIX_BUILD_PROGRESS_SECONDS: "2" }, budgetSeconds: BUILD_BUDGET },
        true,
      ),
    );
    expect(show(r)).toMatch(/^exit 0 /);
    expect(r.stdout).toMatch(/^\/nix\/store\/[0-9a-z]{32}-neko-fixture-image-slow\.tar\n$/);
    const progress = r.stderr.split("\n").filter((l) => l.startsWith("nix-build: ["));
    const line = new RegExp(
      `^nix-build: \\[(\\d+)s\\] building ${reEscape(ref)}#image-slow: 0 of 1 derivations built; last log line: neko-fixture-image-slow\\.tar> fixture: slow build, second (\\d) of 6$`,
    );
    expect(progress.length).toBeGreaterThanOrEqual(2);
    for (const l of progress) expect(l).toMatch(line);
    // The elapsed times and the build's own progress move on from line to line.
    const secs = progress.map((l) => Number(line.exec(l)![1]));
    expect(secs).toEqual([...secs].sort((x, y) => x - y));
    expect(new Set(progress.map((l) => line.exec(l)![2])).size).toBeGreaterThanOrEqual(2);
    expectBuildStderr(r.stderr, `${ref}#image-slow`, r.stdout.trim());
    console.log(`progress lines of a ${r.seconds.toFixed(1)}s build (every 2s):\n${progress.join("\n")}`);
  });
});

describe("push", () => {
  const push = (storePath: string) => {
    const s = stack();
    if (s.registry.kind !== "oci") throw new Error("expected an oci registry");
    // As components/imageRegistry.ts: the repository URL as an argument, credentials on stdin.
    return {
      url: s.registry.url,
      sc: scriptCommand(
        { script: "push-image.sh", args: [storePath, s.registry.url], env: pushEnv(s.registry), budgetSeconds: PUSH_BUDGET },
        true,
      ),
    };
  };

  test("push-image.sh on the builder pushes to the registry and prints the digest ref; the registry holds that linux/amd64 image", async () => {
    const { url, sc } = push(need("image"));
    expect(sc.command).not.toContain(reg.REGISTRY_PASSWORD);
    const before = await countUploads(reg);
    const r = await runRemote(b, sc);
    expect(show(r)).toMatch(/^exit 0 /);
    expect(r.stdout).toMatch(new RegExp(`^${reEscape(reg.REGISTRY_ADDR)}/neko@sha256:[0-9a-f]{64}\\n$`));
    const ref = r.stdout.trim();
    const tag = path.basename(need("image")).split("-")[0];
    expect(r.stderr.trimEnd().split("\n")).toEqual([
      expect.stringMatching(new RegExp(`^push-image: pushing ${reEscape(need("image"))} from \\S+ to ${reEscape(`${url}:${tag}`)}$`)),
      expect.stringMatching(new RegExp(`^push-image: done: ${reEscape(ref)} in \\d+s$`)),
    ]);
    expect(r.stderr).not.toContain(reg.REGISTRY_PASSWORD);
    const uploaded = (await countUploads(reg)) - before;
    // The fixture has one layer: the layer and the config blob.
    expect(uploaded).toBe(2);

    const inspect = JSON.parse(ok(await inspectRemote(reg, ref), `skopeo inspect ${ref}`));
    expect({ digest: inspect.Digest, platform: `${inspect.Os}/${inspect.Architecture}` }).toEqual({
      digest: ref.split("@")[1],
      platform: "linux/amd64",
    });
    // Tagged with the store path's hash, the handle a re-run finds it by.
    const byTag = JSON.parse(ok(await inspectRemote(reg, `${url}:${tag}`), "skopeo inspect by tag"));
    expect(byTag.Digest).toBe(inspect.Digest);
    handoff.ref = ref;
    handoff.firstUploads = String(uploaded);
  });

  test("a second push of the same store path uploads no blob and prints the same ref", async () => {
    const { url, sc } = push(need("image"));
    const ref = need("ref");
    const before = await countUploads(reg);
    const r = await runRemote(b, sc);
    const after = await countUploads(reg);
    expect(show(r)).toMatch(/^exit 0 /);
    expect(r.stdout).toBe(`${ref}\n`);
    expect(r.stderr).toContain(`push-image: ${url}:${path.basename(need("image")).split("-")[0]} is already in the registry`);
    expect(r.stderr).toContain(`push-image: done: ${ref} (nothing uploaded)`);
    console.log(
      `registry blob uploads: first push of ${path.basename(need("image"))}: ${need("firstUploads")}; ` +
        `second push of the same store path: ${after - before} (count ${before} -> ${after})`,
    );
    expect(after - before).toBe(0);
  });

  test("the crashing variant pushes the same way", async () => {
    const r = await runRemote(b, push(need("crashImage")).sc);
    expect(show(r)).toMatch(/^exit 0 /);
    expect(r.stdout).toMatch(new RegExp(`^${reEscape(reg.REGISTRY_ADDR)}/neko@sha256:[0-9a-f]{64}\\n$`));
    expect(r.stdout.trim()).not.toBe(handoff.ref);
  });
});

describe("docker-load.sh: registry kind docker (the local stack)", () => {
  const load = (storePath: string, env: Record<string, string> = dockerEnv()) =>
    runLocal(scriptCommand({ script: "docker-load.sh", args: [storePath, LOCAL_IMAGE_NAME], budgetSeconds: 1800 }), env);
  const tagOf = (storePath: string) => `${LOCAL_IMAGE_NAME}:${path.basename(storePath).split("-")[0]}`;

  test("loads a store path into the engine once, tagged with its store hash, and prints the image ID; a second run loads nothing", async () => {
    const out = await buildHere(fixtureCopy(svc.dir, uniqueMarker("load")), "image");
    const manifest = JSON.parse(ok(await run("skopeo", ["inspect", "--raw", `docker-archive:${out}`]), "skopeo inspect --raw"));
    const first = await load(out);
    expect(show(first)).toMatch(/^exit 0 /);
    // The image ID is the digest of the image config.
    expect(first.stdout).toBe(`${manifest.config.digest}\n`);
    expect(first.stderr).toContain(`docker-load: loading ${out} into the Docker engine as ${tagOf(out)}`);
    const inspect = ok(
      await docker(["image", "inspect", "--format", "{{.Id}} {{.Os}}/{{.Architecture}}", tagOf(out)]),
      "docker image inspect",
    );
    expect(inspect).toBe(`${manifest.config.digest} linux/amd64\n`);

    const second = await load(out);
    expect(show(second)).toMatch(/^exit 0 /);
    expect(second.stdout).toBe(first.stdout);
    expect(second.stderr.trimEnd()).toBe(`docker-load: ${tagOf(out)} is already loaded (${manifest.config.digest})`);
    console.log(`docker-load.sh: first run (load) ${first.seconds.toFixed(2)}s, second run (found by tag) ${second.seconds.toFixed(2)}s`);
    expect(second.seconds).toBeLessThan(first.seconds);
  });

  test("an arm64 image is refused before anything is loaded", async () => {
    const out = await buildHere(fixtureCopy(svc.dir, uniqueMarker("arm64")), "image-arm64");
    const r = await load(out);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toMatch(new RegExp(`^docker-load: ${reEscape(out)} is a linux/arm64 image; neko runs linux/amd64 only$`, "m"));
    const images = ok(await docker(["images", "--format", "{{.Repository}}:{{.Tag}}"]), "docker images");
    expect(images).not.toContain(tagOf(out));
    expect(images).not.toContain("neko-fixture:arm64");
  });

  test("a store path that is not a docker-archive is refused, naming it", async () => {
    const junkFile = path.join(svc.dir, "junk.tar");
    fs.writeFileSync(junkFile, "not a tar archive\n");
    const junk = ok(await run("nix", ["store", "add-file", junkFile]), "nix store add-file").trim();
    localOutputs.push(junk);
    const r = await load(junk);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^docker-load: ${reEscape(junk)} is not a docker-archive \\(no manifest\\.json in it\\): `, "m"));
  });

  test("a Docker engine that does not answer is named, with the engine's own error", async () => {
    const sock = path.join(svc.dir, "no-engine.sock");
    const r = await load("/nix/store/00000000000000000000000000000000-neko-fixture-image.tar", {
      ...dockerEnv(),
      DOCKER_HOST: `unix://${sock}`,
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      new RegExp(
        `^docker-load: the Docker engine does not answer \\S+@\\S+ \\(DOCKER_HOST=unix://${reEscape(sock)}\\): Cannot connect to the Docker daemon at unix://${reEscape(sock)}`,
        "m",
      ),
    );
    expect(r.seconds).toBeLessThan(15);
  });
});
