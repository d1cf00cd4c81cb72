/**
 * scripts/host-idle-stop.sh for real: the neko host's idle check against a container that answers
 * like neko's API.
 *
 * Real: Nix (builds the fixture image), dockerd (tests/harness/dockerd.sh), the container and its
 * published 127.0.0.1 port, HTTP through the machine's curl, the script as its systemd timer runs
 * it (`bash host-idle-stop.sh N`, as root), its stamp and timing logic, the kernel's boot time.
 * Stand-ins: the container is the fixture's busybox httpd serving a directory of this test at
 * /api, so GET /api/stats returns a file the test rewrites (neko computes it from its WebSocket
 * sessions); busybox httpd does not check the token (a Node server on 127.0.0.1 records the header
 * the real curl sends instead). IDLE_SHUTDOWN is `touch <marker>`, not `systemctl poweroff`.
 * Each run gets its own PID namespace (`unshare --pid --mount-proc`): SSH sessions of other tests
 * on this machine would otherwise count as busy; the SSH case runs a process named like sshd's
 * session process ("sshd: user@notty") in that namespace, not a real login (the real sshd's
 * naming is covered by the builder's idle test in lifecycle.test.ts).
 */
import * as fs from "fs";
import * as http from "http";
import { AddressInfo } from "net";
import * as path from "path";
import { DOCKERD_TOOLS, DockerEnv, freeTcpPort, ok, requireTools, run, Services, SCRIPTS, show } from "./support";

jest.setTimeout(120_000);
requireTools(["nix", "/bin/busybox", "curl", "bash", "unshare", "shellcheck", ...DOCKERD_TOOLS]);

const SCRIPT = path.join(SCRIPTS, "host-idle-stop.sh");
const TOKEN = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
const services = new Services();
let dk: DockerEnv;
let port = 0;
let apiDir = ""; // mounted at /www/api in the container: its `stats` is GET /api/stats
const CONTAINER = "neko-idle-fixture";

const docker = (args: string[]) =>
  run(dk.DOCKER_BIN, args, { env: { DOCKER_HOST: dk.DOCKER_HOST, DOCKER_CONFIG: dk.DOCKER_CONFIG }, timeoutMs: 60_000 });
const sleep = (ms: number) => new Promise((res) => setTimeout(res, ms));

/** What neko's GET /api/stats returns (types.Stats), with these counts. */
function setStats(users: number, admins: number): void {
  const body = { has_host: users + admins > 0, server_started_at: "2026-11-28T08:00:00Z", total_users: users, total_admins: admins };
  setStatsRaw(JSON.stringify(body));
}
function setStatsRaw(text: string): void {
  fs.writeFileSync(path.join(apiDir, "stats.tmp"), text);
  fs.renameSync(path.join(apiDir, "stats.tmp"), path.join(apiDir, "stats"));
}

async function httpStatus(url: string): Promise<number> {
  try {
    return (await fetch(url, { signal: AbortSignal.timeout(2000) })).status;
  } catch {
    return 0;
  }
}

beforeAll(async () => {
  const built = ok(
    await run("nix", ["build", "--json", "--no-link", `path:${path.join(SCRIPTS, "..", "tests", "fixtures", "flake")}#image`], {
      timeoutMs: 120_000,
    }),
    "nix build #image",
  );
  const tarball: string = JSON.parse(built)[0].outputs.out;
  dk = await services.dockerd("docker", "");
  expect(ok(await docker(["load", "-i", tarball]), "docker load")).toContain("neko-fixture:latest");
  apiDir = fs.mkdtempSync(path.join(services.dir, "api-"));
  fs.chmodSync(apiDir, 0o755);
  setStats(0, 0);
  port = await freeTcpPort("127.0.0.1");
  ok(
    await docker(["run", "-d", "--name", CONTAINER, "-p", `127.0.0.1:${port}:8080`, "-v", `${apiDir}:/www/api:ro`, "neko-fixture:latest"]),
    "docker run",
  );
  const deadline = Date.now() + 20_000;
  while ((await httpStatus(`http://127.0.0.1:${port}/api/stats`)) !== 200 && Date.now() < deadline) await sleep(200);
  expect(await httpStatus(`http://127.0.0.1:${port}/api/stats`)).toBe(200);
  // The checks below set the stamp back 90 s; a stamp from before the boot means "first run".
  const uptime = Number(fs.readFileSync("/proc/uptime", "utf8").split(" ")[0]);
  if (uptime < 150) await sleep((150 - uptime) * 1000);
}, 240_000);

afterAll(async () => {
  await services.stopAll(); // removes the container with the engine
}, 120_000);

interface Host {
  state: string;
  stamp: string;
  marker: string;
}
let n = 0;
/** A fresh host state dir, as the deploy writes it: api-token (0600) and neko-url. */
function host(url = `http://127.0.0.1:${port}`): Host {
  const state = path.join(services.dir, `host-${++n}`);
  fs.mkdirSync(state);
  fs.writeFileSync(path.join(state, "api-token"), `${TOKEN}\n`, { mode: 0o600 });
  fs.writeFileSync(path.join(state, "neko-url"), `${url}\n`);
  return { state, stamp: path.join(state, "last-busy"), marker: path.join(state, "stopped") };
}

/** Sets the stamp's mtime `seconds` back. */
function stampAgo(h: Host, seconds: number): void {
  if (!fs.existsSync(h.stamp)) fs.writeFileSync(h.stamp, "");
  const t = Date.now() / 1000 - seconds;
  fs.utimesSync(h.stamp, t, t);
}
const stampAge = (h: Host) => Date.now() / 1000 - fs.statSync(h.stamp).mtimeMs / 1000;

/**
 * One timer run: `bash host-idle-stop.sh MINUTES` in a PID namespace of its own. `prelude` runs
 * first in that namespace (a stand-in SSH session); `env` adds to the script's environment.
 */
async function idleStop(h: Host, minutes: string, o: { prelude?: string; env?: Record<string, string> } = {}) {
  const r = await run("unshare", ["--pid", "--fork", "--mount-proc", "bash", "-c", `${o.prelude ?? ""}\nbash "$0" "$1"`, SCRIPT, minutes], {
    env: { NEKO_STATE_DIR: h.state, IDLE_SHUTDOWN: `touch ${h.marker}`, ...o.env },
    timeoutMs: 30_000,
  });
  // one line for the journal, nothing on stderr
  if (r.code !== 0 || r.stderr !== "" || r.stdout.split("\n").length !== 2) throw new Error(`host-idle-stop.sh: ${show(r)}`);
  return r.stdout.trim();
}

describe("host-idle-stop.sh", () => {
  test("first run counts as busy, also with a stamp left from before the last boot; a stamp in the future is reset", async () => {
    const h = host();
    expect(await idleStop(h, "1")).toBe("host-idle-stop: busy (first run after boot)");
    expect(fs.existsSync(h.stamp)).toBe(true);
    const btime = Number(/^btime (\d+)$/m.exec(fs.readFileSync("/proc/stat", "utf8"))![1]);
    fs.utimesSync(h.stamp, btime - 60, btime - 60); // the host stopped an hour ago, was just woken
    expect(await idleStop(h, "1")).toBe("host-idle-stop: busy (first run after boot)");
    expect(stampAge(h)).toBeLessThan(5);
    stampAgo(h, -3600); // the clock was set back an hour
    expect(await idleStop(h, "1")).toBe("host-idle-stop: busy (last-busy stamp was in the future; reset)");
    expect(Math.abs(stampAge(h))).toBeLessThan(5);
    expect(fs.existsSync(h.marker)).toBe(false);
  });

  test("a connected user or admin: busy, stamp renewed, no stop", async () => {
    const h = host();
    for (const [users, admins] of [
      [1, 0],
      [0, 1],
      [3, 2],
    ]) {
      setStats(users, admins);
      stampAgo(h, 90);
      expect(await idleStop(h, "1")).toBe(`host-idle-stop: busy (neko: ${users} user(s), ${admins} admin(s) connected)`);
      expect(stampAge(h)).toBeLessThan(5);
    }
    expect(fs.existsSync(h.marker)).toBe(false);
  });

  test("nobody connected for longer than the limit: stops", async () => {
    const h = host();
    setStats(0, 0);
    stampAgo(h, 90);
    expect(await idleStop(h, "1")).toMatch(
      /^host-idle-stop: idle for 9\ds \(limit 1 min\): stopping \(neko: 0 user\(s\), 0 admin\(s\) connected\)$/,
    );
    expect(fs.existsSync(h.marker)).toBe(true);
  });

  test("nobody connected, under the limit: no stop, stamp kept", async () => {
    const h = host();
    setStats(0, 0);
    stampAgo(h, 30);
    expect(await idleStop(h, "1")).toMatch(/^host-idle-stop: idle for 3\ds of 60s \(neko: 0 user\(s\), 0 admin\(s\) connected\)$/);
    expect(stampAge(h)).toBeGreaterThan(29);
    expect(fs.existsSync(h.marker)).toBe(false);
  });

  test("answers parsed without jq: pretty-printed JSON counts; a look-alike inside a string does not; junk is 'not answering'", async () => {
    const h = host();
    setStatsRaw('{\n  "has_host": true,\n  "total_users" : 2,\n  "total_admins":\n    0\n}\n');
    stampAgo(h, 90);
    expect(await idleStop(h, "1")).toBe("host-idle-stop: busy (neko: 2 user(s), 0 admin(s) connected)");
    setStatsRaw(JSON.stringify({ host_id: 'x","total_users":5,"', total_users: 0, total_admins: 0 }));
    stampAgo(h, 30);
    expect(await idleStop(h, "1")).toMatch(/idle for 3\ds of 60s \(neko: 0 user\(s\), 0 admin\(s\) connected\)$/);
    for (const junk of ["<html>login</html>", '{"total_users":"many","total_admins":0}', '{"total_users":1}']) {
      setStatsRaw(junk);
      stampAgo(h, 90);
      const line = await idleStop(h, "1");
      expect(line).toContain(
        `stopping (neko not answering at http://127.0.0.1:${port}/api/stats: no total_users/total_admins in its answer: `,
      );
    }
    setStats(0, 0);
  });

  test("a deploy in progress keeps it up; a deploy flag older than 30 minutes does not", async () => {
    const h = host();
    setStats(0, 0);
    stampAgo(h, 90);
    const flag = path.join(h.state, "deploying");
    fs.writeFileSync(flag, "");
    expect(await idleStop(h, "1")).toMatch(/^host-idle-stop: busy \(a deploy is running: \S+\/deploying is \ds old\)$/);
    expect(stampAge(h)).toBeLessThan(5);
    const old = Date.now() / 1000 - 31 * 60;
    fs.utimesSync(flag, old, old);
    stampAgo(h, 90);
    expect(await idleStop(h, "1")).toMatch(
      /stopping \(neko: 0 user\(s\), 0 admin\(s\) connected; ignoring \S+\/deploying, 18\d\ds old: a deploy that never finished\)$/,
    );
    expect(fs.existsSync(h.marker)).toBe(true);
  });

  test("an SSH session keeps it up (a process named like sshd's session process)", async () => {
    const h = host();
    setStats(0, 0);
    stampAgo(h, 90);
    const prelude = `(exec -a "sshd: ec2-user@notty" sleep 30) </dev/null >/dev/null 2>&1 &\nsleep 0.2`;
    expect(await idleStop(h, "1", { prelude })).toBe("host-idle-stop: busy (an SSH session is open)");
    expect(fs.existsSync(h.marker)).toBe(false);
    const privsep = `(exec -a "sshd: ec2-user [priv]" sleep 30) </dev/null >/dev/null 2>&1 &\nsleep 0.2`;
    stampAgo(h, 90);
    expect(await idleStop(h, "1", { prelude: privsep })).toMatch(/stopping/); // not a session
  });

  test("not deployed yet (no token or URL): not busy, says so", async () => {
    const h = host();
    fs.rmSync(path.join(h.state, "api-token"));
    stampAgo(h, 90);
    const line = await idleStop(h, "1");
    expect(line).toMatch(/^host-idle-stop: idle for 9\ds \(limit 1 min\): stopping /);
    expect(line).toContain(`(neko not deployed yet (no neko-url or api-token in ${h.state}))`);
  });

  test("the token goes to curl on standard input, never on its command line", async () => {
    // statically: the header is built by printf (a builtin) and read by curl from stdin
    const text = fs.readFileSync(SCRIPT, "utf8");
    const usesToken = text.split("\n").filter((l) => /\$\{?token\b/.test(l));
    expect(usesToken).toEqual([
      "  token=${token//[$'\\r\\t ']/}",
      "  if [[ -z $url || -z $token ]]; then",
      "  if ! body=$(printf 'Authorization: Bearer %s\\n' \"$token\" |",
    ]);
    expect(text).toMatch(/printf 'Authorization: Bearer %s\\n' "\$token" \|\n\s+curl [^\n]*\n[^\n]*-H @- "\$url"/);
    ok(await run("shellcheck", [SCRIPT]), "shellcheck");

    // a fake curl first on PATH records its argv and stdin
    const bin = fs.mkdtempSync(path.join(services.dir, "bin-"));
    const record = path.join(bin, "record");
    fs.writeFileSync(
      path.join(bin, "curl"),
      `#!/bin/sh\nprintf '%s\\n' "$@" >${record}.argv\ncat >${record}.stdin\necho '{"total_users":0,"total_admins":0}'\n`,
      { mode: 0o755 },
    );
    const h = host();
    stampAgo(h, 30);
    await idleStop(h, "1", { env: { PATH: `${bin}:${process.env.PATH}` } });
    const argv = fs.readFileSync(`${record}.argv`, "utf8");
    expect(argv).not.toContain(TOKEN);
    expect(argv.split("\n")).toEqual(expect.arrayContaining(["-H", "@-", `http://127.0.0.1:${port}/api/stats`]));
    expect(fs.readFileSync(`${record}.stdin`, "utf8")).toBe(`Authorization: Bearer ${TOKEN}\n`);

    // and the real curl sends that header (busybox httpd ignores it; this server records it)
    const seen: http.IncomingHttpHeaders[] = [];
    const server = http.createServer((req, res) => {
      seen.push(req.headers);
      res.writeHead(200, { "Content-Type": "application/json" }).end('{"total_users":1,"total_admins":0}');
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const h2 = host(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`);
      stampAgo(h2, 30);
      expect(await idleStop(h2, "1")).toBe("host-idle-stop: busy (neko: 1 user(s), 0 admin(s) connected)");
      expect(seen.map((s) => s.authorization)).toEqual([`Bearer ${TOKEN}`]);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  // Last: stops the container.
  test("neko not answering (container stopped): not busy, logged, stops after the limit", async () => {
    ok(await docker(["stop", "-t", "1", CONTAINER]), "docker stop");
    expect(await httpStatus(`http://127.0.0.1:${port}/api/stats`)).toBe(0);
    const h = host();
    stampAgo(h, 30);
    expect(await idleStop(h, "1")).toMatch(
      new RegExp(
        `^host-idle-stop: idle for 3\\ds of 60s \\(neko not answering at http://127\\.0\\.0\\.1:${port}/api/stats: curl: \\(7\\) .*\\)$`,
      ),
    );
    expect(fs.existsSync(h.marker)).toBe(false);
    stampAgo(h, 90);
    expect(await idleStop(h, "1")).toMatch(
      /^host-idle-stop: idle for 9\ds \(limit 1 min\): stopping \(neko not answering at .*curl: \(7\) /,
    );
    expect(fs.existsSync(h.marker)).toBe(true);
  });
});
