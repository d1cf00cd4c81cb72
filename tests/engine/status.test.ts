/**
 * `npm run status -- local` on a stack the real Pulumi engine deployed (the local kinds: this
 * machine's Nix builds the fixture, `docker load` into the harness's dockerd, neko-rollout.sh runs
 * it): the stack's real outputs (`machines`, `imageRef`) against what runs. A healthy deploy says
 * nothing is wrong; the container removed by hand is a drift whose fix, the rollout step replaced
 * with `--target-replace`, puts it right.
 */
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { fixtureCopy, freeNekoPorts, uniqueMarker } from "../realtool/support";
import { must, Project, Run, startService, stopService } from "./support";

jest.setTimeout(600_000);

const p = new Project("local");
const dockerState = path.join(p.work, "docker");
const secrets = { userPassword: "status-user-1234", adminPassword: "status-admin-1234", apiToken: "status-api-token-0123456789" };
let port = 0;

function status(): Run {
  const r = spawnSync(process.execPath, [path.join(p.dir, "tools", "status.js"), "local"], { cwd: p.dir, env: p.env, encoding: "utf8" });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr, seconds: 0 };
}
const drifts = (r: Run) => r.stdout.split("\n").filter((l) => l.startsWith("DRIFT"));

beforeAll(async () => {
  const d = startService("dockerd.sh", dockerState);
  p.env.DOCKER_HOST = d.DOCKER_HOST;
  // The rollout's and status's state directory on this machine (a local host has no /var/lib one).
  p.env.XDG_STATE_HOME = path.join(p.work, "xdg-state");
  p.env.HOME = path.join(p.work, "home");
  fs.mkdirSync(p.env.HOME);
  const ports = await freeNekoPorts("127.0.0.1", 3);
  port = ports.httpPort;
  must(p.pulumi(["stack", "init"]), "stack init");
  p.configure(
    {
      "neko-infra:builder": { kind: "local" },
      "neko-infra:image": { flake: fixtureCopy(p.work, uniqueMarker("engine-status")), attr: "image" },
      "neko-infra:registry": { kind: "docker" },
      "neko-infra:host": { kind: "local" },
      "neko-infra:neko": { httpPort: port, webrtc: { mode: "epr", epr: ports.epr } },
    },
    { "neko.userPassword": secrets.userPassword, "neko.adminPassword": secrets.adminPassword, "neko.apiToken": secrets.apiToken },
  );
  p.up("up (create)");
});

afterAll(() => {
  try {
    p.pulumi(["destroy", "--yes", "--skip-preview"]);
  } finally {
    stopService("dockerd.sh", dockerState);
    p.remove();
  }
});

test("as deployed: nothing is wrong, from the stack's own outputs", () => {
  const machines = JSON.parse(must(p.pulumi(["stack", "output", "machines", "--json"]), "stack output machines").stdout);
  expect(machines).toEqual([
    { role: "builder", kind: "local", stackTag: "neko-infra/local", enabled: true },
    { role: "host", kind: "local", stackTag: "neko-infra/local" },
  ]);
  const r = status();
  expect({ code: r.status, drifts: drifts(r), stderr: r.stderr }).toEqual({ code: 0, drifts: [], stderr: "" });
  expect(r.stdout).toMatch(new RegExp(`^OK {6}host neko: running since .*, /health 200 at 127\\.0\\.0\\.1:${port}$`, "m"));
  expect(r.stdout).toMatch(/^OK {6}host image: the last deploy ran sha256:[0-9a-f]{64}, as the stack expects$/m);
  // The digest the program handed the rollout is the one status computes from the stack's output.
  expect(r.stdout).toMatch(/^OK {6}host spec: the deployed spec is the one the stack expects$/m);
  expect(r.stdout).toMatch(/^OK {6}builder nix: /m);
  for (const s of Object.values(secrets)) expect(r.stdout).not.toContain(s);
});

test("the container removed by hand: a drift; its fix puts it right", () => {
  must({ ...spawnRun("docker", ["rm", "-f", "neko"]) }, "docker rm");
  const r = status();
  expect(r.status).toBe(1);
  const d = drifts(r);
  expect(d).toHaveLength(1);
  const fix = / -- fix: npm run up -- local (--target-replace '(.*)')$/.exec(d[0]);
  expect(fix).not.toBeNull();
  must(p.pulumi(["up", "--yes", "--skip-preview", "--target-replace", fix![2]]), "the fix");
  const again = status();
  expect({ code: again.status, drifts: drifts(again) }).toEqual({ code: 0, drifts: [] });
});

function spawnRun(file: string, args: string[]): Run {
  const r = spawnSync(file, args, { env: p.env, encoding: "utf8" });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr, seconds: 0 };
}
