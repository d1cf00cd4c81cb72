/**
 * The operator the project was made for: a Mac, its Nix sending the build to a remote x86_64-linux
 * builder, and a current Docker. The local stack's whole path through the real Pulumi CLI and the
 * real command provider: `builder.kind: local` with `builder.remoteBuilders` (the namespaced
 * builder of tests/harness/builder.sh, over ssh-ng), `docker load` into a Docker engine with the
 * containerd image store (dockerd 28.5 and containerd 2, built from their Go modules: the store of
 * Docker Engine 29 installs and Docker Desktop 4.34+), neko's rollout, its health. Every local step
 * runs under bash 3.2.48 with a PATH that has no GNU-only tools (tests/harness/bsd-path.sh), as on
 * macOS; `npm run builder:down|up` too.
 *
 * What is not a Mac: the kernel, Nix 2.8 as root (a Mac's Nix is a daemon: the untrusted-user case
 * is covered by nix-build.sh's own check), the x86_64 CPU (the build is sent away all the same:
 * --max-jobs 0). What was not run on a real Mac: all of it.
 */
import { execFileSync, spawnSync } from "child_process";
import * as path from "path";
import { BuilderEnv, buildersLine, fixtureCopy, freeNekoPorts, uniqueMarker } from "../realtool/support";
import { changed, HARNESS, httpGet, must, processesUnder, Project, Run, startService, stopService } from "./support";

jest.setTimeout(900_000);

const p = new Project("mac");
const state = { builder: path.join(p.work, "b"), docker: path.join(p.work, "d") };
let port = 0;
let macPath = "";
let dockerBin = "";
let builderSsh = "";

/** A wrapper run as an operator runs it: `npm run builder:down -- mac`, under bash 3.2. */
function toggle(action: "down" | "up"): Run {
  const start = process.hrtime.bigint();
  const r = spawnSync("bash", ["tools/builder-toggle.sh", action, "mac"], { cwd: p.dir, env: p.env, encoding: "utf8" });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr, seconds: Number(process.hrtime.bigint() - start) / 1e9 };
}

beforeAll(async () => {
  must(p.pulumi(["version"]), "pulumi version");
  const pulumiDir = path.dirname(execFileSync("bash", ["-c", "command -v pulumi"], { env: p.env }).toString().trim());
  const bsd = execFileSync("bash", [path.join(HARNESS, "bsd-path.sh"), path.join(p.work, "bsd")])
    .toString()
    .trim();
  // bash 3.2 and BSD-like tools first; then only node (the language host) and the Pulumi CLI.
  macPath = [bsd, path.dirname(process.execPath), pulumiDir].join(":");
  const b = startService("builder.sh", state.builder);
  builderSsh = b.BUILDER_SSH_CONFIG;
  const d = startService("dockerd.sh", state.docker, [], { ...process.env, DOCKERD_ENGINE: "current" });
  dockerBin = d.DOCKER_BIN;
  Object.assign(p.env, { PATH: macPath, DOCKER_HOST: d.DOCKER_HOST, DOCKER_CONFIG: d.DOCKER_CONFIG });
  const ports = await freeNekoPorts("127.0.0.1", 3);
  port = ports.httpPort;
  must(p.pulumi(["stack", "init"]), "stack init");
  p.configure(
    {
      "neko-infra:builder": { kind: "local", remoteBuilders: buildersLine(b as unknown as BuilderEnv) },
      "neko-infra:image": { flake: fixtureCopy(p.work, uniqueMarker("engine-mac")), attr: "image" },
      "neko-infra:registry": { kind: "docker" },
      "neko-infra:host": { kind: "local" },
      "neko-infra:neko": { httpPort: port, webrtc: { mode: "epr", epr: ports.epr } },
    },
    { "neko.userPassword": "mac-user-1234", "neko.adminPassword": "mac-admin-1234", "neko.apiToken": "mac-api-token-0123456789" },
  );
}, 900_000);

afterAll(() => {
  try {
    if (p.resourceCount() > 0) p.pulumi(["destroy", "--yes", "--skip-preview"]);
  } finally {
    stopService("dockerd.sh", state.docker);
    stopService("builder.sh", state.builder);
    p.remove();
  }
}, 300_000);

test("the engine really is the containerd image store, and the shell really is bash 3.2 without GNU tools", () => {
  const info = execFileSync(dockerBin, ["info", "--format", "{{.DriverStatus}}"], { env: p.env }).toString();
  expect(info).toContain("io.containerd.snapshotter.v1");
  const sh = execFileSync("/bin/sh", ["-c", "bash --version | head -n 1; command -v timeout flock sha256sum || echo none"], { env: p.env });
  expect(sh.toString()).toMatch(/^GNU bash, version 3\.2\.48.*\nnone\n$/s);
});

test("up: built on the remote builder, loaded into the containerd store, rolled out, healthy on localhost", async () => {
  const r = must(p.pulumi(["up", "--yes", "--skip-preview", "--json"], undefined, "up"), "up");
  const out = r.stdout + r.stderr;
  // the build went to the builder (--max-jobs 0 with --builders), and the load found its image
  expect(out).toMatch(/nix-build: built \/nix\/store\/\S+ in /);
  expect(out).toMatch(/docker-load: done: neko-infra\/neko:\S+ is sha256:[0-9a-f]{64}/);
  expect(out).not.toMatch(/unbound variable|command not found/);
  expect(p.outputs().url).toBe(`http://localhost:${port}/`);
  // built there, in the builder's own store, and copied back here
  execFileSync("ssh", ["-F", builderSsh, "builder", "test", "-e", p.outputs().storePath]);
  expect(await httpGet(port, "/health")).toBe("true");
  expect(await httpGet(port, "/version")).toContain("engine-mac");
});

test("a second up changes nothing; builder:down and builder:up work under bash 3.2", () => {
  must(p.pulumi(["preview", "--expect-no-changes"]), "preview");
  expect(changed(must(p.pulumi(["up", "--yes", "--skip-preview", "--json"]), "no-op up"))).toEqual({});
  const down = toggle("down");
  expect({ status: down.status, err: down.stderr.slice(-2000) }).toMatchObject({ status: 0 });
  expect(down.stderr).not.toMatch(/unbound variable/);
  const up = toggle("up");
  expect({ status: up.status, err: up.stderr.slice(-2000) }).toMatchObject({ status: 0 });
  must(p.pulumi(["preview", "--expect-no-changes"]), "preview after builder:up");
});

test("destroy takes neko off the engine and leaves nothing running", async () => {
  must(p.pulumi(["destroy", "--yes", "--skip-preview"]), "destroy");
  expect(await httpGet(port, "/health")).toBeUndefined();
  stopService("dockerd.sh", state.docker);
  stopService("builder.sh", state.builder);
  expect(processesUnder(p.work)).toEqual([]);
});
