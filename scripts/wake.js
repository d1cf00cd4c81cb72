// @ts-check
/**
 * The wake step, run on the operator's machine before any Command dials a builder or host (as
 * `node -` with this file on stdin, from the Pulumi project directory). It wakes a sleeping machine,
 * tells SSH failures apart within seconds with the system ssh client, and waits until the machine's
 * bootstrap finished. The command provider cannot: it retries a wrong host key or a refused login
 * silently until its timeout, and hangs for many minutes on a port that never speaks SSH.
 *
 * Env: WAKE_MACHINE ("the builder"), WAKE_FOR (what needs it), DISABLED (non-empty: fail with it)
 *      TARGET ssh | local; SSH_HOST, SSH_PORT (22), SSH_USER, SSH_HOST_KEY (pinned public key line),
 *        SSH_PRIVATE_KEY (secret: only ever in a 0600 temp file), SSH_HOST_KEY_SETTING (for messages)
 *      WAKE none | command (WAKE_COMMAND, WAKE_COMMAND_TIMEOUT 120) | ec2 (EC2_REGION, EC2_STACK_TAG, EC2_ROLE_TAG,
 *        EC2_INSTANCE_ID: the instance Pulumi manages; while a replacement runs, the old one still
 *        carries the same tags)
 *      READY marker (READY_MARKER, READY_LOG) | nix (READY_TOOLS, default nix: what the step
 *        needs, e.g. "skopeo" for a push, "docker" for a load) | docker | login (a login works: a machine
 *        whose setup step comes next); READY_TIMEOUT (300); REFUSED_GRACE (60)
 * Stdout: one line `ready: <machine> <details>`. Progress and failures on stderr. Exit 0 ready, 1 failed.
 * Every line printed is capped at LINE_MAX characters: the command provider hangs for ever on an
 * output line over 64 KiB, and the log lines quoted here (cloud-init's) can be that long.
 */
"use strict";
const { spawn } = require("child_process");
const fs = require("fs");
const os = require("os");
const path = require("path");

/** @typedef {"ok" | "hostkey" | "denied" | "refused" | "resolve" | "negotiate" | "silent" | "closed" | "other"} Kind */
/** OpenSSH's words for each failure, tried in this order. */
const PATTERNS = /** @type {[Kind, RegExp][]} */ ([
  ["hostkey", /Host key verification failed|REMOTE HOST IDENTIFICATION|has changed and you have requested|host key is known for/],
  ["denied", /Permission denied \(|Too many authentication failures|Load key /],
  ["refused", /Connection refused/],
  ["resolve", /Could not resolve hostname/],
  ["negotiate", /Unable to negotiate|no matching (host key type|key exchange method|cipher|MAC) found/],
  ["silent", /timed out|No route to host|Network is unreachable|Host is down/i],
  ["closed", /kex_exchange_identification|Connection (closed|reset) by/],
]);

/**
 * What an ssh run means. `code` null: our timer killed it (no answer); 255: ssh's own failure.
 * @param {string} stderr @param {number | null} code @returns {Kind}
 */
function classify(stderr, code) {
  if (code === null) return "silent";
  if (code !== 255) return "ok";
  return PATTERNS.find(([, re]) => re.test(stderr))?.[0] ?? "other";
}

/** The ssh lines that say what happened (at most two). @param {string} stderr @param {Kind} kind */
function sshLines(stderr, kind) {
  const lines = stderr
    .split("\n")
    .map((l) => l.replace(/^[@\s]+|[@\s]+$/g, ""))
    .filter(Boolean);
  const re = PATTERNS.find(([k]) => k === kind)?.[1];
  const hits = lines.filter((l) => re?.test(l));
  return (hits.length ? hits : lines).slice(-2).join(" / ") || "(ssh printed nothing)";
}

/** Why a connection failed and what fixes it, for the kinds that fail at once. */
const SSH_PROBLEMS = {
  hostkey: [
    "its SSH host key is not the pinned one (SETTING)",
    "check the address; if MACHINE was reinstalled, read its new key out of band (ssh-keyscan -t ed25519 -p PORT HOST from a trusted network) and set SETTING",
  ],
  denied: [
    "the server refused the login of USER with the configured private key",
    "authorize that key's public half in ~USER/.ssh/authorized_keys there, or set the right user and privateKey",
  ],
  refused: ["nothing accepts connections on port PORT (connection refused)", "start sshd there, or correct the host and port"],
  resolve: ["the host name HOST does not resolve", "correct the host setting (or your DNS)"],
  negotiate: [
    "ssh here and the SSH server share no host key type or key exchange method",
    "let the server offer the pinned key type (ed25519) with a current OpenSSH",
  ],
};

/** @typedef {{ InstanceId?: string, State?: { Name?: string } }} Instance */
/**
 * How to wake the EC2 instance found by its tags.
 * @param {Instance[]} instances @returns {{ action: "missing" | "ambiguous" | "none" | "wait" | "start", id: string, state: string }}
 */
function ec2Decision(instances) {
  const id = instances.map((i) => i.InstanceId ?? "?").join(", ");
  const state = instances.map((i) => i.State?.Name ?? "?").join(", ");
  if (instances.length !== 1) return { action: instances.length ? "ambiguous" : "missing", id, state };
  return { action: state === "stopped" ? "start" : state === "stopping" ? "wait" : "none", id, state };
}

/** A failure the operator reads: the cause, the fix, the tool's own words, more lines (a log). */
class Fail extends Error {
  /** @param {string} cause @param {string} fix @param {string} [said] @param {string[]} [more] */
  constructor(cause, fix, said, more = []) {
    super(cause);
    Object.assign(this, { fix, said, more });
  }
}

/** @param {{ machine: string, purpose?: string, tried: string, cause: string, fix: string, said?: string, more?: string[] }} f */
function formatFailure(f) {
  const head = `wake: ${f.machine} is not usable${f.purpose ? ` for ${f.purpose}` : ""}: ${f.cause}`;
  return [head, `  tried: ${f.tried}`, `  fix:   ${f.fix}`, ...(f.said ? [`  said:  ${f.said}`] : []), ...(f.more ?? [])].join("\n");
}

/** @param {string} title @param {string[]} lines */
const quoted = (title, lines) => (lines.length ? [`  ${title}:`, ...lines.map((l) => `    | ${l}`)] : []);

/**
 * Starts the instance tagged with this stack and role (and, when known, with this id: during a
 * replacement the old instance still carries the tags) if it is stopped (waiting out "stopping").
 * @param {{ send: (command: any) => Promise<any> }} client @param {any} sdk the @aws-sdk/client-ec2 module
 * @param {{ machine: string, region: string, stack: string, role: string, instanceId?: string, until: number, pause?: number }} o
 * @returns {Promise<string>} what was done
 */
async function wakeEc2(client, sdk, o) {
  const Filters = [
    { Name: "tag:neko-infra:stack", Values: [o.stack] },
    { Name: "tag:neko-infra:role", Values: [o.role] },
    { Name: "instance-state-name", Values: ["pending", "running", "stopping", "stopped"] },
    ...(o.instanceId ? [{ Name: "instance-id", Values: [o.instanceId] }] : []),
  ];
  const describe = async () => {
    const out = await client.send(new sdk.DescribeInstancesCommand({ Filters }));
    return ec2Decision((out.Reservations ?? []).flatMap((/** @type {any} */ r) => r.Instances ?? []));
  };
  let d = await describe();
  while (d.action === "wait" && Date.now() < o.until) {
    await new Promise((r) => setTimeout(r, o.pause ?? 5000));
    d = await describe();
  }
  const tags = `tags neko-infra:stack=${o.stack} and neko-infra:role=${o.role}${o.instanceId ? ` and the id ${o.instanceId}` : ""} in ${o.region || "the default region"}`;
  if (d.action === "missing") {
    const cause = `no instance of ${o.machine} exists (it is disabled or was deleted outside Pulumi): none has ${tags}`;
    throw new Fail(cause, "enable it, or run `pulumi up --refresh` so Pulumi sees it is gone and creates it again");
  }
  if (d.action === "ambiguous") throw new Fail(`${d.id} all carry ${tags}`, "terminate the instances Pulumi does not manage");
  if (d.action === "wait") throw new Fail(`instance ${d.id} is still stopping`, "wait until it has stopped, then run again");
  if (d.action === "none") return `instance ${d.id} is ${d.state}`;
  await client.send(new sdk.StartInstancesCommand({ InstanceIds: [d.id] }));
  return `started instance ${d.id}`;
}

/** Run on the machine (sh -s MODE MARKER LOG TOOLS): prints what "ready" depends on, always exits 0. */
const CHECK = `echo wake-check
flat() { printf %s "$1" | tr '\\n' ' '; }
tool() { if v=$("$@" 2>&1); then echo "have $1 $(flat "$v")"; else echo "missing $1 $(flat "$v")"; fi; }
case $1 in
marker)
  if [ -e "$2" ]; then echo "marker $(head -n 1 "$2" 2>&1)"; else echo marker-absent; fi
  if [ ! -e "$3" ]; then echo "(no $3 yet)"; else tail -n 20 "$3" 2>/dev/null || sudo -n tail -n 20 "$3" 2>/dev/null || echo "(cannot read $3 as $(id -un))"; fi ;;
nix)
  for t in $4; do
    if [ "$t" = docker ]; then tool docker version --format '{{.Server.Version}}'; else tool "$t" --version; fi
  done
  echo "path $PATH" ;;
docker) tool docker version --format '{{.Server.Version}}' ;;
login) echo "login $(id -un)" ;;
esac
`;

/**
 * What the check's output says.
 * @param {string} mode @param {string} out
 * @param {string[]} [need] with mode nix: the tools the step needs (nix to build, skopeo to push, docker to load)
 * @returns {{ state: "ready", details: string } | { state: "waiting", status: string, log: string[] } | { state: "failed", cause: string, fix: string, said?: string, log: string[] }}
 */
function readiness(mode, out, need = ["nix"]) {
  const [head, first = "", ...log] = out.split("\n").filter((l) => l !== "");
  /** @param {string} cause @param {string} fix @param {string} [said] */
  const failed = (cause, fix, said, lines = /** @type {string[]} */ ([])) => ({
    state: /** @type {const} */ ("failed"),
    cause,
    fix,
    said,
    log: lines,
  });
  if (head !== "wake-check") return failed("the readiness check printed something unexpected", "check the user's login shell", out.trim());
  if (mode === "login") return { state: "ready", details: `login as ${first.slice("login ".length)}` };
  if (mode === "marker") {
    const [word, ...text] = first.split(" ").slice(1);
    if (first.startsWith("marker ") && word === "ok") return { state: "ready", details: text.join(" ") };
    if (!first.startsWith("marker "))
      return { state: "waiting", status: `: bootstrap still running: ${log.at(-1) ?? "(no log yet)"}`, log };
    const fix = "read the log below, fix the cause, then replace the machine or run its bootstrap again";
    return failed(
      word === "failed" ? `its bootstrap failed at: ${text.join(" ")}` : `its bootstrap left an unknown status`,
      fix,
      first.slice("marker ".length),
      log,
    );
  }
  // "have TOOL OUTPUT" / "missing TOOL ERROR" lines, and "path PATH"
  const lines = [first, ...log].map((l) => l.split(" "));
  const tools = Object.fromEntries(lines.map(([s, t, ...v]) => [t, { ok: s === "have", v: v.join(" ").trim() }]));
  const PATH =
    lines
      .find(([s]) => s === "path")
      ?.slice(1)
      .join(" ") ?? "?";
  const version = (/** @type {string} */ t) => `${t}=${(/\d+\.\d+[\w.+~-]*/.exec(tools[t].v) ?? [tools[t].v])[0]}`;
  if (mode === "docker") {
    const d = tools.docker ?? { ok: false, v: "" };
    if (d.ok) return { state: "ready", details: version("docker") };
    if (/permission denied/i.test(d.v))
      return failed(
        "this user may not use the Docker engine",
        "add the user to the docker group (usermod -aG docker USER); the next login has it",
        d.v,
      );
    if (/not found/.test(d.v))
      return failed(
        "docker is not on the non-interactive PATH",
        "install Docker there (an ssh host is not bootstrapped by neko-infra)",
        d.v,
      );
    return { state: "waiting", status: `: the Docker engine does not answer yet: ${d.v}`, log: [] };
  }
  const missing = need.filter((t) => !tools[t]?.ok);
  if (!missing.length) return { state: "ready", details: need.map(version).join(" ") };
  const engine = tools.docker;
  if (missing.includes("docker") && engine && !/not found/.test(engine.v))
    return failed(
      "the Docker engine does not answer",
      "start it (Docker Desktop: open it; Linux: sudo systemctl start docker), or check DOCKER_HOST",
      engine.v,
    );
  const fix = `a builder that is not an ec2 one is not set up by neko-infra: install ${missing.join(" and ")} there${
    missing.includes("docker") ? " (and start its engine)" : ""
  } and link ${missing.length > 1 ? "them" : "it"} into a directory on the PATH of non-interactive commands (e.g. /usr/local/bin; ~/.profile is not read)`;
  return failed(
    `${missing.join(" and ")} not found on the non-interactive PATH (${PATH})`,
    fix,
    missing.map((t) => tools[t]?.v).join(" / "),
  );
}

/** @type {Set<import("child_process").ChildProcess>} */
const children = new Set();
/** @param {import("child_process").ChildProcess} c */
function killGroup(c) {
  try {
    if (c.pid) process.kill(-c.pid, "SIGKILL");
  } catch {
    /* already gone */
  }
}

/**
 * Runs a program in its own process group, killed after `ms` (then code is null).
 * @param {string} file @param {string[]} args @param {{ input?: string, ms: number, env: NodeJS.ProcessEnv }} o
 * @returns {Promise<{ code: number | null, out: string, err: string }>}
 */
function exec(file, args, o) {
  return new Promise((resolve) => {
    const child = spawn(file, args, { env: o.env, detached: true, stdio: ["pipe", "pipe", "pipe"] });
    children.add(child);
    let [out, err, killed] = ["", "", false];
    const timer = setTimeout(() => ((killed = true), killGroup(child)), o.ms);
    const done = (/** @type {number | null} */ code) => {
      clearTimeout(timer);
      children.delete(child);
      [child.stdout, child.stderr].forEach((s) => s?.destroy());
      resolve({ code: killed ? null : code, out, err });
    };
    child.stdout?.setEncoding("utf8").on("data", (d) => (out += d));
    child.stderr?.setEncoding("utf8").on("data", (d) => (err += d));
    child.stdin?.on("error", () => undefined);
    child.stdin?.end(o.input ?? "");
    child.on("error", (e) => ((err += `cannot run ${file}: ${e.message}`), done(127)));
    child.on("close", done);
    // A daemon started by a wake command may hold our pipes open: stop reading soon after the exit.
    child.on("exit", (code) => setTimeout(() => done(code), 500));
  });
}

/**
 * Wakes the machine: WAKE_COMMAND, or EC2 StartInstances. Throws a Fail when that fails.
 * @param {NodeJS.ProcessEnv} env @param {{ machine: string, wake: string, seconds: number, need: (name: string) => string }} o
 */
async function wakeUp(env, o) {
  if (o.wake === "command") {
    const w = await exec("/bin/sh", ["-c", o.need("WAKE_COMMAND")], { ms: o.seconds * 1000, env });
    if (w.code === 0) return "the wake command finished";
    const what = w.code === null ? `did not finish within ${o.seconds} s (WAKE_COMMAND_TIMEOUT)` : `failed (exit ${w.code})`;
    const output = `${w.out}\n${w.err}`.split("\n").filter((l) => l.trim());
    throw new Fail(`the wake command ${what}`, "fix the wakeCommand setting", "", quoted("its output", output));
  }
  const sdk = require("@aws-sdk/client-ec2");
  const region = env.EC2_REGION || "";
  const tags = {
    region,
    stack: o.need("EC2_STACK_TAG"),
    role: o.need("EC2_ROLE_TAG"),
    instanceId: env.EC2_INSTANCE_ID || undefined,
    until: Date.now() + o.seconds * 1000,
  };
  const fix = "check your AWS credentials and region (the ones pulumi up uses)";
  const late = new Promise((_, reject) =>
    setTimeout(() => reject(new Fail(`EC2 did not answer within ${o.seconds} s`, fix)), o.seconds * 1000).unref(),
  );
  const woken = wakeEc2(new sdk.EC2Client({ region: region || undefined }), sdk, { machine: o.machine, ...tags });
  return /** @type {Promise<string>} */ (Promise.race([woken, late])).catch((e) => {
    throw e instanceof Fail ? e : new Fail(`AWS refused the wake: ${e.name}: ${e.message}`, fix);
  });
}

/**
 * Wakes the machine if needed and waits until it is ready; resolves to the `ready:` line, rejects
 * with a Fail. `ctx.tried` says what is being tried, for the failure message.
 * @param {NodeJS.ProcessEnv} env @param {{ tried: string }} ctx @returns {Promise<string>}
 */
async function main(env, ctx) {
  const machine = env.WAKE_MACHINE || "the machine";
  const bad = (/** @type {string} */ what) => new Fail(what, "fix the wake step's environment (lib/wake.ts)");
  const need = (/** @type {string} */ name) => {
    if (!env[name]) throw bad(`${name} is not set`);
    return env[name];
  };
  const seconds = (/** @type {string} */ name, /** @type {number} */ dflt) => {
    const n = Number(env[name] || dflt);
    if (!(Number.isInteger(n) && n > 0)) throw bad(`${name} must be a positive number of seconds, not "${env[name]}"`);
    return n;
  };
  const [target, wake, mode] = [env.TARGET || "", env.WAKE || "none", env.READY || ""];
  if (
    !["ssh", "local"].includes(target) ||
    !["none", "command", "ec2"].includes(wake) ||
    !["marker", "nix", "docker", "login"].includes(mode)
  ) {
    throw bad(`TARGET must be ssh|local, WAKE none|command|ec2, READY marker|nix|docker|login (got ${target}, ${wake}, ${mode})`);
  }
  const readyTimeout = seconds("READY_TIMEOUT", 300);
  const wakeTimeout = seconds("WAKE_COMMAND_TIMEOUT", 120);
  const grace = seconds("REFUSED_GRACE", 60);
  const marker = env.READY_MARKER || "/var/lib/neko-infra/bootstrap.status";
  const logFile = env.READY_LOG || "/var/log/cloud-init-output.log";
  const childEnv = { ...env };
  delete childEnv.SSH_PRIVATE_KEY;
  // The tools this step needs on the machine (READY=nix): nothing more is demanded.
  const tools = (env.READY_TOOLS || "nix").split(/\s+/).filter(Boolean);
  const args = [mode, marker, logFile, tools.join(" ")];
  let [host, port, user, where] = ["", "", "", `${machine} (this machine)`];
  ctx.tried = `the readiness check (READY=${mode}) on this machine`;
  /** @type {(ms: number) => ReturnType<typeof exec>} */
  let probe = (ms) => exec("/bin/sh", ["-s", "--", ...args], { input: CHECK, ms, env: childEnv });
  if (target === "ssh") {
    [host, port, user] = [need("SSH_HOST"), env.SSH_PORT || "22", need("SSH_USER")];
    const hostKey = need("SSH_HOST_KEY").trim().split(/\s+/).slice(0, 2).join(" ");
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "neko-wake-"));
    process.on("exit", () => fs.rmSync(tmp, { recursive: true, force: true }));
    fs.writeFileSync(path.join(tmp, "key"), `${need("SSH_PRIVATE_KEY").trim()}\n`, { mode: 0o600 });
    fs.writeFileSync(path.join(tmp, "known_hosts"), `${port === "22" ? host : `[${host}]:${port}`} ${hostKey}\n`);
    where = `${machine} at ${host}:${port}`;
    ctx.tried = `ssh ${user}@${host}:${port} (pinned host key: ${hostKey.split(" ")[0]})`;
    // Nothing of the user's: no ~/.ssh/config (-F), agent, known_hosts or control sockets.
    const opts = `IdentitiesOnly=yes IdentityAgent=none StrictHostKeyChecking=yes UserKnownHostsFile=${tmp}/known_hosts GlobalKnownHostsFile=/dev/null
      CheckHostIP=no UpdateHostKeys=no BatchMode=yes PasswordAuthentication=no ConnectionAttempts=1 ServerAliveInterval=5 ServerAliveCountMax=2 ControlPath=none`;
    const command = `sh -s -- ${args.map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(" ")}`;
    probe = (ms) => {
      const connect = `ConnectTimeout=${Math.max(1, Math.min(10, Math.floor(ms / 1000)))}`;
      const o = [...opts.split(/\s+/), connect].flatMap((x) => ["-o", x]);
      const sshArgs = ["-F", "/dev/null", "-i", `${tmp}/key`, "-p", port, "-T", "-x", "-a", ...o, "-l", user, "--", host, command];
      return exec("ssh", sshArgs, { input: CHECK, ms, env: childEnv });
    };
  }
  const problem = (/** @type {keyof typeof SSH_PROBLEMS} */ kind, /** @type {string} */ said, extra = "") => {
    const vars = { MACHINE: machine, USER: user, HOST: host, PORT: port, SETTING: env.SSH_HOST_KEY_SETTING || "the hostKey setting" };
    const [cause, fix] = SSH_PROBLEMS[kind].map((s) =>
      s.replace(/MACHINE|USER|HOST|PORT|SETTING/g, (v) => vars[/** @type {keyof typeof vars} */ (v)]),
    );
    return new Fail(cause + extra, fix, said);
  };

  // Progress: at once when the machine first answers SSH, then at least every 10 s.
  const started = Date.now();
  let deadline = started + readyTimeout * 1000;
  let [phase, status, said, lastLog] = ["ssh", " to answer SSH: no answer yet", "", /** @type {string[]} */ ([])];
  let [printedPhase, printedAt, probes, wokeAt, refusedSince] = ["ssh", started, 0, 0, 0];
  setInterval(() => {
    if (phase === printedPhase && Date.now() - printedAt < 10_000) return;
    [printedPhase, printedAt] = [phase, Date.now()];
    const [now, total] = [Math.round((Date.now() - started) / 1000), Math.round((deadline - started) / 1000)];
    console.error(`wake: waiting for ${where}${status} (${now} s of ${total} s)`);
  }, 250).unref();
  for (; ; probes++) {
    const left = deadline - Date.now();
    if (left <= 0) {
      const total = Math.round((deadline - started) / 1000);
      if (phase === "ssh") {
        const fix = `check that ${machine} is running and that this machine may reach ${host}:${port} (firewall, security group sshCidrs)`;
        throw new Fail(`no SSH answer within ${total} s${wokeAt ? " (after the wake)" : ""}`, fix, said);
      }
      const fix =
        mode === "docker"
          ? "start the Docker engine there (systemctl enable --now docker)"
          : "look at the machine: its bootstrap hangs or is slow (log below)";
      throw new Fail(`not ready within ${total} s${status}`, fix, said, quoted(`last lines of ${logFile}`, lastLog));
    }
    const r = await probe(Math.min(20_000, left));
    if (r.code === 127 && r.err.startsWith("cannot run ")) throw new Fail(r.err, "install it (the OpenSSH client, for ssh machines)");
    const kind = target === "local" ? "ok" : classify(r.err, r.code);
    said = r.code === null ? `(no answer within ${Math.round(Math.min(20_000, left) / 1000)} s; ssh stopped)` : sshLines(r.err, kind);
    if (kind === "ok") {
      const s = readiness(mode, r.out, tools);
      if (s.state === "ready") return `ready: ${machine}${s.details ? ` ${s.details}` : ""}`;
      if (s.state === "failed") throw new Fail(s.cause, s.fix, s.said, quoted(`last lines of ${logFile}`, s.log));
      [phase, status, lastLog, said, refusedSince] = ["ready", s.status, s.log, "", 0];
    } else if (kind in SSH_PROBLEMS && (kind !== "refused" || wake === "none")) {
      throw problem(/** @type {keyof typeof SSH_PROBLEMS} */ (kind), said); // waiting does not cure these
    } else if (probes === 0 && wake !== "none" && (kind === "silent" || kind === "refused")) {
      // Only a machine that does not answer is woken, and only once.
      console.error(`wake: ${where} does not answer (${said}): waking it (${wake === "ec2" ? "EC2 StartInstances" : "WAKE_COMMAND"})`);
      const t0 = Date.now();
      console.error(`wake: ${await wakeUp(childEnv, { machine, wake, seconds: wakeTimeout, need })}`);
      wokeAt = Date.now();
      deadline += Math.min(wokeAt - t0, wakeTimeout * 1000); // the wake's own time does not eat the wait
      [phase, status] = ["ssh", " to answer SSH after the wake: no answer yet"];
      continue;
    } else if (kind === "refused") {
      refusedSince = Math.max(refusedSince || Date.now(), wokeAt);
      const graced = wake === "ec2" || wokeAt > 0; // a booting machine refuses until its sshd listens
      if (!graced || Date.now() - refusedSince >= grace * 1000) {
        throw problem(kind, said, graced ? `, still ${grace} s (REFUSED_GRACE) after the wake or boot` : "");
      }
      [phase, status] = ["ssh", " to answer SSH: connection refused (sshd not up yet)"];
    } else {
      [phase, status, refusedSince] = ["ssh", ` to answer SSH: no answer yet: ${said}`, 0];
    }
    await new Promise((res) => setTimeout(res, Math.max(0, Math.min(3000, deadline - Date.now()))));
  }
}

const LINE_MAX = 2000;
/** Each line of `text` at most LINE_MAX characters, saying where one was cut. @param {string} text */
function capLines(text) {
  return text
    .split("\n")
    .map((l) => (l.length > LINE_MAX ? `${l.slice(0, LINE_MAX)} [... line cut at ${LINE_MAX} characters]` : l))
    .join("\n");
}

module.exports = { classify, sshLines, ec2Decision, wakeEc2, readiness, formatFailure, Fail, CHECK, capLines, LINE_MAX };

if (require.main === module || /** @type {any} */ (module).id === "[stdin]") {
  const env = process.env;
  for (const stream of /** @type {const} */ (["log", "error"])) {
    const write = console[stream].bind(console);
    console[stream] = (/** @type {unknown[]} */ ...args) => write(capLines(require("util").format(...args)));
  }
  const ctx = { tried: "" };
  /** @param {{ message: string, fix?: string, said?: string, more?: string[] }} e */
  const report = (e) => {
    const f = { cause: e.message, fix: e.fix ?? "this is a bug in scripts/wake.js", said: e.said, more: e.more };
    console.error(
      formatFailure({ machine: env.WAKE_MACHINE || "the machine", purpose: env.WAKE_FOR, tried: ctx.tried || "nothing yet", ...f }),
    );
    process.exit(1);
  };
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) process.on(sig, () => process.exit(1));
  process.on("exit", () => children.forEach(killGroup));
  if (env.DISABLED) {
    console.error(`wake: ${env.DISABLED}`);
    process.exit(1);
  }
  // Whatever the network or AWS do, the step ends within its two budgets.
  const bound = (Number(env.READY_TIMEOUT) || 300) + (Number(env.WAKE_COMMAND_TIMEOUT) || 120);
  setTimeout(() => report(new Error(`no result within ${bound} s (READY_TIMEOUT + WAKE_COMMAND_TIMEOUT)`)), (bound + 3) * 1000).unref();
  main(env, ctx).then((line) => (console.log(line), process.exit(0)), report);
}
