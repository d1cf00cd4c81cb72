/**
 * The quick start, `npm run up -- local`, through the real Pulumi engine: tools/up.sh on a copy of
 * this project whose Pulumi.local.yaml builds the test fixture instead of neko (the real flake
 * needs GitHub and nixpkgs, which this machine cannot reach). The local Nix builds the image, `docker
 * load` puts it into the Docker engine (the harness's dockerd, as DOCKER_HOST), neko-rollout.sh runs
 * it, and it answers on http://localhost:<port>/. up.sh generates the passphrase and neko's
 * passwords on first use, in a HOME of the test's own.
 */
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { parse, stringify } from "yaml";
import { fixtureCopy, freeNekoPorts, uniqueMarker } from "../realtool/support";
import { changed, httpGet, must, processesUnder, Project, ROOT, Run, startService, stopService } from "./support";

jest.setTimeout(600_000);

const p = new Project("local", { files: ["Pulumi.local.yaml"] });
const home = path.join(p.work, "home");
const dockerState = path.join(p.work, "docker");
let port = 0;

/** `npm run up -- local ARGS` as a newcomer runs it: no backend, no passphrase, no Pulumi login. */
function upScript(args: string[]): Run {
  const env: NodeJS.ProcessEnv = { ...p.env, HOME: home };
  for (const k of ["PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE", "PULUMI_HOME"]) delete env[k];
  const start = process.hrtime.bigint();
  const r = spawnSync("bash", ["tools/up.sh", "local", ...args], { cwd: p.dir, env, encoding: "utf8", maxBuffer: 64 << 20 });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr, seconds: Number(process.hrtime.bigint() - start) / 1e9 };
}

beforeAll(async () => {
  fs.mkdirSync(home);
  const d = startService("dockerd.sh", dockerState);
  p.env.DOCKER_HOST = d.DOCKER_HOST;
  const ports = await freeNekoPorts("127.0.0.1", 3);
  port = ports.httpPort;
  // The shipped stack file, with the fixture in place of neko's flake and free ports.
  const file = path.join(p.dir, "Pulumi.local.yaml");
  const doc = parse(fs.readFileSync(path.join(ROOT, "Pulumi.local.yaml"), "utf8"));
  doc.config["neko-infra:image"] = { flake: fixtureCopy(p.work, uniqueMarker("engine-local")), attr: "image" };
  doc.config["neko-infra:neko"] = { ...doc.config["neko-infra:neko"], httpPort: port, webrtc: { mode: "epr", epr: ports.epr } };
  fs.writeFileSync(file, stringify(doc));
});

afterAll(() => {
  try {
    upScriptDestroy();
  } finally {
    stopService("dockerd.sh", dockerState);
    p.remove();
  }
});

function upScriptDestroy() {
  const env: NodeJS.ProcessEnv = { ...p.env, HOME: home, PULUMI_BACKEND_URL: `file://${home}/.pulumi-neko-infra` };
  delete env.PULUMI_CONFIG_PASSPHRASE;
  env.PULUMI_CONFIG_PASSPHRASE_FILE = path.join(home, ".pulumi-neko-infra", "passphrase-local");
  return spawnSync("pulumi", ["destroy", "--yes", "--skip-preview", "--stack", "local", "--non-interactive"], {
    cwd: p.dir,
    env,
    encoding: "utf8",
  });
}

test("npm run up -- local: neko from the local Nix, loaded into the local Docker, healthy on localhost", async () => {
  const r = upScript(["--yes", "--skip-preview"]);
  if (r.status !== 0) throw new Error(`tools/up.sh local failed:\n${r.stdout.slice(-5000)}\n${r.stderr.slice(-3000)}`);
  expect(r.stderr).toContain("generated the local stack's secrets passphrase");
  expect(r.stderr).toContain("generated neko.adminPassword");
  expect(r.stdout).toMatch(new RegExp(`url\\s*:\\s*"http://localhost:${port}/"`));
  expect(await httpGet(port, "/health")).toBe("true");
  expect(await httpGet(port, "/version")).toContain("engine-local");
  // the passwords are secrets of the stack file, never printed
  const stackFile = fs.readFileSync(path.join(p.dir, "Pulumi.local.yaml"), "utf8");
  expect(stackFile).toMatch(/adminPassword:\s+secure: /);
});

test("the second run changes nothing and generates nothing", () => {
  const r = upScript(["--yes", "--skip-preview", "--json"]);
  must(r, "second tools/up.sh local");
  expect(changed(r)).toEqual({});
  expect(r.stderr).not.toContain("generated");
});

test("destroy takes neko off this machine's Docker and leaves nothing running", async () => {
  const r = upScriptDestroy();
  expect(r.status).toBe(0);
  expect(await httpGet(port, "/health")).toBeUndefined();
  expect(processesUnder(p.dir)).toEqual([]);
});
