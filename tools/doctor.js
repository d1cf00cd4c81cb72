// @ts-check
/**
 * The checks of `npm run doctor -- STACK` (run by tools/doctor.sh, which picks the Node.js): is
 * everything `npm run up -- STACK` needs in place? One line per check on stdout:
 *
 *   ok    <what>
 *   FAIL  <what>: <cause>
 *         fix: <the command or step that fixes it>
 *   skip  <what>: <why>
 *
 * then a summary line; exit 0 when nothing failed, 1 otherwise. It changes nothing, installs nothing,
 * decrypts nothing and connects to no builder or host. Every tool runs with a time limit
 * (DOCTOR_TOOL_TIMEOUT seconds, 10) in its own process group; the AWS identity call gets 5 s.
 *
 * Env (from the wrapper): DOCTOR_PATH_NODE, the version of the `node` on PATH ("" when none).
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

/** @typedef {{ status: "ok" | "FAIL" | "skip", what: string, detail?: string, fix?: string }} Line */
const ok = (/** @type {string} */ what) => /** @type {Line} */ ({ status: "ok", what });
const skip = (/** @type {string} */ what, /** @type {string} */ why) => /** @type {Line} */ ({ status: "skip", what, detail: why });
/** @param {string} what @param {string} cause @param {string} fix @returns {Line} */
const fail = (what, cause, fix) => ({ status: "FAIL", what, detail: cause, fix });

/** @param {Line} l */
function format(l) {
  if (l.status === "ok") return `ok    ${l.what}`;
  if (l.status === "skip") return `skip  ${l.what}: ${l.detail}`;
  return `FAIL  ${l.what}: ${l.detail}\n      fix: ${l.fix}`;
}

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

/** @param {string} range engines.node, e.g. ">=22" */
function nodeCheck(range) {
  const have = process.env.DOCTOR_PATH_NODE ?? process.version;
  const [want, major] = [Number(/\d+/.exec(range)?.[0] ?? 22), Number(/^v?(\d+)/.exec(have)?.[1] ?? 0)];
  const fix = "PATH=$(bash tools/node22.sh):$PATH (Node 22 from the npm registry, cached), or install Node.js 22 LTS";
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
  const fix = `install it: https://www.pulumi.com/docs/install/${offline}`;
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

/** Nix with flakes enabled, for a local builder. @returns {Promise<Line[]>} */
async function nixChecks() {
  const nix = which("nix");
  if (!nix) return [fail("Nix", "nix is not on PATH", "install Nix: https://nixos.org/download/ (then enable flakes)")];
  const [version, config] = await Promise.all([run(nix, ["--version"]), run(nix, ["show-config"])]);
  const features = /^experimental-features = (.*)$/m.exec(config.out)?.[1] ?? "";
  const missing = ["nix-command", "flakes"].filter((f) => !features.split(/\s+/).includes(f));
  const conf = process.env.NIX_CONF_DIR ? "$NIX_CONF_DIR/nix.conf" : "/etc/nix/nix.conf (or ~/.config/nix/nix.conf)";
  const cause = config.code === 0 ? `experimental-features lacks ${missing.join(" and ")}` : `nix show-config: ${said(config)}`;
  const fix = `add the line 'experimental-features = nix-command flakes' to ${conf}; restart nix-daemon if one runs`;
  return [
    version.code === 0 ? ok(`Nix: ${version.out}`) : fail("Nix", `nix --version: ${said(version)}`, "repair the Nix installation"),
    config.code === 0 && !missing.length ? ok(`Nix flakes enabled (experimental-features = ${features})`) : fail("Nix flakes", cause, fix),
  ];
}

/** The Docker engine, for a local host or `docker load`. @returns {Promise<Line>} */
async function dockerCheck() {
  const docker = which("docker");
  if (!docker) return fail("Docker", "docker is not on PATH", "install Docker Engine: https://docs.docker.com/engine/install/");
  const r = await run(docker, ["version", "--format", "{{.Server.Version}}"]);
  if (r.code === 0 && r.out) return ok(`Docker engine ${r.out}`);
  if (/permission denied/i.test(r.err)) {
    return fail("Docker", `this user may not use the engine (${said(r)})`, "sudo usermod -aG docker $USER, then log in again");
  }
  return fail(
    "Docker",
    `the engine does not answer (${said(r)})`,
    "start it: sudo systemctl start docker (Docker Desktop: open it); check DOCKER_HOST",
  );
}

/** skopeo, with which a local builder pushes to a registry. @returns {Promise<Line>} */
async function skopeoCheck() {
  const bin = which("skopeo");
  const fix = "install skopeo: sudo apt-get install skopeo (or your system's package)";
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
  if (bk === "local") lines.push(nixChecks());
  if (hk === "local" || rk === "docker") lines.push(dockerCheck());
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
  console.log(`doctor ${stack}: ${count("FAIL")} failed, ${count("ok")} ok, ${count("skip")} skipped`);
  return count("FAIL") ? 1 : 0;
}

module.exports = { format, programConfig, settingsFix, PEM };

if (require.main === module) {
  main(process.argv[2] ?? "").then(
    (code) => process.exit(code),
    (e) => (console.error(`doctor: ${e.stack ?? e}`), process.exit(1)),
  );
}
