/**
 * `npm run status` (tools/status.js, scripts/neko-status.sh on the machine) against a real host:
 * tests/harness/nshost.sh in login mode (an EC2 Amazon Linux host as the program meets it: ssh as
 * ec2-user, Docker, sudo), where scripts/neko-rollout.sh deploys a fixture image exactly as the
 * host's remote Command runs it (over ssh, the environment on standard input). Then drifts made by
 * hand: the container removed, another image running under the name neko; a rollout run again
 * puts it right. The stack's outputs come from a stand-in `pulumi` that answers exactly
 * `pulumi stack output --json --show-secrets --stack status-test`; EC2 is tests/support/fakeEc2.ts
 * (the real SDK, on loopback): the host's instance runs, the builder's is stopped, and the
 * builder's address is a listener that counts connections (a sleeping builder is never dialled).
 * The fixture serves GET /api/stats from a file the test writes (busybox httpd; the real neko
 * computes it from its sessions).
 */
import * as fs from "fs";
import * as net from "net";
import * as os from "os";
import * as path from "path";
import { scriptCommand } from "../../lib/shell";
import { FakeEc2, startFakeEc2 } from "../support/fakeEc2";
import { fixtureCopy, HARNESS, ok, readEnvFile, REPO, requireTools, Result, run, show } from "./support";
import { builderFindings, format, parseFacts, shownDigest } from "../../tools/status-report";

jest.setTimeout(180_000);

interface LoginHostEnv {
  DOCKER_HOST: string;
  NSHOST_ADDR: string;
  NSHOST_SSH_USER: string;
  NSHOST_SSH_KEY: string;
  NSHOST_HOST_KEY: string;
  NSHOST_SSH_CONFIG: string;
}

const NSHOST = path.join(HARNESS, "nshost.sh");
const STACK = "status-test";
const STACK_TAG = `neko-infra/${STACK}`;
const STATE = "/var/lib/neko-infra/host";
const ADMIN_PASSWORD = "admin-Pa55-51a7e0c2";
const USER_PASSWORD = "user-Pa55-9d04b6e3";
const API_TOKEN = "api-Tok3n-3c81f0a9e4d2";
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "nst-"));
const state = path.join(dir, "h");
let h: LoginHostEnv;
let ec2: FakeEc2;
let trap: net.Server;
let trapPort = 0;
let dials = 0;
const images: Record<string, string> = {};
const built: string[] = [];
const outputsFile = path.join(dir, "outputs.json");
const stubDir = path.join(dir, "stub");

/** A command on the host, over ssh as its login user. */
const onHost = (cmd: string, input?: string): Promise<Result> =>
  run("ssh", ["-F", h.NSHOST_SSH_CONFIG, "nshost", cmd], { input, timeoutMs: 60_000 });
const docker = (args: string[]): Promise<Result> =>
  run("/usr/bin/docker", args, { env: { DOCKER_HOST: h.DOCKER_HOST }, timeoutMs: 60_000 });

/** The rollout's environment as the program gives it (secrets included), minus the rollout's own. */
function rolloutEnv(): Record<string, string> {
  const env = programEnv();
  return { ...env, NEKO_SHOWN_DIGEST: shownDigest(expectedNeko(env)) };
}
function programEnv(): Record<string, string> {
  return {
    NEKO_NAME: "neko",
    NEKO_HTTP_PORT: "8080",
    NEKO_PUBLISH: `${h.NSHOST_ADDR}:8080:8080/tcp`,
    NEKO_RUN_ARGS: [
      "--shm-size=64m",
      "--hostname=neko",
      "--restart=no",
      `--label=neko-infra.stack=${STACK_TAG}`,
      `--volume=${state}/api/stats:/www/api/stats:ro`,
    ].join("\n"),
    NEKO_ENV: [
      `NEKO_SERVER_BIND=:8080`,
      `NEKO_MEMBER_MULTIUSER_ADMIN_PASSWORD=${ADMIN_PASSWORD}`,
      `NEKO_MEMBER_MULTIUSER_USER_PASSWORD=${USER_PASSWORD}`,
      `NEKO_SESSION_API_TOKEN=${API_TOKEN}`,
    ].join("\n"),
    NEKO_HEALTH_SECONDS: "30",
    NEKO_STATE_DIR: STATE,
    NEKO_SCREENSHOT: `${STATE}/screenshot.jpg`,
    NEKO_API_TOKEN: API_TOKEN,
  };
}

/** The non-secret part, as the stack's `expected.neko` output holds it (shown.values). */
function expectedNeko(env = programEnv()): Record<string, string> {
  const { NEKO_ENV, NEKO_API_TOKEN, ...own } = env;
  void NEKO_API_TOKEN;
  const container = Object.fromEntries(NEKO_ENV.split("\n").map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]));
  return Object.fromEntries(Object.entries({ ...own, ...container }).filter(([k]) => !/PASSWORD|TOKEN/.test(k)));
}

async function rollout(ref: string): Promise<Result> {
  const sc = scriptCommand({ script: "neko-rollout.sh", args: [ref], env: rolloutEnv(), budgetSeconds: 600 }, true);
  return onHost(sc.command, sc.stdin);
}

function writeOutputs(o: { imageRef: string; host?: object; expected?: object }): void {
  const key = fs.readFileSync(h.NSHOST_SSH_KEY, "utf8");
  const outputs = {
    imageRef: o.imageRef,
    storePath: "/nix/store/x",
    machines: [
      {
        role: "builder",
        kind: "ec2",
        stackTag: STACK_TAG,
        address: "127.0.0.1",
        port: trapPort,
        user: "ec2-user",
        region: "eu-central-1",
        enabled: true,
      },
      o.host ?? {
        role: "host",
        kind: "ec2",
        stackTag: STACK_TAG,
        address: h.NSHOST_ADDR,
        port: 22,
        user: "ec2-user",
        region: "eu-central-1",
      },
    ],
    builderSsh: { host: "127.0.0.1", port: trapPort, user: "ec2-user", privateKey: key, hostKey: h.NSHOST_HOST_KEY },
    hostSsh: { host: h.NSHOST_ADDR, port: 22, user: h.NSHOST_SSH_USER, privateKey: key, hostKey: h.NSHOST_HOST_KEY },
    ...(o.expected ? { expected: o.expected } : {}),
  };
  fs.writeFileSync(outputsFile, JSON.stringify(outputs));
}

/** `npm run status -- status-test` with the stand-in pulumi and the fake EC2. */
function status(env: Record<string, string> = {}): Promise<Result> {
  return run(process.execPath, [path.join(REPO, "tools", "status.js"), STACK], {
    timeoutMs: 90_000,
    env: {
      PATH: `${stubDir}:/usr/bin:${process.env.PATH}`,
      PULUMI_BACKEND_URL: "file:///nonexistent",
      AWS_ENDPOINT_URL_EC2: ec2.endpoint,
      AWS_ACCESS_KEY_ID: "AKIDSTATUSTEST",
      AWS_SECRET_ACCESS_KEY: "status-test-secret",
      AWS_EC2_METADATA_DISABLED: "true",
      AWS_CONFIG_FILE: "/nonexistent/aws-config",
      AWS_SHARED_CREDENTIALS_FILE: "/nonexistent/aws-credentials",
      ...env,
    },
  });
}

const lines = (r: Result) => r.stdout.trimEnd().split("\n");
const drifts = (r: Result) => lines(r).filter((l) => l.startsWith("DRIFT"));
function noSecrets(r: Result): void {
  const key = fs.readFileSync(h.NSHOST_SSH_KEY, "utf8").split("\n")[1];
  for (const s of [ADMIN_PASSWORD, USER_PASSWORD, API_TOKEN, key]) expect(r.stdout + r.stderr).not.toContain(s);
  for (const l of lines(r)) expect(l.length).toBeLessThanOrEqual(300);
}

beforeAll(async () => {
  requireTools(["nix", "/bin/busybox", "ssh", "/usr/sbin/sshd", "ip", "unshare", "/usr/sbin/dockerd", "/usr/bin/docker", "curl"]);
  if (!fs.existsSync("/usr/bin/sudo")) throw new Error("missing /usr/bin/sudo: run tools/install-deps.sh (or apt-get install sudo)");
  ok(await run(NSHOST, ["start", state], { env: { NSHOST_LOGIN_USER: "ec2-user" }, timeoutMs: 90_000 }), "nshost.sh start (login mode)");
  h = (await readEnvFile(path.join(state, "env"))) as unknown as LoginHostEnv;
  for (const key of ["v1", "v2"]) {
    const out = ok(
      await run("nix", ["build", "--json", "--no-link", `path:${fixtureCopy(dir, `status-${key}`)}#layered`], { timeoutMs: 300_000 }),
      `nix build ${key}`,
    );
    const tarball: string = JSON.parse(out)[0].outputs.out;
    built.push(tarball);
    const loaded = /Loaded image(?: ID)?: (\S+)/.exec(ok(await docker(["load", "-i", tarball]), `docker load ${key}`));
    expect(loaded).not.toBeNull();
    images[key] = ok(await docker(["image", "inspect", "--format", "{{.Id}}", loaded![1]]), "docker image inspect").trim();
  }
  expect(images.v1).not.toBe(images.v2);
  // What the host's setup step makes; neko's /api/stats stand-in (one user connected).
  ok(await onHost(`sudo -n install -d -o "$(id -un)" -m 0700 ${STATE}`), "state directory");
  fs.mkdirSync(path.join(state, "api"));
  fs.writeFileSync(path.join(state, "api", "stats"), JSON.stringify({ has_host: true, total_users: 1, total_admins: 0 }), { mode: 0o644 });

  fs.mkdirSync(stubDir);
  fs.writeFileSync(
    path.join(stubDir, "pulumi"),
    `#!/bin/sh\n# stand-in: the stack's outputs, for exactly the command tools/status.js runs\n[ "$*" = "stack output --json --show-secrets --stack ${STACK}" ] || { echo "stand-in pulumi: unexpected arguments: $*" >&2; exit 9; }\ncat ${outputsFile}\n`,
    { mode: 0o755 },
  );
  trap = net.createServer((s) => {
    dials++;
    s.destroy();
  });
  await new Promise<void>((r) => trap.listen(0, "127.0.0.1", r));
  trapPort = (trap.address() as net.AddressInfo).port;
  ec2 = await startFakeEc2({
    allow: ["DescribeInstances"],
    instances: {
      "i-0host": {
        state: "running",
        type: "g5.xlarge",
        launchTime: new Date(Date.now() - 3_600_000).toISOString(),
        tags: { "neko-infra:stack": STACK_TAG, "neko-infra:role": "host" },
      },
      "i-0builder": {
        state: "stopped",
        type: "c6i.2xlarge",
        reason: "User initiated (2026-12-01 06:30:00 GMT)",
        tags: { "neko-infra:stack": STACK_TAG, "neko-infra:role": "builder" },
      },
      "i-0other": { state: "running", tags: { "neko-infra:stack": "neko-infra/prod", "neko-infra:role": "host" } },
    },
  });
  ok(await rollout(images.v1), "the first rollout");
}, 600_000);

afterAll(async () => {
  await ec2?.close();
  trap?.close();
  const r = await run(NSHOST, ["stop", state], { timeoutMs: 90_000 });
  for (const p of built) await run("nix", ["store", "delete", p], { timeoutMs: 30_000 }).catch(() => undefined);
  if (r.code !== 0) throw new Error(`nshost.sh stop failed (state kept in ${dir}): ${show(r)}`);
  fs.rmSync(dir, { recursive: true, force: true });
}, 120_000);

describe("npm run status against a deployed host and a sleeping builder", () => {
  test("as deployed: nothing is wrong (exit 0); the sleeping builder is reported, not dialled", async () => {
    writeOutputs({ imageRef: images.v1, expected: { neko: expectedNeko() } });
    ec2.calls.length = 0;
    const r = await status();
    expect({ code: r.code, drifts: drifts(r) }).toEqual({ code: 0, drifts: [] });
    const l = lines(r);
    expect(l[0]).toMatch(
      /^ASLEEP {2}builder instance: i-0builder \(c6i\.2xlarge\) stopped since 2026-12-01 06:30Z \(.* ago\); not woken: the next build \(npm run up\) starts it$/,
    );
    expect(l).toContainEqual(expect.stringMatching(/^OK {6}host instance: i-0host \(g5\.xlarge\) running since /));
    expect(l).toContainEqual(
      expect.stringMatching(
        new RegExp(`^OK {6}host neko: running since .*, ${images.v1.slice(0, 19)}, /health 200 at ${h.NSHOST_ADDR}:8080$`),
      ),
    );
    expect(l).toContain(`OK      host image: the last deploy ran ${images.v1}, as the stack expects`);
    expect(l).toContain("OK      host spec: the deployed spec is the one the stack expects");
    expect(l).toContain("INFO    host connected: 1 user(s), 0 admin(s)");
    expect(l).toContainEqual(expect.stringMatching(/^INFO {4}host last deploy: started .*: sha256:/));
    expect(l).toContainEqual(expect.stringMatching(new RegExp(`^INFO {4}host screenshot: ${STATE}/screenshot.jpg \\(\\d+ bytes, `)));
    expect(l[l.length - 1]).toMatch(/^status: status-test: nothing is wrong \(\d+ finding\(s\)\)$/);
    expect(dials).toBe(0);
    // One DescribeInstances per machine, by the stack's and role's tags; nothing else asked of EC2.
    expect(ec2.calls.map((c) => `${c.action} ${c.params["Filter.1.Value.1"]} ${c.params["Filter.2.Value.1"]}`)).toEqual([
      `DescribeInstances ${STACK_TAG} builder`,
      `DescribeInstances ${STACK_TAG} host`,
    ]);
    expect(ec2.violations).toEqual([]);
    noSecrets(r);
  });

  test("the rollout recorded the spec digest the stack's non-secret values give", async () => {
    const rec = ok(await onHost(`cat ${STATE}/neko-specs/deployed`), "cat deployed");
    expect(rec).toContain(`shown ${shownDigest(expectedNeko())}\n`);
    expect(rec).toContain(`image ${images.v1}\n`);
    expect(rec).not.toContain(API_TOKEN);
    // Another expected spec is a drift.
    writeOutputs({ imageRef: images.v1, expected: { neko: { ...expectedNeko(), NEKO_HEALTH_SECONDS: "31" } } });
    const r = await status();
    expect(r.code).toBe(1);
    expect(drifts(r)).toEqual([
      expect.stringMatching(/^DRIFT {3}host spec: the deployed spec differs .* -- fix: npm run up -- status-test$/),
    ]);
  });

  test("another image running under the name neko (by hand): a drift, exit 1", async () => {
    writeOutputs({ imageRef: images.v1 });
    ok(await docker(["rm", "-f", "neko"]), "docker rm");
    ok(await docker(["run", "-d", "--name", "neko", "-p", `${h.NSHOST_ADDR}:8080:8080`, images.v2]), "docker run v2");
    const r = await status();
    expect(r.code).toBe(1);
    expect(drifts(r)).toEqual([
      `DRIFT   host neko: runs image ${images.v2.slice(0, 19)}, not ${images.v1.slice(0, 19)} that the last deploy ran (another image under the name neko) -- fix: npm run up -- status-test --target-replace 'urn:pulumi:status-test::neko-infra::neko-infra:host:NekoHost$command:remote:Command::host-neko'`,
    ]);
    expect(lines(r).pop()).toBe(`status: status-test: 1 drift(s) (${lines(r).length - 1} finding(s))`);
    noSecrets(r);
  });

  test("the container removed by hand: a drift; the rollout run again (the fix) makes it right", async () => {
    ok(await docker(["rm", "-f", "neko"]), "docker rm");
    const r = await status();
    expect(r.code).toBe(1);
    expect(drifts(r)).toEqual([
      expect.stringMatching(
        /^DRIFT {3}host neko: no container named neko \(removed by hand\?\); the last deploy ran sha256:.* -- fix: npm run up -- status-test --target-replace /,
      ),
    ]);
    ok(await rollout(images.v1), "the rollout again");
    const again = await status();
    expect({ code: again.code, drifts: drifts(again) }).toEqual({ code: 0, drifts: [] });
  });

  test("the stack expects an image that was never deployed: a drift", async () => {
    writeOutputs({ imageRef: images.v2 });
    const r = await status();
    expect(r.code).toBe(1);
    expect(drifts(r)).toEqual([
      `DRIFT   host image: the stack expects ${images.v2}; the last deploy ran ${images.v1} -- fix: npm run up -- status-test`,
    ]);
  });

  test("a local host: this machine's Docker, asked here, under a Mac's bash 3.2 and tools", async () => {
    writeOutputs({ imageRef: images.v1, host: { role: "host", kind: "local", stackTag: STACK_TAG } });
    const macPath = ok(await run(path.join(HARNESS, "bsd-path.sh"), [path.join(dir, "mac")], { timeoutMs: 30_000 }), "bsd-path.sh").trim();
    // The host's state directory as this machine sees it (the host's /var/lib is its STATE_DIR/varlib).
    const r = await status({
      PATH: `${stubDir}:${macPath}`,
      DOCKER_HOST: h.DOCKER_HOST,
      NEKO_STATE_DIR: path.join(state, "varlib", "neko-infra", "host"),
    });
    expect({ code: r.code, drifts: drifts(r) }).toEqual({ code: 0, drifts: [] });
    expect(lines(r)).toContainEqual(
      expect.stringMatching(
        new RegExp(`^OK {6}host neko: running since .*, ${images.v1.slice(0, 19)}, /health 200 at ${h.NSHOST_ADDR}:8080$`),
      ),
    );
    expect(lines(r)).toContain("INFO    host connected: 1 user(s), 0 admin(s)");
    noSecrets(r);
  });

  test("an ssh host that accepts TCP but never speaks: unknown (exit 2) within the SSH budget, no hang", async () => {
    const silent = net.createServer(() => undefined);
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
    const port = (silent.address() as net.AddressInfo).port;
    try {
      writeOutputs({
        imageRef: images.v1,
        host: { role: "host", kind: "ssh", stackTag: STACK_TAG, address: "127.0.0.1", port, user: "ec2-user" },
      });
      const outputs = JSON.parse(fs.readFileSync(outputsFile, "utf8"));
      fs.writeFileSync(outputsFile, JSON.stringify({ ...outputs, hostSsh: { ...outputs.hostSsh, host: "127.0.0.1", port } }));
      const started = Date.now();
      const r = await status({ STATUS_SSH_SECONDS: "8" });
      expect((Date.now() - started) / 1000).toBeLessThan(20);
      expect(r.code).toBe(2);
      expect(lines(r)).toContainEqual(
        expect.stringMatching(
          new RegExp(`^UNKNOWN host: could not be asked: ssh ec2-user@127\\.0\\.0\\.1:${port} .* -- fix: npm run ssh -- status-test host`),
        ),
      );
      expect(lines(r).pop()).toMatch(/^status: status-test: 1 machine\(s\) could not be read/);
    } finally {
      silent.close();
    }
  });

  test("a builder's side (this machine's Nix): its version and store, judged OK", async () => {
    const r = await run("bash", [path.join(REPO, "scripts", "neko-status.sh"), "builder"], { timeoutMs: 30_000 });
    const facts = parseFacts(ok(r, "neko-status.sh builder"));
    const nix = ok(await run("nix", ["--version"], { timeoutMs: 10_000 }), "nix --version").trim();
    expect(facts.nix).toEqual([nix]);
    expect(facts["store-paths"]?.[0]).toMatch(/^[1-9]\d*$/);
    expect(facts["store-free-kb"]?.[0]).toMatch(/^\d+$/);
    const lines = builderFindings({ stack: STACK, machine: { role: "builder", kind: "local" }, facts }).map(format);
    expect(lines[0]).toMatch(new RegExp(`^OK {6}builder nix: ${nix.replace(/[().]/g, "\\$&")}, store: \\d+ paths, [\\d.]+ GiB free$`));
    const usage = await run("bash", [path.join(REPO, "scripts", "neko-status.sh"), "nas"], { timeoutMs: 10_000 });
    expect({ code: usage.code, stderr: usage.stderr }).toEqual({ code: 2, stderr: "usage: neko-status.sh host [NAME] | builder\n" });
  });

  test("no machines output, or no stack: exit 2 with the cause", async () => {
    fs.writeFileSync(outputsFile, JSON.stringify({ imageRef: images.v1 }));
    const r = await status();
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(
      "stack status-test has no machines output (deployed before npm run status existed): run npm run up -- status-test once",
    );
    const usage = await run(process.execPath, [path.join(REPO, "tools", "status.js")], { timeoutMs: 30_000 });
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain("usage: npm run status -- STACK");
  });
});
