/**
 * The TLS front (scripts/tls-front.sh) and the TURN relay (scripts/turn-relay.sh) against real
 * tools, each script run as its Pulumi Command runs it on the host: command line and stdin from
 * `scriptCommand` (remote, so bounded by `timeout` as components/runScript.ts runs it), through
 * `/bin/sh -c` inside the namespaced host's network (the host's own view: 127.0.0.1 is its
 * loopback), with DOCKER_HOST set to the dockerd running in that namespace.
 *
 * Real: Pebble v2.10.3 (Let's Encrypt's ACME test server, built from its Go module) validating
 * over HTTP/TLS-ALPN against the namespaced host's address (nothing is faked as valid); Caddy
 * v2.11.9 (built from its Go module) with the Caddyfile from lib/caddy.ts; Debian's coturn 4.6.1
 * turnserver with the configuration from lib/turn.ts (both from the settings parser); dockerd 20.10
 * in its own network namespace (tests/harness/nshost.sh); curl, openssl s_client and coturn's
 * turnutils_uclient/turnutils_peer as clients from this machine's side of the veth.
 * Stand-ins: the two images. TLS_IMAGE and TURN_IMAGE are loaded under their production names
 * from tests/harness/standin-image.sh (a single layer with the Go-built caddy, or Debian's
 * turnserver with its libraries and busybox), not pulled from ECR Public / GHCR: the binaries'
 * behaviour and configuration are real, the official images' own entrypoints and packaging are
 * not (the scripts replace coturn's entrypoint and pin its user, so the difference is small; see
 * tests/harness/README.md). neko is a stand-in too: a small Node.js server on 127.0.0.1:8080
 * inside the namespace (`/health` -> `true`, `/headers`, a WebSocket echo).
 * The metadata guard: scripts/imds-guard.sh's iptables rules in the namespaced host, a busybox httpd
 * on its 169.254.169.254 standing in for the metadata service, asked from inside the running containers.
 * Not covered: Let's Encrypt itself (its rate limits, its real shortlived profile), public DNS,
 * IPv6.
 */
import { ChildProcess, spawn } from "child_process";
import * as crypto from "crypto";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import * as tls from "tls";
import { caddyfile, certificatePaths, TLS_IMAGE, TLS_UID, TLS_USER } from "../../lib/caddy";
import { IMDS_GUARD_UIDS } from "../../lib/setup";
import { parseSettings, Settings } from "../../lib/settings";
import { scriptCommand, ScriptCommand, ScriptRun } from "../../lib/shell";
import { TURN_IMAGE, TURN_PROC_UID, turnRelayEnv } from "../../lib/turn";
import { configOf } from "../support/settings";
import { HARNESS, ok, readEnvFile, REPO, Result, run, SCRIPTS, show } from "./support";

jest.setTimeout(120_000);

/** The budgets components/tlsFront.ts and components/turnRelay.ts give these steps. */
const TLS_BUDGET = 600;
const TURN_BUDGET = 300;
const DOCKER = "/usr/bin/docker";
const TURN_PASSWORD = "relay-password-for-tests-0123";
const PEER_PORT = 3480;

interface NsHostEnv {
  DOCKER_HOST: string;
  NSHOST_ADDR: string;
  NSHOST_SIDE_ADDR: string;
  NSHOST_NETNS: string;
}
interface PebbleEnv {
  PEBBLE_DIR_URL: string;
  PEBBLE_ROOT_FILE: string;
  PEBBLE_MINICA: string;
  PEBBLE_LOG: string;
}

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ntls-"));
const started: { script: string; state: string }[] = [];
const children: ChildProcess[] = [];
const timings: string[] = [];
let h: NsHostEnv;
let pebble: PebbleEnv;
let stack: Settings;
/** Output of one test that a later one needs; a missing one names the test that failed. */
const handoff: Record<string, string> = {};
const need = (k: string): string => {
  const v = handoff[k];
  if (v === undefined) throw new Error(`prerequisite missing: ${k} (an earlier test failed)`);
  return v;
};

/** Commands this file drives, each with its Debian package (tools/install-deps.sh installs them). */
const TOOLS: [string, string][] = [
  ["/usr/sbin/dockerd", "docker.io"],
  ["/usr/bin/docker", "docker.io"],
  ["/usr/sbin/docker-proxy", "docker.io"],
  ["/usr/bin/ip", "iproute2"],
  ["/usr/bin/nsenter", "util-linux"],
  ["/usr/bin/openssl", "openssl"],
  ["/usr/bin/curl", "curl"],
  ["/usr/bin/turnserver", "coturn"],
  ["/usr/bin/turnutils_uclient", "coturn"],
  ["/usr/bin/turnutils_peer", "coturn"],
  ["/bin/busybox", "busybox-static"],
  ["/usr/sbin/iptables", "iptables"],
  ["/usr/sbin/setcap", "libcap2-bin"],
];

function requireTlsTools(): void {
  const problems: string[] = [];
  const missing = TOOLS.filter(([p]) => !fs.existsSync(p));
  if (missing.length) {
    problems.push(
      `missing ${missing.map(([p]) => p).join(", ")}: run tools/install-deps.sh (or apt-get install ${[...new Set(missing.map(([, pkg]) => pkg))].join(" ")})`,
    );
  }
  if (!fs.existsSync("/usr/local/go/bin/go") && !process.env.PATH?.split(":").some((d) => fs.existsSync(path.join(d, "go")))) {
    problems.push("no Go toolchain (go on PATH or /usr/local/go/bin/go): Caddy and Pebble are built from their Go modules");
  }
  if (process.getuid?.() !== 0) problems.push("must run as root (network namespaces, dockerd)");
  if (problems.length) throw new Error(`real-tool tests cannot run here:\n  - ${problems.join("\n  - ")}`);
}

async function harness(script: string, name: string, args: string[] = [], timeoutMs = 90_000): Promise<Record<string, string>> {
  const state = path.join(dir, name);
  started.push({ script, state });
  ok(await run(path.join(HARNESS, script), ["start", state, ...args], { timeoutMs }), `tests/harness/${script} start ${name}`);
  return readEnvFile(path.join(state, "env"));
}

/** A long-running process inside the namespaced host (stopped by PID in afterAll). */
function inHost(cmd: string[], log: string): ChildProcess {
  const out = fs.openSync(path.join(dir, log), "a");
  const child = spawn("ip", ["netns", "exec", h.NSHOST_NETNS, ...cmd], { stdio: ["ignore", out, out] });
  fs.closeSync(out);
  children.push(child);
  return child;
}

/** A script as its remote Command runs it, on the namespaced host. */
function onHost(sc: ScriptCommand, timeoutMs: number): Promise<Result> {
  return run("ip", ["netns", "exec", h.NSHOST_NETNS, "/bin/sh", "-c", sc.command], {
    input: sc.stdin,
    // The host's Docker client is Debian's (/usr/local/bin/docker here is another version).
    env: { DOCKER_HOST: h.DOCKER_HOST, PATH: `/usr/bin:/usr/sbin:/bin:/sbin:${process.env.PATH}` },
    timeoutMs,
  });
}

function docker(args: string[]): Promise<Result> {
  return run(DOCKER, args, { env: { DOCKER_HOST: h.DOCKER_HOST }, timeoutMs: 30_000 });
}

async function waitFor(what: string, check: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The stack's settings: an ssh host at the namespaced address, TLS from Pebble, TURN on. */
function settingsFor(acmeServer: string): Settings {
  return parseSettings({
    config: configOf({
      builder: { kind: "local" },
      image: { flake: "./tests/fixtures/flake" },
      registry: { kind: "oci", url: "registry.neko.test/neko" },
      host: {
        kind: "ssh",
        host: h.NSHOST_ADDR,
        privateKey: "-----BEGIN OPENSSH PRIVATE KEY-----\nunused\n-----END OPENSSH PRIVATE KEY-----",
        hostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEunused",
        tls: true,
        acmeServer,
        acmeEmail: "ops@neko.test",
        acmeRootCert: fs.readFileSync(pebble.PEBBLE_MINICA, "utf8"),
      },
      neko: { turn: true, turnPassword: TURN_PASSWORD },
    }),
    secretKeys: ["neko-infra:host", "neko-infra:neko"],
    projectDir: REPO,
    fileExists: (p) => fs.existsSync(p),
  });
}

function tlsOf(s: Settings) {
  if (s.host.kind === "none" || !s.host.tlsFront.enabled) throw new Error("the test stack has no TLS front");
  return s.host.tlsFront;
}

/** tls-front.sh as components/tlsFront.ts runs it, plus the test-only knobs. */
function tlsFrontRun(s: Settings, o: { subject?: string; tlsDir: string; wait?: number; expect?: string }): ScriptRun {
  const t = tlsOf(s);
  const subject = o.subject ?? t.subject;
  return {
    script: "tls-front.sh",
    args: [TLS_IMAGE, subject],
    env: {
      TLS_CADDYFILE: caddyfile({
        subject,
        email: t.email,
        acmeServer: t.acmeServer,
        privateRoot: t.acmeRootCert !== undefined,
        nekoPort: s.neko.httpPort,
      }),
      TLS_USER,
      ...(t.acmeRootCert ? { TLS_ROOT_CERT: t.acmeRootCert } : {}),
      ...(o.expect ? { TLS_EXPECT_ADDRESS: o.expect } : {}),
      TLS_DIR: o.tlsDir,
      TLS_CA_FILE: pebble.PEBBLE_ROOT_FILE,
      TLS_WAIT_SECONDS: String(o.wait ?? 120),
    },
    budgetSeconds: TLS_BUDGET,
  };
}

function turnRelayRun(s: Settings): ScriptRun {
  const t = tlsOf(s);
  return {
    script: "turn-relay.sh",
    args: [TURN_IMAGE],
    env: {
      ...turnRelayEnv({
        turn: s.neko.turn,
        publicAddress: h.NSHOST_ADDR,
        password: s.neko.turnPassword!,
        tls: { subject: t.subject, acmeServer: t.acmeServer },
      }),
      TURN_DIR: path.join(dir, "turn"),
      TLS_DIR: path.join(dir, "tls"),
      // Every 3 s instead of 12 h: the reload (as nobody, from the copied key) is seen in the logs.
      TURN_RELOAD_SECONDS: "3",
    },
    budgetSeconds: TURN_BUDGET,
  };
}

/** openssl s_client from this machine: the served leaf (PEM) and whether it verified against `ca`. */
async function servedCert(port: number, ca: string): Promise<{ verified: boolean; pem: string; out: string }> {
  const r = await run(
    "sh",
    [
      "-c",
      'openssl s_client -connect "$1" -CAfile "$2" -verify_ip "$3" -verify_return_error </dev/null 2>&1',
      "sh",
      `${h.NSHOST_ADDR}:${port}`,
      ca,
      h.NSHOST_ADDR,
    ],
    { timeoutMs: 15_000 },
  );
  const pem = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/.exec(r.stdout)?.[0] ?? "";
  return { verified: r.code === 0 && /Verify return code: 0 \(ok\)/.test(r.stdout), pem, out: r.stdout };
}

/** A WebSocket handshake and one echoed text frame over TLS, by hand (no client library). */
function webSocketEcho(ca: string, message: string): Promise<{ status: string; accepted: boolean; echo: string }> {
  return new Promise((resolve, reject) => {
    const key = crypto.randomBytes(16).toString("base64");
    const expected = crypto.createHash("sha1").update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest("base64");
    const socket = tls.connect({ host: h.NSHOST_ADDR, port: 443, ca: fs.readFileSync(ca), ALPNProtocols: ["http/1.1"] });
    const timer = setTimeout(() => socket.destroy(new Error("no WebSocket echo within 10 s")), 10_000);
    let buf = Buffer.alloc(0);
    let status = "";
    let accepted = false;
    socket.on("secureConnect", () => {
      socket.write(
        `GET /ws HTTP/1.1\r\nHost: ${h.NSHOST_ADDR}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
      );
    });
    socket.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (!status) {
        const end = buf.indexOf("\r\n\r\n");
        if (end < 0) return;
        const head = buf.subarray(0, end).toString();
        status = head.split("\r\n")[0];
        accepted = new RegExp(`^sec-websocket-accept: ${expected.replace(/[+/=]/g, "\\$&")}$`, "im").test(head);
        buf = buf.subarray(end + 4);
        const payload = Buffer.from(message);
        const mask = crypto.randomBytes(4);
        const masked = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]));
        socket.write(Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, masked]));
      }
      if (status && buf.length >= 2 && buf.length >= 2 + (buf[1] & 0x7f)) {
        clearTimeout(timer);
        const echo = buf.subarray(2, 2 + (buf[1] & 0x7f)).toString();
        socket.end();
        resolve({ status, accepted, echo });
      }
    });
    socket.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

/** turnutils_uclient from this machine against the relay: allocate, then send to a peer. */
function uclient(o: { tcp?: boolean; password?: string; peer: string; peerPort?: number }): Promise<Result> {
  return run(
    "turnutils_uclient",
    [
      ...(o.tcp ? ["-t"] : []),
      "-u",
      "neko",
      "-w",
      o.password ?? TURN_PASSWORD,
      "-e",
      o.peer,
      "-r",
      String(o.peerPort ?? PEER_PORT),
      "-n",
      "1",
      h.NSHOST_ADDR,
    ],
    { timeoutMs: 30_000 },
  );
}

// The backend: what neko answers behind the front (health, headers, a WebSocket echo).
const BACKEND = `
const http = require("http"), crypto = require("crypto");
const server = http.createServer((req, res) => {
  if (req.url === "/health") return res.end("true");
  if (req.url === "/headers") { res.setHeader("content-type", "application/json"); return res.end(JSON.stringify(req.headers)); }
  res.statusCode = 404; res.end("not found");
});
server.on("upgrade", (req, socket) => {
  const accept = crypto.createHash("sha1").update(req.headers["sec-websocket-key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest("base64");
  socket.write("HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\nSec-WebSocket-Accept: " + accept + "\\r\\n\\r\\n");
  socket.on("data", (b) => {
    const len = b[1] & 0x7f, mask = b.subarray(2, 6), p = Buffer.from(b.subarray(6, 6 + len));
    for (let i = 0; i < p.length; i++) p[i] ^= mask[i % 4];
    socket.write(Buffer.concat([Buffer.from([0x81, p.length]), p]));
  });
});
server.listen(Number(process.argv[2]), "127.0.0.1");
`;

beforeAll(async () => {
  requireTlsTools();
  // Built once and cached (~/.cache/neko-infra): minutes the first time on a new machine.
  for (const tool of ["pebble", "caddy"]) {
    const r = await run(path.join(HARNESS, "go-tool.sh"), [tool], { timeoutMs: 1_500_000 });
    ok(r, `tests/harness/go-tool.sh ${tool}`);
    timings.push(`${tool} binary ready in ${r.seconds.toFixed(1)} s${r.stderr.includes("building") ? " (built now)" : " (cached)"}`);
  }
  h = (await harness("nshost.sh", "h")) as unknown as NsHostEnv;
  pebble = (await harness("pebble.sh", "p", [h.NSHOST_SIDE_ADDR])) as unknown as PebbleEnv;
  for (const [kind, name] of [
    ["caddy", TLS_IMAGE],
    ["coturn", TURN_IMAGE],
  ]) {
    ok(
      await run(path.join(HARNESS, "standin-image.sh"), [kind, name], { env: { DOCKER_HOST: h.DOCKER_HOST }, timeoutMs: 120_000 }),
      `standin-image.sh ${kind}`,
    );
  }
  stack = settingsFor(pebble.PEBBLE_DIR_URL);

  fs.writeFileSync(path.join(dir, "backend.js"), BACKEND);
  inHost(["turnutils_peer", "-L", h.NSHOST_ADDR, "-p", String(PEER_PORT)], "peer-host.log");
  // A peer on this machine's side: a private address the relay must refuse.
  const side = spawn("turnutils_peer", ["-L", h.NSHOST_SIDE_ADDR, "-p", String(PEER_PORT)], { stdio: "ignore" });
  children.push(side);
}, 1_800_000);

/** neko's stand-in behind the front, started only after the front (as on a new host). */
async function startBackend(): Promise<void> {
  inHost([process.execPath, path.join(dir, "backend.js"), String(stack.neko.httpPort)], "backend.log");
  await waitFor("the neko stand-in on 127.0.0.1:8080 in the namespace", async () => {
    const r = await run("ip", ["netns", "exec", h.NSHOST_NETNS, "curl", "-sf", `http://127.0.0.1:${stack.neko.httpPort}/health`], {
      timeoutMs: 5_000,
    });
    return r.code === 0;
  });
}

afterAll(async () => {
  for (const c of children) if (c.pid !== undefined && c.exitCode === null) c.kill("SIGTERM");
  const errors: string[] = [];
  for (const s of [...started].reverse()) {
    const r = await run(path.join(HARNESS, s.script), ["stop", s.state], { timeoutMs: 90_000 });
    if (r.code !== 0) errors.push(`${s.script} stop: ${show(r)}`);
  }
  process.stderr.write(`tls.test.ts timings:\n  ${timings.join("\n  ")}\n`);
  if (errors.length) throw new Error(`stopping the harness failed (state kept in ${dir}):\n${errors.join("\n")}`);
  fs.rmSync(dir, { recursive: true, force: true });
}, 180_000);

describe("TLS front: a certificate for the host's IP address from a real ACME server", () => {
  test("on an empty host (no neko yet), tls-front.sh gets a short-lived certificate from Pebble and says what it serves", async () => {
    // As on a new instance: nothing answers on neko's port, so the front proxies to nothing.
    const r = await onHost(scriptCommand(tlsFrontRun(stack, { tlsDir: path.join(dir, "tls") }), true), 180_000);
    expect(show(r)).toMatch(/^exit 0 /);
    const lines = r.stdout.trim().split("\n");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(
      new RegExp(
        `^https://${h.NSHOST_ADDR.replace(/\./g, "\\.")}/ serves a certificate from Pebble Intermediate CA [0-9a-f]+ valid until \\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ$`,
      ),
    );
    timings.push(`tls-front.sh, first run on an empty host (account, order, validation, issuance): ${r.seconds.toFixed(1)} s`);
    // The certificate verifies while neko is not there: Caddy answers 502 until it is.
    const before = await run("curl", [
      "-s",
      "-o",
      "/dev/null",
      "-w",
      "%{http_code}",
      "--max-time",
      "5",
      "--cacert",
      pebble.PEBBLE_ROOT_FILE,
      `https://${h.NSHOST_ADDR}/health`,
    ]);
    expect(before.stdout).toBe("502");
    await startBackend();
    handoff.result = lines[0];
    // Nothing secret and no trust store touched: Caddy said so itself.
    const logs = await docker(["logs", "neko-tls"]);
    expect(logs.stderr + logs.stdout).toMatch(/trust store installation disabled/);
    expect(logs.stderr + logs.stdout).toMatch(/"msg":"certificate obtained successfully".*"issuer":"[^"]*:14000-dir"/);
  });

  test("the certificate names the address, lasts about 6 days (shortlived), verifies with Pebble's root only", async () => {
    need("result");
    const good = await servedCert(443, pebble.PEBBLE_ROOT_FILE);
    expect(good.verified).toBe(true);
    const file = path.join(dir, "served.pem");
    fs.writeFileSync(file, good.pem);
    const x = ok(await run("openssl", ["x509", "-in", file, "-noout", "-startdate", "-enddate", "-ext", "subjectAltName"]), "openssl x509");
    expect(x).toContain(`IP Address:${h.NSHOST_ADDR}`);
    const date = (k: string) => Date.parse(new RegExp(`${k}=(.*)`).exec(x)![1]);
    const days = (date("notAfter") - date("notBefore")) / 86_400_000;
    timings.push(`served certificate validity: ${days.toFixed(2)} days`);
    expect(days).toBeGreaterThan(6);
    expect(days).toBeLessThanOrEqual(7);
    handoff.leaf = crypto.createHash("sha256").update(good.pem).digest("hex");

    // Another root (Pebble's API CA): refused, by openssl and curl alike.
    expect((await servedCert(443, pebble.PEBBLE_MINICA)).verified).toBe(false);
    const curlOther = await run("curl", ["-sS", "--max-time", "5", "--cacert", pebble.PEBBLE_MINICA, `https://${h.NSHOST_ADDR}/health`]);
    expect(curlOther.code).toBe(60);

    // Caddy stored it where lib/caddy.ts says (coturn reads it from there).
    const { cert, key } = certificatePaths(pebble.PEBBLE_DIR_URL, h.NSHOST_ADDR);
    expect(fs.existsSync(path.join(dir, "tls", "data", cert))).toBe(true);
    expect(fs.statSync(path.join(dir, "tls", "data", key)).mode & 0o777).toBe(0o600);
  });

  test("/health through TLS is neko's answer; the client's address arrives as X-Real-IP, a forged X-Forwarded-For does not", async () => {
    need("result");
    const health = await run("curl", [
      "-sS",
      "--max-time",
      "5",
      "--cacert",
      pebble.PEBBLE_ROOT_FILE,
      "-w",
      " %{http_code}",
      `https://${h.NSHOST_ADDR}/health`,
    ]);
    expect(health.stdout).toBe("true 200");
    const headers = await run("curl", [
      "-sS",
      "--max-time",
      "5",
      "--cacert",
      pebble.PEBBLE_ROOT_FILE,
      "-H",
      "X-Forwarded-For: 6.6.6.6",
      `https://${h.NSHOST_ADDR}/headers`,
    ]);
    const seen = JSON.parse(headers.stdout) as Record<string, string>;
    expect(seen["x-real-ip"]).toBe(h.NSHOST_SIDE_ADDR);
    expect(seen["x-forwarded-for"]).toBe(h.NSHOST_SIDE_ADDR);
    expect(seen["x-forwarded-proto"]).toBe("https");
  });

  test("a WebSocket upgrade passes the front (101, accept key, echo)", async () => {
    need("result");
    const ws = await webSocketEcho(pebble.PEBBLE_ROOT_FILE, "hello neko");
    expect(ws.status).toBe("HTTP/1.1 101 Switching Protocols");
    expect(ws.accepted).toBe(true);
    expect(ws.echo).toBe("hello neko");
  });

  test("plain HTTP is redirected to HTTPS (308), path and query kept", async () => {
    need("result");
    const r = await run("curl", [
      "-sS",
      "--max-time",
      "5",
      "-o",
      "/dev/null",
      "-w",
      "%{http_code} %{redirect_url}",
      `http://${h.NSHOST_ADDR}/x?y=1`,
    ]);
    expect(r.stdout).toBe(`308 https://${h.NSHOST_ADDR}/x?y=1`);
  });

  test("a second run restarts nothing: same container, same start, same answer", async () => {
    const before = ok(await docker(["inspect", "--format", "{{.Id}} {{.State.StartedAt}}", "neko-tls"]), "docker inspect");
    const r = await onHost(scriptCommand(tlsFrontRun(stack, { tlsDir: path.join(dir, "tls") }), true), 60_000);
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe(need("result"));
    expect(r.stderr).toMatch(/nothing restarted/);
    expect(ok(await docker(["inspect", "--format", "{{.Id}} {{.State.StartedAt}}", "neko-tls"]), "docker inspect")).toBe(before);
    timings.push(`tls-front.sh, second run (nothing to do): ${r.seconds.toFixed(1)} s`);
  });

  test("Caddy runs as TLS_USER, not root, and owns its certificates; a new container takes over root-owned ones and keeps the certificate", async () => {
    expect(ok(await docker(["inspect", "--format", "{{.Config.User}}", "neko-tls"]), "docker inspect").trim()).toBe(TLS_USER);
    const top = ok(await docker(["top", "neko-tls", "-o", "pid,uid,args"]), "docker top")
      .split("\n")
      .slice(1);
    expect(top.filter((l) => /caddy run/.test(l)).map((l) => l.trim().split(/\s+/)[1])).toEqual([String(TLS_UID)]);
    const data = path.join(dir, "tls", "data");
    const key = path.join(data, certificatePaths(tlsOf(stack).acmeServer, tlsOf(stack).subject).key);
    expect([fs.statSync(data).uid, fs.statSync(key).uid]).toEqual([TLS_UID, TLS_UID]);
    // As after an upgrade from a front that ran Caddy as root: the files are root's, the container goes.
    ok(await run("chown", ["-R", "0:0", data]), "chown");
    ok(await docker(["rm", "-f", "neko-tls"]), "docker rm");
    const r = await onHost(scriptCommand(tlsFrontRun(stack, { tlsDir: path.join(dir, "tls") }), true), 120_000);
    expect(show(r)).toMatch(/^exit 0 /);
    expect(r.stdout.trim()).toBe(need("result")); // the same certificate, same expiry: nothing asked of the ACME server
    expect([fs.statSync(data).uid, fs.statSync(key).uid]).toEqual([TLS_UID, TLS_UID]);
    const logs = await docker(["logs", "neko-tls"]);
    expect(logs.stderr + logs.stdout).not.toMatch(/certificate obtained successfully/);
  });

  test("a domain that resolves elsewhere fails before anything else, naming the setting and the record to set", async () => {
    const before = ok(await docker(["inspect", "--format", "{{.Id}}", "neko-tls"]), "docker inspect");
    const r = await onHost(
      scriptCommand(tlsFrontRun(stack, { subject: "localhost", expect: h.NSHOST_ADDR, tlsDir: path.join(dir, "tls") }), true),
      30_000,
    );
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    const addr = h.NSHOST_ADDR.replace(/\./g, "\\.");
    // localhost resolves to 127.0.0.1, and to ::1 where the resolver offers IPv6.
    expect(r.stderr.trim()).toMatch(
      new RegExp(
        `^tls-front: neko-infra:host\\.domain is localhost, which resolves to 127\\.0\\.0\\.1( ::1)?, not to this host's address ${addr}: set the DNS A record of localhost to ${addr} \\(and wait until it resolves\\), or change host\\.domain$`,
      ),
    );
    expect(ok(await docker(["inspect", "--format", "{{.Id}}", "neko-tls"]), "docker inspect")).toBe(before);
  });
});

describe("TURN relay: coturn with the generated configuration", () => {
  test("turn-relay.sh starts it, listening on UDP/TCP and TLS", async () => {
    need("result");
    const r = await onHost(scriptCommand(turnRelayRun(stack), true), 90_000);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe("neko-turn listens on 3478 (UDP, TCP) and 5349 (TLS), relaying on UDP 49160-49200\n");
    timings.push(`turn-relay.sh, first run: ${r.seconds.toFixed(1)} s`);
    handoff.turn = "up";
    // The password stays in a root-only file; turnserver itself runs as nobody.
    expect(fs.statSync(path.join(dir, "turn")).mode & 0o777).toBe(0o700);
    expect(fs.statSync(path.join(dir, "turn", "turnserver.conf")).mode & 0o777).toBe(0o600);
    expect(r.stdout + r.stderr).not.toContain(TURN_PASSWORD);
    // turnserver drops to nobody once its listeners are open, which is when the script returns:
    // on a busy machine a moment later.
    const asNobody = /^\s*\d+\s+65534\s+turnserver -c \/etc\/neko-turn\/turnserver.conf/m;
    await waitFor("turnserver running as nobody", async () =>
      asNobody.test(ok(await docker(["top", "neko-turn", "-o", "pid,uid,args"]), "docker top")),
    );
  });

  test("an allocation succeeds with the right credentials over UDP and TCP, and fails with wrong ones", async () => {
    need("turn");
    const [udp, tcp, badUdp, badTcp] = await Promise.all([
      uclient({ peer: h.NSHOST_ADDR }),
      uclient({ tcp: true, peer: h.NSHOST_ADDR }),
      uclient({ peer: h.NSHOST_ADDR, password: "wrong-password" }),
      uclient({ tcp: true, peer: h.NSHOST_ADDR, password: "wrong-password" }),
    ]);
    for (const r of [udp, tcp]) {
      expect({ code: r.code, out: r.stdout }).toEqual({ code: 0, out: expect.stringMatching(/Total lost packets 0 /) });
    }
    for (const r of [badUdp, badTcp]) {
      expect(r.code).toBe(255);
      expect(r.stdout + r.stderr).toMatch(/Cannot complete Allocation/);
    }
    timings.push(
      `TURN allocate + 1 message (uclient wall time, incl. its pacing): UDP ${udp.seconds.toFixed(2)} s, TCP ${tcp.seconds.toFixed(2)} s; wrong password refused in UDP ${badUdp.seconds.toFixed(2)} s, TCP ${badTcp.seconds.toFixed(2)} s`,
    );
  });

  test("TURN over TLS presents the front's certificate, verified against Pebble's root", async () => {
    need("turn");
    const served = await servedCert(5349, pebble.PEBBLE_ROOT_FILE);
    expect(served.verified).toBe(true);
    expect(crypto.createHash("sha256").update(served.pem).digest("hex")).toBe(need("leaf"));
    expect((await servedCert(5349, pebble.PEBBLE_MINICA)).verified).toBe(false);
  });

  test("relaying to a private address is refused, except to the host's own address", async () => {
    need("turn");
    const [own, side, loopback] = await Promise.all([
      uclient({ peer: h.NSHOST_ADDR }),
      uclient({ peer: h.NSHOST_SIDE_ADDR }),
      uclient({ peer: "127.0.0.1" }),
    ]);
    expect(own.code).toBe(0);
    for (const r of [side, loopback]) {
      expect(r.code).toBe(255);
      expect(r.stdout + r.stderr).toMatch(/403 \(Forbidden IP\)/);
    }
    const logs = await docker(["logs", "neko-turn"]);
    expect(logs.stdout + logs.stderr).toContain(`A peer IP ${h.NSHOST_SIDE_ADDR} denied in the range: 10.0.0.0-10.255.255.255`);
  });

  test("the relay reloads the certificate by itself, as nobody, from its copy", async () => {
    need("turn");
    await waitFor("a certificate reload in the relay's log", async () => {
      const l = await docker(["logs", "neko-turn"]);
      return /Reloading TLS certificates and keys/.test(l.stdout + l.stderr);
    });
    await new Promise((r) => setTimeout(r, 500));
    const l = await docker(["logs", "neko-turn"]);
    expect(l.stdout + l.stderr).not.toMatch(/ERROR: .*(certificate|private key)/);
    expect((await servedCert(5349, pebble.PEBBLE_ROOT_FILE)).verified).toBe(true);
  });

  test("a second run restarts nothing", async () => {
    need("turn");
    const before = ok(await docker(["inspect", "--format", "{{.Id}} {{.State.StartedAt}}", "neko-turn"]), "docker inspect");
    const r = await onHost(scriptCommand(turnRelayRun(stack), true), 60_000);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/nothing restarted/);
    expect(ok(await docker(["inspect", "--format", "{{.Id}} {{.State.StartedAt}}", "neko-turn"]), "docker inspect")).toBe(before);
  });
});

describe("the metadata guard (scripts/imds-guard.sh, as host-bootstrap.sh runs it on EC2)", () => {
  test("without it the front's container reads the metadata service; with it neither Caddy's user nor turnserver's can, root still can", async () => {
    // A stand-in metadata service on the namespaced host's own 169.254.169.254.
    const imds = path.join(dir, "imds", "latest");
    fs.mkdirSync(imds, { recursive: true });
    fs.writeFileSync(path.join(imds, "user-data"), "host key material\n");
    ok(await run("ip", ["netns", "exec", h.NSHOST_NETNS, "ip", "addr", "add", "169.254.169.254/32", "dev", "lo"]), "ip addr add");
    // Not on port 80, where the front (host network, every address) listens; the guard takes every port.
    inHost(["/bin/busybox", "httpd", "-f", "-p", "169.254.169.254:8775", "-h", path.join(dir, "imds")], "imds.log");
    const url = "http://169.254.169.254:8775/latest/user-data";
    const asRoot = () => run("ip", ["netns", "exec", h.NSHOST_NETNS, "curl", "-fsS", "--max-time", "3", url]);
    await waitFor("the stand-in metadata service", async () => (await asRoot()).code === 0);
    const wget = (container: string, user: string) =>
      // No -T: Debian's static busybox 1.35 wget crashes with it. A rejected connection fails at once.
      docker(["exec", "--user", user, container, "wget", "-q", "-O", "-", url]);

    const before = await wget("neko-tls", TLS_USER);
    expect(show(before)).toMatch(/^exit 0 /);
    expect(before.stdout).toBe("host key material\n");

    const guard = await run("ip", [
      "netns",
      "exec",
      h.NSHOST_NETNS,
      "bash",
      path.join(SCRIPTS, "imds-guard.sh"),
      ...IMDS_GUARD_UIDS.map(String),
    ]);
    expect(show(guard)).toMatch(/^exit 0 /);
    const caddy = await wget("neko-tls", TLS_USER);
    expect(caddy.code).not.toBe(0);
    expect(caddy.stdout).toBe("");
    const turn = await wget("neko-turn", `${TURN_PROC_UID}:${TURN_PROC_UID}`);
    expect(turn.code).not.toBe(0);
    expect(turn.stdout).toBe("");
    // By uid, not by container: root in the same container, and root on the host, still get an answer.
    expect((await wget("neko-tls", "0:0")).stdout).toBe("host key material\n");
    expect((await asRoot()).stdout).toBe("host key material\n");
  });
});

describe("TURN relay: failures", () => {
  test("without the front's certificate, turn-relay.sh says so and starts nothing", async () => {
    const empty = path.join(dir, "tls-empty");
    fs.mkdirSync(path.join(empty, "data"), { recursive: true });
    const run = turnRelayRun(stack);
    const r = await onHost(
      scriptCommand({ ...run, env: { ...run.env, TLS_DIR: empty, TURN_DIR: path.join(dir, "turn-empty") } }, true),
      60_000,
    );
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /turn-relay: the TLS front has no certificate for TURN over TLS in \S+tls-empty\/data \(no \/tls\/\S+\.crt; has tls-front\.sh obtained its certificate on this host\?\)/,
    );
  });
});

describe("TLS front: failures", () => {
  test("an unreachable ACME server fails within TLS_WAIT_SECONDS, with Caddy's ACME errors and the port-80 hint", async () => {
    // Port 14001 on Pebble's address: nothing listens there.
    const bad = settingsFor(pebble.PEBBLE_DIR_URL.replace(":14000/", ":14001/"));
    const r = await onHost(scriptCommand(tlsFrontRun(bad, { tlsDir: path.join(dir, "tls-bad"), wait: 20 }), true), 90_000);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.seconds).toBeGreaterThanOrEqual(20);
    expect(r.seconds).toBeLessThan(40);
    expect(r.stderr).toMatch(new RegExp(`no verified certificate for ${h.NSHOST_ADDR.replace(/\./g, "\\.")} within 20s`));
    expect(r.stderr).toMatch(/Caddy's last ACME errors/);
    expect(r.stderr).toMatch(/tls\.obtain: could not get certificate from issuer .*14001\/dir.*connection refused/);
    expect(r.stderr).toMatch(/port 80 \(HTTP challenge\) must be reachable from the internet/);
    timings.push(`unreachable ACME server reported after ${r.seconds.toFixed(1)} s (TLS_WAIT_SECONDS=20)`);
  });

  test("a run that outlives its time budget says so, and what it was doing", async () => {
    const bad = settingsFor(pebble.PEBBLE_DIR_URL.replace(":14000/", ":14001/"));
    const run = { ...tlsFrontRun(bad, { tlsDir: path.join(dir, "tls-bad"), wait: 120 }), budgetSeconds: 4 };
    const r = await onHost(scriptCommand(run, true), 60_000);
    expect(r.code).toBe(124); // timeout(1): the budget ran out
    expect(r.stdout).toBe("");
    expect(r.stderr).toMatch(
      new RegExp(
        `tls-front: ran out of its time budget \\(4s\\) after \\d+s while waiting for the certificate of ${h.NSHOST_ADDR.replace(/\./g, "\\.")}\\n`,
      ),
    );
  });
});
