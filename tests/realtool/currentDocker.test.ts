/**
 * tests/harness/dockerd.sh with DOCKERD_ENGINE=current: the engine of Docker Engine 29 fresh
 * installs and Docker Desktop 4.34+ (the containerd image store: images named by manifest digest).
 * Real: dockerd and docker-proxy 28.5.2, containerd and its runc shim v2.4.2 (built from their Go
 * modules by tests/harness/go-tool.sh, minutes the first time), Debian's runc, the newest client
 * here (/usr/local/bin/docker), the fixture flake's docker-archive built by Nix.
 */
import * as fs from "fs";
import * as path from "path";
import { scriptCommand } from "../../lib/shell";
import { DockerEnv, FIXTURE, freeTcpPort, HARNESS, ok, requireTools, run, runLocal, Services, show } from "./support";

jest.setTimeout(120_000);

const services = new Services();
const state = path.join(services.dir, "docker");
let dk: DockerEnv & { DOCKER_ENGINE?: string };
let archive: string;
let execRoot: string;
let bridge: string;

const docker = (...args: string[]) =>
  run(dk.DOCKER_BIN, args, { env: { DOCKER_HOST: dk.DOCKER_HOST, DOCKER_CONFIG: dk.DOCKER_CONFIG }, timeoutMs: 60_000 });

beforeAll(async () => {
  requireTools(["nix", "ip", "curl", "/usr/bin/docker"]);
  for (const f of ["/usr/local/bin/docker", "/usr/sbin/runc"]) {
    if (!fs.existsSync(f)) throw new Error(`missing ${f}: the current engine needs it (runc: tools/install-deps.sh)`);
  }
  // Built once and cached (~/.cache/neko-infra): minutes the first time on a new machine.
  for (const tool of ["dockerd", "containerd"]) {
    ok(await run(path.join(HARNESS, "go-tool.sh"), [tool], { timeoutMs: 1_500_000 }), `tests/harness/go-tool.sh ${tool}`);
  }
  dk = (await services.start("dockerd.sh", "docker", [], { DOCKERD_ENGINE: "current" })) as unknown as typeof dk;
  // The names dockerd.sh chose (`name=value` lines).
  const names = Object.fromEntries(
    fs
      .readFileSync(path.join(state, "dockerd.state"), "utf8")
      .split("\n")
      .filter((l) => l.includes("="))
      .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
  );
  execRoot = names.exec_root;
  bridge = names.bridge;
  expect(execRoot).toMatch(/^\/run\/nekod-[0-9a-f]{8}$/);
  expect(fs.existsSync(execRoot)).toBe(true);
  const built = ok(await run("nix", ["build", `path:${FIXTURE}#image`, "--json", "--no-link"], { timeoutMs: 300_000 }), "nix build");
  archive = (JSON.parse(built) as { outputs: { out: string } }[])[0].outputs.out;
}, 1_800_000);

afterAll(() => services.stopAll(), 120_000);

test("the env file names the current engine and its client; the client talks to dockerd 28.5.2 on containerd v2.4.2", async () => {
  expect(dk.DOCKER_ENGINE).toBe("current");
  expect(dk.DOCKER_BIN).toBe("/usr/local/bin/docker");
  const v = ok(await docker("version", "--format", "{{.Client.Version}} {{.Server.Version}}"), "docker version").trim();
  expect(v).toMatch(/^2[89]\.\d+\.\d+ 28\.5\.2$/);
  const components = ok(
    await docker("version", "--format", "{{range .Server.Components}}{{.Name}}={{.Version}} {{end}}"),
    "docker version",
  );
  expect(components).toContain("containerd=v2.4.2");
});

test("docker info reports the containerd image store (driver-type io.containerd.snapshotter.v1)", async () => {
  const out = ok(await docker("info", "--format", "{{.Driver}} {{.DriverStatus}}"), "docker info");
  expect(out.trim()).toBe("overlayfs [[driver-type io.containerd.snapshotter.v1]]");
});

test("after docker load the image ID is NOT the sha256 of the archive's config JSON (the assumption that broke scripts/docker-load.sh: 'no image after loading')", async () => {
  const manifest = JSON.parse(ok(await run("tar", ["-xOf", archive, "manifest.json"]), "tar manifest.json")) as { Config: string }[];
  const config = await run("sh", ["-c", 'tar -xOf "$1" "$2" | sha256sum', "sh", archive, manifest[0].Config]);
  const configId = `sha256:${ok(config, "sha256 of the config").split(" ")[0]}`;
  expect(configId).toMatch(/^sha256:[0-9a-f]{64}$/);

  expect(ok(await docker("load", "--input", archive), "docker load")).toContain("Loaded image: neko-fixture:latest");
  const id = ok(await docker("image", "inspect", "--format", "{{.Id}}", "neko-fixture:latest"), "docker image inspect").trim();
  expect(id).toMatch(/^sha256:[0-9a-f]{64}$/);
  expect(id).not.toBe(configId);
  // It is the digest of the manifest the engine made of the archive, and the config's digest names
  // no image.
  const descriptor = ok(await docker("image", "inspect", "--format", "{{.Descriptor.MediaType}} {{.Descriptor.Digest}}", id), "Descriptor");
  expect(descriptor.trim()).toBe(`application/vnd.docker.distribution.manifest.v2+json ${id}`);
  const byConfig = await docker("image", "inspect", configId);
  expect(byConfig.code).not.toBe(0);
  expect(byConfig.stderr).toContain("No such image");
});

test("scripts/docker-load.sh loads it under this engine and prints the ID the engine knows; a second run finds it by its tag", async () => {
  const load = () =>
    runLocal(scriptCommand({ script: "docker-load.sh", args: [archive, "neko-infra/neko"], budgetSeconds: 600 }), {
      PATH: `${path.dirname(dk.DOCKER_BIN)}:${process.env.PATH ?? ""}`,
      DOCKER_HOST: dk.DOCKER_HOST,
      DOCKER_CONFIG: dk.DOCKER_CONFIG,
    });
  const first = await load();
  expect(show(first)).toMatch(/^exit 0 /);
  const id = ok(await docker("image", "inspect", "--format", "{{.Id}}", "neko-fixture:latest"), "docker image inspect").trim();
  expect(first.stdout).toBe(`${id}\n`);
  const second = await load();
  expect(show(second)).toMatch(/^exit 0 /);
  expect(second.stdout).toBe(first.stdout);
  expect(second.stderr).toContain("is already loaded");
});

test("docker run -d -p 127.0.0.1:PORT:8080 of it answers /health through docker-proxy", async () => {
  const port = await freeTcpPort("127.0.0.1");
  ok(await docker("run", "-d", "-p", `127.0.0.1:${port}:8080`, "neko-fixture:latest"), "docker run");
  let body = "";
  for (let i = 0; i < 50 && body !== "true"; i++) {
    const r = await run("curl", ["-s", "--max-time", "2", `http://127.0.0.1:${port}/health`], { timeoutMs: 10_000 });
    body = r.stdout.trim();
    if (body !== "true") await new Promise((res) => setTimeout(res, 200));
  }
  expect(body).toBe("true");
});

test("stop leaves nothing behind: no process, mount, exec root or bridge of it", async () => {
  await services.stop("docker");
  const ours = (s: string) => s.includes(state) || s.includes(execRoot);
  const procs = fs
    .readdirSync("/proc")
    .filter((p) => /^\d+$/.test(p))
    .map((p) => {
      try {
        return `${p}: ${fs.readFileSync(`/proc/${p}/cmdline`, "utf8").replace(/\0/g, " ")}`;
      } catch {
        return "";
      }
    })
    .filter(ours);
  expect(procs).toEqual([]);
  const mounts = fs
    .readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .map((l) => l.split(" ")[4] ?? "")
    .filter(ours);
  expect(mounts).toEqual([]);
  expect(fs.existsSync(execRoot)).toBe(false);
  expect((await run("ip", ["link", "show", bridge])).code).not.toBe(0);
});
