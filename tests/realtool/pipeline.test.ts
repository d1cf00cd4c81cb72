/**
 * The build, push and run path against the real tools, each script run as its Pulumi Command runs
 * it: command line and stdin from `scriptCommand`, remote ones over SSH to a namespaced Nix builder
 * (its own /nix), local ones through `/bin/sh -c`. Services come from tests/harness.
 *
 * The tests run in order and hand results on (store path -> image ref -> container).
 */
import * as fs from "fs";
import * as path from "path";
import { CONTAINER_NAME, containerSpec, dockerRunArgs, healthBudgetSeconds } from "../../lib/neko";
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
  freeNekoPorts,
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

const svc = new Services();
let b: BuilderEnv;
let reg: RegistryEnv;
let dk: DockerEnv;
let neko: { httpPort: number; epr: string };
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
  neko = await freeNekoPorts("127.0.0.1", 3);
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
    neko: { httpPort: neko.httpPort, webrtc: { mode: "epr", epr: neko.epr } },
  });
}

/** Environment of a local Command on the operator's machine: keep build logs in the temp dir. */
const localEnv = () => ({ NEKO_INFRA_LOG_DIR: path.join(svc.dir, "logs") });
/** ... and on the Docker host: the harness engine, its own (Debian, same version) client first on PATH. */
const dockerEnv = () => ({
  DOCKER_HOST: dk.DOCKER_HOST,
  DOCKER_CONFIG: dk.DOCKER_CONFIG,
  PATH: `${path.dirname(dk.DOCKER_BIN)}:${process.env.PATH}`,
});
const docker = (args: string[]) => run(dk.DOCKER_BIN, args, { env: dockerEnv(), timeoutMs: 60_000 });

describe("build", () => {
  test("wait-for-nix.sh on the builder answers with the builder's Nix version", async () => {
    const r = await runRemote(b, scriptCommand("wait-for-nix.sh", ["30"]));
    const local = ok(await run("nix", ["--version"]), "nix --version");
    expect({ code: r.code, stdout: r.stdout }).toEqual({ code: 0, stdout: local });
    expect(r.stdout).toMatch(/^nix \(Nix\) \d+\.\d+/);
  });

  test("builder kind local with a remote builder: nix-build.sh builds on the builder, returns a local docker-archive", async () => {
    // A copy with its own www/version: a store path no store holds yet, so the build cannot be
    // answered locally and has to go to the builder.
    const dir = fixtureCopy(svc.dir, uniqueMarker("remote-build"));
    const s = settings({ builder: { kind: "local", remoteBuilders: buildersLine(b) }, image: { flake: dir, attr: "image" } });
    if (s.builder.kind !== "local" || !s.builder.remoteBuilders) throw new Error("expected a local builder with remoteBuilders");
    expect(s.image.localPath).toBe(dir);
    // As components/nixImage.ts: a local flake is built as path:<dir>, remoteBuilders -> NIX_BUILDERS.
    const sc = scriptCommand("nix-build.sh", [`path:${s.image.localPath}`, s.image.attr], { NIX_BUILDERS: s.builder.remoteBuilders });
    const r = await runLocal(sc, localEnv());
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^\/nix\/store\/[0-9a-z]{32}-neko-fixture-image\.tar\n$/);
    const out = r.stdout.trim();
    localOutputs.push(out);
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

  test("builder kind ssh: ship-flake.sh copies the flake to the builder, nix-build.sh there returns a store path on the builder", async () => {
    const s = stack();
    if (s.builder.kind !== "ssh") throw new Error("expected an ssh builder");
    const c = s.builder;
    // As components/nixImage.ts runs it.
    const ship = scriptCommand("ship-flake.sh", [s.image.localPath!, `${c.user}@${c.host}`, String(c.port)], {
      SSH_PRIVATE_KEY: c.privateKey,
      SSH_HOST_KEY: c.hostKey,
    });
    const shipped = await runLocal(ship, localEnv());
    expect(shipped.code).toBe(0);
    expect(shipped.stdout).toMatch(/^\/nix\/store\/[0-9a-z]{32}-source\n$/);
    const source = shipped.stdout.trim();
    expect(show(await onBuilder(b, `test -f ${source}/flake.nix`))).toMatch(/^exit 0 /);
    handoff.flakeRef = `path:${source}`;

    const built = await runRemote(b, scriptCommand("nix-build.sh", [handoff.flakeRef, s.image.attr]));
    expect(built.code).toBe(0);
    expect(built.stdout).toMatch(/^\/nix\/store\/[0-9a-z]{32}-neko-fixture-image\.tar\n$/);
    const image = built.stdout.trim();
    const there = JSON.parse(ok(await onBuilder(b, `skopeo inspect docker-archive:${image}`), "skopeo inspect on the builder"));
    expect(`${there.Os}/${there.Architecture}`).toBe("linux/amd64");
    handoff.image = image;
  });

  test("builder kind ssh: the crashing variant builds the same way", async () => {
    const r = await runRemote(b, scriptCommand("nix-build.sh", [need("flakeRef"), "image-crash"]));
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^\/nix\/store\/[0-9a-z]{32}-neko-fixture-image-crash\.tar\n$/);
    handoff.crashImage = r.stdout.trim();
  });
});

describe("push", () => {
  test("push-image.sh on the builder pushes to the registry and prints the digest ref; the registry holds that linux/amd64 image", async () => {
    const s = stack();
    if (s.registry.kind !== "oci") throw new Error("expected an oci registry");
    const before = await countUploads(reg);
    const r = await runRemote(b, scriptCommand("push-image.sh", [need("image"), s.registry.url], pushEnv(s.registry)));
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^${reEscape(reg.REGISTRY_ADDR)}/neko@sha256:[0-9a-f]{64}\\n$`));
    const ref = r.stdout.trim();
    const uploaded = (await countUploads(reg)) - before;
    // The fixture has one layer: the layer and the config blob.
    expect(uploaded).toBe(2);

    const inspect = JSON.parse(ok(await inspectRemote(reg, ref), `skopeo inspect ${ref}`));
    expect({ digest: inspect.Digest, platform: `${inspect.Os}/${inspect.Architecture}` }).toEqual({
      digest: ref.split("@")[1],
      platform: "linux/amd64",
    });
    // Tagged with the store path's hash, the handle a re-run finds it by.
    const tag = path.basename(need("image")).split("-")[0];
    const byTag = JSON.parse(ok(await inspectRemote(reg, `${s.registry.url}:${tag}`), "skopeo inspect by tag"));
    expect(byTag.Digest).toBe(inspect.Digest);
    handoff.ref = ref;
    handoff.firstUploads = String(uploaded);
  });

  test("a second push of the same store path uploads no blob and prints the same ref", async () => {
    const s = stack();
    if (s.registry.kind !== "oci") throw new Error("expected an oci registry");
    const ref = need("ref");
    const before = await countUploads(reg);
    const r = await runRemote(b, scriptCommand("push-image.sh", [need("image"), s.registry.url], pushEnv(s.registry)));
    const after = await countUploads(reg);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`${ref}\n`);
    expect(r.stderr).toContain(`push-image: ${s.registry.url}:${path.basename(need("image")).split("-")[0]} is already in the registry`);
    console.log(
      `registry blob uploads: first push of ${path.basename(need("image"))}: ${need("firstUploads")}; ` +
        `second push of the same store path: ${after - before} (count ${before} -> ${after})`,
    );
    expect(after - before).toBe(0);
  });

  test("the crashing variant pushes the same way", async () => {
    const s = stack();
    if (s.registry.kind !== "oci") throw new Error("expected an oci registry");
    const r = await runRemote(b, scriptCommand("push-image.sh", [need("crashImage"), s.registry.url], pushEnv(s.registry)));
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^${reEscape(reg.REGISTRY_ADDR)}/neko@sha256:[0-9a-f]{64}\\n$`));
    expect(r.stdout.trim()).not.toBe(handoff.ref);
    handoff.crashRef = r.stdout.trim();
  });
});

describe("run", () => {
  const pullEnv = () => ({ REGISTRY_USER: reg.REGISTRY_USER, REGISTRY_PASSWORD: reg.REGISTRY_PASSWORD });
  // NekoHost runs the container from the image ID pull-image.sh printed (what the docker provider
  // reads back), with the spec containerSpec gives.
  const runArgs = (imageId: string) => {
    const s = stack();
    const spec = containerSpec(s.neko, { publicAddress: "127.0.0.1", gpu: false }, imageId);
    // NekoHost adds the two logins as secrets; so does this run.
    return dockerRunArgs(spec, {
      bindAddress: "127.0.0.1",
      extraEnv: { NEKO_MEMBER_MULTIUSER_USER_PASSWORD: "user-pass-1", NEKO_MEMBER_MULTIUSER_ADMIN_PASSWORD: "admin-pass-1" },
    });
  };

  test("wait-for-docker.sh answers with the engine's version", async () => {
    const version = ok(await docker(["version", "--format", "{{.Server.Version}}"]), "docker version").trim();
    const r = await runLocal(scriptCommand("wait-for-docker.sh", ["30"]), dockerEnv());
    expect({ code: r.code, stdout: r.stdout }).toEqual({ code: 0, stdout: `docker ${version}\n` });
  });

  test("wait-for-docker.sh gives up after its timeout with the engine's error", async () => {
    const sock = path.join(svc.dir, "no-engine.sock");
    const r = await runLocal(scriptCommand("wait-for-docker.sh", ["1"]), { ...dockerEnv(), DOCKER_HOST: `unix://${sock}` });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      new RegExp(
        `^wait-for-docker: docker did not answer \\S+@\\S+ after 1s:\\s*Cannot connect to the Docker daemon at unix://${reEscape(sock)}`,
        "m",
      ),
    );
    expect(r.seconds).toBeLessThan(15);
  });

  test("pull-image.sh pulls by digest with the registry login and prints the image ID (the config digest)", async () => {
    const ref = need("ref");
    const r = await runLocal(scriptCommand("pull-image.sh", [ref], pullEnv()), dockerEnv());
    expect(r.code).toBe(0);
    const manifest = JSON.parse(ok(await inspectRemote(reg, ref, true), "skopeo inspect --raw"));
    expect(r.stdout).toBe(`${manifest.config.digest}\n`);
    handoff.imageId = r.stdout.trim();
    // The login was for this pull only: the engine's client config holds no credentials.
    const cfg = path.join(dk.DOCKER_CONFIG, "config.json");
    expect(fs.existsSync(cfg) ? fs.readFileSync(cfg, "utf8") : "").not.toContain(reg.REGISTRY_ADDR);
  });

  test("pull-image.sh with a wrong registry password names the refused login", async () => {
    const r = await runLocal(
      scriptCommand("pull-image.sh", [need("ref")], { ...pullEnv(), REGISTRY_PASSWORD: "wrong-password" }),
      dockerEnv(),
    );
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      new RegExp(`^pull-image: the registry ${reEscape(reg.REGISTRY_ADDR)} refused the login: .*(unauthorized|401)`, "m"),
    );
  });

  test(
    "the container as NekoHost runs it turns healthy within the budget and answers /health on httpPort",
    async () => {
      ok(await docker(runArgs(need("imageId"))), "docker run");
      const budget = healthBudgetSeconds();
      const r = await runLocal(scriptCommand("wait-healthy.sh", [CONTAINER_NAME, String(budget)]), dockerEnv(), (budget + 30) * 1000);
      expect(show(r)).toMatch(/^exit 0 /);
      expect(r.stdout).toBe(`${CONTAINER_NAME} is running (healthy)\n`);
      expect(r.seconds).toBeLessThan(budget);
      const health = await run("curl", ["-sS", "--max-time", "5", `http://127.0.0.1:${neko.httpPort}/health`], { timeoutMs: 15_000 });
      expect({ code: health.code, body: health.stdout }).toEqual({ code: 0, body: "true" });
      console.log(`healthy after ${r.seconds.toFixed(1)}s (budget ${budget}s); neko httpPort ${neko.httpPort}, EPR ${neko.epr}`);
    },
    (healthBudgetSeconds() + 60) * 1000,
  );

  test(
    "the crashing variant: wait-healthy.sh fails at once with neko's fatal error from the container log",
    async () => {
      ok(await docker(["rm", "--force", CONTAINER_NAME]), "docker rm");
      const ref = need("crashRef");
      const pulled = await runLocal(scriptCommand("pull-image.sh", [ref], pullEnv()), dockerEnv());
      expect(show(pulled)).toMatch(/^exit 0 /);
      expect(pulled.stdout).toMatch(/^sha256:[0-9a-f]{64}\n$/);
      ok(await docker(runArgs(pulled.stdout.trim())), "docker run (crash)");
      const budget = healthBudgetSeconds();
      const r = await runLocal(scriptCommand("wait-healthy.sh", [CONTAINER_NAME, String(budget)]), dockerEnv(), (budget + 30) * 1000);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(
        /^wait-healthy: container neko (exited with code 1|is restarting \(exit code 1\)|has restarted \d+ time\(s\) \(last exit code 1\)); its last log lines:$/m,
      );
      expect(r.stderr).toContain("neko: fatal: cannot open display");
      // A crash is reported as it happens, not after the health budget.
      expect(r.seconds).toBeLessThan(30);
    },
    (healthBudgetSeconds() + 60) * 1000,
  );
});
