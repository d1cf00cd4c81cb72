/**
 * scripts/neko-rollout.sh (and the command `pulumi destroy` runs) against a real dockerd (tests/harness/dockerd.sh) and
 * a real registry (registry.sh), with images the fixture flake builds with real Nix and skopeo
 * pushes. Each script runs exactly as the host's local Command runs it: the command line and stdin
 * from lib/shell.ts `scriptCommand`, through `/bin/sh -c`, the environment on stdin.
 *
 * No GPU here: the GPU tests put a stub `nvidia-smi` first on PATH and rely on the fixture images'
 * `gst-launch-1.0` STAND-IN (it runs a pipeline when the image "has" every element in it: a neko
 * image's software ones, plus the container's FAKE_GST_ELEMENTS, minus FAKE_GST_MISSING). They
 * check which element is chosen, that the candidate is made to run its pipeline, and the messages;
 * not NVENC itself. The screenshot stand-in serves a picture of a desktop to the API token (a
 * uniform one with FAKE_BLANK_SCREEN), as neko's GET /api/room/screen/shot.jpg.
 *
 * The tests run in order on one engine and one `neko` container, each starting from what the
 * previous one left (the handoff names what is missing when an earlier test failed).
 *
 * Restarts: `restartCrash` behaves as the Nix-built neko image does (fine on a container's first
 * start, exit 9 with "groupadd: group 'neko' already exists" on any later start of the same
 * container). The candidate's restart check, a rollback to it and scripts/neko-restore.sh (run as
 * its systemd unit runs it: plain `bash`, no step preamble) are tested with it here; a Docker
 * daemon stopped and started (a host's idle stop and wake) in restart.test.ts.
 */
import * as fs from "fs";
import * as net from "net";
import * as path from "path";
import { removeCommand } from "../../lib/neko";
import { cpuPipeline, nvencPipeline } from "../../lib/pipelines";
import { scriptCommand } from "../../lib/shell";
import {
  DOCKERD_TOOLS,
  DockerEnv,
  FIXTURE,
  fixtureCopy,
  freeNekoPorts,
  freeTcpPort,
  ok,
  RegistryEnv,
  requireTools,
  reEscape,
  Result,
  run,
  runLocal,
  SCRIPTS,
  Services,
  show,
} from "./support";

jest.setTimeout(120_000);

const PROFILE_DIR = "/home/neko/.config/chromium";
const ADMIN_PASSWORD = "admin-Pa55-7f3c91d2e8";
const USER_PASSWORD = "user-Pa55-0b6e44a1c9";
const API_TOKEN = "api-Tok3n-5d0c8e2f71aa";
const PIPE_AUTO = nvencPipeline("nvautogpuh264enc");
const PIPE_NV = nvencPipeline("nvh264enc");
/** neko-infra's NVENC pipeline before it did without the CUDA toolkit. */
const PIPE_CUDA =
  "ximagesrc display-name={display} show-pointer=true use-damage=false ! video/x-raw,framerate=25/1 ! videoconvert ! queue ! video/x-raw,format=NV12 ! cudaupload ! cudaconvert ! nvh264enc name=encoder ! h264parse config-interval=-1 ! video/x-h264,stream-format=byte-stream,profile=high ! appsink name=appsink";
const LOCKS = ["SingletonLock", "SingletonCookie", "SingletonSocket"];

const svc = new Services();
let reg: RegistryEnv;
let dk: DockerEnv;
let ports: { httpPort: number; epr: string };
let profile: string;
let stateDir: string;
/** Whether the last rollout() saw NEKO_STATE_DIR/deploying while it ran. */
let sawDeploying = false;
let tmpDir: string;
/** Image refs (REPO@sha256:...) and image IDs by fixture name. */
const refs: Record<string, string> = {};
const ids: Record<string, string> = {};
const localOutputs: string[] = [];
/** Everything the scripts printed, and secrets seen on command lines or in loose files during runs. */
const outputs: Result[] = [];
const leaks: string[] = [];
let psSamples = 0;
const handoff: Record<string, string> = {};
const need = (k: string): string => {
  const v = handoff[k];
  if (v === undefined) throw new Error(`prerequisite missing: ${k} (an earlier test failed)`);
  return v;
};

beforeAll(async () => {
  requireTools(["nix", "/bin/busybox", "skopeo", "curl", "/usr/bin/docker-registry", "htpasswd", ...DOCKERD_TOOLS]);
  reg = await svc.registry("registry", `127.0.0.1:${await freeTcpPort("127.0.0.1")}`);
  dk = await svc.dockerd("docker", reg.REGISTRY_ADDR);
  ports = await freeNekoPorts("127.0.0.1", 3);
  profile = path.join(svc.dir, "profile"); // created by the script
  stateDir = path.join(svc.dir, "state");
  tmpDir = path.join(svc.dir, "tmp");
  fs.mkdirSync(tmpDir);

  // v1 and its variants share both layers; v2 and v3 differ from v1 in the small /www layer only.
  const v1 = fixtureCopy(svc.dir, "rollout-v1");
  const v2 = fixtureCopy(svc.dir, "rollout-v2");
  const v3 = fixtureCopy(svc.dir, "rollout-v3");
  const wanted: [string, string, string][] = [
    ["v1", v1, "layered"],
    ["crash", v1, "layered-crash"],
    ["unhealthy", v1, "layered-unhealthy"],
    ["profileCrash", v1, "layered-profile-crash"],
    ["restartCrash", v1, "layered-restart-crash"],
    ["v2", v2, "layered"],
    ["v3slow", v3, "layered-slow"],
  ];
  for (const [key, dir, attr] of wanted) {
    // One build each: `nix build --json` does not list several outputs in the order asked.
    const built = await run("nix", ["build", "--json", "--no-link", `path:${dir}#${attr}`], { timeoutMs: 300_000 });
    const out = (JSON.parse(ok(built, `nix build ${attr} (${key})`)) as { outputs: { out: string } }[])[0].outputs.out;
    localOutputs.push(out);
    const digestFile = path.join(svc.dir, `${key}.digest`);
    const pushed = await run(
      "skopeo",
      [
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        "--dest-creds",
        `${reg.REGISTRY_USER}:${reg.REGISTRY_PASSWORD}`,
        "--digestfile",
        digestFile,
        `docker-archive:${out}`,
        `docker://${reg.REGISTRY_ADDR}/neko:${key.toLowerCase()}`,
      ],
      { timeoutMs: 120_000 },
    );
    ok(pushed, `skopeo copy ${key}`);
    refs[key] = `${reg.REGISTRY_ADDR}/neko@${fs.readFileSync(digestFile, "utf8").trim()}`;
  }
}, 600_000);

afterAll(async () => {
  try {
    await svc.stopAll();
  } finally {
    for (const p of localOutputs) await run("nix", ["store", "delete", p], { timeoutMs: 30_000 }).catch(() => undefined);
  }
}, 180_000);

// ---------------------------------------------------------------- helpers

const stubDirs: Record<string, string> = {};
/** A directory holding a stub `nvidia-smi` (no GPU here) that reports DRIVER. */
function nvidiaSmiStub(driver: string): string {
  if (!stubDirs[driver]) {
    const dir = fs.mkdtempSync(path.join(svc.dir, "nvidia-smi-"));
    // Stub: the real nvidia-smi prints one driver_version line per GPU for this query.
    fs.writeFileSync(
      path.join(dir, "nvidia-smi"),
      `#!/bin/sh\n# stub nvidia-smi for tests (no GPU here)\n[ "$*" = "--query-gpu=driver_version --format=csv,noheader" ] || exit 9\necho ${driver}\n`,
      { mode: 0o755 },
    );
    stubDirs[driver] = dir;
  }
  return stubDirs[driver];
}

/** The environment of the Docker host's shell: the harness engine, its Debian client first on PATH. */
function hostEnv(extraPath: string[] = []): Record<string, string> {
  return {
    DOCKER_HOST: dk.DOCKER_HOST,
    DOCKER_CONFIG: dk.DOCKER_CONFIG,
    PATH: [...extraPath, path.dirname(dk.DOCKER_BIN), process.env.PATH].join(":"),
    TMPDIR: tmpDir,
  };
}

/** The script's environment as the program gives it (passwords and the API token included). */
function nekoEnv(over: Record<string, string> = {}, extraEnvLines: string[] = []): Record<string, string> {
  const http = ports.httpPort;
  return {
    NEKO_NAME: "neko",
    NEKO_HTTP_PORT: String(http),
    NEKO_PUBLISH: [`127.0.0.1:${http}:${http}/tcp`, `127.0.0.1:${ports.epr}:${ports.epr}/udp`].join("\n"),
    NEKO_RUN_ARGS: ["--shm-size=64m", "--hostname=neko", "--restart=no", "--label=neko-infra.test=rollout"].join("\n"),
    NEKO_ENV: [
      `NEKO_SERVER_BIND=:${http}`,
      `NEKO_MEMBER_MULTIUSER_ADMIN_PASSWORD=${ADMIN_PASSWORD}`,
      `NEKO_MEMBER_MULTIUSER_USER_PASSWORD=${USER_PASSWORD}`,
      `NEKO_SESSION_API_TOKEN=${API_TOKEN}`,
      ...extraEnvLines,
    ].join("\n"),
    NEKO_HEALTH_SECONDS: "30",
    NEKO_PROFILE: profile,
    NEKO_PROFILE_DIR: PROFILE_DIR,
    NEKO_STATE_DIR: stateDir,
    NEKO_API_TOKEN: API_TOKEN,
    REGISTRY_USER: reg.REGISTRY_USER,
    REGISTRY_PASSWORD: reg.REGISTRY_PASSWORD,
    // What the program computes from the values previews show (lib/spec.ts): recorded as it is.
    NEKO_SHOWN_DIGEST: SHOWN_DIGEST,
    ...over,
  };
}
const SHOWN_DIGEST = "5e7f2b0c".repeat(8);

const WRONG_REGISTRY_PASSWORD = "wrong-Pa55-93ad0e7b61";
const SECRETS = () => [ADMIN_PASSWORD, USER_PASSWORD, API_TOKEN, reg.REGISTRY_PASSWORD, WRONG_REGISTRY_PASSWORD];

/**
 * While a script runs: every 100 ms, every process's command line (`ps -eww -o args`) and the
 * script's temp files. Secrets on a command line, or an env file readable by others, are leaks.
 */
function watchProcesses(): () => Promise<void> {
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      const ps = await run("ps", ["-eww", "-o", "args"], { timeoutMs: 5_000 });
      psSamples++;
      for (const line of ps.stdout.split("\n")) {
        for (const s of SECRETS()) if (line.includes(s)) leaks.push(`ps: ${line}`);
      }
      for (const d of fs.readdirSync(tmpDir)) {
        const env = path.join(tmpDir, d, "env");
        try {
          const mode = fs.statSync(env).mode & 0o777;
          if (mode !== 0o600) leaks.push(`${env} has mode ${mode.toString(8)}`);
          const dirMode = fs.statSync(path.join(tmpDir, d)).mode & 0o777;
          if (dirMode !== 0o700) leaks.push(`${path.join(tmpDir, d)} has mode ${dirMode.toString(8)}`);
        } catch {
          /* not there (yet, or any more) */
        }
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  return async () => {
    stopped = true;
    await loop;
  };
}

interface RolloutOptions {
  env?: Record<string, string>;
  envLines?: string[];
  extraPath?: string[];
  /** Run as a remote Command runs: inside `timeout` with this budget. */
  budgetSeconds?: number;
  timeoutMs?: number;
  /** Other runs overlap this one: their temp files may still be there when it ends. */
  concurrent?: boolean;
}

/** neko-rollout.sh IMAGE_REF as the local Command runs it; its output is kept for the secret checks. */
async function rollout(ref: string, o: RolloutOptions = {}): Promise<Result> {
  const sc = scriptCommand(
    { script: "neko-rollout.sh", args: [ref], env: nekoEnv(o.env, o.envLines), budgetSeconds: o.budgetSeconds },
    o.budgetSeconds !== undefined,
  );
  const stop = watchProcesses();
  const flag = path.join(stateDir, "deploying");
  sawDeploying = false;
  const watch = setInterval(() => (sawDeploying ||= fs.existsSync(flag)), 20);
  const r = await runLocal(sc, hostEnv(o.extraPath), o.timeoutMs ?? 110_000);
  clearInterval(watch);
  await stop();
  // The idle check's "deploying" flag lives exactly as long as the run.
  if (!o.concurrent) expect(fs.existsSync(flag)).toBe(false);
  outputs.push(r);
  // The env file and its directory are gone when the script is.
  if (!o.concurrent) expect(fs.readdirSync(tmpDir)).toEqual([]);
  return r;
}

const docker = (args: string[], timeoutMs = 60_000) => run(dk.DOCKER_BIN, args, { env: hostEnv(), timeoutMs });

/** `docker inspect` of a container, or undefined when there is none. */
async function inspect(name: string): Promise<any | undefined> {
  const r = await docker(["container", "inspect", name]);
  return r.code === 0 ? JSON.parse(r.stdout)[0] : undefined;
}

async function containerNames(): Promise<string[]> {
  const out = ok(await docker(["ps", "-a", "--format", "{{.Names}}"]), "docker ps").trim();
  return out ? out.split("\n").sort() : [];
}

async function get(pathname: string): Promise<{ status: number; body: string }> {
  try {
    const res = await fetch(`http://127.0.0.1:${ports.httpPort}${pathname}`, { signal: AbortSignal.timeout(2000) });
    return { status: res.status, body: await res.text() };
  } catch (e) {
    return { status: 0, body: String(e) };
  }
}

/** Polls neko's public /health every 100 ms until stopped. */
function pollHealth(): () => Promise<{ ok: number; failures: string[] }> {
  let stopped = false;
  const failures: string[] = [];
  let okCount = 0;
  const loop = (async () => {
    while (!stopped) {
      const t = Date.now();
      const h = await get("/health");
      if (h.status === 200 && h.body === "true") okCount++;
      else failures.push(`${new Date(t).toISOString()}: ${h.status} ${h.body}`);
      await new Promise((r) => setTimeout(r, Math.max(0, 100 - (Date.now() - t))));
    }
  })();
  return async () => {
    stopped = true;
    await loop;
    return { ok: okCount, failures };
  };
}

/** The running neko's identity: a rollout that must not touch it leaves all of it unchanged. */
async function identity(): Promise<{ id: string; startedAt: string; image: string; restarts: number }> {
  const c = await inspect("neko");
  if (!c) throw new Error("no neko container");
  return { id: c.Id, startedAt: c.State.StartedAt, image: c.Image, restarts: c.RestartCount };
}

/** Runs a rollout that must fail before the swap, polling the running neko all along. */
async function failedUpdateLeavesNekoAlone(ref: string, o: RolloutOptions = {}): Promise<Result> {
  const before = await identity();
  const volumesBefore = ok(await docker(["volume", "ls", "-q"]), "docker volume ls");
  const poll = pollHealth();
  const r = await rollout(ref, o);
  const polled = await poll();
  expect(r.code).toBe(1);
  expect(r.stdout).toBe("");
  expect(r.stderr).toMatch(/the running neko was not touched$/m);
  expect({ failures: polled.failures, polled: polled.ok > 0 }).toEqual({ failures: [], polled: true });
  expect(await identity()).toEqual(before);
  expect(await containerNames()).toEqual(["neko"]);
  // The candidate's throwaway profile volume went with it.
  expect(ok(await docker(["volume", "ls", "-q"]), "docker volume ls")).toBe(volumesBefore);
  return r;
}

/** Where the rollout records the specs it deploys (NEKO_STATE_DIR/NAME-specs). */
const specDir = () => path.join(stateDir, "neko-specs");

/** scripts/neko-restore.sh as neko-restore.service runs it: plain bash, NEKO_STATE_DIR, no preamble. */
async function restore(args: string[] = []): Promise<Result> {
  const r = await run("bash", [path.join(SCRIPTS, "neko-restore.sh"), ...args], {
    env: { ...hostEnv(), NEKO_STATE_DIR: stateDir },
    timeoutMs: 90_000,
  });
  outputs.push(r);
  return r;
}

/** Waits until container `name` no longer runs; its state then. */
async function stopped(name: string): Promise<{ status: string; exitCode: number; restarts: number }> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const c = await inspect(name);
    if (!c.State.Running || Date.now() > deadline) return { status: c.State.Status, exitCode: c.State.ExitCode, restarts: c.RestartCount };
    await new Promise((r) => setTimeout(r, 200));
  }
}

const FIX =
  "the image cannot start the same container twice (its entrypoint is not idempotent): add getent to its runtime, or create the user with `groupadd -f` / `id -u neko || useradd`";

const resultLine = (outcome: string, image: string) =>
  new RegExp(`^neko ${outcome} ${reEscape(image)} http://127\\.0\\.0\\.1:${ports.httpPort}\\n$`);

// ---------------------------------------------------------------- tests

describe("neko-rollout.sh", () => {
  test("first deploy: neko answers /health, ports published 1:1, the profile mounted, the spec label set", async () => {
    const r = await rollout(refs.v1);
    expect(show(r)).toMatch(/^exit 0 /);
    expect(r.stdout).toMatch(/^neko started sha256:[0-9a-f]{64} http:\/\/127\.0\.0\.1:\d+\n$/);
    ids.v1 = r.stdout.split(" ")[2];
    expect(r.stdout).toMatch(resultLine("started", ids.v1));

    const c = await inspect("neko");
    expect(c.Image).toBe(ids.v1);
    const [low, high] = ports.epr.split("-").map(Number);
    const expected: Record<string, { HostIp: string; HostPort: string }[]> = {
      [`${ports.httpPort}/tcp`]: [{ HostIp: "127.0.0.1", HostPort: String(ports.httpPort) }],
    };
    for (let p = low; p <= high; p++) expected[`${p}/udp`] = [{ HostIp: "127.0.0.1", HostPort: String(p) }];
    expect(c.HostConfig.PortBindings).toEqual(expected);
    expect(c.Mounts.map((m: any) => ({ type: m.Type, source: m.Source, destination: m.Destination }))).toEqual([
      { type: "bind", source: profile, destination: PROFILE_DIR },
    ]);
    expect(c.Config.Labels["neko-infra.spec"]).toMatch(/^[0-9a-f]{64}$/);
    expect(c.Config.Labels["neko-infra.test"]).toBe("rollout");
    expect({ restart: c.HostConfig.RestartPolicy.Name, shm: c.HostConfig.ShmSize, hostname: c.Config.Hostname }).toEqual({
      restart: "no",
      shm: 64 * 1024 * 1024,
      hostname: "neko",
    });
    expect(await get("/health")).toEqual({ status: 200, body: "true" });
    expect((await get("/version")).body).toBe("rollout-v1\n");
    // The browser ran on the host directory the script created.
    expect(fs.readFileSync(path.join(profile, "Last Version"), "utf8")).toBe("rollout-v1\n");
    expect(await containerNames()).toEqual(["neko"]);

    expect(fs.readFileSync(path.join(stateDir, "neko-url"), "utf8")).toBe(`http://127.0.0.1:${ports.httpPort}\n`);
    expect(fs.readFileSync(path.join(stateDir, "api-token"), "utf8")).toBe(`${API_TOKEN}\n`);
    expect(fs.statSync(path.join(stateDir, "api-token")).mode & 0o777).toBe(0o600);
    expect(sawDeploying).toBe(true);
    expect(r.stderr).toContain("neko-rollout: the candidate survives a restart (stopped, started, /health again)\n");
    // The spec it deployed, for a rollback and for neko-restore.sh: the environment (secrets) 0600.
    const spec = c.Config.Labels["neko-infra.spec"];
    expect(fs.readFileSync(path.join(specDir(), "current"), "utf8")).toBe(`${spec}\n`);
    expect(fs.statSync(specDir()).mode & 0o777).toBe(0o700);
    expect(fs.statSync(path.join(specDir(), `${spec}.env`)).mode & 0o777).toBe(0o600);
    expect(fs.readFileSync(path.join(specDir(), `${spec}.env`), "utf8")).toBe(`${nekoEnv().NEKO_ENV}\n`);
    expect(fs.readFileSync(path.join(specDir(), `${spec}.args`), "utf8").split("\n")).toEqual([
      "neko-infra-spec 1",
      "name neko",
      `http-port ${ports.httpPort}`,
      "health-seconds 30",
      `profile ${profile}`,
      "arg --label",
      `arg neko-infra.spec=${spec}`,
      "arg --publish",
      `arg 127.0.0.1:${ports.httpPort}:${ports.httpPort}/tcp`,
      "arg --publish",
      `arg 127.0.0.1:${ports.epr}:${ports.epr}/udp`,
      "arg --volume",
      `arg ${profile}:${PROFILE_DIR}`,
      "arg --shm-size=64m",
      "arg --hostname=neko",
      "arg --restart=no",
      "arg --label=neko-infra.test=rollout",
      `image ${ids.v1}`,
      "",
    ]);
    expect(fs.readdirSync(specDir()).sort()).toEqual([`${spec}.args`, `${spec}.env`, "current", "deployed"].sort());
    // What `npm run status` reads: the last deploy (no secret in it).
    const deployed = fs.readFileSync(path.join(specDir(), "deployed"), "utf8");
    expect(deployed).toMatch(
      new RegExp(
        `^time \\d+\noutcome started\nref ${reEscape(refs.v1)}\nimage ${ids.v1}\nspec ${spec}\nshown ${SHOWN_DIGEST}\nscreenshot \\S+\n$`,
      ),
    );
    for (const s of SECRETS()) expect(deployed).not.toContain(s);
    // The registry login was for this pull only.
    const cfg = path.join(dk.DOCKER_CONFIG, "config.json");
    expect(fs.existsSync(cfg) ? fs.readFileSync(cfg, "utf8") : "").not.toContain(reg.REGISTRY_ADDR);
    handoff.first = "done";
  });

  test("the same inputs again: the result line, and nothing restarts", async () => {
    need("first");
    const before = await identity();
    const r = await rollout(refs.v1);
    expect(show(r)).toMatch(/^exit 0 /);
    expect(r.stdout).toMatch(resultLine("unchanged", ids.v1));
    expect(r.stderr).toContain(`neko-rollout: ${refs.v1} is already in the engine\n`);
    expect(await identity()).toEqual(before);
    expect(await containerNames()).toEqual(["neko"]);
    console.log(`no-change run: ${r.seconds.toFixed(2)}s`);
    // An image the engine has needs no registry: an expired login changes nothing either.
    const expired = await rollout(refs.v1, { env: { REGISTRY_PASSWORD: WRONG_REGISTRY_PASSWORD } });
    expect(expired.stdout).toMatch(resultLine("unchanged", ids.v1));
  });

  test("a new image with a refused registry login: names the login; the running neko is untouched", async () => {
    need("first");
    const r = await failedUpdateLeavesNekoAlone(refs.v2, { env: { REGISTRY_PASSWORD: WRONG_REGISTRY_PASSWORD } });
    expect(r.stderr).toMatch(
      new RegExp(`^neko-rollout: the registry ${reEscape(reg.REGISTRY_ADDR)} refused the login: .*(unauthorized|401)`, "m"),
    );
    expect(r.stderr).not.toContain("candidate");
  });

  test("a crashing image: its candidate's real exit code and last lines; the running neko answers /health throughout", async () => {
    need("first");
    const r = await failedUpdateLeavesNekoAlone(refs.crash);
    expect(r.stderr).toMatch(
      // stdout and stderr lines, in either order (docker logs reads the two streams apart)
      /^neko-rollout: the candidate neko-candidate exited with code 1; its last log lines:\n(( {4}neko-fixture: crash, version rollout-v1, port \d+| {4}neko: fatal: cannot open display)\n){2}/m,
    );
    expect(r.stderr).toContain("    neko: fatal: cannot open display\n");
    expect(r.seconds).toBeLessThan(20);
  });

  test("an image whose /health fails: its candidate fails after its budget; the running neko is untouched", async () => {
    need("first");
    const r = await failedUpdateLeavesNekoAlone(refs.unhealthy, { env: { NEKO_HEALTH_SECONDS: "3" } });
    expect(r.stderr).toMatch(
      /^neko-rollout: the candidate neko-candidate did not answer \/health within 3s \(still running; last probe: HTTP 404\); its last log lines:\n {4}neko-fixture: unhealthy/m,
    );
    expect(r.seconds).toBeGreaterThanOrEqual(2);
    expect(r.seconds).toBeLessThan(15);
  });

  test("a log line holding a secret value is masked", async () => {
    need("first");
    // A token that happens to be text the crashing image logs: the script must not echo it.
    const r = await failedUpdateLeavesNekoAlone(refs.crash, { envLines: ["EXTRA_TOKEN=cannot open display"] });
    expect(r.stderr).toContain("    neko: fatal: [secret]\n");
    expect(r.stderr).not.toContain("cannot open display");
  });

  test("good new images replace the running one; the profile survives two updates, stale Singleton* locks are cleared", async () => {
    need("first");
    fs.writeFileSync(path.join(profile, "keep.txt"), "bookmarks\n");
    // Left by a browser that did not exit cleanly (another hostname, a dead pid): the fixture, like
    // Chromium, refuses to start while SingletonLock exists.
    for (const f of LOCKS) fs.symlinkSync(f === "SingletonCookie" ? "8417372538495128071" : "otherhost-4242", path.join(profile, f));
    const before = await identity();

    const r = await rollout(refs.v2);
    expect(show(r)).toMatch(/^exit 0 /);
    ids.v2 = r.stdout.split(" ")[2];
    expect(r.stdout).toMatch(resultLine("replaced", ids.v2));
    expect(ids.v2).not.toBe(ids.v1);
    expect(r.stderr).toContain("neko-rollout: stopped neko, kept as neko-previous\n");
    const after = await identity();
    expect(after.id).not.toBe(before.id);
    expect(after.image).toBe(ids.v2);
    expect((await get("/version")).body).toBe("rollout-v2\n");
    for (const f of LOCKS) expect(fs.existsSync(path.join(profile, f)) || isSymlink(path.join(profile, f))).toBe(false);
    expect(fs.readFileSync(path.join(profile, "keep.txt"), "utf8")).toBe("bookmarks\n");
    expect(await containerNames()).toEqual(["neko"]);
    console.log(`update v1 -> v2: ${r.seconds.toFixed(2)}s`);

    // The second update is a slow starter: the script waits for /health, not a fixed time.
    const r3 = await rollout(refs.v3slow);
    expect(show(r3)).toMatch(/^exit 0 /);
    ids.v3slow = r3.stdout.split(" ")[2];
    expect(r3.stdout).toMatch(resultLine("replaced", ids.v3slow));
    expect((await get("/version")).body).toBe("rollout-v3\n");
    expect(fs.readFileSync(path.join(profile, "keep.txt"), "utf8")).toBe("bookmarks\n");
    expect(fs.readFileSync(path.join(profile, "Last Version"), "utf8")).toBe("rollout-v3\n");
    expect(await containerNames()).toEqual(["neko"]);
    // Candidate and final each start in ~5 s.
    expect(r3.seconds).toBeGreaterThanOrEqual(9);
    console.log(`update v2 -> v3 (slow start, ~5 s twice): ${r3.seconds.toFixed(2)}s`);
    handoff.updated = "done";
  });

  test("a new image that fails only with the real profile, after the swap: rolled back, the previous image answers again", async () => {
    need("updated");
    const r = await rollout(refs.profileCrash);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toContain("neko-rollout: the candidate answers /health\n");
    expect(r.stderr).toMatch(
      // --restart=no: no restart policy starts it again (and again)
      /^neko-rollout: the new neko exited with code 3; its last log lines:\n(?: {4}.*\n)* {4}chromium: this profile was written by version rollout-v3; refusing to open it$/m,
    );
    expect(r.stderr).toMatch(
      /^neko-rollout: the previous neko answers \/health again; its last log lines:\n(?: {4}.*\n)* {4}neko-fixture: slow, version rollout-v3/m,
    );
    expect(r.stderr).toMatch(
      new RegExp(
        `^neko-rollout: the update was rolled back: the new container failed after the swap; the previous image ${ids.v3slow} runs again$`,
        "m",
      ),
    );
    expect((await identity()).image).toBe(ids.v3slow);
    expect(await get("/health")).toEqual({ status: 200, body: "true" });
    expect((await get("/version")).body).toBe("rollout-v3\n");
    expect(await containerNames()).toEqual(["neko"]);
  });

  test("a published port another process holds: the new container cannot start, the update is rolled back", async () => {
    need("updated");
    const extra = await freeTcpPort("127.0.0.1");
    const holder = net.createServer();
    await new Promise<void>((res) => holder.listen(extra, "127.0.0.1", () => res()));
    try {
      const env = nekoEnv();
      const r = await rollout(refs.v2, { env: { NEKO_PUBLISH: `${env.NEKO_PUBLISH}\n127.0.0.1:${extra}:${extra}/tcp` } });
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(
        new RegExp(
          `^neko-rollout: the new neko could not start: docker: Error response .*127\\.0\\.0\\.1:${extra}: bind: address already in use\\.; its last log lines:\\n {4}\\(none\\)$`,
          "m",
        ),
      );
      expect(r.stderr).toMatch(/^neko-rollout: the update was rolled back: /m);
    } finally {
      await new Promise((res) => holder.close(res));
    }
    expect((await identity()).image).toBe(ids.v3slow);
    expect(await get("/health")).toEqual({ status: 200, body: "true" });
    expect(await containerNames()).toEqual(["neko"]);
  });

  test("leftovers of an interrupted run: a candidate is removed, a lone -previous is restored first", async () => {
    need("updated");
    // As if a run had stopped during its swap, and another before removing its candidate.
    ok(await docker(["stop", "neko"]), "docker stop");
    ok(await docker(["rename", "neko", "neko-previous"]), "docker rename");
    ok(await docker(["create", "--name", "neko-candidate", ids.v1]), "docker create");
    const r = await rollout(refs.v3slow);
    expect(show(r)).toMatch(/^exit 0 /);
    expect(r.stderr).toContain("neko-rollout: removing neko-candidate, left over by an interrupted run\n");
    expect(r.stderr).toContain(
      "neko-rollout: neko-previous without neko: an earlier run stopped during its swap; restoring the last good container first\n",
    );
    // The restored container starts slowly: it is either found healthy or rolled out afresh.
    expect(r.stdout).toMatch(/^neko (unchanged|replaced) /);
    expect(await containerNames()).toEqual(["neko"]);
    expect(await get("/health")).toEqual({ status: 200, body: "true" });

    // A -previous next to a neko that answers: that swap had succeeded.
    ok(await docker(["run", "--detach", "--name", "neko-previous", ids.v1]), "docker run (a leftover previous)");
    const before = await identity();
    const r2 = await rollout(refs.v3slow);
    expect(show(r2)).toMatch(/^exit 0 /);
    expect(r2.stderr).toContain("neko-rollout: neko-previous left over next to a neko that answers /health: removing neko-previous\n");
    expect(r2.stdout).toMatch(resultLine("unchanged", ids.v3slow));
    expect(await identity()).toEqual(before);
    expect(await containerNames()).toEqual(["neko"]);
  });

  test("out of its time budget (a remote run under `timeout`) while the candidate starts: says so, removes the candidate", async () => {
    need("updated");
    const before = await identity();
    const r = await rollout(refs.unhealthy, { env: { NEKO_HEALTH_SECONDS: "60" }, budgetSeconds: 4 });
    expect(r.code).toBe(124); // timeout's own status
    expect(r.stderr).toMatch(
      /^neko-rollout: ran out of its time budget \(or was stopped\) while waiting up to 60s for the candidate neko-candidate to answer \/health$/m,
    );
    expect(r.stderr).toContain("neko-rollout: removed neko-candidate; the running neko was not touched\n");
    expect(r.seconds).toBeLessThan(15);
    expect(await identity()).toEqual(before);
    expect(await containerNames()).toEqual(["neko"]);
  });

  test("two runs for the same name never interleave: the second waits for the lock (bounded)", async () => {
    need("updated");
    const first = rollout(refs.unhealthy, { env: { NEKO_HEALTH_SECONDS: "5" }, concurrent: true });
    await new Promise((r) => setTimeout(r, 1500));
    const impatient = rollout(refs.v3slow, { env: { NEKO_LOCK_SECONDS: "1" }, concurrent: true });
    const patient = rollout(refs.v3slow, { concurrent: true });
    const [a, b, c] = await Promise.all([first, impatient, patient]);
    expect(fs.readdirSync(tmpDir)).toEqual([]);
    expect(a.code).toBe(1);
    expect(b.code).toBe(1);
    expect(b.stderr).toMatch(
      /^neko-rollout: another neko-rollout for neko \(pid \d+\) still ran after 1s \(lock .*\); the running neko was not touched$/m,
    );
    expect(b.stderr).not.toContain("candidate");
    expect(show(c)).toMatch(/^exit 0 /);
    expect(c.stderr).toMatch(/^neko-rollout: another neko-rollout for neko runs \(pid \d+\); waiting up to 300s for it$/m);
    expect(c.stdout).toMatch(resultLine("unchanged", ids.v3slow));
    // The waiting run finished after the first one: it only started once the first was done.
    expect(c.seconds).toBeGreaterThan(a.seconds - 1.5);
    expect(await containerNames()).toEqual(["neko"]);
  });

  describe("GPU host, with stand-ins (no GPU here: a stub nvidia-smi, the fixture's gst-launch-1.0)", () => {
    const gpuEnv = { NEKO_NVENC: "auto", NEKO_PIPELINE_NVH264ENC: PIPE_NV, NEKO_PIPELINE_NVAUTOGPUH264ENC: PIPE_AUTO };
    const pipelineOf = async () =>
      ((await inspect("neko")).Config.Env as string[]).filter((e) => e.startsWith("NEKO_CAPTURE_VIDEO_PIPELINE="));

    test("driver 595.64: nvautogpuh264enc, its pipeline run by the candidate for 25 frames, set as NEKO_CAPTURE_VIDEO_PIPELINE", async () => {
      need("updated");
      const r = await rollout(refs.v2, {
        env: gpuEnv,
        envLines: ["FAKE_GST_ELEMENTS=nvh264enc,nvautogpuh264enc", "NEKO_CAPTURE_VIDEO_PIPELINE=overridden"],
        extraPath: [nvidiaSmiStub("595.64.01")],
      });
      expect(show(r)).toMatch(/^exit 0 /);
      expect(r.stderr).toContain("neko-rollout: NVIDIA driver 595.64.01: encoder nvautogpuh264enc\n");
      expect(r.stderr).toContain(
        "neko-rollout: the candidate's capture pipeline encodes: 25 frames through nvautogpuh264enc (gst-launch-1.0 ... ! fakesink)\n",
      );
      expect(r.stdout).toMatch(resultLine("replaced", ids.v2));
      expect(await pipelineOf()).toEqual([`NEKO_CAPTURE_VIDEO_PIPELINE=${PIPE_AUTO}`]);
    });

    test("driver 595.64 and an image without nvautogpuh264enc: fails naming the element and the libraries; neko untouched", async () => {
      need("updated");
      const r = await failedUpdateLeavesNekoAlone(refs.v2, {
        env: gpuEnv,
        envLines: ["FAKE_GST_ELEMENTS=nvh264enc"],
        extraPath: [nvidiaSmiStub("595.64.01")],
      });
      expect(r.stderr).toMatch(
        /^neko-rollout: the candidate neko-candidate cannot run its capture pipeline for 25 frames \(gst-launch-1\.0 in the candidate: WARNING: erroneous pipeline: no element "nvautogpuh264enc"\); libnvidia-encode: not visible, libcuda: not visible \(looked in .*LD_LIBRARY_PATH\); its last log lines:$/m,
      );
    });

    test("a pipeline through cudaconvert (neko-infra's old one) on an image without libnvrtc: refused naming cudaconvert, though gst-inspect-1.0 loads its encoder", async () => {
      need("updated");
      const env = { ...gpuEnv, NEKO_PIPELINE_NVH264ENC: PIPE_CUDA };
      const elements = "FAKE_GST_ELEMENTS=nvh264enc,cudaupload";
      // What the candidate check used to run, and passed:
      const inspected = await docker(["run", "--rm", "-e", elements, "--entrypoint", "gst-inspect-1.0", ids.v2, "nvh264enc"]);
      expect(show(inspected)).toMatch(/^exit 0 /);
      const r = await failedUpdateLeavesNekoAlone(refs.v2, { env, envLines: [elements], extraPath: [nvidiaSmiStub("580.95.05")] });
      expect(r.stderr).toMatch(
        /^neko-rollout: the candidate neko-candidate cannot run its capture pipeline for 25 frames \(gst-launch-1\.0 in the candidate: WARNING: erroneous pipeline: no element "cudaconvert"\); cudaconvert exists only where libnvrtc \(the CUDA toolkit\) loads: the image must ship it, or the pipeline do without \(videoconvert ! video\/x-raw,format=NV12 ! nvh264enc, as neko-infra's own\); libnvidia-encode: not visible, libcuda: not visible .*; its last log lines:$/m,
      );
    });

    test("driver 580.x: nvh264enc", async () => {
      need("updated");
      const r = await rollout(refs.v2, { env: gpuEnv, envLines: ["FAKE_GST_ELEMENTS=nvh264enc"], extraPath: [nvidiaSmiStub("580.95.05")] });
      expect(show(r)).toMatch(/^exit 0 /);
      expect(r.stderr).toContain("neko-rollout: NVIDIA driver 580.95.05: encoder nvh264enc\n");
      expect(r.stderr).toContain(
        "neko-rollout: the candidate's capture pipeline encodes: 25 frames through nvh264enc (gst-launch-1.0 ... ! fakesink)\n",
      );
      expect(await pipelineOf()).toEqual([`NEKO_CAPTURE_VIDEO_PIPELINE=${PIPE_NV}`]);
    });
  });

  describe("the candidate's pipeline and desktop (the fixture's gst-launch-1.0 and GET /api/room/screen/shot.jpg stand-ins)", () => {
    const H264 = `NEKO_CAPTURE_VIDEO_PIPELINE=${cpuPipeline("h264")}`;
    const shot = () => path.join(stateDir, "screenshot.jpg");
    const DESKTOP = fs.readFileSync(path.join(FIXTURE, "desktop", "desktop.jpg"));

    test("a software H.264 pipeline: neko's {display} filled in, run for 25 frames through x264enc", async () => {
      need("updated");
      const r = await rollout(refs.v1, { envLines: [H264] });
      expect(show(r)).toMatch(/^exit 0 /);
      expect(r.stdout).toMatch(resultLine("replaced", ids.v1));
      expect(r.stderr).toContain(
        "neko-rollout: the candidate's capture pipeline encodes: 25 frames through x264enc (gst-launch-1.0 ... ! fakesink)\n",
      );
      handoff.checks = "done";
    });

    test("an image without x264enc (GStreamer's ugly plugins): refused naming it; neko untouched", async () => {
      need("checks");
      const r = await failedUpdateLeavesNekoAlone(refs.v2, { envLines: [H264, "FAKE_GST_MISSING=x264enc"] });
      expect(r.stderr).toMatch(
        /^neko-rollout: the candidate neko-candidate cannot run its capture pipeline for 25 frames \(gst-launch-1\.0 in the candidate: WARNING: erroneous pipeline: no element "x264enc"\); its last log lines:$/m,
      );
    });

    test("no API token in neko's environment: the desktop cannot be checked, refused naming NEKO_SESSION_API_TOKEN", async () => {
      need("checks");
      const envText = nekoEnv()
        .NEKO_ENV.split("\n")
        .filter((l) => !l.startsWith("NEKO_SESSION_API_TOKEN="))
        .join("\n");
      const r = await failedUpdateLeavesNekoAlone(refs.v2, { env: { NEKO_ENV: envText } });
      expect(r.stderr).toMatch(
        /^neko-rollout: the candidate neko-candidate cannot be checked for a blank desktop: NEKO_ENV has no NEKO_SESSION_API_TOKEN \(neko serves GET \/api\/room\/screen\/shot\.jpg to admins; the API token is one\); its last log lines:$/m,
      );
    });

    test("an image whose GStreamer cannot decode a JPEG: refused, naming the decoder's message", async () => {
      need("checks");
      const r = await failedUpdateLeavesNekoAlone(refs.v2, { envLines: ["FAKE_GST_MISSING=jpegdec"] });
      expect(r.stderr).toMatch(
        /^neko-rollout: the candidate neko-candidate cannot be checked for a blank desktop: its own GStreamer cannot decode its screenshot \(.*: WARNING: erroneous pipeline: no element "jpegdec"\); its last log lines:$/m,
      );
    });

    test("a blank desktop (a uniform screenshot) is refused after NEKO_SCREENSHOT_SECONDS; the kept screenshot stays", async () => {
      need("checks");
      const before = fs.readFileSync(shot());
      const r = await failedUpdateLeavesNekoAlone(refs.v2, { envLines: ["FAKE_BLANK_SCREEN=1"], env: { NEKO_SCREENSHOT_SECONDS: "3" } });
      expect(r.stderr).toMatch(
        /^neko-rollout: the candidate neko-candidate shows a blank desktop: its screenshot \(GET \/api\/room\/screen\/shot\.jpg\) was one uniform colour \(grey level 16 to 16\) for 3s; its last log lines:$/m,
      );
      expect(r.seconds).toBeGreaterThanOrEqual(3);
      expect(fs.readFileSync(shot())).toEqual(before);
    });

    test("a good screenshot: kept 0600 where NEKO_SCREENSHOT says (~/ is HOME), by default in the state directory; the rollout says where", async () => {
      need("checks");
      const home = fs.mkdtempSync(path.join(svc.dir, "home-"));
      const r = await rollout(refs.v1, { env: { NEKO_SCREENSHOT: "~/.cache/neko-infra/screenshots/dev/last.jpg", HOME: home } });
      expect(show(r)).toMatch(/^exit 0 /);
      const kept = path.join(home, ".cache/neko-infra/screenshots/dev/last.jpg");
      expect(r.stderr).toMatch(
        new RegExp(`^neko-rollout: the new desktop as its candidate showed it: ${reEscape(kept)} \\(on \\S+\\)$`, "m"),
      );
      expect(fs.readFileSync(kept)).toEqual(DESKTOP);
      expect(fs.statSync(kept).mode & 0o777).toBe(0o600);
      expect(fs.statSync(path.dirname(kept)).mode & 0o777).toBe(0o700);

      fs.rmSync(shot());
      const d = await rollout(refs.v2);
      expect(show(d)).toMatch(/^exit 0 /);
      expect(d.stdout).toMatch(resultLine("replaced", ids.v2));
      expect(d.stderr).toContain(
        `neko-rollout: the candidate's desktop is not blank: its screenshot (${DESKTOP.length} bytes) has grey levels 0 to 255\n`,
      );
      expect(d.stderr).toMatch(
        new RegExp(`^neko-rollout: the new desktop as its candidate showed it: ${reEscape(shot())} \\(on \\S+\\)$`, "m"),
      );
      expect(fs.readFileSync(shot())).toEqual(DESKTOP);
      expect(fs.statSync(shot()).mode & 0o777).toBe(0o600);
      // Nothing changed, no candidate: the screenshot stays as it is.
      const u = await rollout(refs.v2);
      expect(u.stdout).toMatch(resultLine("unchanged", ids.v2));
      expect(u.stderr).not.toContain("screenshot");
    });
  });

  test("an image ID (as after docker load) is used as it is, never pulled; an unknown one is refused", async () => {
    need("updated");
    const env = { REGISTRY_PASSWORD: WRONG_REGISTRY_PASSWORD };
    const r = await rollout(ids.v1, { env });
    expect(show(r)).toMatch(/^exit 0 /);
    expect(r.stdout).toMatch(resultLine("replaced", ids.v1));
    const unknown = `sha256:${"0".repeat(64)}`;
    const u = await failedUpdateLeavesNekoAlone(unknown, { env });
    expect(u.stderr).toMatch(
      new RegExp(`^neko-rollout: image ${unknown} is not in this Docker engine \\(an image ID is never pulled: load it first\\)`, "m"),
    );
  });

  describe("an image that cannot start the same container twice (restartCrash, as the Nix-built image)", () => {
    test("NEKO_REQUIRE_RESTART=1: refused, naming the cause from its log and the fix for its authors; neko untouched", async () => {
      need("updated");
      const r = await failedUpdateLeavesNekoAlone(refs.restartCrash, { env: { NEKO_REQUIRE_RESTART: "1" } });
      expect(r.stderr).toContain("neko-rollout: the candidate answers /health\n");
      expect(r.stderr).toMatch(
        /^neko-rollout: the candidate neko-candidate did not survive a restart: stopped and started again, it exited with code 9 \(its last log line: groupadd: group 'neko' already exists\); its last log lines:$/m,
      );
      expect(r.stderr).toContain("    groupadd: group 'neko' already exists\n");
      expect(r.stderr).toContain(
        `neko-rollout: ${FIX}; the new image was not rolled out (NEKO_REQUIRE_RESTART=1); the running neko was not touched\n`,
      );
    });

    test("a restart policy in NEKO_RUN_ARGS (Docker would start the container again): refused the same way", async () => {
      need("updated");
      const runArgs = nekoEnv().NEKO_RUN_ARGS.replace("--restart=no", "--restart=unless-stopped");
      const r = await failedUpdateLeavesNekoAlone(refs.restartCrash, { env: { NEKO_RUN_ARGS: runArgs } });
      expect(r.stderr).toContain(
        `neko-rollout: ${FIX}; the new image was not rolled out (NEKO_RUN_ARGS has --restart=unless-stopped: Docker would start this container again, and it would fail); the running neko was not touched\n`,
      );
    });

    test("by default: rolled out with a loud warning, since no host ever starts neko's container twice", async () => {
      need("updated");
      const r = await rollout(refs.restartCrash);
      expect(show(r)).toMatch(/^exit 0 /);
      ids.restartCrash = r.stdout.split(" ")[2];
      expect(r.stdout).toMatch(resultLine("replaced", ids.restartCrash));
      expect(r.stderr).toMatch(
        /^neko-rollout: WARNING: the candidate neko-candidate did not survive a restart: stopped and started again, it exited with code 9 \(its last log line: groupadd: group 'neko' already exists\); its last log lines:\n(?: {4}.*\n)* {4}groupadd: group 'neko' already exists\n/m,
      );
      expect(r.stderr).toContain(`neko-rollout: WARNING: ${FIX}\n`);
      expect(r.stderr).toContain(
        "neko-rollout: WARNING: rolling it out anyway: neko's container is never started twice (--restart=no; a rollback creates it afresh, and so does neko-restore.sh at boot and after Docker restarts); NEKO_REQUIRE_RESTART=1 refuses such an image\n",
      );
      expect((await identity()).image).toBe(ids.restartCrash);
      expect(await get("/health")).toEqual({ status: 200, body: "true" });
      expect(await containerNames()).toEqual(["neko"]);
      // Only the spec that runs is kept.
      const spec = (await inspect("neko")).Config.Labels["neko-infra.spec"];
      expect(fs.readdirSync(specDir()).sort()).toEqual([`${spec}.args`, `${spec}.env`, "current", "deployed"].sort());
      handoff.restartCrash = "done";
    });

    test("a rollback to it: the previous neko is created afresh from its recorded spec (never started again) and answers", async () => {
      need("restartCrash");
      const before = await identity();
      // profileCrash passes /health on an empty profile, fails its restart check (a warning: the
      // profile it wrote refuses it, the generic fix), then fails for real on the used profile.
      const r = await rollout(refs.profileCrash);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(
        "neko-rollout: WARNING: the image cannot start the same container twice: its entrypoint fails in a container that ran before (see the log lines above); make its start idempotent\n",
      );
      expect(r.stderr).toMatch(/^neko-rollout: the new neko exited with code 3; its last log lines:$/m);
      expect(r.stderr).toContain(
        `neko-rollout: created neko afresh from the previous spec (image ${ids.restartCrash}; its old container is not started again)\n`,
      );
      expect(r.stderr).toContain(
        `neko-rollout: the update was rolled back: the new container failed after the swap; the previous image ${ids.restartCrash} runs again\n`,
      );
      const after = await identity();
      expect(after.image).toBe(ids.restartCrash);
      expect(after.id).not.toBe(before.id);
      expect(after.restarts).toBe(0);
      expect((await inspect("neko")).Config.Labels["neko-infra.spec"]).toBe(
        fs.readFileSync(path.join(specDir(), "current"), "utf8").trim(),
      );
      expect(await get("/health")).toEqual({ status: 200, body: "true" });
      expect(await containerNames()).toEqual(["neko"]);
    });

    test("a stopped neko: `docker start` exits 9 (a restart policy's, a boot's way); neko-restore.sh creates it afresh", async () => {
      need("restartCrash");
      const before = await identity();
      ok(await docker(["stop", "neko"]), "docker stop");
      // The old way: the same container again.
      ok(await docker(["start", "neko"]), "docker start");
      expect(await stopped("neko")).toEqual({ status: "exited", exitCode: 9, restarts: 0 });
      const logs = await docker(["logs", "--tail", "1", "neko"]);
      expect(logs.stdout + logs.stderr).toBe("groupadd: group 'neko' already exists\n");
      expect((await get("/health")).status).toBe(0);

      const r = await restore();
      expect(show(r)).toMatch(/^exit 0 /);
      expect(r.stderr).toContain(
        `neko-restore: neko is exited: creating it afresh from its recorded spec (image ${ids.restartCrash}; an old container is never started again)\n`,
      );
      expect(r.stderr).toMatch(
        new RegExp(
          `^neko-restore: neko restored: a new container of ${ids.restartCrash} answers /health on http://127\\.0\\.0\\.1:${ports.httpPort} after \\d+s$`,
          "m",
        ),
      );
      const after = await identity();
      expect(after.id).not.toBe(before.id);
      expect(after.image).toBe(ids.restartCrash);
      expect(await get("/health")).toEqual({ status: 200, body: "true" });
      // Published and mounted as the rollout did it.
      const c = await inspect("neko");
      expect(Object.keys(c.HostConfig.PortBindings).length).toBe(4);
      expect(c.Mounts.map((m: any) => m.Source)).toEqual([profile]);
      expect(c.HostConfig.RestartPolicy.Name).toBe("no");

      const again = await restore();
      expect(show(again)).toMatch(/^exit 0 /);
      expect(again.stderr).toBe("neko-restore: neko runs: nothing to restore\n");
      expect(await identity()).toEqual(after);
      // The rollout knows its own spec: nothing to do.
      const u = await rollout(refs.restartCrash);
      expect(u.stdout).toMatch(resultLine("unchanged", ids.restartCrash));
      expect(await identity()).toEqual(after);
    });
  });

  test("pulumi destroy's remove command takes neko and leftovers, keeps the profile; a failed first deploy leaves nothing running", async () => {
    need("updated");
    ok(await docker(["create", "--name", "neko-candidate", ids.v1]), "docker create");
    // The specs the rollouts recorded hold neko's passwords: they go too (the state directory
    // as the rollout chose it, NEKO_STATE_DIR here).
    expect(fs.existsSync(specDir())).toBe(true);
    const remove = () => run("/bin/sh", ["-c", removeCommand("rollout-test")], { env: { ...hostEnv(), NEKO_STATE_DIR: stateDir } });
    const r = await remove();
    expect(show(r)).toMatch(/^exit 0 /);
    expect(await containerNames()).toEqual([]);
    expect(fs.existsSync(specDir())).toBe(false);
    expect(fs.readFileSync(path.join(profile, "keep.txt"), "utf8")).toBe("bookmarks\n");
    expect((await remove()).code).toBe(0);
    // A neko that was taken off the host never comes back from its recorded spec.
    const gone = await restore();
    expect(show(gone)).toMatch(/^exit 0 /);
    expect(gone.stderr).toBe(
      `neko-restore: no spec recorded in ${specDir()} (never deployed here, or taken off by pulumi destroy): nothing to restore\n`,
    );
    expect(await containerNames()).toEqual([]);

    // The profile was used, so this image passes as a candidate and fails for real: nothing to roll back to.
    const f = await rollout(refs.profileCrash);
    expect(f.code).toBe(1);
    expect(f.stderr).toMatch(/^neko-rollout: the new neko exited with code 3; its last log lines:$/m);
    expect(f.stderr).toMatch(/^neko-rollout: first deploy failed: the failed neko was removed$/m);
    expect(await containerNames()).toEqual([]);
  });

  test("a docker volume as the profile: created, mounted, kept across an update, its stale locks cleared", async () => {
    need("updated");
    const volume = "neko-profile-test";
    const env = { NEKO_PROFILE: volume };
    const first = await rollout(refs.v1, { env });
    expect(show(first)).toMatch(/^exit 0 /);
    expect(first.stdout).toMatch(resultLine("started", ids.v1));
    const c = await inspect("neko");
    expect(c.Mounts.map((m: any) => ({ type: m.Type, name: m.Name, destination: m.Destination }))).toEqual([
      { type: "volume", name: volume, destination: PROFILE_DIR },
    ]);
    // Into the volume, through a container of the image: a file to keep and a stale lock.
    ok(
      await docker([
        "run",
        "--rm",
        "-v",
        `${volume}:/p`,
        "--entrypoint",
        "sh",
        ids.v1,
        "-c",
        "echo kept >/p/keep.txt; ln -s otherhost-1 /p/SingletonLock",
      ]),
      "docker run (write into the volume)",
    );
    const r = await rollout(refs.v2, { env });
    expect(show(r)).toMatch(/^exit 0 /);
    expect(r.stdout).toMatch(resultLine("replaced", ids.v2));
    const seen = ok(
      await docker(["run", "--rm", "-v", `${volume}:/p`, "--entrypoint", "sh", ids.v2, "-c", "cat /p/keep.txt; ls -a /p"]),
      "docker run (read the volume)",
    );
    expect(seen.split("\n")).toEqual(["kept", ".", "..", "Last Version", "keep.txt", ""]);
    ok(await docker(["rm", "--force", "neko"]), "docker rm");
  });

  test("no secret in any run's output (failures included), on any command line or in a readable file", () => {
    expect(outputs.length).toBeGreaterThan(15);
    expect(psSamples).toBeGreaterThan(50);
    for (const r of outputs)
      for (const s of SECRETS()) expect({ secret: s, found: (r.stdout + r.stderr).includes(s) }).toEqual({ secret: s, found: false });
    expect(leaks).toEqual([]);
  });
});

function isSymlink(p: string): boolean {
  try {
    return fs.lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
}
