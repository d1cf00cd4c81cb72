/**
 * scripts/host-idle-stop.sh for real: the neko host's idle check against a container that answers
 * like neko's API.
 *
 * Real: Nix (builds the fixture image), dockerd (tests/harness/dockerd.sh), the container and its
 * published 127.0.0.1 port, HTTP through the machine's curl, the fixture's screenshot CGI (checks
 * the API token as neko does), the script as its systemd timer runs it (`bash host-idle-stop.sh
 * N`, as root), its stamp, state files and timing logic, the kernel's boot time.
 * Stand-ins: the container is the fixture's busybox httpd serving a directory of this test at
 * /api, so GET /api/stats and GET /api/room/settings return files the test rewrites (neko computes
 * them from its sessions: who is connected, who holds control, implicit hosting), and GET
 * /api/room/screen/shot.jpg returns the picture the test puts in place of the fixture's desktop
 * (neko takes it from X: a viewer's input changes it); busybox httpd does not check the token for
 * the plain files (a Node server on 127.0.0.1 records the header the real curl sends instead).
 * IDLE_SHUTDOWN is `touch <marker>`, not `systemctl poweroff`.
 * Each run gets its own PID namespace (`unshare --pid --mount-proc`): SSH sessions of other tests
 * on this machine would otherwise count as busy; the SSH case runs a process named like sshd's
 * session process ("sshd: user@notty") in that namespace, not a real login (the real sshd's
 * naming is covered by the builder's idle test in lifecycle.test.ts).
 */
import * as fs from "fs";
import * as http from "http";
import { AddressInfo } from "net";
import * as path from "path";
import { DOCKERD_TOOLS, DockerEnv, FIXTURE, freeTcpPort, ok, reEscape, requireTools, run, Services, SCRIPTS, show } from "./support";

jest.setTimeout(120_000);
requireTools(["nix", "/bin/busybox", "curl", "bash", "unshare", "shellcheck", ...DOCKERD_TOOLS]);

const SCRIPT = path.join(SCRIPTS, "host-idle-stop.sh");
const TOKEN = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
const services = new Services();
let dk: DockerEnv;
let port = 0;
let apiDir = ""; // mounted at /www/api in the container: its `stats` is GET /api/stats
let shareDir = ""; // mounted at /usr/share/neko-fixture: the screenshot CGI and its desktop.jpg
const CONTAINER = "neko-idle-fixture";

const docker = (args: string[]) =>
  run(dk.DOCKER_BIN, args, { env: { DOCKER_HOST: dk.DOCKER_HOST, DOCKER_CONFIG: dk.DOCKER_CONFIG }, timeoutMs: 60_000 });
const sleep = (ms: number) => new Promise((res) => setTimeout(res, ms));

/** Replaces a file the container serves in one step (it never reads half a file). */
function replace(file: string, content: string | Buffer): void {
  fs.writeFileSync(`${file}.tmp`, content);
  fs.renameSync(`${file}.tmp`, file);
}

/** What neko's GET /api/stats returns (types.Stats): these counts, and who holds control. */
function setStats(users: number, admins: number, host?: string): void {
  const body = {
    has_host: host !== undefined,
    ...(host !== undefined ? { host_id: host } : {}), // omitempty
    server_started_at: "2026-11-28T08:00:00Z",
    total_users: users,
    ...(users === 0 ? { last_user_left_at: "2026-12-03T08:00:00Z" } : {}),
    total_admins: admins,
  };
  setStatsRaw(JSON.stringify(body));
}
function setStatsRaw(text: string): void {
  replace(path.join(apiDir, "stats"), text);
}
/** What neko's GET /api/room/settings returns (types.Settings), with implicit hosting on or off. */
function setImplicitHosting(on: boolean): void {
  const body = {
    private_mode: false,
    locked_logins: false,
    locked_controls: false,
    control_protection: false,
    implicit_hosting: on,
    inactive_cursors: false,
    merciful_reconnect: true,
    heartbeat_interval: 120,
    plugins: {},
  };
  replace(path.join(apiDir, "room", "settings"), JSON.stringify(body));
}

/**
 * What the desktop shows now (GET /api/room/screen/shot.jpg): the fixture's desktop picture, with
 * one byte of its scan data changed per `variant` (each variant a different, still decodable
 * JPEG: what a keystroke or a scroll does to neko's screenshot); "blank" is the fixture's uniform one.
 */
const DESKTOP = fs.readFileSync(path.join(FIXTURE, "desktop", "desktop.jpg"));
function showPicture(variant: number | "blank"): void {
  let picture = DESKTOP;
  if (variant === "blank") picture = fs.readFileSync(path.join(FIXTURE, "desktop", "blank.jpg"));
  else if (variant > 0) {
    picture = Buffer.from(DESKTOP);
    const at = picture.length - 200; // inside the entropy-coded data, before the EOI marker
    picture[at] = (picture[at] + variant) % 0xff; // never 0xff: that would start a marker
  }
  replace(path.join(shareDir, "desktop.jpg"), picture);
}

async function httpStatus(url: string, headers: Record<string, string> = {}): Promise<number> {
  try {
    return (await fetch(url, { headers, signal: AbortSignal.timeout(2000) })).status;
  } catch {
    return 0;
  }
}

beforeAll(async () => {
  const built = ok(
    await run("nix", ["build", "--json", "--no-link", `path:${FIXTURE}#image`], {
      timeoutMs: 120_000,
    }),
    "nix build #image",
  );
  const tarball: string = JSON.parse(built)[0].outputs.out;
  dk = await services.dockerd("docker", "");
  expect(ok(await docker(["load", "-i", tarball]), "docker load")).toContain("neko-fixture:latest");
  apiDir = fs.mkdtempSync(path.join(services.dir, "api-"));
  fs.chmodSync(apiDir, 0o755);
  fs.mkdirSync(path.join(apiDir, "room", "screen"), { recursive: true, mode: 0o755 });
  fs.writeFileSync(path.join(apiDir, "room", "screen", "shot.jpg"), ""); // the CGI runs for files that exist
  setStats(0, 0);
  setImplicitHosting(false);
  // the fixture's own screenshot CGI, serving a desktop.jpg this test replaces
  shareDir = fs.mkdtempSync(path.join(services.dir, "share-"));
  fs.chmodSync(shareDir, 0o755);
  fs.copyFileSync(path.join(FIXTURE, "desktop", "shot-cgi"), path.join(shareDir, "shot-cgi"));
  fs.chmodSync(path.join(shareDir, "shot-cgi"), 0o755);
  fs.copyFileSync(path.join(FIXTURE, "desktop", "blank.jpg"), path.join(shareDir, "blank.jpg"));
  showPicture(0);
  const envFile = path.join(services.dir, "neko.env");
  fs.writeFileSync(envFile, `NEKO_SESSION_API_TOKEN=${TOKEN}\n`, { mode: 0o600 });
  port = await freeTcpPort("127.0.0.1");
  ok(
    await docker([
      "run",
      "-d",
      "--name",
      CONTAINER,
      "-p",
      `127.0.0.1:${port}:8080`,
      "--env-file",
      envFile,
      "-v",
      `${apiDir}:/www/api:ro`,
      "-v",
      `${shareDir}:/usr/share/neko-fixture:ro`,
      "neko-fixture:latest",
    ]),
    "docker run",
  );
  const deadline = Date.now() + 20_000;
  while ((await httpStatus(`http://127.0.0.1:${port}/api/stats`)) !== 200 && Date.now() < deadline) await sleep(200);
  expect(await httpStatus(`http://127.0.0.1:${port}/api/stats`)).toBe(200);
  // the screenshot answers only with the token, as neko's
  const shot = `http://127.0.0.1:${port}/api/room/screen/shot.jpg`;
  expect(await httpStatus(shot)).toBe(401);
  expect(await httpStatus(shot, { Authorization: `Bearer ${TOKEN}` })).toBe(200);
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

  test("a tab left open that only watches (nobody in control): idle, whatever the desktop shows; stops after the limit", async () => {
    const h = host();
    setImplicitHosting(false);
    for (const [users, admins] of [
      [1, 0],
      [0, 1],
      [3, 2],
    ]) {
      setStats(users, admins);
      showPicture(users + admins); // a page that changes by itself: no one can give input
      stampAgo(h, 30);
      expect(await idleStop(h, "1")).toMatch(
        new RegExp(
          `^host-idle-stop: idle for 3\\ds of 60s \\(neko: ${users} user\\(s\\), ${admins} admin\\(s\\) connected; nobody in control\\)$`,
        ),
      );
      expect(stampAge(h)).toBeGreaterThan(29);
    }
    expect(fs.existsSync(h.marker)).toBe(false);
    setStats(1, 0);
    showPicture(9);
    stampAgo(h, 90);
    expect(await idleStop(h, "1")).toMatch(
      /^host-idle-stop: idle for 9\ds \(limit 1 min\): stopping \(neko: 1 user\(s\), 0 admin\(s\) connected; nobody in control\)$/,
    );
    expect(fs.existsSync(h.marker)).toBe(true);
  });

  test("input from whoever holds control (a new picture) keeps it busy; an unchanged desktop or a blinking caret does not; a forgotten tab in control stops", async () => {
    const h = host();
    setStats(1, 0, "alice");
    showPicture(0);
    stampAgo(h, 90);
    const who = "neko: 1 user(s), 0 admin(s) connected";
    expect(await idleStop(h, "1")).toBe(`host-idle-stop: busy (${who}; alice took control; the desktop shows a new picture)`);
    expect(stampAge(h)).toBeLessThan(5);
    // holds control, types nothing
    stampAgo(h, 30);
    expect(await idleStop(h, "1")).toMatch(
      new RegExp(`^host-idle-stop: idle for 3\\ds of 60s \\(${reEscape(who)}; alice in control; the desktop shows no new picture\\)$`),
    );
    expect(stampAge(h)).toBeGreaterThan(29);
    // types: the desktop changes at each run
    for (const variant of [1, 2, 3]) {
      showPicture(variant);
      stampAgo(h, 90);
      expect(await idleStop(h, "1")).toBe(`host-idle-stop: busy (${who}; alice in control; the desktop shows a new picture)`);
      expect(stampAge(h)).toBeLessThan(5);
    }
    // a caret blinking in the last field: two pictures in turn, both seen before
    stampAgo(h, 30);
    for (const variant of [2, 3, 2, 3]) {
      showPicture(variant);
      expect(await idleStop(h, "1")).toMatch(/; alice in control; the desktop shows no new picture\)$/);
    }
    expect(stampAge(h)).toBeGreaterThan(29);
    expect(fs.existsSync(h.marker)).toBe(false);
    // the tab was forgotten with control: the limit stops it
    stampAgo(h, 90);
    expect(await idleStop(h, "1")).toMatch(
      new RegExp(
        `^host-idle-stop: idle for 9\\ds \\(limit 1 min\\): stopping \\(${reEscape(who)}; alice in control; the desktop shows no new picture\\)$`,
      ),
    );
    expect(fs.existsSync(h.marker)).toBe(true);
    // what it remembers: digests and times, never a picture; no error file left behind
    const lines = fs.readFileSync(path.join(h.state, "idle-pictures"), "utf8").trim().split("\n");
    expect(lines.length).toBe(10);
    for (const l of lines) expect(l).toMatch(/^\d{10} [0-9a-f]{64}$/);
    expect(new Set(lines.map((l) => l.split(" ")[1])).size).toBe(4);
    expect(fs.readdirSync(h.state).sort()).toEqual(["api-token", "idle-control", "idle-pictures", "last-busy", "neko-url", "stopped"]);
  });

  test("taking or passing control is use; control lost with a tab's connection is not; a picture is new again after IDLE_MINUTES", async () => {
    const h = host();
    showPicture(4);
    setStats(2, 0, "alice");
    stampAgo(h, 90);
    expect(await idleStop(h, "1")).toMatch(
      /busy \(neko: 2 user\(s\), 0 admin\(s\) connected; alice took control; the desktop shows a new picture\)$/,
    );
    setStats(2, 0, "bob"); // alice gave control to bob (or he took it)
    stampAgo(h, 90);
    expect(await idleStop(h, "1")).toMatch(
      /busy \(neko: 2 user\(s\), 0 admin\(s\) connected; bob took control; the desktop shows no new picture\)$/,
    );
    expect(fs.readFileSync(path.join(h.state, "idle-control"), "utf8")).toBe("bob\n");
    setStats(1, 0); // bob's tab disconnected: neko clears his control
    stampAgo(h, 30);
    expect(await idleStop(h, "1")).toMatch(/idle for 3\ds of 60s \(neko: 1 user\(s\), 0 admin\(s\) connected; nobody in control\)$/);
    setStats(1, 0, "bob"); // and back
    stampAgo(h, 30);
    expect(await idleStop(h, "1")).toMatch(
      /busy \(neko: 1 user\(s\), 0 admin\(s\) connected; bob took control; the desktop shows no new picture\)$/,
    );
    // picture 4 was seen 1-2 runs ago; after IDLE_MINUTES (1) it is forgotten and counts as new
    const list = path.join(h.state, "idle-pictures");
    const old = Math.floor(Date.now() / 1000) - 125;
    replace(list, fs.readFileSync(list, "utf8").replace(/^\d+ /gm, `${old} `));
    stampAgo(h, 30);
    expect(await idleStop(h, "1")).toMatch(
      /busy \(neko: 1 user\(s\), 0 admin\(s\) connected; bob in control; the desktop shows a new picture\)$/,
    );
    expect(fs.readFileSync(list, "utf8").trim().split("\n")).toHaveLength(1);
    expect(fs.existsSync(h.marker)).toBe(false);
  });

  test("implicit hosting: nobody in control, yet any viewer's input counts (new pictures)", async () => {
    const h = host();
    setImplicitHosting(true);
    try {
      setStats(1, 0);
      showPicture(5);
      stampAgo(h, 90);
      expect(await idleStop(h, "1")).toBe(
        "host-idle-stop: busy (neko: 1 user(s), 0 admin(s) connected; nobody in control, implicit hosting on; the desktop shows a new picture)",
      );
      stampAgo(h, 30);
      expect(await idleStop(h, "1")).toMatch(
        /idle for 3\ds of 60s \(.*; nobody in control, implicit hosting on; the desktop shows no new picture\)$/,
      );
      // settings that do not answer count as implicit hosting off
      fs.rmSync(path.join(apiDir, "room", "settings"));
      showPicture(6);
      stampAgo(h, 30);
      expect(await idleStop(h, "1")).toMatch(/idle for 3\ds of 60s \(neko: 1 user\(s\), 0 admin\(s\) connected; nobody in control\)$/);
    } finally {
      setImplicitHosting(false);
    }
  });

  test("a screenshot neko refuses (another token) is not busy and says why", async () => {
    const h = host();
    fs.writeFileSync(path.join(h.state, "api-token"), "not-the-token\n", { mode: 0o600 });
    setStats(1, 0, "alice"); // busybox serves stats without checking the token; the screenshot CGI checks it
    showPicture(7);
    stampAgo(h, 30);
    await idleStop(h, "1"); // alice took control: busy
    stampAgo(h, 30);
    expect(await idleStop(h, "1")).toMatch(
      /^host-idle-stop: idle for 3\ds of 60s \(neko: 1 user\(s\), 0 admin\(s\) connected; alice in control; no screenshot: curl: \(22\) The requested URL returned error: 401 ?\)$/,
    );
    expect(fs.existsSync(path.join(h.state, "idle-picture-error"))).toBe(false);
    expect(fs.existsSync(path.join(h.state, "idle-pictures"))).toBe(false);
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
    setStatsRaw('{\n  "has_host": true,\n  "host_id" : "carol",\n  "total_users" : 2,\n  "total_admins":\n    0\n}\n');
    stampAgo(h, 90);
    expect(await idleStop(h, "1")).toMatch(/^host-idle-stop: busy \(neko: 2 user\(s\), 0 admin\(s\) connected; carol took control; /);
    setStatsRaw(JSON.stringify({ host_id: 'x","total_users":5,"', total_users: 0, total_admins: 0 }));
    stampAgo(h, 30);
    expect(await idleStop(h, "1")).toMatch(/idle for 3\ds of 60s \(neko: 0 user\(s\), 0 admin\(s\) connected\)$/);
    const lookAlike = { has_host: false, note: '","has_host":true,"host_id":"mallory', total_users: 1, total_admins: 0 };
    setStatsRaw(JSON.stringify(lookAlike));
    stampAgo(h, 30);
    expect(await idleStop(h, "1")).toMatch(/idle for 3\ds of 60s \(neko: 1 user\(s\), 0 admin\(s\) connected; nobody in control\)$/);
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
      "  printf 'Authorization: Bearer %s\\n' \"$token\" |",
      "  token=${token//[$'\\r\\t ']/}",
      "  if [[ -z $url || -z $token ]]; then",
    ]);
    expect(text).toMatch(/printf 'Authorization: Bearer %s\\n' "\$token" \|\n\s+curl [^\n]*\n[^\n]*-H @- "\$base\$1"\n\}/);
    ok(await run("shellcheck", [SCRIPT]), "shellcheck");

    // a fake curl first on PATH records its argv and stdin, call by call
    const bin = fs.mkdtempSync(path.join(services.dir, "bin-"));
    const record = path.join(bin, "record");
    fs.writeFileSync(
      path.join(bin, "curl"),
      [
        "#!/bin/sh",
        `printf '%s\\n' "$@" >>${record}.argv`,
        `cat >>${record}.stdin`,
        "for url; do :; done",
        "case $url in",
        `  */api/stats) echo '{"has_host":true,"host_id":"alice","total_users":1,"total_admins":0}' ;;`,
        "  *) echo picture ;;",
        "esac",
        "",
      ].join("\n"),
      { mode: 0o755 },
    );
    const h = host();
    stampAgo(h, 30);
    expect(await idleStop(h, "1", { env: { PATH: `${bin}:${process.env.PATH}` } })).toContain(
      "alice took control; the desktop shows a new picture",
    );
    const argv = fs.readFileSync(`${record}.argv`, "utf8");
    expect(argv).not.toContain(TOKEN);
    const calls = argv.split("\n").filter((l) => l.startsWith("http"));
    expect(calls).toEqual([`http://127.0.0.1:${port}/api/stats`, `http://127.0.0.1:${port}/api/room/screen/shot.jpg`]);
    expect(argv.split("\n").filter((l) => l === "@-")).toHaveLength(2);
    expect(fs.readFileSync(`${record}.stdin`, "utf8")).toBe(`Authorization: Bearer ${TOKEN}\n`.repeat(2));

    // and the real curl sends that header (busybox httpd ignores it; this server records it)
    const seen: string[] = [];
    const server = http.createServer((req, res) => {
      seen.push(`${req.method} ${req.url} ${req.headers.authorization}`);
      if (req.url === "/api/stats") res.writeHead(200, { "Content-Type": "application/json" }).end('{"total_users":1,"total_admins":0}');
      else if (req.url === "/api/room/settings")
        res.writeHead(200, { "Content-Type": "application/json" }).end('{"implicit_hosting":true}');
      else res.writeHead(200, { "Content-Type": "image/jpeg" }).end(DESKTOP);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const h2 = host(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`);
      stampAgo(h2, 30);
      expect(await idleStop(h2, "1")).toBe(
        "host-idle-stop: busy (neko: 1 user(s), 0 admin(s) connected; nobody in control, implicit hosting on; the desktop shows a new picture)",
      );
      expect(seen).toEqual(["/api/stats", "/api/room/settings", "/api/room/screen/shot.jpg"].map((u) => `GET ${u} Bearer ${TOKEN}`));
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
