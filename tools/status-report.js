// @ts-check
/**
 * The judgement of `npm run status -- STACK` (tools/status.js gathers, this decides): what a
 * machine's facts (scripts/neko-status.sh, EC2's DescribeInstances) say against what the stack
 * expects (its outputs imageRef, machines and, when there, expected). Pure functions only.
 *
 * A finding is one line: `OK`, `INFO` (worth knowing, nothing to fix), `ASLEEP` (a stopped EC2
 * machine: not woken, not a drift), `DRIFT` (what runs is not what the stack expects; the line
 * ends with its fix) or `UNKNOWN` (the machine could not be asked; also with a fix).
 * Exit status: 1 with any DRIFT, else 2 with any UNKNOWN, else 0.
 */
"use strict";
require("./ts-require");
/** @type {typeof import("../lib/spec")} */
const { shownDigest } = require("../lib/spec");

const LINE_MAX = 300;

/**
 * @typedef {{ status: "OK" | "INFO" | "ASLEEP" | "DRIFT" | "UNKNOWN", what: string, detail: string, fix?: string }} Finding
 * @typedef {{ role: "host" | "builder", kind: "ec2" | "ssh" | "local", address?: string, port?: number, user?: string,
 *   region?: string, stackTag?: string, enabled?: boolean, cache?: string }} MachineOut
 * @typedef {{ [key: string]: string[] }} Facts
 */

/** @param {Finding} f */
function format(f) {
  const flat = (/** @type {string} */ t) => t.replace(/[\r\n\t]+/g, " ");
  const head = flat(`${f.status.padEnd(7)} ${f.what}: ${f.detail}`);
  const fix = f.fix ? flat(` -- fix: ${f.fix}`) : "";
  // The fix is what the line is for: the detail gives way first.
  const room = Math.max(LINE_MAX - fix.length, 60);
  const line = (head.length > room ? `${head.slice(0, room - 3)}...` : head) + fix;
  return line.length > LINE_MAX ? `${line.slice(0, LINE_MAX - 3)}...` : line;
}

/** An image ID as docker shows it (sha256: and 12 hex digits); a REPO@sha256:... reference stays whole. @param {string} id */
const shortId = (id) => (/^sha256:[0-9a-f]{64}$/.test(id) ? id.slice(0, 19) : id);

/** @param {Finding[]} findings */
function exitCode(findings) {
  if (findings.some((f) => f.status === "DRIFT")) return 1;
  return findings.some((f) => f.status === "UNKNOWN") ? 2 : 0;
}

/** neko-status.sh's `key value...` lines, each key's values in order. @param {string} text @returns {Facts} */
function parseFacts(text) {
  /** @type {Facts} */
  const facts = {};
  for (const line of text.split("\n")) {
    const m = /^([a-z][a-z-]*)(?: (.*))?$/.exec(line);
    if (m) (facts[m[1]] ??= []).push(m[2] ?? "");
  }
  return facts;
}

/** "2h 5m" @param {number} seconds */
function ago(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 120) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 120) return `${m}m`;
  const h = Math.floor(m / 60);
  return h < 48 ? `${h}h ${m % 60}m` : `${Math.floor(h / 24)}d ${h % 24}h`;
}

/** An epoch (seconds) or an RFC 3339 time, as "2026-12-03 10:00Z (2h 5m ago)". @param {string | number} t @param {number} now */
function when(t, now) {
  const ms = typeof t === "number" ? t * 1000 : Date.parse(t);
  if (!Number.isFinite(ms) || ms <= 0) return "an unknown time";
  return `${new Date(ms).toISOString().slice(0, 16).replace("T", " ")}Z (${ago(now - ms / 1000)} ago)`;
}

/** The URN of the host's rollout step: replacing it runs neko-rollout.sh again. @param {string} stack @param {MachineOut} m */
function rolloutUrn(stack, m) {
  const type = m.kind === "local" ? "command:local:Command" : "command:remote:Command";
  return `urn:pulumi:${stack}::neko-infra::neko-infra:host:NekoHost$${type}::host-neko`;
}

/**
 * What an EC2 machine's instances (DescribeInstances, this stack's and role's tags) say. `ssh`:
 * true when it runs and should be asked over SSH.
 * @param {MachineOut} m @param {any[]} instances @param {string} stack @param {number} now
 * @returns {{ findings: Finding[], ssh: boolean }}
 */
function ec2Findings(m, instances, stack, now) {
  const what = `${m.role} instance`;
  if (m.role === "builder" && m.enabled === false) {
    return { findings: [{ status: "INFO", what, detail: "disabled (builder.enabled: false): nothing can be built" }], ssh: false };
  }
  if (instances.length === 0) {
    const detail = `no instance tagged neko-infra:stack=${m.stackTag} and neko-infra:role=${m.role} in ${m.region} (deleted outside Pulumi?)`;
    return { findings: [{ status: "DRIFT", what, detail, fix: `npm run up -- ${stack} --refresh` }], ssh: false };
  }
  if (instances.length > 1) {
    const ids = instances.map((i) => i.InstanceId).join(", ");
    return {
      findings: [
        { status: "DRIFT", what, detail: `${ids} all carry this stack's tags`, fix: "terminate the instances Pulumi does not manage" },
      ],
      ssh: false,
    };
  }
  const i = instances[0];
  const state = i.State?.Name ?? "unknown";
  const id = `${i.InstanceId} (${i.InstanceType ?? "?"})`;
  if (state === "stopped" || state === "stopping") {
    // "User initiated (2026-12-03 10:00:00 GMT)": when it stopped (the idle stop powers off from inside).
    const t = /\((\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d) GMT\)/.exec(i.StateTransitionReason ?? "");
    const since = t ? `since ${when(`${t[1]}T${t[2]}Z`, now)}` : `(${i.StateTransitionReason || "no reason given"})`;
    const wakes = m.role === "host" ? "its wake link or the next deploy starts it" : "the next build (npm run up) starts it";
    return { findings: [{ status: "ASLEEP", what, detail: `${id} ${state} ${since}; not woken: ${wakes}` }], ssh: false };
  }
  if (state !== "running") {
    return { findings: [{ status: "INFO", what, detail: `${id} is ${state}; ask again in a minute` }], ssh: false };
  }
  const since = i.LaunchTime ? ` since ${when(new Date(i.LaunchTime).toISOString(), now)}` : "";
  return { findings: [{ status: "OK", what, detail: `${id} running${since}` }], ssh: true };
}

/**
 * The host's facts against the stack's expectations.
 * @param {{ stack: string, machine: MachineOut, facts: Facts, imageRef?: string, expectedNeko?: Record<string, string> }} a
 * @returns {Finding[]}
 */
function hostFindings(a) {
  const { stack, machine: m, facts } = a;
  const one = (/** @type {string} */ k) => facts[k]?.[0];
  const now = Number(one("now")) || Date.now() / 1000;
  const redeploy = `npm run up -- ${stack} --target-replace '${rolloutUrn(stack, m)}'`;
  const shell = m.kind === "local" ? "" : `npm run ssh -- ${stack} host `;
  /** @type {Finding[]} */
  const out = [];
  const add = adder(out, "host");

  if (one("boot") && m.kind !== "local") add("INFO", "machine", `up since ${when(Number(one("boot")), now)}`);
  if (facts["docker-error"]) {
    add(
      "DRIFT",
      "docker",
      `the Docker engine does not answer: ${one("docker-error")}`,
      m.kind === "local" ? "start Docker" : `${shell}sudo systemctl start docker`,
    );
    return out;
  }
  if (!one("specs") || one("specs") === "none") {
    add("DRIFT", "neko", "no deploy is recorded on this machine (never deployed here, or wiped)", redeploy);
    return out;
  }
  const deploy = (/** @type {string} */ k) => one(`deploy-${k}`) ?? "";
  const state = (one("container") ?? "absent").split(" ");
  const deployed = deploy("image") || "(not recorded)";
  if (state[0] === "absent") {
    add("DRIFT", "neko", `no container named neko (removed by hand?); the last deploy ran ${shortId(deployed)}`, redeploy);
  } else if (state[0] !== "running") {
    add(
      "DRIFT",
      "neko",
      `${state[0]} (exit code ${state[1]}) at ${when(state[3], now)}; it ran since ${when(state[2], now)}`,
      // neko is never started twice: the restore creates it afresh from its recorded spec.
      m.kind === "local" ? "bash scripts/neko-restore.sh" : `${shell}sudo bash /var/lib/neko-infra/neko-restore.sh`,
    );
  } else {
    const image = one("container-image") ?? "";
    if (deploy("image") && image !== deploy("image")) {
      add(
        "DRIFT",
        "neko",
        `runs image ${shortId(image)}, not ${shortId(deploy("image"))} that the last deploy ran (another image under the name neko)`,
        redeploy,
      );
    } else if (one("container-spec") !== one("current")) {
      add(
        "DRIFT",
        "neko",
        `not the container the rollout made: its spec label is '${one("container-spec") ?? ""}', the recorded spec ${one("current") ?? "(none)"}`,
        redeploy,
      );
    }
    const health = (one("health") ?? "none").split(" ");
    // Not OK when it is not the deployed container: said, as what runs.
    const drifted = out.some((f) => f.status === "DRIFT" && f.what === "host neko");
    if (health[0] === "200")
      add(drifted ? "INFO" : "OK", "neko", `running since ${when(state[2], now)}, ${shortId(image)}, /health 200 at ${health[1]}`);
    else if (health[0] === "none") add("DRIFT", "neko", "its HTTP port is not published (or no spec says which it is)", redeploy);
    else
      add(
        "DRIFT",
        "neko",
        `/health answered ${health[0] === "000" ? "nothing" : `HTTP ${health[0]}`} at ${health[1]}`,
        `${shell}docker logs --tail 50 neko, then ${redeploy}`,
      );
    const tag = one("container-stack");
    if (m.stackTag && tag && tag !== m.stackTag)
      add("DRIFT", "neko", `labelled for stack '${tag}', not ${m.stackTag}`, `remove it by hand, then ${redeploy}`);
  }
  for (const left of facts.leftover ?? []) add("DRIFT", "neko", `${left} was left by an interrupted rollout`, redeploy);

  if (a.imageRef && deploy("ref") !== a.imageRef) {
    add(
      "DRIFT",
      "image",
      `the stack expects ${a.imageRef}; the last deploy ran ${deploy("ref") || "(not recorded)"}`,
      `npm run up -- ${stack}`,
    );
  } else if (a.imageRef) {
    add("OK", "image", `the last deploy ran ${a.imageRef}, as the stack expects`);
  }
  if (a.expectedNeko) {
    if (deploy("shown") === shownDigest(a.expectedNeko)) add("OK", "spec", "the deployed spec is the one the stack expects");
    else
      add(
        "DRIFT",
        "spec",
        "the deployed spec differs from the one the stack expects (see pulumi preview --diff)",
        `npm run up -- ${stack}`,
      );
  } else {
    add("INFO", "spec", "the stack has no `expected` output: only the image and the recorded spec label were compared");
  }
  if (deploy("time")) add("INFO", "last deploy", `${deploy("outcome")} ${when(Number(deploy("time")), now)}: ${deploy("ref")}`);
  if (one("deploying")) add("INFO", "deploy", `a rollout is running (since ${when(Number(one("deploying")), now)})`);
  const stats = one("stats");
  if (stats) {
    const [users, admins] = stats.split(" ");
    add("INFO", "connected", `${users} user(s), ${admins} admin(s)`);
  } else if (facts["stats-error"]) {
    add("INFO", "connected", `unknown: ${one("stats-error")}`);
  }
  const shot = one("screenshot");
  if (shot) {
    const [file, bytes, t] = shot.split(" ");
    const copy = m.kind === "local" ? "" : `; copy: ${shell}cat ${file} > ${stack}-screenshot.jpg`;
    add("INFO", "screenshot", `${file} (${bytes} bytes, ${when(Number(t), now)})${copy}`);
  } else if (facts["screenshot-missing"]) {
    add("INFO", "screenshot", `none at ${one("screenshot-missing")}`);
  }
  // This machine (local) has no idle stop of neko-infra's.
  if (m.kind !== "local") idleFinding(facts, now, (s, d) => add(s, "idle stop", d));
  return out;
}

/**
 * A function that adds a finding about `machine` to `out`.
 * @param {Finding[]} out @param {string} machine
 */
function adder(out, machine) {
  /** @param {Finding["status"]} status @param {string} what @param {string} detail @param {string} [fix] */
  return (status, what, detail, fix) => {
    out.push({ status, what: `${machine} ${what}`, detail, ...(fix ? { fix } : {}) });
  };
}

/**
 * A function that adds a finding about `machine` to `out`.
 * @param {Finding[]} out @param {string} machine
 */
function adder(out, machine) {
  /** @param {Finding["status"]} status @param {string} what @param {string} detail @param {string} [fix] */
  return (status, what, detail, fix) => {
    out.push({ status, what: `${machine} ${what}`, detail, ...(fix ? { fix } : {}) });
  };
}

/**
 * @param {Facts} facts @param {number} now
 * @param {(status: Finding["status"], detail: string) => void} add
 */
function idleFinding(facts, now, add) {
  const minutes = facts["idle-minutes"]?.[0];
  if (!minutes) return facts["idle-timer"] ? add("INFO", "none installed (the machine never stops itself)") : undefined;
  const stamp = Number(facts["idle-stamp"]?.[0]);
  const busy = stamp ? `; last busy ${ago(now - stamp)} ago` : "; no busy stamp yet";
  add("INFO", `stops after ${minutes} min idle${busy}`);
}

/**
 * @param {{ stack: string, machine: MachineOut, facts: Facts }} a
 * @returns {Finding[]}
 */
function builderFindings(a) {
  const { facts, machine: m } = a;
  const now = Number(facts.now?.[0]) || Date.now() / 1000;
  /** @type {Finding[]} */
  const out = [];
  const add = adder(out, "builder");
  if (facts.boot && m.kind !== "local") add("INFO", "machine", `up since ${when(Number(facts.boot[0]), now)}`);
  const nix = facts.nix?.[0];
  if (!nix || nix === "none")
    add(
      "DRIFT",
      "nix",
      "no nix on the builder's PATH",
      `npm run up -- ${a.stack} (an ec2 builder's setup installs it; an ssh builder needs Nix installed)`,
    );
  else {
    const free = Number(facts["store-free-kb"]?.[0]);
    const store = facts["store-paths"] ? `, store: ${facts["store-paths"][0]} paths, ${(free / 1048576).toFixed(1)} GiB free` : "";
    add("OK", "nix", `${nix}${store}`);
  }
  if (m.cache) add("INFO", "cache", `binary cache ${m.cache} (outlives the builder)`);
  // This machine (local) has no idle stop of neko-infra's.
  if (m.kind !== "local") idleFinding(facts, now, (s, d) => add(s, "idle stop", d));
  return out;
}

module.exports = { format, exitCode, parseFacts, shownDigest, ec2Findings, hostFindings, builderFindings, rolloutUrn, when };
