/**
 * Builder lifecycle, for real: the binary cache (a builder torn down and brought back substitutes
 * an unchanged image instead of rebuilding it) and the idle check (busy while a Nix build or an
 * SSH session runs, stops the machine once idle).
 */
import { spawn } from "child_process";
import * as crypto from "crypto";
import * as fs from "fs";
import * as path from "path";
import { nixSigningKeys } from "../../lib/nixCache";
import { scriptCommand } from "../../lib/shell";
import {
  BuilderEnv,
  fixtureCopy,
  FIXTURE,
  ok,
  onBuilder,
  requireTools,
  run,
  runLocal,
  runRemote,
  Services,
  show,
  uniqueMarker,
} from "./support";

jest.setTimeout(300_000);
requireTools(["nix", "ssh", "/usr/sbin/sshd", "ip", "unshare"]);

const services = new Services();
// Under /var/tmp: shared with the builders' mount namespaces (they get private /tmp and /nix).
const cacheDir = fs.mkdtempSync("/var/tmp/neko-infra-cache-");
const cacheUri = `file://${cacheDir}`;
const keys = nixSigningKeys(
  "neko-infra-test-1",
  crypto.generateKeyPairSync("ed25519").privateKey.export({ format: "pem", type: "pkcs8" }).toString(),
);
const cacheEnv = { NIX_CACHE: cacheUri, NIX_CACHE_PUBLIC_KEY: keys.publicKey, NIX_CACHE_SECRET_KEY: keys.secretKey };

afterAll(async () => {
  try {
    await services.stopAll();
  } finally {
    fs.rmSync(cacheDir, { recursive: true, force: true });
  }
});

/** Ships a flake to a builder and returns its source store path there, as NixImage does. */
async function ship(b: BuilderEnv, dir: string): Promise<string> {
  const sc = scriptCommand({
    script: "ship-flake.sh",
    args: [dir, `${b.BUILDER_USER}@${b.BUILDER_ADDR}`, b.BUILDER_PORT],
    env: { SSH_PRIVATE_KEY: fs.readFileSync(b.BUILDER_KEY, "utf8"), SSH_HOST_KEY: b.BUILDER_HOST_KEY },
    budgetSeconds: 1800,
  });
  return ok(await runLocal(sc), "ship-flake.sh").trim();
}

/** nix-build.sh on a builder as NixImage runs it: bounded by `timeout` there. */
const build = (src: string, env: Record<string, string>) =>
  scriptCommand({ script: "nix-build.sh", args: [`path:${src}`, "image"], env, budgetSeconds: 7200 }, true);

/** A command in its own process group (the group's id is its PID): stopped by that PID, nothing else. */
function startGroup(file: string, args: string[], env: Record<string, string>) {
  const child = spawn(file, args, { env: { ...process.env, ...env }, stdio: "ignore", detached: true });
  const done = new Promise<number | null>((res) => child.on("close", res));
  return {
    pid: child.pid!,
    done,
    async stop(): Promise<void> {
      const signal = (sig: NodeJS.Signals) => {
        try {
          process.kill(-child.pid!, sig);
        } catch {
          /* already gone */
        }
      };
      signal("SIGTERM");
      const timer = setTimeout(() => signal("SIGKILL"), 10_000);
      await done;
      clearTimeout(timer);
    },
  };
}

/** PIDs of processes whose command line ends with `: <tag>` (the fixture's slow build of this run). */
async function slowBuilders(tag: string): Promise<number[]> {
  const r = await run("pgrep", ["-f", `: ${tag}$`]);
  return r.stdout.split("\n").filter(Boolean).map(Number);
}

/** The sandboxed builder of this run's slow build, should it outlive its Nix: stopped by its PID. */
async function stopSlowBuilders(tag: string): Promise<void> {
  for (const pid of await slowBuilders(tag)) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      /* already gone */
    }
  }
}

async function waitForSlowBuilder(tag: string): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (!(await slowBuilders(tag)).length && Date.now() < deadline) await new Promise((res) => setTimeout(res, 200));
}

describe("binary cache", () => {
  let flake: string;
  let built = "";

  beforeAll(() => {
    flake = fixtureCopy(services.dir, uniqueMarker("cache"));
  });

  test("a build signs its output and uploads it to the cache", async () => {
    const a = await services.builder("builder-a");
    const src = await ship(a, flake);
    const r = await runRemote(a, build(src, cacheEnv));
    built = ok(r, "nix-build.sh with a cache").trim();
    expect(r.stderr).not.toContain("warning");
    // The signing key travels on stdin into a 0600 file: never on the command line or stderr.
    expect(build(src, cacheEnv).command).not.toContain(keys.secretKey);
    expect(r.stderr).not.toContain(keys.secretKey);
    const narinfo = path.join(cacheDir, `${path.basename(built).slice(0, 32)}.narinfo`);
    expect(fs.existsSync(narinfo)).toBe(true);
    expect(fs.readFileSync(narinfo, "utf8")).toMatch(/^Sig: neko-infra-test-1:[A-Za-z0-9+/]+=*$/m);
    await services.stop("builder-a"); // teardown: its store is gone with it
  });

  test("a fresh builder fetches the unchanged image from the cache instead of building it", async () => {
    expect(built).not.toBe("");
    const b = await services.builder("builder-b");
    const src = await ship(b, flake);
    const dry = ok(
      await onBuilder(
        b,
        `nix build --dry-run --no-link 'path:${src}#image' --option extra-substituters '${cacheUri}' --option extra-trusted-public-keys '${keys.publicKey}' 2>&1`,
      ),
      "dry run",
    );
    expect(dry).toMatch(/will be fetched/);
    expect(dry).not.toMatch(/will be built/);
    const r = await runRemote(b, build(src, cacheEnv));
    expect(ok(r, "nix-build.sh on the fresh builder").trim()).toBe(built);
    // the output came from the cache: it carries the cache's signature
    const info = ok(await onBuilder(b, `nix path-info --json ${built}`), "path-info");
    expect(JSON.parse(info)[0].signatures).toEqual([expect.stringMatching(/^neko-infra-test-1:/)]);
  });

  test("paths signed by another key are not trusted: the image is built, not fetched", async () => {
    const c = await services.builder("builder-c");
    const src = await ship(c, flake);
    const other = nixSigningKeys(
      "someone-else-1",
      crypto.generateKeyPairSync("ed25519").privateKey.export({ format: "pem", type: "pkcs8" }).toString(),
    );
    const env = { NIX_CACHE: cacheUri, NIX_CACHE_PUBLIC_KEY: other.publicKey };
    const r = await runRemote(c, build(src, env));
    expect(ok(r, "nix-build.sh trusting another key").trim()).toBe(built);
    const info = ok(await onBuilder(c, `nix path-info --json ${built}`), "path-info");
    expect(JSON.parse(info)[0].signatures ?? []).toEqual([]);
  });

  test("a cache that cannot be written warns and still returns the build", async () => {
    const c = await services.builder("builder-d");
    const src = await ship(c, fixtureCopy(services.dir, uniqueMarker("readonly")));
    const env = { ...cacheEnv, NIX_CACHE: "file:///proc/neko-infra-no-such-cache" };
    const r = await runRemote(c, build(src, env));
    expect(ok(r, "nix-build.sh with a broken cache").trim()).toMatch(/^\/nix\/store\/[0-9a-z]{32}-neko-fixture-image\.tar$/);
    expect(r.stderr).toContain("nix-build: warning: uploading");
    expect(r.stderr).not.toContain(keys.secretKey);
  });
});

describe("idle check", () => {
  const stamp = () => path.join(services.dir, `stamp-${Math.random().toString(36).slice(2)}`);
  const idle = (stampFile: string, marker: string, minutes = "0") =>
    runLocal(scriptCommand({ script: "builder-idle-stop.sh", args: [minutes] }), {
      IDLE_STAMP: stampFile,
      IDLE_SHUTDOWN: `touch ${marker}`,
    });

  test("first run counts as busy; once idle past the limit it stops the machine", async () => {
    const s = stamp();
    const marker = `${s}.stopped`;
    let r = await idle(s, marker);
    expect(r.stdout).toBe("builder-idle-stop: busy (first run after boot)\n");
    expect(fs.existsSync(marker)).toBe(false);
    r = await idle(s, marker, "5");
    expect(r.stdout).toMatch(/idle for \d+s of 300s/);
    expect(fs.existsSync(marker)).toBe(false);
    r = await idle(s, marker);
    expect(r.stdout).toMatch(/idle for \d+s \(limit 0 min\): stopping/);
    expect(fs.existsSync(marker)).toBe(true);
  });

  test("the first run after a boot counts as busy: a stamp from before the boot does not stop a woken builder", async () => {
    const s = stamp();
    const marker = `${s}.stopped`;
    const btime = Number(/^btime (\d+)$/m.exec(fs.readFileSync("/proc/stat", "utf8"))![1]);
    fs.writeFileSync(s, "");
    fs.utimesSync(s, btime - 3600, btime - 3600); // it stopped itself an hour before this boot
    let r = await idle(s, marker);
    expect(r.stdout).toBe("builder-idle-stop: busy (first run after boot)\n");
    expect(Date.now() / 1000 - fs.statSync(s).mtimeMs / 1000).toBeLessThan(5); // renewed
    expect(fs.existsSync(marker)).toBe(false);
    // a stamp from after the boot is an ordinary one: idle past the limit stops
    fs.utimesSync(s, btime + 1, btime + 1);
    r = await idle(s, marker);
    expect(r.stdout).toMatch(/^builder-idle-stop: idle for \d+s \(limit 0 min\): stopping\n$/);
    expect(fs.existsSync(marker)).toBe(true);
  });

  test("a Nix build in progress keeps it up", async () => {
    const s = stamp();
    const marker = `${s}.stopped`;
    await idle(s, marker); // first run
    const tag = uniqueMarker("slow").replace(/[^a-z0-9-]/g, "");
    const slow = startGroup("nix", ["build", "--impure", "--no-link", `path:${FIXTURE}#slow`], { SLOW_TAG: tag });
    try {
      // wait until the build's sandboxed sleep runs
      await waitForSlowBuilder(tag);
      expect(await slowBuilders(tag)).not.toEqual([]);
      const r = await idle(s, marker);
      expect(r.stdout).toContain("busy (nix/skopeo running)");
      expect(fs.existsSync(marker)).toBe(false);
    } finally {
      // SIGTERM to that nix client's group; Nix ends the build
      await slow.stop();
      await stopSlowBuilders(tag);
      expect(await slowBuilders(tag)).toEqual([]);
    }
  });

  test("an idle nix-daemon does not keep it up; a build through the daemon does", async () => {
    const daemon = startGroup("nix-daemon", [], {});
    const tag = uniqueMarker("daemon").replace(/[^a-z0-9-]/g, "");
    let slow: ReturnType<typeof startGroup> | undefined;
    try {
      const socket = "/nix/var/nix/daemon-socket/socket";
      const deadline = Date.now() + 10_000;
      while ((await run("nix", ["store", "ping", "--store", "daemon"], { timeoutMs: 5_000 })).code !== 0 && Date.now() < deadline) {
        await new Promise((res) => setTimeout(res, 200));
      }
      expect(fs.existsSync(socket)).toBe(true);
      ok(await run("nix", ["store", "ping", "--store", "daemon"], { timeoutMs: 5_000 }), "nix store ping (daemon)");
      const s1 = stamp();
      await idle(s1, `${s1}.stopped`); // first run
      expect((await idle(s1, `${s1}.stopped`)).stdout).toContain("stopping");

      const s2 = stamp();
      await idle(s2, `${s2}.stopped`);
      slow = startGroup("nix", ["build", "--impure", "--no-link", `path:${FIXTURE}#slow`], { SLOW_TAG: tag, NIX_REMOTE: "daemon" });
      await waitForSlowBuilder(tag);
      expect(await slowBuilders(tag)).not.toEqual([]);
      const r = await idle(s2, `${s2}.stopped`);
      expect(r.stdout).toContain("busy (nix/skopeo running)");
      expect(fs.existsSync(`${s2}.stopped`)).toBe(false);
    } finally {
      if (slow) await slow.stop();
      await daemon.stop(); // the daemon and its workers: the group this test started
      await stopSlowBuilders(tag);
    }
    expect(await slowBuilders(tag)).toEqual([]);
  });

  test("an open SSH session keeps it up", async () => {
    const b = await services.builder("builder-idle");
    const s = stamp();
    const marker = `${s}.stopped`;
    await idle(s, marker);
    const session = run("ssh", ["-F", b.BUILDER_SSH_CONFIG, "builder", "sleep 8"], { timeoutMs: 20_000 });
    try {
      const deadline = Date.now() + 5_000;
      while (!/sshd: \S+@/.test((await run("ps", ["-eo", "args"])).stdout) && Date.now() < deadline)
        await new Promise((res) => setTimeout(res, 200));
      const r = await idle(s, marker);
      expect(r.stdout).toContain("busy (an SSH session is open)");
      expect(fs.existsSync(marker)).toBe(false);
    } finally {
      await session;
    }
    const r = await session;
    if (r.code !== 0) throw new Error(`ssh session: ${show(r)}`);
  });
});
