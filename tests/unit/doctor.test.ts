/**
 * `npm run doctor -- STACK`: tools/doctor.sh and tools/doctor.js, run as a subprocess.
 *
 * Real: the wrapper and the doctor, the program's own settings parser (lib/settings.ts, loaded the
 * doctor's way), the shipped stack files, and the AWS SDK: its credential chain and its signed STS
 * GetCallerIdentity requests over HTTP.
 * Stand-ins: `pulumi`, `nix`, `docker`, `skopeo` (and an old `node`) are small shell scripts that
 * print versions or fail the way the real tools do (nix: upstream or Determinate, the settings
 * commands of its version, nix-command off refusing them, `nix store info` on stderr; docker: the
 * --format templates the doctor asks for); a fake STS endpoint on 127.0.0.1 (AWS_ENDPOINT_URL_STS)
 * answers GetCallerIdentity with the API's XML. The platform is NEKO_INFRA_DOCTOR_PLATFORM, linux/x64
 * unless a test says darwin/arm64: every platform's fixes are checked on any machine.
 *
 * Each run gets a temporary project (package.json, Pulumi.yaml, the stack file and tools/doctor.*
 * copied; lib and node_modules linked), its own HOME and cache, and a PATH holding only the fakes,
 * node and dirname: the machine's own tools, credentials and state are never seen.
 * AWS_EC2_METADATA_DISABLED keeps the SDK away from the instance metadata address.
 */
import { spawn } from "child_process";
import * as fs from "fs";
import * as http from "http";
import { AddressInfo } from "net";
import * as os from "os";
import * as path from "path";
import { programConfig, settingsFix, PEM } from "../../tools/doctor";

jest.setTimeout(30_000);

const REPO = path.resolve(__dirname, "../..");
const shipped = (stack: string) => fs.readFileSync(path.join(REPO, `Pulumi.${stack}.yaml`), "utf8");
/** The dev stack with networks of its own instead of the documentation examples. */
const ownDev = () =>
  shipped("dev")
    .replace(/198\.51\.100\.24\/32/g, "100.64.7.9/32")
    .replace("- 198.51.100.0/24", "- 100.64.0.0/16");

const sh = (body: string) => `#!/bin/sh\n${body}\n`;

interface NixFake {
  /** What `nix --version` prints. */
  version?: string;
  /** experimental-features as nix.conf sets it. */
  features?: string;
  /** Further settings lines (`name = value`). */
  settings?: string[];
  /** What `nix store info` / `nix store ping` print (to stderr, as Nix does). */
  store?: string;
  /** nix-command is off: every command but --version refused unless given --extra-experimental-features. */
  commandOff?: boolean;
}
const DISABLED = "error: experimental Nix feature 'nix-command' is disabled; use '--extra-experimental-features nix-command' to override";
/** A stand-in for nix: `config show` from 2.20, `store info` from 2.19, as the real versions. */
function nixTool(o: NixFake = {}): string {
  const version = o.version ?? "nix (Nix) 2.24.9";
  const minor = Number(/2\.(\d+)(\.\d+)?\s*$/.exec(version)?.[1] ?? 0);
  const store = o.store ?? "Store URL: daemon\nVersion: 2.24.9\nTrusted: 1";
  const lines = [
    "builders = ",
    "cores = 0",
    "experimental-features = $features",
    "max-jobs = 1",
    "trusted-users = root",
    ...(o.settings ?? []),
  ];
  const settings = [...new Map(lines.map((l) => [l.split(" =")[0], l])).values()]; // o.settings replace the defaults
  const unknown = (cmd: string) => `echo "error: '${cmd}' is not a recognised command" >&2; exit 1`;
  return sh(`on=${o.commandOff ? "" : 1}
features='${o.features ?? "flakes nix-command"}'
if [ "$1" = --extra-experimental-features ]; then on=1; features="\${features:+$features }$2"; shift 2; fi
[ "$*" = --version ] && { echo '${version}'; exit 0; }
[ -n "$on" ] || { echo "${DISABLED}" >&2; exit 1; }
case "$*" in
  "config show") ${minor >= 20 ? ":" : unknown("config")} ;;
  show-config) ;;
  "store info") ${minor >= 19 ? `printf '${store}\\n' >&2; exit 0` : unknown("info")} ;;
  "store ping") printf '${store}\\n' >&2; exit 0 ;;
  *) echo "error: unexpected arguments: $*" >&2; exit 1 ;;
esac
printf '%s\\n' ${settings
    .sort()
    .map((l) => `"${l}"`)
    .join(" ")}`);
}

/** A stand-in for docker: the two --format templates the doctor asks for. */
function dockerTool(o: { version?: string; platform?: string; info?: string } = {}): string {
  return sh(`case "$1 $2 $3" in
  "version --format {{.Server.Version}}|{{.Server.Platform.Name}}") echo '${o.version ?? "27.3.1"}|${o.platform ?? "Docker Engine - Community"}' ;;
  "info --format {{.Driver}} {{.DriverStatus}}") echo '${o.info ?? CLASSIC_STORE}' ;;
  *) echo "unexpected: $*" >&2; exit 1 ;;
esac`);
}
const CLASSIC_STORE =
  "overlay2 [[Backing Filesystem extfs] [Supports d_type true] [Using metacopy false] [Native Overlay Diff true] [userxattr false]]";
const CONTAINERD_STORE = "overlayfs [[driver-type io.containerd.snapshotter.v1]]";

const GOOD_TOOLS: Record<string, string> = {
  pulumi: sh('[ "$1" = version ] && echo v3.274.1'),
  nix: nixTool(),
  docker: dockerTool(),
  skopeo: sh("echo skopeo version 1.9.3"),
};
const DOCKER_DOWN = sh(
  "echo 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?' >&2; exit 1",
);
const DETERMINATE = "nix (Determinate Nix 3.4.1) 2.28.2";
const MAC = { NEKO_INFRA_DOCTOR_PLATFORM: "darwin/arm64" };
/** A local builder sending its builds to a remote builder, pushing to an OCI registry. */
const REMOTE_OCI = `config:
  neko-infra:builder:
    kind: local
    remoteBuilders: ssh-ng://root@builder x86_64-linux /root/.ssh/builder 4 1
  neko-infra:image:
    flake: github:G-structure/neko/8bd6b3bd1674044d0cba441214e04118268bc1cc
  neko-infra:registry:
    kind: oci
    url: registry.example.com/team/neko
  neko-infra:host:
    kind: none
`;
const USER = os.userInfo().username;

const roots: string[] = [];
afterAll(() => roots.forEach((r) => fs.rmSync(r, { recursive: true, force: true })));

interface Run {
  /** Stack name and the text of its file (none: no file). */
  stack: string;
  yaml?: string;
  /** Replaces GOOD_TOOLS entries; null leaves the tool off PATH. */
  tools?: Record<string, string | null>;
  env?: Record<string, string>;
  /** Write ~/.pulumi-neko-infra/passphrase-local. */
  localPassphrase?: boolean;
  nodeModules?: boolean;
  /** A Node 22 in the cache where tools/node22.sh puts it. */
  cachedNode?: boolean;
}

/** Runs the doctor in a fresh temporary project; resolves to its exit code, stdout lines and time. */
async function doctor(o: Run): Promise<{ code: number | null; lines: string[]; stderr: string; ms: number; root: string }> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "doctor-test-"));
  roots.push(root);
  const [project, home, cache, bin] = ["project", "home", "cache", "bin"].map((d) => path.join(root, d));
  fs.mkdirSync(path.join(project, "tools"), { recursive: true });
  [home, cache, bin].forEach((d) => fs.mkdirSync(d));
  for (const f of ["package.json", "Pulumi.yaml", "tools/doctor.sh", "tools/doctor.js"])
    fs.copyFileSync(path.join(REPO, f), path.join(project, f));
  fs.symlinkSync(path.join(REPO, "lib"), path.join(project, "lib"));
  if (o.nodeModules !== false) fs.symlinkSync(path.join(REPO, "node_modules"), path.join(project, "node_modules"));
  if (o.yaml !== undefined) fs.writeFileSync(path.join(project, `Pulumi.${o.stack}.yaml`), o.yaml);
  if (o.localPassphrase) {
    fs.mkdirSync(path.join(home, ".pulumi-neko-infra"));
    fs.writeFileSync(path.join(home, ".pulumi-neko-infra/passphrase-local"), "c2VjcmV0\n", { mode: 0o600 });
  }
  if (o.cachedNode) {
    const dir = path.join(cache, "neko-infra/node-22.23.3");
    fs.mkdirSync(path.join(dir, "bin"), { recursive: true });
    fs.symlinkSync(process.execPath, path.join(dir, "bin/node"));
    fs.writeFileSync(path.join(dir, ".complete"), "node 22.23.3 npm 11.19.1 wrappers 2\n");
  }
  fs.symlinkSync(process.execPath, path.join(bin, "node"));
  fs.symlinkSync(["/usr/bin/dirname", "/bin/dirname"].find((f) => fs.existsSync(f)) ?? "dirname", path.join(bin, "dirname"));
  for (const [name, body] of Object.entries({ ...GOOD_TOOLS, ...o.tools })) {
    if (body === null) continue;
    if (name === "node") fs.rmSync(path.join(bin, "node"));
    fs.writeFileSync(path.join(bin, name), body, { mode: 0o755 });
  }
  const env = {
    PATH: bin,
    HOME: home,
    XDG_CACHE_HOME: cache,
    AWS_EC2_METADATA_DISABLED: "true",
    NEKO_INFRA_DOCTOR_PLATFORM: "linux/x64",
    ...o.env,
  };
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn("/bin/bash", [path.join(project, "tools/doctor.sh"), o.stack], { env, cwd: root });
    let [out, err] = ["", ""];
    child.stdout.setEncoding("utf8").on("data", (d) => (out += d));
    child.stderr.setEncoding("utf8").on("data", (d) => (err += d));
    child.on("close", (code) => resolve({ code, lines: out.trimEnd().split("\n"), stderr: err, ms: Date.now() - started, root }));
  });
}

/**
 * The one-line-per-check shape: ok / FAIL or WARN (always followed by its fix line) / skip, then the
 * summary, whose counts match. Returns the check lines (without the summary).
 */
function shape(lines: string[], stack: string): string[] {
  const checks = lines.slice(0, -1);
  checks.forEach((l, i) => {
    expect(l).toMatch(/^(ok {4}\S.*|(FAIL|WARN) {2}\S.*?: \S.*|skip {2}\S.*?: \S.*| {6}fix: \S.*)$/);
    expect([l, /^(FAIL|WARN) {2}/.test(l)]).toEqual([l, (checks[i + 1] ?? "").startsWith("      fix: ")]);
  });
  const count = (p: string) => checks.filter((l) => l.startsWith(p)).length;
  const warned = count("WARN  ") ? `, ${count("WARN  ")} warned` : "";
  expect(lines.at(-1)).toBe(`doctor ${stack}: ${count("FAIL  ")} failed${warned}, ${count("ok    ")} ok, ${count("skip  ")} skipped`);
  return checks;
}

const NODE = expect.stringMatching(/^ok {4}Node\.js v2[2-9]\.\d+\.\d+ \(engines\.node >=22\)$/);
const MODULES = expect.stringMatching(/^ok {4}node_modules \(\d+ packages as in package\.json\)$/);
const PULUMI = expect.stringMatching(/^ok {4}Pulumi CLI v3\.274\.1 \(\/.*\/bin\/pulumi\)$/);
const FILE_BACKEND = "ok    state backend: file://~/.pulumi-neko-infra (npm run up's default without PULUMI_BACKEND_URL)";
const PASSPHRASE_ENV = "ok    secrets passphrase: PULUMI_CONFIG_PASSPHRASE is set";

// ---------------------------------------------------------------- fake STS

const ACCOUNT = "123456789012";
const ARN = `arn:aws:iam::${ACCOUNT}:user/newcomer`;
const KEY_ID = "AKIAFAKEDOCTOR000001";
const IDENTITY = `<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <GetCallerIdentityResult><Arn>${ARN}</Arn><UserId>AIDAFAKEDOCTOR000001</UserId><Account>${ACCOUNT}</Account></GetCallerIdentityResult>
  <ResponseMetadata><RequestId>5b9c3c0e-0000-4000-8000-000000000001</RequestId></ResponseMetadata>
</GetCallerIdentityResponse>`;
const REFUSED = `<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error><Type>Sender</Type><Code>InvalidClientTokenId</Code><Message>The security token included in the request is invalid.</Message></Error>
  <RequestId>5b9c3c0e-0000-4000-8000-000000000002</RequestId>
</ErrorResponse>`;

/** answer: GetCallerIdentity for KEY_ID, InvalidClientTokenId for any other key; hang: never answers. */
async function fakeSts(mode: "answer" | "hang") {
  const requests: { method: string; auth: string; body: string }[] = [];
  const server = http.createServer((req, res) => {
    let body = "";
    req.setEncoding("utf8").on("data", (d) => (body += d));
    req.on("end", () => {
      const auth = String(req.headers.authorization ?? "");
      requests.push({ method: req.method ?? "", auth, body });
      if (mode === "hang") return;
      const known = auth.includes(`Credential=${KEY_ID}/`) && /(^|&)Action=GetCallerIdentity(&|$)/.test(body);
      res.writeHead(known ? 200 : 403, { "content-type": "text/xml" }).end(known ? IDENTITY : REFUSED);
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const close = () => (server.closeAllConnections(), new Promise((r) => server.close(r)));
  return { url, requests, close };
}
const credentials = (url: string, keyId = KEY_ID) => ({
  AWS_ENDPOINT_URL_STS: url,
  AWS_ACCESS_KEY_ID: keyId,
  AWS_SECRET_ACCESS_KEY: "fake/secret/key/of/the/doctor/tests/0000",
});

// ---------------------------------------------------------------- runs

describe("npm run doctor", () => {
  test("a good local stack: every check ok, exit 0", async () => {
    const r = await doctor({ stack: "local", yaml: shipped("local"), localPassphrase: true });
    expect(shape(r.lines, "local")).toEqual([
      NODE,
      MODULES,
      PULUMI,
      FILE_BACKEND,
      "ok    secrets passphrase: ~/.pulumi-neko-infra/passphrase-local (npm run up uses it for the local stack)",
      "ok    stack file Pulumi.local.yaml",
      "ok    settings: builder local, registry docker, host local",
      "ok    Nix: nix (Nix) 2.24.9",
      "ok    Nix flakes enabled (experimental-features = flakes nix-command)",
      "ok    x86_64-linux builds: on this machine (linux/x64)",
      "ok    Docker engine 27.3.1 (Docker Engine - Community)",
      "ok    Docker image store: classic (storage driver overlay2)",
    ]);
    expect([r.code, r.stderr]).toEqual([0, ""]);
  });

  test("the shipped dev stack: one FAIL line per documentation-range address, naming its key; exit 1", async () => {
    const sts = await fakeSts("answer");
    const r = await doctor({ stack: "dev", yaml: shipped("dev"), env: { PULUMI_CONFIG_PASSPHRASE: "pw", ...credentials(sts.url) } });
    await sts.close();
    const doc = (key: string, cidr: string, range: string, section: string) => [
      `FAIL  neko-infra:${key}: ${cidr} lies in ${range}, a documentation range that routes nowhere (an unedited example?); put your own network here, or set ${section}.allowDocumentationRanges: true`,
      `      fix: edit Pulumi.dev.yaml as said above, or: pulumi config set --path '${key}' <value> --stack dev`,
    ];
    expect(shape(r.lines, "dev")).toEqual([
      NODE,
      MODULES,
      PULUMI,
      FILE_BACKEND,
      PASSPHRASE_ENV,
      "ok    stack file Pulumi.dev.yaml",
      ...doc("host.sshCidrs[0]", "198.51.100.24/32", "198.51.100.0/24", "host"),
      ...doc("host.clientCidrs[0]", "198.51.100.0/24", "198.51.100.0/24", "host"),
      ...doc("builder.sshCidrs[0]", "198.51.100.24/32", "198.51.100.0/24", "builder"),
      "ok    aws:region eu-central-1",
      `ok    AWS identity: account ${ACCOUNT}, ${ARN}`,
    ]);
    expect(r.code).toBe(1);
  });

  test("AWS with credentials: the SDK's signed GetCallerIdentity reaches STS; account and ARN printed, exit 0", async () => {
    const sts = await fakeSts("answer");
    const r = await doctor({ stack: "dev", yaml: ownDev(), env: { PULUMI_CONFIG_PASSPHRASE: "pw", ...credentials(sts.url) } });
    await sts.close();
    expect(shape(r.lines, "dev").slice(5)).toEqual([
      "ok    stack file Pulumi.dev.yaml",
      "ok    settings: builder ec2, registry ecr, host ec2",
      "ok    aws:region eu-central-1",
      `ok    AWS identity: account ${ACCOUNT}, ${ARN}`,
    ]);
    expect(r.code).toBe(0);
    expect(sts.requests).toHaveLength(1);
    expect(sts.requests[0].method).toBe("POST");
    expect(sts.requests[0].body).toMatch(/^Action=GetCallerIdentity&Version=2011-06-15$/);
    expect(sts.requests[0].auth).toMatch(new RegExp(`^AWS4-HMAC-SHA256 Credential=${KEY_ID}/\\d{8}/eu-central-1/sts/aws4_request, `));
  });

  test("AWS without any credentials: FAIL with the SDK's error name; nothing reaches STS", async () => {
    const sts = await fakeSts("answer");
    const r = await doctor({ stack: "dev", yaml: ownDev(), env: { PULUMI_CONFIG_PASSPHRASE: "pw", AWS_ENDPOINT_URL_STS: sts.url } });
    await sts.close();
    expect(shape(r.lines, "dev").slice(-3)).toEqual([
      "ok    aws:region eu-central-1",
      "FAIL  AWS credentials: no usable credentials (CredentialsProviderError: Could not load credentials from any providers)",
      "      fix: aws configure (access keys), or export AWS_PROFILE=<profile> (after aws sso login --profile <profile> for SSO)",
    ]);
    expect([r.code, sts.requests.length]).toEqual([1, 0]);
  });

  test("AWS credentials that STS refuses: FAIL with the API's error code", async () => {
    const sts = await fakeSts("answer");
    const r = await doctor({
      stack: "dev",
      yaml: ownDev(),
      env: { PULUMI_CONFIG_PASSPHRASE: "pw", ...credentials(sts.url, "AKIAREVOKEDKEY000001") },
    });
    await sts.close();
    expect(shape(r.lines, "dev").slice(-2, -1)).toEqual([
      "FAIL  AWS credentials: STS GetCallerIdentity failed (InvalidClientTokenId: The security token included in the request is invalid.)",
    ]);
    expect(r.code).toBe(1);
  });

  test("an STS that never answers: FAIL after 5 s instead of hanging", async () => {
    const sts = await fakeSts("hang");
    const r = await doctor({ stack: "dev", yaml: ownDev(), env: { PULUMI_CONFIG_PASSPHRASE: "pw", ...credentials(sts.url) } });
    await sts.close();
    expect(shape(r.lines, "dev").slice(-2, -1)).toEqual(["FAIL  AWS credentials: STS GetCallerIdentity gave no answer within 5 s"]);
    expect(r.ms).toBeGreaterThanOrEqual(5000);
    expect(r.ms).toBeLessThan(15_000); // the fake never answers at all
    expect([r.code, sts.requests.length]).toEqual([1, 1]);
  });

  test("aws:region missing from the stack: FAIL with the config command; from AWS_REGION: ok, and says so", async () => {
    const yaml = ownDev().replace(/^ {2}aws:region: .*\n/m, "");
    const sts = await fakeSts("answer");
    const env = { PULUMI_CONFIG_PASSPHRASE: "pw", ...credentials(sts.url) };
    const [none, fromEnv] = await Promise.all([
      doctor({ stack: "dev", yaml, env }),
      doctor({ stack: "dev", yaml, env: { ...env, AWS_REGION: "eu-west-1" } }),
    ]);
    await sts.close();
    expect(shape(none.lines, "dev").slice(-3, -1)).toEqual([
      "FAIL  aws:region: not set in Pulumi.dev.yaml",
      "      fix: pulumi config set aws:region <region> --stack dev (e.g. eu-central-1)",
    ]);
    expect(shape(fromEnv.lines, "dev").slice(-2, -1)).toEqual([
      "ok    aws:region: not in the stack; eu-west-1 from the environment is used (pin it: pulumi config set aws:region eu-west-1 --stack dev)",
    ]);
    expect([none.code, fromEnv.code]).toEqual([1, 0]);
  });

  test("missing passphrase: FAIL for dev; for local, ok with what npm run up will do", async () => {
    const sts = await fakeSts("answer");
    const [dev, local, badFile] = await Promise.all([
      doctor({ stack: "dev", yaml: ownDev(), env: credentials(sts.url) }),
      doctor({ stack: "local", yaml: shipped("local") }),
      doctor({ stack: "dev", yaml: ownDev(), env: { ...credentials(sts.url), PULUMI_CONFIG_PASSPHRASE_FILE: "/nonexistent/passphrase" } }),
    ]);
    await sts.close();
    expect(shape(dev.lines, "dev").slice(4, 6)).toEqual([
      "FAIL  secrets passphrase: neither PULUMI_CONFIG_PASSPHRASE nor PULUMI_CONFIG_PASSPHRASE_FILE is set (it encrypts the stack's secrets)",
      "      fix: export PULUMI_CONFIG_PASSPHRASE_FILE=<file holding it> (or PULUMI_CONFIG_PASSPHRASE=...); a new stack takes the one you choose: keep it safe",
    ]);
    expect(shape(local.lines, "local")[4]).toBe(
      "ok    secrets passphrase: none yet; npm run up -- local generates ~/.pulumi-neko-infra/passphrase-local",
    );
    expect(shape(badFile.lines, "dev")[4]).toBe(
      "FAIL  secrets passphrase: PULUMI_CONFIG_PASSPHRASE_FILE=/nonexistent/passphrase is not readable",
    );
    expect([dev.code, local.code, badFile.code]).toEqual([1, 0, 1]);
  });

  test("state backend: PULUMI_BACKEND_URL (credentials in it hidden) or Pulumi Cloud", async () => {
    const [url, cloud] = await Promise.all([
      doctor({ stack: "local", yaml: shipped("local"), env: { PULUMI_BACKEND_URL: "postgres://admin:hunter2@db.internal/pulumi" } }),
      doctor({ stack: "local", yaml: shipped("local"), env: { PULUMI_ACCESS_TOKEN: "pul-0000" } }),
    ]);
    expect(shape(url.lines, "local")[3]).toBe("ok    state backend: PULUMI_BACKEND_URL=postgres://***@db.internal/pulumi");
    expect(shape(cloud.lines, "local")[3]).toBe("ok    state backend: Pulumi Cloud (PULUMI_ACCESS_TOKEN is set)");
  });

  test("no pulumi on PATH, or one older than 3.200: FAIL with the install link", async () => {
    const [none, old] = await Promise.all([
      doctor({ stack: "local", yaml: shipped("local"), tools: { pulumi: null } }),
      doctor({ stack: "local", yaml: shipped("local"), tools: { pulumi: sh("echo v3.150.0") } }),
    ]);
    const [noneLines, oldLines] = [shape(none.lines, "local"), shape(old.lines, "local")];
    expect(noneLines[2]).toMatch(/^FAIL {2}Pulumi CLI: pulumi is not on PATH( \(npm run up would build it from Go modules first\))?$/);
    expect(oldLines[2]).toBe("FAIL  Pulumi CLI: v3.150.0 is older than 3.200");
    for (const fix of [noneLines[3], oldLines[3]]) expect(fix).toMatch(/^ {6}fix: install it: https:\/\/www\.pulumi\.com\/docs\/install\//);
    expect([none.code, old.code]).toEqual([1, 1]);
  });

  test("Docker not answering, or not allowed: FAIL with what to do", async () => {
    const [down, denied] = await Promise.all([
      doctor({ stack: "local", yaml: shipped("local"), tools: { docker: DOCKER_DOWN } }),
      doctor({
        stack: "local",
        yaml: shipped("local"),
        tools: {
          docker: sh(
            "echo 'permission denied while trying to connect to the Docker daemon socket at unix:///var/run/docker.sock: dial unix /var/run/docker.sock: connect: permission denied' >&2; exit 1",
          ),
        },
      }),
    ]);
    expect(shape(down.lines, "local").slice(-2)).toEqual([
      "FAIL  Docker: the engine does not answer (exit 1: Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?)",
      "      fix: start it: sudo systemctl start docker (Docker Desktop: open it); check DOCKER_HOST",
    ]);
    expect(shape(denied.lines, "local").slice(-2)).toEqual([
      "FAIL  Docker: this user may not use the engine (exit 1: permission denied while trying to connect to the Docker daemon socket at unix:///var/run/docker.sock: dial unix /var/run/docker.sock: connect: permission denied)",
      "      fix: sudo usermod -aG docker $USER, then log in again",
    ]);
    expect([down.code, denied.code]).toEqual([1, 1]);
  });

  test("a docker that hangs is cut off after DOCTOR_TOOL_TIMEOUT, with its whole process group", async () => {
    const pidFile = path.join(os.tmpdir(), `doctor-test-docker-${process.pid}.pid`);
    const hung = await doctor({
      stack: "local",
      yaml: shipped("local"),
      tools: { docker: sh(`echo $$ > ${pidFile}; exec /bin/sleep 30`) },
      env: { DOCTOR_TOOL_TIMEOUT: "1" },
    });
    expect(shape(hung.lines, "local").slice(-2)).toEqual([
      "FAIL  Docker: the engine does not answer (no answer within 1 s)",
      "      fix: start it: sudo systemctl start docker (Docker Desktop: open it); check DOCKER_HOST",
    ]);
    expect(hung.ms).toBeLessThan(10_000); // not the fake's 30 s
    const pid = Number(fs.readFileSync(pidFile, "utf8"));
    fs.rmSync(pidFile);
    expect(() => process.kill(pid, 0)).toThrow(/ESRCH/); // its sleep was killed with the group
    expect(hung.code).toBe(1);
  });

  test("upstream Nix without flakes: WARN with the nix.conf line (npm run up passes them itself), exit 0; no Nix at all: FAIL", async () => {
    const [commandOff, flakesOff, noNix] = await Promise.all([
      doctor({
        stack: "local",
        yaml: shipped("local"),
        localPassphrase: true,
        tools: { nix: nixTool({ version: "nix (Nix) 2.18.1", features: "", commandOff: true }) },
      }),
      doctor({ stack: "local", yaml: shipped("local"), localPassphrase: true, tools: { nix: nixTool({ features: "nix-command" }) } }),
      doctor({ stack: "local", yaml: shipped("local"), tools: { nix: null } }),
    ]);
    const warning = (missing: string, restart: string) => [
      `WARN  Nix flakes: experimental-features lacks ${missing}; npm run up passes --extra-experimental-features 'nix-command flakes' itself, your own nix commands need them`,
      `      fix: mkdir -p ~/.config/nix && echo 'extra-experimental-features = nix-command flakes' >> ~/.config/nix/nix.conf (for you; for everyone: echo 'extra-experimental-features = nix-command flakes' | sudo tee -a /etc/nix/nix.conf && ${restart})`,
    ];
    expect(shape(commandOff.lines, "local").slice(7, 11)).toEqual([
      "ok    Nix: nix (Nix) 2.18.1",
      ...warning("nix-command and flakes", "sudo systemctl restart nix-daemon"),
      "ok    x86_64-linux builds: on this machine (linux/x64)",
    ]);
    expect(shape(flakesOff.lines, "local").slice(8, 10)).toEqual(warning("flakes", "sudo systemctl restart nix-daemon"));
    expect(shape(noNix.lines, "local").slice(7, 9)).toEqual([
      "FAIL  Nix: nix is not on PATH",
      "      fix: install Nix: https://nixos.org/download/ (then enable flakes)",
    ]);
    expect([commandOff.code, flakesOff.code, noNix.code]).toEqual([0, 0, 1]);
  });

  test("Determinate Nix: flakes ok without a nix.conf line", async () => {
    const r = await doctor({
      stack: "local",
      yaml: shipped("local"),
      localPassphrase: true,
      tools: { nix: nixTool({ version: DETERMINATE, features: "" }) },
    });
    expect(shape(r.lines, "local").slice(7, 9)).toEqual([
      `ok    Nix: ${DETERMINATE}`,
      "ok    Nix flakes: on (Determinate Nix enables them; no nix.conf line needed)",
    ]);
    expect(r.code).toBe(0);
  });

  test("a Mac (darwin/arm64) with a local builder and no remoteBuilders: FAIL with the config command; Nix's own builders or remoteBuilders: ok", async () => {
    const ownBuilders = nixTool({
      version: DETERMINATE,
      settings: ["builders = ssh-ng://nix@linux-box x86_64-linux,i686-linux /Users/me/.ssh/box 8"],
    });
    const [none, nixConf, remote] = await Promise.all([
      doctor({ stack: "local", yaml: shipped("local"), env: MAC, tools: { nix: nixTool({ version: DETERMINATE }) } }),
      doctor({ stack: "local", yaml: shipped("local"), env: MAC, tools: { nix: ownBuilders } }),
      doctor({ stack: "mac", yaml: REMOTE_OCI, env: { ...MAC, PULUMI_CONFIG_PASSPHRASE: "pw" } }),
    ]);
    const home = path.join(none.root, "home");
    expect(shape(none.lines, "local").slice(9, 11)).toEqual([
      "FAIL  x86_64-linux builds: this machine (darwin/arm64) cannot build them and builder.remoteBuilders is not set",
      `      fix: pulumi config set --path 'builder.remoteBuilders' 'ssh-ng://<user>@<x86_64-linux host> x86_64-linux ${home}/.ssh/<key> 4 1 - - <base64 of its ssh host key>' --stack local (the nix-daemon connects as root: the host key spares root's known_hosts; or builder.kind ec2 or ssh)`,
    ]);
    expect(shape(nixConf.lines, "local")[9]).toBe(
      "ok    x86_64-linux builds: sent to the builders of Nix's own configuration (ssh-ng://nix@linux-box)",
    );
    expect(shape(remote.lines, "mac")[9]).toBe("ok    x86_64-linux builds: sent to builder.remoteBuilders (1 machine)");
    expect([none.code, nixConf.code]).toEqual([1, 0]);
  });

  test("remoteBuilders with a nix-daemon that does not trust this user: FAIL with the fix for this Nix on this platform", async () => {
    const untrusted = (version: string) => nixTool({ version, store: "Store URL: daemon\\nVersion: 2.28.2\\nTrusted: 0" });
    const env = { PULUMI_CONFIG_PASSPHRASE: "pw" };
    const [determinateMac, upstreamMac, upstreamLinux, newer, oldNix, trustedByGroup] = await Promise.all([
      doctor({ stack: "mac", yaml: REMOTE_OCI, env: { ...env, ...MAC }, tools: { nix: untrusted(DETERMINATE) } }),
      doctor({ stack: "mac", yaml: REMOTE_OCI, env: { ...env, ...MAC }, tools: { nix: untrusted("nix (Nix) 2.28.2") } }),
      doctor({ stack: "mac", yaml: REMOTE_OCI, env, tools: { nix: untrusted("nix (Nix) 2.28.2") } }),
      // newer Nix says true/false
      doctor({
        stack: "mac",
        yaml: REMOTE_OCI,
        env,
        tools: { nix: nixTool({ store: "Store URL: daemon\\nVersion: 2.33.0\\nTrusted: false" }) },
      }),
      // Nix 2.8 says nothing of trust (and has no `store info`): its trusted-users decide
      doctor({
        stack: "mac",
        yaml: REMOTE_OCI,
        env,
        tools: {
          nix: nixTool({ version: "nix (Nix) 2.8.0", store: "Store URL: daemon\\nVersion: 2.8.0", settings: ["trusted-users = @wheel"] }),
        },
      }),
      doctor({
        stack: "mac",
        yaml: REMOTE_OCI,
        env,
        tools: {
          nix: nixTool({
            version: "nix (Nix) 2.8.0",
            store: "Store URL: daemon\\nVersion: 2.8.0",
            settings: ["trusted-users = root @nixers"],
          }),
          id: sh('[ "$1" = -Gn ] && echo "staff nixers"'),
        },
      }),
    ]);
    const cause = "the nix-daemon ignores --builders (builder.remoteBuilders) from an untrusted user, and the build cannot start";
    const trustLine = (l: string[]) => l.findIndex((x) => x.includes("Nix trusted user"));
    const at = (r: { lines: string[] }) => {
      const lines = shape(r.lines, "mac");
      return lines.slice(trustLine(lines), trustLine(lines) + 2);
    };
    expect(at(determinateMac)).toEqual([
      `FAIL  Nix trusted user: the nix-daemon does not trust ${USER}: ${cause}`,
      `      fix: echo 'extra-trusted-users = ${USER}' | sudo tee -a /etc/nix/nix.custom.conf && sudo launchctl kickstart -k system/systems.determinate.nix-daemon`,
    ]);
    const upstreamFix = (restart: string) =>
      `      fix: echo 'extra-trusted-users = ${USER}' | sudo tee -a /etc/nix/nix.conf && ${restart} (NixOS, nix-darwin: nix.settings.trusted-users = [ "${USER}" ] instead, then rebuild)`;
    expect(at(upstreamMac)[1]).toBe(upstreamFix("sudo launchctl kickstart -k system/org.nixos.nix-daemon"));
    expect(at(upstreamLinux)[1]).toBe(upstreamFix("sudo systemctl restart nix-daemon"));
    expect(at(newer)[0]).toBe(`FAIL  Nix trusted user: the nix-daemon does not trust ${USER}: ${cause}`);
    expect(at(oldNix)).toEqual([
      `FAIL  Nix trusted user: ${USER} is not in trusted-users (@wheel): ${cause}`,
      upstreamFix("sudo systemctl restart nix-daemon"),
    ]);
    expect(at(trustedByGroup)[0]).toBe(`ok    Nix trusted user: ${USER} (trusted-users = root @nixers)`);
    expect([determinateMac.code, upstreamMac.code, upstreamLinux.code, newer.code, oldNix.code, trustedByGroup.code]).toEqual([
      1, 1, 1, 1, 1, 0,
    ]);
  });

  test("ssh builder and host with secrets: settings ok without decrypting; targets shown, not connected to", async () => {
    const hostKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHVzZWQtb25seS1ieS10aGUtZG9jdG9yLXRlc3Rz";
    const yaml = `config:
  neko-infra:builder:
    kind: ssh
    host: 10.20.0.5
    port: 2222
    user: nix
    hostKey: ${hostKey}
    privateKey:
      secure: v1:AAAAAAAAAAAAAAAA:BBBBBBBBBBBBBBBBBBBBBBBB
  neko-infra:image:
    flake: github:G-structure/neko/8bd6b3bd1674044d0cba441214e04118268bc1cc
  neko-infra:registry:
    kind: oci
    url: registry.example.com/team/neko
    username: ci
    password:
      secure: v1:AAAAAAAAAAAAAAAA:CCCCCCCCCCCCCCCCCCCCCCCC
  neko-infra:host:
    kind: ssh
    host: gpu.example.com
    hostKey: ${hostKey}
    privateKey:
      secure: v1:AAAAAAAAAAAAAAAA:DDDDDDDDDDDDDDDDDDDDDDDD
`;
    const r = await doctor({ stack: "lab", yaml, env: { PULUMI_CONFIG_PASSPHRASE: "pw" } });
    expect(shape(r.lines, "lab").slice(5)).toEqual([
      "ok    stack file Pulumi.lab.yaml",
      "ok    settings: builder ssh, registry oci, host ssh (3 secret values taken as set, not decrypted)",
      "skip  builder nix@10.20.0.5:2222: not connected to; npm run up probes it first (the wake step)",
      "skip  host root@gpu.example.com:22: not connected to; npm run up probes it first (the wake step)",
    ]);
    expect(r.code).toBe(0);
  });

  test("a local builder pushing to an OCI registry needs skopeo; its remote builders are not probed", async () => {
    const yaml = `config:
  neko-infra:builder:
    kind: local
    remoteBuilders: ssh-ng://root@builder x86_64-linux /root/.ssh/builder 4 1
  neko-infra:image:
    flake: github:G-structure/neko/8bd6b3bd1674044d0cba441214e04118268bc1cc
  neko-infra:registry:
    kind: oci
    url: registry.example.com/team/neko
  neko-infra:host:
    kind: none
`;
    const [without, withSkopeo] = await Promise.all([
      doctor({ stack: "mac", yaml, env: { PULUMI_CONFIG_PASSPHRASE: "pw" }, tools: { skopeo: null } }),
      doctor({ stack: "mac", yaml, env: { PULUMI_CONFIG_PASSPHRASE: "pw" } }),
    ]);
    expect(shape(without.lines, "mac").slice(6)).toEqual([
      "ok    settings: builder local, registry oci, host none",
      "ok    Nix: nix (Nix) 2.24.9",
      "ok    Nix flakes enabled (experimental-features = flakes nix-command)",
      "ok    x86_64-linux builds: sent to builder.remoteBuilders (1 machine)",
      `ok    Nix trusted user: ${USER} (the nix-daemon says so: --builders counts)`,
      "FAIL  skopeo: not on PATH (the local builder pushes the image with it)",
      "      fix: install skopeo (Debian/Ubuntu: sudo apt-get install skopeo; Fedora/RHEL: sudo dnf install skopeo; Amazon Linux 2023 and others: nix profile install nixpkgs#skopeo)",
      "skip  builder.remoteBuilders: not probed; Nix connects to them when it builds",
    ]);
    expect(shape(withSkopeo.lines, "mac")[11]).toBe("ok    skopeo version 1.9.3");
    expect([without.code, withSkopeo.code]).toEqual([1, 0]);
  });

  test("skopeo on a Mac: FAIL with brew install skopeo; for registry kind docker (docker load) no skopeo line at all", async () => {
    const [mac, dockerRegistry] = await Promise.all([
      doctor({ stack: "mac", yaml: REMOTE_OCI, env: { ...MAC, PULUMI_CONFIG_PASSPHRASE: "pw" }, tools: { skopeo: null } }),
      doctor({ stack: "local", yaml: shipped("local"), localPassphrase: true, tools: { skopeo: null } }),
    ]);
    const lines = shape(mac.lines, "mac");
    expect(lines.slice(lines.indexOf("FAIL  skopeo: not on PATH (the local builder pushes the image with it)"))[1]).toBe(
      "      fix: brew install skopeo",
    );
    expect(shape(dockerRegistry.lines, "local").filter((l) => /skopeo/i.test(l))).toEqual([]);
    expect([mac.code, dockerRegistry.code]).toEqual([1, 0]);
  });

  test("Docker Engine 29's containerd image store, and Docker Desktop on a Mac: ok, named", async () => {
    const [engine29, desktop, desktopDown] = await Promise.all([
      doctor({ stack: "local", yaml: shipped("local"), tools: { docker: dockerTool({ version: "29.0.1", info: CONTAINERD_STORE }) } }),
      doctor({
        stack: "local",
        yaml: shipped("local"),
        env: MAC,
        tools: { docker: dockerTool({ version: "28.0.4", platform: "Docker Desktop 4.40.0 (187762)", info: CONTAINERD_STORE }) },
      }),
      doctor({ stack: "local", yaml: shipped("local"), env: MAC, tools: { docker: DOCKER_DOWN } }),
    ]);
    expect(shape(engine29.lines, "local").slice(-2)).toEqual([
      "ok    Docker engine 29.0.1 (Docker Engine - Community)",
      "ok    Docker image store: containerd (io.containerd.snapshotter.v1, overlayfs)",
    ]);
    expect(shape(desktop.lines, "local").slice(-2)).toEqual([
      "ok    Docker engine 28.0.4 (Docker Desktop 4.40.0 (187762))",
      "ok    Docker image store: containerd (io.containerd.snapshotter.v1, overlayfs)",
    ]);
    expect(shape(desktopDown.lines, "local").slice(-1)).toEqual([
      "      fix: start Docker Desktop: open -a Docker; check DOCKER_HOST and docker context ls",
    ]);
  });

  test("a stack without its file, and one with a typo: FAIL with the file to write or the key to fix", async () => {
    const typo = shipped("local").replace("kind: docker", "kind: dokcer").replace("  neko-infra:neko:", "  neko-infra:nekko:");
    const [missing, bad] = await Promise.all([
      doctor({ stack: "staging" }),
      doctor({ stack: "local", yaml: typo, tools: { docker: DOCKER_DOWN } }),
    ]);
    expect(shape(missing.lines, "staging").slice(-2)).toEqual([
      "FAIL  stack file: Pulumi.staging.yaml not found",
      "      fix: cp Pulumi.dev.yaml Pulumi.staging.yaml, then edit it",
    ]);
    const lines = shape(bad.lines, "local");
    expect(lines.filter((l) => l.startsWith("FAIL  neko-infra:"))).toEqual([
      "FAIL  neko-infra:nekko: unknown key; did you mean 'neko'?",
      "FAIL  neko-infra:registry.kind: must be one of ecr, oci, docker; did you mean 'docker'?",
    ]);
    expect(lines).toContain("      fix: remove it from Pulumi.local.yaml (pulumi config rm --path 'nekko' --stack local)");
    expect(bad.code).toBe(1);
  });

  test("no node_modules: FAIL with npm ci; what needs the packages is skipped", async () => {
    const r = await doctor({ stack: "local", yaml: shipped("local"), nodeModules: false });
    expect(shape(r.lines, "local")).toEqual([
      NODE,
      "FAIL  node_modules: missing",
      "      fix: npm ci",
      PULUMI,
      FILE_BACKEND,
      "ok    secrets passphrase: none yet; npm run up -- local generates ~/.pulumi-neko-infra/passphrase-local",
      "skip  stack file Pulumi.local.yaml and what depends on it: cannot load the yaml package; npm ci first",
    ]);
    expect(r.code).toBe(1);
  });

  test("an old node on PATH: FAIL; the checks still run on the cached Node 22, or are skipped without one", async () => {
    const [cached, none] = await Promise.all([
      doctor({ stack: "local", yaml: shipped("local"), tools: { node: sh("echo v20.11.1") }, cachedNode: true }),
      doctor({ stack: "local", yaml: shipped("local"), tools: { node: sh("echo v16.20.2") } }),
    ]);
    const fix = "      fix: PATH=$(bash tools/node22.sh):$PATH (Node 22 from the npm registry, cached), or install Node.js 22 LTS";
    expect(shape(cached.lines, "local").slice(0, 3)).toEqual(["FAIL  Node.js: v20.11.1 is older than engines.node >=22", fix, MODULES]);
    expect(none.lines).toEqual([
      "FAIL  Node.js: v16.20.2 is older than engines.node >=22",
      fix,
      "skip  the other checks: they need Node.js 18 or newer to run",
    ]);
    expect([cached.code, none.code]).toEqual([1, 1]);
  });

  test("an old node on a Mac: the fix is Homebrew's node@22 (or nvm), never tools/node22.sh, which refuses macOS", async () => {
    const [cached, none] = await Promise.all([
      doctor({ stack: "local", yaml: shipped("local"), env: MAC, tools: { node: sh("echo v20.11.1") }, cachedNode: true }),
      doctor({ stack: "local", yaml: shipped("local"), env: MAC, tools: { node: sh("echo v16.20.2") } }),
    ]);
    const fix =
      '      fix: brew install node@22, then export PATH="$(brew --prefix node@22)/bin:$PATH" (node@22 is keg-only); or nvm install 22';
    expect(shape(cached.lines, "local").slice(0, 2)).toEqual(["FAIL  Node.js: v20.11.1 is older than engines.node >=22", fix]);
    expect(none.lines.slice(0, 2)).toEqual(["FAIL  Node.js: v16.20.2 is older than engines.node >=22", fix]);
    expect([cached.code, none.code]).toEqual([1, 1]);
  });

  test("no stack named: usage, exit 2", async () => {
    const r = await doctor({ stack: "" });
    expect([r.code, r.stderr]).toEqual([2, "usage: npm run doctor -- STACK   (the stack name, e.g. local, dev, prod)\n"]);
  });
});

// ---------------------------------------------------------------- pure parts

describe("doctor.js", () => {
  test("programConfig: secure values become placeholders their fields accept, their keys secret", () => {
    const c = programConfig({
      "aws:region": "eu-central-1",
      "neko-infra:builder": { kind: "ssh", privateKey: { secure: "v1:abc" } },
      "neko-infra:neko": { userPassword: { secure: "v1:def" }, env: { A: "1" } },
      "neko-infra:host": { secure: "v1:whole" },
    });
    expect(c.config["aws:region"]).toBe("eu-central-1");
    expect(JSON.parse(c.config["neko-infra:builder"])).toEqual({ kind: "ssh", privateKey: PEM });
    expect(JSON.parse(c.config["neko-infra:neko"])).toEqual({ userPassword: "x".repeat(24), env: { A: "1" } });
    expect([c.secretKeys, c.secrets, c.whole]).toEqual([
      ["neko-infra:builder", "neko-infra:neko", "neko-infra:host"],
      3,
      ["neko-infra:host"],
    ]);
  });

  test("settingsFix: the problem's own command, removal of an unknown key, or a set of the key", () => {
    expect(settingsFix("neko-infra:host.gpu: set without --path, ...; move it: pulumi config rm 'host.gpu' && ...", "dev")).toBe(
      "run the pulumi config command above with --stack dev, or edit Pulumi.dev.yaml",
    );
    expect(settingsFix("neko-infra:nekko: unknown key; did you mean 'neko'?", "dev")).toBe(
      "remove it from Pulumi.dev.yaml (pulumi config rm --path 'nekko' --stack dev)",
    );
    expect(settingsFix("neko-infra:neko.screen: not a screen mode", "dev")).toBe(
      "edit Pulumi.dev.yaml as said above, or: pulumi config set --path 'neko.screen' <value> --stack dev",
    );
  });
});
