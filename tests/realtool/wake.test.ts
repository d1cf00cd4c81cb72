/**
 * scripts/wake.js as the wake step runs it (`node -` with the file on stdin, from the project
 * directory) against a harness builder: sshd in its own network namespace, answering before its
 * "bootstrap" finished, as cloud-init orders it. Each case checks the outcome, the message and how
 * long it took; every run gets its own TMPDIR, which must be empty afterwards (the key file is gone).
 */
import * as fs from "fs";
import * as http from "http";
import * as net from "net";
import * as path from "path";
import {
  BuilderEnv,
  HARNESS,
  ok,
  onBuilder,
  reEscape,
  REPO,
  requireTools,
  Result,
  run,
  SCRIPTS,
  Services,
  show,
  uniqueMarker,
} from "./support";

jest.setTimeout(120_000);

const svc = new Services();
let b: BuilderEnv;
let key: string;
let wrongKey: string;
let otherHostKey: string;
const timings: string[] = [];

beforeAll(async () => {
  requireTools(["ssh", "ssh-keygen", "/usr/sbin/sshd", "ip", "unshare", "nix", "skopeo", "bash"]);
  b = await svc.builder();
  key = fs.readFileSync(b.BUILDER_KEY, "utf8");
  const other = path.join(svc.dir, "other_ed25519");
  ok(await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "not-the-builder", "-f", other]), "ssh-keygen");
  wrongKey = fs.readFileSync(other, "utf8");
  otherHostKey = fs.readFileSync(`${other}.pub`, "utf8").split(" ").slice(0, 2).join(" ");
}, 120_000);

afterAll(async () => {
  console.log(`wake.js timings:\n  ${timings.join("\n  ")}`);
  await svc.stopAll();
}, 120_000);

/** A fresh directory inside a builder's state dir: visible on the builder at the same path. */
function builderDir(builder = "builder"): string {
  const dir = path.join(svc.dir, builder, uniqueMarker("wake"));
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

const sshEnv = (x: BuilderEnv, privateKey = fs.readFileSync(x.BUILDER_KEY, "utf8")) => ({
  TARGET: "ssh",
  SSH_HOST: x.BUILDER_ADDR,
  SSH_PORT: x.BUILDER_PORT,
  SSH_USER: x.BUILDER_USER,
  SSH_HOST_KEY: x.BUILDER_HOST_KEY,
  SSH_PRIVATE_KEY: privateKey,
});

/** Runs wake.js as the wake step does; checks that it left nothing in its TMPDIR and never printed the key. */
async function wake(what: string, env: Record<string, string>, timeoutMs = 60_000): Promise<Result> {
  const tmp = fs.mkdtempSync(path.join(svc.dir, "tmpdir-"));
  const r = await run("node", ["-"], {
    input: fs.readFileSync(path.join(SCRIPTS, "wake.js"), "utf8"),
    env: { WAKE_MACHINE: "the builder", WAKE_FOR: "the wake test", READY: "marker", TMPDIR: tmp, ...env },
    cwd: REPO,
    timeoutMs,
  });
  timings.push(`${what}: exit ${r.code} after ${r.seconds.toFixed(1)} s`);
  expect(fs.readdirSync(tmp)).toEqual([]);
  for (const k of [key, wrongKey]) expect(r.stdout + r.stderr).not.toContain(k.split("\n")[1]);
  return r;
}

/** The marker (and cloud-init log) of a bootstrap, in a fresh directory on the builder. */
function bootstrapFiles(builder = "builder") {
  const dir = builderDir(builder);
  return { dir, READY_MARKER: path.join(dir, "bootstrap.status"), READY_LOG: path.join(dir, "cloud-init-output.log") };
}

describe("the bootstrap marker", () => {
  test("already ok: ready at once, with the versions it holds", async () => {
    const f = bootstrapFiles();
    fs.writeFileSync(f.READY_MARKER, "ok nix=2.8.0 skopeo=1.9.3\n");
    const r = await wake("marker ok", { ...sshEnv(b), READY_MARKER: f.READY_MARKER, READY_LOG: f.READY_LOG });
    expect(show(r)).toMatch(/^exit 0 /);
    expect(r.stdout).toBe("ready: the builder nix=2.8.0 skopeo=1.9.3\n");
    expect(r.stderr).toBe("");
    expect(r.seconds).toBeLessThan(5);
  });

  test("a slow bootstrap: waits, shows the log's last line, succeeds once the marker says ok", async () => {
    const f = bootstrapFiles();
    // On the builder, like cloud-init after sshd is up: a log line now, the marker after ~5 s.
    const job = `echo 'builder-bootstrap: installing Nix' >>${f.READY_LOG}; sleep 5; echo 'builder-bootstrap: writing the marker' >>${f.READY_LOG}; printf 'ok nix=2.8.0 skopeo=1.9.3\\n' >${f.READY_MARKER}.tmp; mv ${f.READY_MARKER}.tmp ${f.READY_MARKER}`;
    ok(await onBuilder(b, `nohup sh -c "${job}" >/dev/null 2>&1 </dev/null &`), "starting the slow bootstrap on the builder");
    const pending = wake("slow bootstrap (~5 s)", {
      ...sshEnv(b),
      READY_MARKER: f.READY_MARKER,
      READY_LOG: f.READY_LOG,
      READY_TIMEOUT: "60",
    });
    // Meanwhile: its ssh probes run, and the private key is on no command line.
    const probes = new Set<string>();
    for (let i = 0; i < 20; i++) {
      const ps = ok(await run("ps", ["-eo", "args"], { timeoutMs: 10_000 }), "ps");
      expect(ps.includes(key.split("\n")[1])).toBe(false);
      for (const line of ps.split("\n")) if (/^ssh -F \/dev\/null -i \S+\/neko-wake-\w+\/key /.test(line)) probes.add(line);
      await new Promise((res) => setTimeout(res, 100));
    }
    expect([...probes].length).toBeGreaterThan(0);
    const r = await pending;
    expect(show(r)).toMatch(/^exit 0 /);
    expect(r.stdout).toBe("ready: the builder nix=2.8.0 skopeo=1.9.3\n");
    expect(r.stderr).toMatch(
      new RegExp(
        `^wake: waiting for the builder at ${reEscape(b.BUILDER_ADDR)}:22: bootstrap still running: builder-bootstrap: installing Nix \\(\\d+ s of 60 s\\)$`,
        "m",
      ),
    );
    expect(r.seconds).toBeGreaterThan(3.5);
    expect(r.seconds).toBeLessThan(15);
  });

  test("a failed bootstrap: fails at once with the failing step and the log's last 20 lines", async () => {
    const f = bootstrapFiles();
    fs.writeFileSync(f.READY_MARKER, "failed installing Nix\n");
    fs.writeFileSync(
      f.READY_LOG,
      Array.from({ length: 30 }, (_, i) => `cloud-init line ${i + 1}`).join("\n") +
        "\ncurl: (6) Could not resolve host: install.determinate.systems\n",
    );
    const r = await wake("bootstrap failed", { ...sshEnv(b), READY_MARKER: f.READY_MARKER, READY_LOG: f.READY_LOG });
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toContain("wake: the builder is not usable for the wake test: its bootstrap failed at: installing Nix\n");
    expect(r.stderr).toContain(`  tried: ssh root@${b.BUILDER_ADDR}:22 (pinned host key: ssh-ed25519)\n`);
    expect(r.stderr).toContain(`  last lines of ${f.READY_LOG}:\n    | cloud-init line 12\n`);
    expect(r.stderr).toContain("    | curl: (6) Could not resolve host: install.determinate.systems");
    expect(r.stderr).not.toContain("cloud-init line 11\n");
    expect(r.seconds).toBeLessThan(5);
  });
});

describe("connection failures are told apart", () => {
  const files = () => {
    const f = bootstrapFiles();
    fs.writeFileSync(f.READY_MARKER, "ok\n");
    return { READY_MARKER: f.READY_MARKER, READY_LOG: f.READY_LOG };
  };

  test("a host key other than the pinned one: fails in seconds, naming the cause and the setting", async () => {
    const r = await wake("wrong host key", {
      ...sshEnv(b),
      ...files(),
      SSH_HOST_KEY: otherHostKey,
      SSH_HOST_KEY_SETTING: "neko-infra:builder.hostKey",
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("its SSH host key is not the pinned one (neko-infra:builder.hostKey)");
    expect(r.stderr).toContain(
      `  said:  Host key for ${b.BUILDER_ADDR} has changed and you have requested strict checking. / Host key verification failed.`,
    );
    expect(r.seconds).toBeLessThan(5);
  });

  test("a key the builder does not accept: fails in seconds", async () => {
    const r = await wake("refused key", { ...sshEnv(b, wrongKey), ...files() });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("the server refused the login of root with the configured private key");
    expect(r.stderr).toContain(`  said:  root@${b.BUILDER_ADDR}: Permission denied (publickey).`);
    expect(r.seconds).toBeLessThan(5);
  });

  test("a refused connection with WAKE=none: fails at once, naming the address and ssh's error", async () => {
    const r = await wake("refused connection, WAKE=none", { ...sshEnv(b), ...files(), SSH_PORT: "2222" });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`  tried: ssh root@${b.BUILDER_ADDR}:2222`);
    expect(r.stderr).toContain("nothing accepts connections on port 2222 (connection refused)");
    expect(r.stderr).toContain(`  said:  ssh: connect to host ${b.BUILDER_ADDR} port 2222: Connection refused`);
    expect(r.seconds).toBeLessThan(30);
  });

  test("a port that accepts TCP and never speaks SSH: waits with progress, gives up at READY_TIMEOUT", async () => {
    const sockets: net.Socket[] = [];
    const server = net.createServer((s) => void sockets.push(s)); // accepts, never writes
    await new Promise<void>((res) => server.listen(0, "127.0.0.1", res));
    const port = String((server.address() as net.AddressInfo).port);
    try {
      const r = await wake("silent port, READY_TIMEOUT=20", {
        ...sshEnv(b),
        ...files(),
        SSH_HOST: "127.0.0.1",
        SSH_PORT: port,
        READY_TIMEOUT: "20",
      });
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/^wake: waiting for the builder at 127\.0\.0\.1:\d+ to answer SSH: no answer yet.* \(1\d s of 20 s\)$/m);
      expect(r.stderr).toContain("wake: the builder is not usable for the wake test: no SSH answer within 20 s\n");
      expect(r.stderr).toContain(`check that the builder is running and that this machine may reach 127.0.0.1:${port}`);
      expect(r.stderr).toMatch(
        /^ {2}said: {2}Connection timed out during banner exchange \/ Connection to 127\.0\.0\.1 port \d+ timed out$|no answer within \d+ s; ssh stopped/m,
      );
      expect(r.seconds).toBeGreaterThanOrEqual(19.5);
      expect(r.seconds).toBeLessThan(30);
    } finally {
      sockets.forEach((s) => s.destroy());
      await new Promise((res) => server.close(res));
    }
  });
});

describe("READY=nix (an ssh builder neko-infra did not bootstrap)", () => {
  test("nix and skopeo on the non-interactive PATH: ready with the versions of what the step needs", async () => {
    const r = await wake("READY=nix", { ...sshEnv(b), READY: "nix", READY_TOOLS: "nix skopeo" });
    expect(show(r)).toMatch(/^exit 0 /);
    expect(r.stdout).toMatch(/^ready: the builder nix=\d+\.\d+\S* skopeo=\d+\.\d+\S*\n$/);
    const build = await wake("READY=nix, a build", { ...sshEnv(b), READY: "nix" });
    expect(build.stdout).toMatch(/^ready: the builder nix=\d+\.\d+\S*\n$/);
  });

  test("a PATH without skopeo: a push's wake step fails at once, saying what to install and where; a build's is ready", async () => {
    // The builder's root runs commands through bash, which reads ~/.bashrc under sshd (Debian); the
    // builder's ~ is its own (STATE_DIR/home). The PATH there holds sh, tr and nix: no skopeo.
    const bin = builderDir();
    for (const t of ["sh", "tr", "nix"])
      fs.symlinkSync(ok(await run("bash", ["-c", `command -v ${t}`]), `command -v ${t}`).trim(), path.join(bin, t));
    const bashrc = path.join(svc.dir, "builder", "home", ".bashrc");
    fs.writeFileSync(bashrc, `export PATH=${bin}\n`);
    try {
      const r = await wake("READY=nix, no skopeo", { ...sshEnv(b), READY: "nix", READY_TOOLS: "skopeo" });
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`the builder is not usable for the wake test: skopeo not found on the non-interactive PATH (${bin})`);
      expect(r.stderr).toMatch(/^ {2}said: {2}.*skopeo: (command )?not found$/m);
      expect(r.stderr).toContain("install skopeo there");
      expect(r.seconds).toBeLessThan(5);
      const build = await wake("READY=nix, no skopeo, a build", { ...sshEnv(b), READY: "nix", READY_TOOLS: "nix" });
      expect(show(build)).toMatch(/^exit 0 /);
    } finally {
      fs.rmSync(bashrc, { force: true });
    }
  });
});

describe("a sleeping builder (sshd stopped: connections refused)", () => {
  let s: BuilderEnv;
  let files: { READY_MARKER: string; READY_LOG: string };
  const builderSh = path.join(HARNESS, "builder.sh");
  const state = () => path.join(svc.dir, "sleepy");

  beforeAll(async () => {
    s = (await svc.start("builder.sh", "sleepy")) as unknown as BuilderEnv;
    const f = bootstrapFiles("sleepy");
    fs.writeFileSync(f.READY_MARKER, "ok nix=2.8.0 skopeo=1.9.3\n");
    files = { READY_MARKER: f.READY_MARKER, READY_LOG: f.READY_LOG };
  }, 120_000);

  test("an answering machine is never woken", async () => {
    const flag = path.join(svc.dir, "woken");
    const r = await wake("awake machine, WAKE=command", { ...sshEnv(s), ...files, WAKE: "command", WAKE_COMMAND: `touch ${flag}` });
    expect(show(r)).toMatch(/^exit 0 /);
    expect(fs.existsSync(flag)).toBe(false);
  });

  test("a wake command that fails: its exit code and output", async () => {
    ok(await run(builderSh, ["sleep", state()]), "builder.sh sleep");
    const r = await wake("failing wake command", {
      ...sshEnv(s),
      ...files,
      WAKE: "command",
      WAKE_COMMAND: "echo 'wol: no route to the power switch' >&2; exit 3",
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("wake: the builder is not usable for the wake test: the wake command failed (exit 3)\n");
    expect(r.stderr).toContain("  its output:\n    | wol: no route to the power switch");
  });

  test("a wake command that hangs: stopped after WAKE_COMMAND_TIMEOUT", async () => {
    const r = await wake("hanging wake command, WAKE_COMMAND_TIMEOUT=3", {
      ...sshEnv(s),
      ...files,
      WAKE: "command",
      WAKE_COMMAND: "sleep 600",
      WAKE_COMMAND_TIMEOUT: "3",
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("the wake command did not finish within 3 s (WAKE_COMMAND_TIMEOUT)");
    expect(r.seconds).toBeLessThan(8);
  });

  test("WAKE=command wakes it once; sshd is back in the same netns with the same host key", async () => {
    const before = await onBuilder(s, "true");
    expect(before.stderr).toContain(`ssh: connect to host ${s.BUILDER_ADDR} port 22: Connection refused`);
    const count = path.join(svc.dir, "wake-count");
    // The wake command must not see the private key.
    const command = `test -z "\${SSH_PRIVATE_KEY:-}" || exit 9; echo x >>${count}; ${builderSh} wake ${state()}`;
    const r = await wake("sleeping builder, WAKE=command", { ...sshEnv(s), ...files, WAKE: "command", WAKE_COMMAND: command });
    expect(show(r)).toMatch(/^exit 0 /);
    expect(r.stdout).toBe("ready: the builder nix=2.8.0 skopeo=1.9.3\n");
    expect(r.stderr).toContain(
      `wake: the builder at ${s.BUILDER_ADDR}:22 does not answer (ssh: connect to host ${s.BUILDER_ADDR} port 22: Connection refused): waking it (WAKE_COMMAND)`,
    );
    expect(fs.readFileSync(count, "utf8")).toBe("x\n");
    // Same host key: the harness's own known_hosts (strict) still accepts it; same netns.
    ok(await onBuilder(s, "true"), "ssh with the harness's pinned host key after the wake");
    const pid = fs.readFileSync(path.join(state(), "sshd.pid"), "utf8").trim();
    expect(ok(await run("ip", ["netns", "identify", pid]), "ip netns identify").trim()).toBe(s.BUILDER_NETNS);
    expect(r.seconds).toBeLessThan(15);
  });
});

/**
 * A stand-in for the EC2 API on loopback (the real SDK, pointed at it with AWS_ENDPOINT_URL_EC2):
 * answers DescribeInstances with `instances` and StartInstances by calling `onStart`; `hang` never
 * answers. Records each request's Action and parameters.
 */
async function fakeEc2(o: { instances: [string, string][]; onStart?: () => void; hang?: boolean }) {
  const requests: string[] = [];
  const ns = 'xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"';
  const item = ([id, state]: [string, string]) =>
    `<item><instanceId>${id}</instanceId><instanceState><code>0</code><name>${state}</name></instanceState></item>`;
  const server = http.createServer((req, res) => {
    let body = "";
    req.on("data", (d) => (body += d));
    req.on("end", () => {
      const params = new URLSearchParams(body);
      requests.push(
        `${params.get("Action")} ${[...params]
          .filter(([k]) => k !== "Action" && k !== "Version")
          .map(([k, v]) => `${k}=${v}`)
          .join(" ")}`,
      );
      if (o.hang) return;
      res.setHeader("content-type", "text/xml");
      if (params.get("Action") === "StartInstances") {
        o.onStart?.();
        res.end(`<StartInstancesResponse ${ns}><requestId>r</requestId><instancesSet></instancesSet></StartInstancesResponse>`);
        return;
      }
      const set = o.instances.length
        ? `<item><reservationId>r-1</reservationId><instancesSet>${o.instances.map(item).join("")}</instancesSet></item>`
        : "";
      res.end(
        `<DescribeInstancesResponse ${ns}><requestId>r</requestId><reservationSet>${set}</reservationSet></DescribeInstancesResponse>`,
      );
    });
  });
  await new Promise<void>((res) => server.listen(0, "127.0.0.1", res));
  const env = {
    WAKE: "ec2",
    EC2_REGION: "eu-central-1",
    EC2_STACK_TAG: "neko-infra/wake-test",
    EC2_ROLE_TAG: "builder",
    AWS_ENDPOINT_URL_EC2: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    AWS_ACCESS_KEY_ID: "AKIDWAKETEST",
    AWS_SECRET_ACCESS_KEY: "wake-test-secret",
    AWS_EC2_METADATA_DISABLED: "true",
    AWS_CONFIG_FILE: "/nonexistent/aws-config",
    AWS_SHARED_CREDENTIALS_FILE: "/nonexistent/aws-credentials",
  };
  const close = () => {
    server.closeAllConnections();
    return new Promise((res) => server.close(res));
  };
  return { env, requests, close };
}

const DESCRIBE =
  "DescribeInstances Filter.1.Name=tag:neko-infra:stack Filter.1.Value.1=neko-infra/wake-test Filter.2.Name=tag:neko-infra:role Filter.2.Value.1=builder " +
  "Filter.3.Name=instance-state-name Filter.3.Value.1=pending Filter.3.Value.2=running Filter.3.Value.3=stopping Filter.3.Value.4=stopped";

describe("WAKE=ec2 (the real SDK against a stand-in EC2 endpoint on loopback)", () => {
  let s: BuilderEnv;
  let files: { READY_MARKER: string; READY_LOG: string };
  const builderSh = path.join(HARNESS, "builder.sh");
  const state = () => path.join(svc.dir, "sleepy-ec2");

  beforeAll(async () => {
    s = (await svc.start("builder.sh", "sleepy-ec2")) as unknown as BuilderEnv;
    const f = bootstrapFiles("sleepy-ec2");
    fs.writeFileSync(f.READY_MARKER, "ok nix=2.8.0 skopeo=1.9.3\n");
    files = { READY_MARKER: f.READY_MARKER, READY_LOG: f.READY_LOG };
  }, 120_000);

  beforeEach(async () => {
    ok(await run(builderSh, ["sleep", state()]), "builder.sh sleep");
  });

  test("a stopped instance is started once; refused connections while it boots are waited out", async () => {
    let started = 0;
    // Like EC2: the instance boots for a while after StartInstances, refusing connections.
    const ec2 = await fakeEc2({
      instances: [["i-0wake", "stopped"]],
      onStart: () => void (started++, setTimeout(() => void run(builderSh, ["wake", state()]), 3000)),
    });
    try {
      const r = await wake("stopped instance, WAKE=ec2", { ...sshEnv(s), ...files, ...ec2.env });
      expect(show(r)).toMatch(/^exit 0 /);
      expect(r.stdout).toBe("ready: the builder nix=2.8.0 skopeo=1.9.3\n");
      expect(r.stderr).toContain("wake: started instance i-0wake\n");
      expect(ec2.requests).toEqual([DESCRIBE, "StartInstances InstanceId.1=i-0wake"]);
      expect(started).toBe(1);
      expect(r.seconds).toBeGreaterThan(2.5); // it booted (refusing connections) for 3 s
    } finally {
      await ec2.close();
    }
  });

  test("no instance with the stack's tags: says it is disabled or deleted outside Pulumi", async () => {
    const ec2 = await fakeEc2({ instances: [] });
    try {
      const r = await wake("missing instance, WAKE=ec2", { ...sshEnv(s), ...files, ...ec2.env });
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(
        "wake: the builder is not usable for the wake test: no instance of the builder exists (it is disabled or was deleted outside Pulumi): " +
          "none has tags neko-infra:stack=neko-infra/wake-test and neko-infra:role=builder in eu-central-1\n",
      );
      expect(ec2.requests).toEqual([DESCRIBE]);
    } finally {
      await ec2.close();
    }
  });

  test("a running instance whose sshd never listens: fails after REFUSED_GRACE", async () => {
    const ec2 = await fakeEc2({ instances: [["i-0wake", "running"]] });
    try {
      const r = await wake("refusing running instance, REFUSED_GRACE=5", { ...sshEnv(s), ...files, ...ec2.env, REFUSED_GRACE: "5" });
      expect(r.code).toBe(1);
      expect(r.stderr).toContain("wake: instance i-0wake is running\n");
      expect(r.stderr).toContain(
        "nothing accepts connections on port 22 (connection refused), still 5 s (REFUSED_GRACE) after the wake or boot",
      );
      expect(r.seconds).toBeGreaterThan(4.5);
      expect(r.seconds).toBeLessThan(15);
    } finally {
      await ec2.close();
    }
  });

  test("an EC2 endpoint that never answers: given up after WAKE_COMMAND_TIMEOUT", async () => {
    const ec2 = await fakeEc2({ instances: [], hang: true });
    try {
      const r = await wake("EC2 never answers, WAKE_COMMAND_TIMEOUT=3", { ...sshEnv(s), ...files, ...ec2.env, WAKE_COMMAND_TIMEOUT: "3" });
      expect(r.code).toBe(1);
      expect(r.stderr).toContain("wake: the builder is not usable for the wake test: EC2 did not answer within 3 s\n");
      expect(r.seconds).toBeLessThan(8);
    } finally {
      await ec2.close();
    }
  });
});

describe("without a machine", () => {
  test("DISABLED: fails at once with its text", async () => {
    const text = "the builder is disabled (builder.enabled: false); run: npm run builder:up -- dev";
    const r = await wake("DISABLED", { ...sshEnv(b), DISABLED: text });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`wake: ${text}\n`);
  });

  test("TARGET=local, READY=nix: this machine's nix and skopeo", async () => {
    const r = await wake("TARGET=local READY=nix", { TARGET: "local", READY: "nix", READY_TOOLS: "nix skopeo" });
    expect(show(r)).toMatch(/^exit 0 /);
    expect(r.stdout).toMatch(/^ready: the builder nix=\d+\.\d+\S* skopeo=\d+\.\d+\S*\n$/);
  });

  test("a bad environment: named", async () => {
    const r = await wake("bad environment", { TARGET: "ssh", READY: "nix", SSH_HOST: "x" });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("wake: the builder is not usable for the wake test: SSH_USER is not set");
  });
});
