// @ts-check
/**
 * `npm run status -- STACK`: what really runs on the stack's machines, against what the stack
 * expects, without waking anything. For each machine of the stack's `machines` output:
 *
 *   ec2    EC2 DescribeInstances (by the stack's and role's tags, as scripts/wake.js finds it):
 *          stopped -> ASLEEP with since when, and nothing else (no SSH); running -> asked over SSH
 *   ssh    asked over SSH (ConnectTimeout 5 s: unreachable is a finding, not a hang)
 *   local  asked here (this machine's Docker)
 *
 * "Asked" = scripts/neko-status.sh runs there (`bash -s -- host|builder`, the script on standard
 * input) and prints what the steps recorded; tools/status-report.js judges it. The SSH key comes
 * from the stack's secret outputs (hostSsh / builderSsh) into a private temp directory removed on
 * exit; the host key is pinned. Secrets never reach stdout: neko's API token stays on the host.
 *
 * One line per finding (OK / INFO / ASLEEP / DRIFT with its fix / UNKNOWN), then a summary.
 * Exit 0: nothing is wrong; 1: a drift; 2: bad usage, or the stack or a machine could not be read.
 * Env: PULUMI_BACKEND_URL (default file://~/.pulumi-neko-infra, as tools/up.sh), the AWS SDK's
 * (AWS_REGION, AWS_PROFILE, AWS_ENDPOINT_URL_EC2, ...), STATUS_SSH_SECONDS (default 30: one
 * machine's whole SSH run).
 */
"use strict";
const { spawn } = require("child_process");
const fs = require("fs");
const os = require("os");
const path = require("path");
const report = require("./status-report");

const ROOT = path.resolve(__dirname, "..");
const SCRIPT = fs.readFileSync(path.join(ROOT, "scripts", "neko-status.sh"), "utf8");
const SSH_SECONDS = Number(process.env.STATUS_SSH_SECONDS) || 30;

/**
 * Runs a program with a time limit (its process group killed at the end of it).
 * @param {string} file @param {string[]} args @param {{ input?: string, seconds: number, env?: NodeJS.ProcessEnv }} o
 * @returns {Promise<{ code: number | null, stdout: string, stderr: string, timedOut: boolean }>}
 */
function run(file, args, o) {
  return new Promise((resolve) => {
    const child = spawn(file, args, { cwd: ROOT, env: o.env ?? process.env, stdio: ["pipe", "pipe", "pipe"], detached: true });
    let stdout = "";
    let stderr = "";
    let timedOut = false;
    child.stdout.setEncoding("utf8").on("data", (d) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d) => (stderr += d));
    child.stdin.on("error", () => undefined);
    child.stdin.end(o.input ?? "");
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-(child.pid ?? 0), "SIGKILL");
      } catch {
        /* gone */
      }
    }, o.seconds * 1000);
    child.on("error", (e) => {
      clearTimeout(timer);
      resolve({ code: 127, stdout, stderr: String(e.message), timedOut });
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, timedOut });
    });
  });
}

/** The last line of a program's error output that says something. @param {string} text */
const lastLine = (text) =>
  text
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith("Warning: Permanently added"))
    .pop() ?? "no message";

/** @param {string} message @returns {never} */
function giveUp(message) {
  console.error(`status: ${message}`);
  process.exit(2);
}

/**
 * neko-status.sh on the machine: over SSH with the stack's key and pinned host key, or here.
 * @param {report.MachineOut} m @param {any} access the secret {host, port, user, privateKey, hostKey}
 * @param {string} tmp private directory
 * @returns {Promise<{ facts?: report.Facts, problem?: string }>}
 */
async function ask(m, access, tmp) {
  const role = m.role === "host" ? "host" : "builder";
  if (m.kind === "local") {
    const r = await run("bash", ["-s", "--", role], { input: SCRIPT, seconds: SSH_SECONDS });
    return r.code === 0 ? { facts: report.parseFacts(r.stdout) } : { problem: `neko-status.sh failed here: ${lastLine(r.stderr)}` };
  }
  if (!access?.privateKey || !access?.hostKey) return { problem: `the stack has no ${m.role}Ssh output with its key and host key` };
  const key = path.join(tmp, `${m.role}.key`);
  const known = path.join(tmp, `${m.role}.known_hosts`);
  fs.writeFileSync(key, `${String(access.privateKey).trim()}\n`, { mode: 0o600 });
  const port = Number(access.port ?? 22);
  fs.writeFileSync(known, `${port === 22 ? access.host : `[${access.host}]:${port}`} ${String(access.hostKey).trim()}\n`);
  const args = ["-i", key, "-o", "IdentitiesOnly=yes", "-o", `UserKnownHostsFile=${known}`, "-o", "StrictHostKeyChecking=yes"];
  args.push("-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=2");
  args.push("-F", "/dev/null", "-p", String(port), `${access.user}@${access.host}`, `bash -s -- ${role}`);
  const r = await run("ssh", args, { input: SCRIPT, seconds: SSH_SECONDS });
  if (r.timedOut) return { problem: `ssh ${access.user}@${access.host}:${port} did not finish within ${SSH_SECONDS}s` };
  if (r.code !== 0) return { problem: `ssh ${access.user}@${access.host}:${port} failed (exit ${r.code}): ${lastLine(r.stderr)}` };
  return { facts: report.parseFacts(r.stdout) };
}

/** This stack's instances of a role (not terminated). @param {report.MachineOut} m */
async function describe(m) {
  const sdk = require("@aws-sdk/client-ec2");
  // Bounded: an unanswering endpoint is a finding, not a hang.
  const client = new sdk.EC2Client({
    region: m.region || undefined,
    maxAttempts: 2,
    requestHandler: { connectionTimeout: 5000, requestTimeout: 15000 },
  });
  const Filters = [
    { Name: "tag:neko-infra:stack", Values: [m.stackTag ?? ""] },
    { Name: "tag:neko-infra:role", Values: [m.role] },
    { Name: "instance-state-name", Values: ["pending", "running", "stopping", "stopped"] },
  ];
  const out = await client.send(new sdk.DescribeInstancesCommand({ Filters }));
  return (out.Reservations ?? []).flatMap((/** @type {any} */ r) => r.Instances ?? []);
}

/** @param {string} stack @param {report.MachineOut} m @param {any} outputs @param {string} tmp @returns {Promise<report.Finding[]>} */
async function machineFindings(stack, m, outputs, tmp) {
  /** @type {report.Finding[]} */
  const found = [];
  const now = Date.now() / 1000;
  if (m.kind === "ec2") {
    let instances;
    try {
      instances = await describe(m);
    } catch (e) {
      const why = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
      return [
        {
          status: "UNKNOWN",
          what: `${m.role} instance`,
          detail: `EC2 DescribeInstances in ${m.region} failed: ${why}`,
          fix: "check your AWS credentials and region (aws sts get-caller-identity)",
        },
      ];
    }
    const e = report.ec2Findings(m, instances, stack, now);
    found.push(...e.findings);
    if (!e.ssh) return found;
  }
  if (m.role === "builder" && m.enabled === false)
    return [{ status: "INFO", what: "builder", detail: "disabled (builder.enabled: false)" }];
  const asked = await ask(m, outputs[`${m.role}Ssh`], tmp);
  if (!asked.facts) {
    const fix = m.kind === "local" ? "see the message" : `npm run ssh -- ${stack} ${m.role} (is it up, and does it take the stack's key?)`;
    return [...found, { status: "UNKNOWN", what: m.role, detail: `could not be asked: ${asked.problem}`, fix }];
  }
  const args = { stack, machine: m, facts: asked.facts };
  if (m.role === "builder") return [...found, ...report.builderFindings(args)];
  return [...found, ...report.hostFindings({ ...args, imageRef: outputs.imageRef, expectedNeko: outputs.expected?.neko })];
}

async function main() {
  const stack = process.argv[2];
  if (process.argv.length !== 3 || !/^[A-Za-z0-9_.-]+$/.test(stack ?? "")) {
    console.error("usage: npm run status -- STACK   (the stack name, e.g. local, dev, prod)");
    process.exit(2);
  }
  const env = { ...process.env };
  if (!env.PULUMI_BACKEND_URL && !env.PULUMI_ACCESS_TOKEN) env.PULUMI_BACKEND_URL = `file://${os.homedir()}/.pulumi-neko-infra`;
  const r = await run("pulumi", ["stack", "output", "--json", "--show-secrets", "--stack", stack], { seconds: 120, env });
  if (r.code !== 0) giveUp(`cannot read stack ${stack}'s outputs (pulumi stack output): ${lastLine(r.stderr)}`);
  /** @type {any} */
  let outputs;
  try {
    outputs = JSON.parse(r.stdout);
  } catch {
    giveUp(`pulumi stack output --json printed no JSON for stack ${stack}`);
  }
  /** @type {report.MachineOut[]} */
  const machines = Array.isArray(outputs.machines) ? outputs.machines : [];
  if (machines.length === 0)
    giveUp(`stack ${stack} has no machines output (deployed before npm run status existed): run npm run up -- ${stack} once`);

  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "neko-status-"));
  // The SSH keys in it go with it, also on Ctrl-C.
  for (const signal of /** @type {const} */ (["SIGINT", "SIGTERM"])) {
    process.on(signal, () => {
      fs.rmSync(tmp, { recursive: true, force: true });
      process.exit(130);
    });
  }
  /** @type {report.Finding[]} */
  const findings = [];
  try {
    // Builder first: it is the one that sleeps most.
    for (const m of [...machines].sort((a, b) => (a.role === b.role ? 0 : a.role === "builder" ? -1 : 1))) {
      const found = await machineFindings(stack, m, outputs, tmp);
      for (const f of found) console.log(report.format(f));
      findings.push(...found);
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  const count = (/** @type {string} */ s) => findings.filter((f) => f.status === s).length;
  const code = report.exitCode(findings);
  const verdict =
    code === 0 ? "nothing is wrong" : code === 1 ? `${count("DRIFT")} drift(s)` : `${count("UNKNOWN")} machine(s) could not be read`;
  console.log(`status: ${stack}: ${verdict} (${findings.length} finding(s))`);
  process.exit(code);
}

main().catch((e) => giveUp(e instanceof Error ? (e.stack ?? e.message) : String(e)));
