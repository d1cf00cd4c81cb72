/**
 * A host whose image cannot start the same container twice comes back healthy after an idle stop
 * and a wake, and after a Docker daemon restart: neko runs with --restart=no, and
 * scripts/neko-restore.sh creates it afresh from the spec scripts/neko-rollout.sh recorded.
 *
 * Real: Nix builds the fixture images (`layered-restart-crash` behaves as the Nix-built neko image:
 * fine on a container's first start, exit 9 with "groupadd: group 'neko' already exists" on any
 * later start of the same container), a real dockerd (tests/harness/dockerd.sh) with its data root
 * kept across its stop and start, the rollout as the host's Command runs it, the restore as its
 * systemd unit runs it (plain `bash`, NEKO_STATE_DIR, no step preamble; once, and as the `--watch`
 * service), `docker events`, host-bootstrap.sh writing its unit and script.
 * Stand-ins: the host powering off and on is dockerd stopped with SIGTERM (as systemd stops it at
 * shutdown: it stops the containers, which stay on disk) and started again on the same data root;
 * systemd does not run here, so its unit's command runs by hand, and host-bootstrap.sh meets a stub
 * systemctl (and a stub docker) in a private mount namespace whose /run has /run/systemd/system;
 * the unit it writes is checked with the real `systemd-analyze verify`.
 */
import { ChildProcess, spawn } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { removeCommand } from "../../lib/neko";
import { hostSetup, IMDS_GUARD_UIDS } from "../../lib/setup";
import { restoreScript, scriptCommand, scriptInput } from "../../lib/shell";
import {
  DOCKERD_TOOLS,
  DockerEnv,
  FIXTURE,
  freeNekoPorts,
  HARNESS,
  ok,
  requireTools,
  run,
  runLocal,
  SCRIPTS,
  Services,
  show,
} from "./support";

jest.setTimeout(120_000);

const services = new Services();
let dk: DockerEnv;
let ports: { httpPort: number; epr: string };
let stateDir: string;
let profile: string;
const ids: Record<string, string> = {};
const localOutputs: string[] = [];
const sleep = (ms: number) => new Promise((res) => setTimeout(res, ms));

const hostEnv = (): Record<string, string> => ({
  DOCKER_HOST: dk.DOCKER_HOST,
  DOCKER_CONFIG: dk.DOCKER_CONFIG,
  PATH: [path.dirname(dk.DOCKER_BIN), process.env.PATH].join(":"),
});
const docker = (args: string[]) => run(dk.DOCKER_BIN, args, { env: hostEnv(), timeoutMs: 60_000 });

beforeAll(async () => {
  requireTools(["nix", "/bin/busybox", "curl", "bash", "unshare", "/usr/sbin/iptables", ...DOCKERD_TOOLS]);
  dk = await services.dockerd("docker", "");
  ports = await freeNekoPorts("127.0.0.1", 2);
  stateDir = path.join(services.dir, "state");
  profile = path.join(services.dir, "profile");
  for (const [key, attr] of [
    ["good", "layered"],
    ["restartCrash", "layered-restart-crash"],
  ]) {
    const built = ok(
      await run("nix", ["build", "--json", "--no-link", `path:${FIXTURE}#${attr}`], { timeoutMs: 300_000 }),
      `nix build ${attr}`,
    );
    const tarball: string = JSON.parse(built)[0].outputs.out;
    localOutputs.push(tarball);
    const loaded = /^Loaded image: (\S+)$/m.exec(ok(await docker(["load", "-i", tarball]), `docker load ${attr}`))![1];
    ids[key] = ok(await docker(["image", "inspect", "--format", "{{.Id}}", loaded]), "docker image inspect").trim();
  }
}, 600_000);

afterAll(async () => {
  for (const w of watchers) stopWatcher(w);
  try {
    await services.stopAll();
  } finally {
    for (const p of localOutputs) await run("nix", ["store", "delete", p], { timeoutMs: 30_000 }).catch(() => undefined);
  }
}, 180_000);

/** neko-rollout.sh IMAGE_REF as the host's Command runs it, with the program's run args. */
async function rollout(ref: string) {
  const http = ports.httpPort;
  const sc = scriptCommand(
    {
      script: "neko-rollout.sh",
      args: [ref],
      env: {
        NEKO_NAME: "neko",
        NEKO_HTTP_PORT: String(http),
        NEKO_PUBLISH: `127.0.0.1:${http}:${http}/tcp\n127.0.0.1:${ports.epr}:${ports.epr}/udp`,
        NEKO_RUN_ARGS: "--shm-size=64m\n--hostname=neko\n--restart=no",
        // The API token: the candidate check takes a screenshot with it.
        NEKO_ENV: `NEKO_SERVER_BIND=:${http}\nNEKO_MEMBER_MULTIUSER_ADMIN_PASSWORD=admin-Pa55-restart\nNEKO_SESSION_API_TOKEN=api-Tok3n-restart`,
        NEKO_HEALTH_SECONDS: "30",
        NEKO_PROFILE: profile,
        NEKO_PROFILE_DIR: "/home/neko/.config/chromium",
        NEKO_STATE_DIR: stateDir,
      },
    },
    false,
  );
  return runLocal(sc, hostEnv(), 110_000);
}

/** neko-restore.sh, as neko-restore.service runs it (once). */
const restoreOnce = () =>
  run("bash", [path.join(SCRIPTS, "neko-restore.sh")], { env: { ...hostEnv(), NEKO_STATE_DIR: stateDir }, timeoutMs: 90_000 });

async function health(): Promise<number> {
  try {
    return (await fetch(`http://127.0.0.1:${ports.httpPort}/health`, { signal: AbortSignal.timeout(2000) })).status;
  } catch {
    return 0;
  }
}

async function inspect(name: string): Promise<any> {
  return JSON.parse(ok(await docker(["container", "inspect", name]), `docker inspect ${name}`))[0];
}

/** The host powered off and on: dockerd stopped with SIGTERM (it stops the containers), then started on the same data root. */
async function powerCycle(): Promise<{ down: number; up: number }> {
  const state = path.join(services.dir, "docker");
  const pid = Number(fs.readFileSync(path.join(state, "dockerd.pid"), "utf8").trim());
  const t0 = Date.now();
  process.kill(pid, "SIGTERM");
  const alive = () => {
    try {
      return !/^\d+ \(.*\) Z/.test(fs.readFileSync(`/proc/${pid}/stat`, "utf8"));
    } catch {
      return false;
    }
  };
  while (alive() && Date.now() - t0 < 60_000) await sleep(100);
  if (alive()) throw new Error(`dockerd (pid ${pid}) did not stop within 60 s of SIGTERM`);
  const down = (Date.now() - t0) / 1000;
  const t1 = Date.now();
  const r = await run(path.join(HARNESS, "dockerd.sh"), ["start", state, ""], { timeoutMs: 90_000 });
  if (r.code !== 0) throw new Error(`dockerd.sh start (the boot) failed: ${show(r)}`);
  return { down, up: (Date.now() - t1) / 1000 };
}

interface Watcher {
  child: ChildProcess;
  lines: string[];
}
const watchers: Watcher[] = [];

/** `neko-restore.sh --watch`, as neko-restore.service runs it; its lines collected. */
function startWatcher(): Watcher {
  const child = spawn("bash", [path.join(SCRIPTS, "neko-restore.sh"), "--watch"], {
    env: { ...process.env, ...hostEnv(), NEKO_STATE_DIR: stateDir },
    stdio: ["ignore", "ignore", "pipe"],
    detached: true,
  });
  const w: Watcher = { child, lines: [] };
  let rest = "";
  child.stderr!.setEncoding("utf8").on("data", (d: string) => {
    const parts = (rest + d).split("\n");
    rest = parts.pop()!;
    w.lines.push(...parts);
  });
  watchers.push(w);
  return w;
}

/** Stops the watcher and its `docker events` (its own process group), by its pid. */
function stopWatcher(w: Watcher): void {
  if (w.child.exitCode !== null || w.child.signalCode !== null) return;
  try {
    process.kill(-w.child.pid!, "SIGTERM");
  } catch {
    /* gone */
  }
}

async function until(what: string, cond: () => Promise<boolean> | boolean, ms: number): Promise<number> {
  const t0 = Date.now();
  while (!(await cond())) {
    if (Date.now() - t0 > ms) throw new Error(`timed out after ${ms / 1000}s waiting for ${what}`);
    await sleep(200);
  }
  return (Date.now() - t0) / 1000;
}

describe("an image that cannot start the same container twice, through an idle stop, a wake and Docker restarts", () => {
  test("deployed with a warning: --restart=no, its spec recorded", async () => {
    const r = await rollout(ids.restartCrash);
    expect(show(r)).toMatch(/^exit 0 /);
    expect(r.stdout).toMatch(new RegExp(`^neko started ${ids.restartCrash} http://127\\.0\\.0\\.1:${ports.httpPort}\\n$`));
    expect(r.stderr).toContain("neko-rollout: WARNING: the image cannot start the same container twice (its entrypoint is not idempotent)");
    expect((await inspect("neko")).HostConfig.RestartPolicy.Name).toBe("no");
    expect(fs.existsSync(path.join(stateDir, "neko-specs", "current"))).toBe(true);
    expect(await health()).toBe(200);
    // What the old run args did: the same image under a restart policy, beside it (no ports).
    ok(await docker(["run", "--detach", "--name", "old-way", "--restart=unless-stopped", ids.restartCrash]), "docker run old-way");
  });

  test("idle stop and wake (dockerd stopped and started): `docker start` and a restart policy crash on exit 9; the restore brings neko back", async () => {
    const before = await inspect("neko");
    const cycle = await powerCycle();
    console.log(`power cycle: dockerd down in ${cycle.down.toFixed(1)}s, up in ${cycle.up.toFixed(1)}s`);

    // The old way 1: a restart policy. dockerd starts old-way at boot; it exits 9, again and again.
    // (Judged on one inspection: between two, the policy may have started it again, exit code 0.)
    let looping: Awaited<ReturnType<typeof inspect>> | undefined;
    try {
      await until(
        "old-way to crash-loop under its policy",
        async () => {
          looping = await inspect("old-way");
          return looping.RestartCount >= 2 && looping.State.Status === "restarting";
        },
        30_000,
      );
      expect(looping!.State.ExitCode).toBe(9);
      const oldLogs = await docker(["logs", "--tail", "1", "old-way"]);
      expect(oldLogs.stdout + oldLogs.stderr).toBe("groupadd: group 'neko' already exists\n");
    } finally {
      ok(await docker(["rm", "--force", "old-way"]), "docker rm old-way");
    }

    // neko (--restart=no) stayed down through the boot; the old way 2, `docker start`: exit 9.
    expect((await inspect("neko")).State.Status).toBe("exited");
    expect(await health()).toBe(0);
    ok(await docker(["start", "neko"]), "docker start neko");
    await until("the started neko to exit", async () => !(await inspect("neko")).State.Running, 20_000);
    expect((await inspect("neko")).State.ExitCode).toBe(9);

    // The boot's restore, as the unit runs it.
    const r = await restoreOnce();
    expect(show(r)).toMatch(/^exit 0 /);
    expect(r.stderr).toContain(
      `neko-restore: neko is exited: creating it afresh from its recorded spec (image ${ids.restartCrash}; an old container is never started again)\n`,
    );
    expect(r.stderr).toMatch(
      /^neko-restore: neko restored: a new container of sha256:[0-9a-f]{64} answers \/health on http:\/\/127\.0\.0\.1:\d+ after \d+s$/m,
    );
    console.log(`restore after the wake: ${r.seconds.toFixed(2)}s`);
    expect(await health()).toBe(200);
    const after = await inspect("neko");
    expect(after.Id).not.toBe(before.Id);
    expect(after.Config.Labels["neko-infra.spec"]).toBe(before.Config.Labels["neko-infra.spec"]);
    expect(after.Mounts.map((m: any) => m.Source)).toEqual([profile]);
    // The next `up` finds what it deployed.
    const u = await rollout(ids.restartCrash);
    expect(u.stdout).toMatch(/^neko unchanged /);
  });

  test("the --watch service: at its start nothing to do; after a Docker restart it creates neko afresh by itself", async () => {
    const w = startWatcher();
    await until("the watcher's first restore", () => w.lines.includes("neko-restore: neko runs: nothing to restore"), 30_000);
    const before = await inspect("neko");
    const t0 = Date.now();
    await powerCycle();
    const took = await until(
      "neko to answer /health again",
      async () => (await health()) === 200 && (await inspect("neko")).Id !== before.Id,
      60_000,
    );
    console.log(
      `Docker restart to a healthy neko, by the watcher: ${((Date.now() - t0) / 1000).toFixed(1)}s (${took.toFixed(1)}s after dockerd was up again)`,
    );
    expect(w.lines).toEqual(
      expect.arrayContaining([
        "neko-restore: the Docker engine went away",
        `neko-restore: neko is exited: creating it afresh from its recorded spec (image ${ids.restartCrash}; an old container is never started again)`,
      ]),
    );
    // Its report follows its own /health probe, which may come a moment after this test's.
    await until("the watcher's report", () => w.lines.some((l) => /^neko-restore: (neko restored: |the new neko )/.test(l)), 10_000);
    expect(w.lines.filter((l) => /^neko-restore: (neko restored: |the new neko )/.test(l))).toEqual([
      expect.stringMatching(/^neko-restore: neko restored: a new container of \S+ answers \/health on http:\/\/\S+ after \d+s$/),
    ]);
    // A rollout while the watcher runs: they share the lock; an update goes through.
    const r = await rollout(ids.good);
    expect(show(r)).toMatch(/^exit 0 /);
    expect(r.stdout).toMatch(/^neko replaced /);
    expect(r.stderr).toContain("neko-rollout: the candidate survives a restart (stopped, started, /health again)\n");
    stopWatcher(w);
    await until("the watcher to stop", () => w.child.exitCode !== null || w.child.signalCode !== null, 10_000);
    // No stray `docker events` of it left behind.
    const ps = ok(await run("ps", ["-eo", "pgid=,args="]), "ps");
    expect(ps.split("\n").filter((l) => l.trim().startsWith(`${w.child.pid} `))).toEqual([]);
  });

  test("a lock a run left when the power went (its pid now another live process): taken over after the boot", async () => {
    ok(await docker(["stop", "neko"]), "docker stop");
    const lock = path.join(stateDir, "neko-rollout-neko.lock");
    fs.mkdirSync(lock);
    fs.writeFileSync(path.join(lock, "pid"), "1\n"); // PID 1 runs, whatever it is
    fs.writeFileSync(path.join(lock, "boot"), "00000000-0000-0000-0000-000000000000\n");
    const r = await restoreOnce();
    expect(show(r)).toMatch(/^exit 0 /);
    expect(r.stderr).not.toContain("waiting");
    expect(r.seconds).toBeLessThan(15);
    expect(await health()).toBe(200);
    expect(fs.existsSync(lock)).toBe(false);
  });

  test("a neko that `pulumi destroy` removed does not come back at the next boot", async () => {
    ok(await run("/bin/sh", ["-c", removeCommand("restart-test")], { env: { ...hostEnv(), NEKO_STATE_DIR: stateDir } }), "remove command");
    await powerCycle();
    const r = await restoreOnce();
    expect(show(r)).toMatch(/^exit 0 /);
    expect(r.stderr).toBe(
      `neko-restore: no spec recorded in ${stateDir}/neko-specs (never deployed here, or taken off by pulumi destroy): nothing to restore\n`,
    );
    expect(ok(await docker(["ps", "-aq"]), "docker ps")).toBe("");
  });
});

describe("host-bootstrap.sh installs the restore (stub systemctl, a /run/systemd/system of its own)", () => {
  let dir: string;
  const runBootstrap = async (withSystemd: boolean, extra: { readyTag?: boolean; imdsGuard?: boolean } = {}) => {
    // /run as tmpfs and /etc/systemd/system as a directory of the test, in this run's mount
    // namespace only; a network namespace of its own (the metadata guard's iptables rules), whose
    // rules are written to $d/rules before it goes.
    const inner =
      'set -e; d=$1; shift; mount -t tmpfs tmpfs /run; if [ "$SYSTEMD" = 1 ]; then mkdir -p /run/systemd/system; fi; ' +
      'mount --bind "$d/units" /etc/systemd/system; bash -s -- "$@"; iptables -S >"$d/rules" 2>&1 || true';
    const setup = hostSetup({ sshUser: "root", gpu: false, idleMinutes: 0, ...extra });
    return run("unshare", ["-m", "-n", "--propagation", "private", "bash", "-c", inner, "bootstrap", dir, ...setup.args], {
      input: scriptInput({ script: setup.script, env: setup.env, budgetSeconds: 60 }),
      env: {
        PATH: `${path.join(dir, "bin")}:/usr/sbin:/usr/bin:/sbin:/bin`,
        SYSTEMD: withSystemd ? "1" : "0",
        NEKO_INFRA_DIR: path.join(dir, "infra"),
        NEKO_INFRA_MARKER: path.join(dir, "infra", "bootstrap.status"),
        CALLS: path.join(dir, "calls"),
      },
      timeoutMs: 30_000,
    });
  };
  const calls = () => fs.readFileSync(path.join(dir, "calls"), "utf8").trim().split("\n").filter(Boolean);

  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(services.dir, "bootstrap-"));
    for (const d of ["bin", "units", "infra"]) fs.mkdirSync(path.join(dir, d));
    fs.writeFileSync(path.join(dir, "calls"), "");
    // Docker answers (an existing Docker host); systemctl records what it is asked.
    fs.writeFileSync(path.join(dir, "bin", "docker"), "#!/bin/sh\necho 24.0.5\n", { mode: 0o755 });
    fs.writeFileSync(path.join(dir, "bin", "systemctl"), '#!/bin/sh\necho "systemctl $*" >>"$CALLS"\n', { mode: 0o755 });
  });

  test("with systemd: the script, a unit after docker.service that watches it, enabled and (re)started; a second run changes nothing", async () => {
    const r = await runBootstrap(true);
    expect(show(r)).toMatch(/^exit 0 /);
    expect(r.stderr).toContain("host-bootstrap: installing neko's restore at boot and after Docker restarts\n");
    const script = path.join(dir, "infra", "neko-restore.sh");
    expect(fs.readFileSync(script, "utf8").trimEnd()).toBe(restoreScript().trimEnd());
    expect(fs.statSync(script).mode & 0o777).toBe(0o755);
    const unit = path.join(dir, "units", "neko-restore.service");
    expect(fs.readFileSync(unit, "utf8")).toBe(
      [
        "[Unit]",
        "Description=Create neko afresh from its last deployed spec at boot and after Docker restarts",
        "After=docker.service",
        "Wants=docker.service",
        "",
        "[Service]",
        "User=root",
        `Environment=NEKO_STATE_DIR=${dir}/infra/host`,
        `ExecStart=/usr/bin/bash ${script} --watch`,
        "Restart=always",
        "RestartSec=5",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
      ].join("\n"),
    );
    expect(calls()).toEqual(["systemctl daemon-reload", "systemctl enable neko-restore.service", "systemctl restart neko-restore.service"]);
    const verify = await run("systemd-analyze", ["verify", unit], { timeoutMs: 30_000 });
    expect(show(verify)).toMatch(/^exit 0 /);
    expect(verify.stdout + verify.stderr).toBe("");

    fs.writeFileSync(path.join(dir, "calls"), "");
    const again = await runBootstrap(true);
    expect(show(again)).toMatch(/^exit 0 /);
    expect(calls()).toEqual(["systemctl enable neko-restore.service", "systemctl start neko-restore.service"]);
  });

  test("EC2 with a wake link: also neko-ready.service, a oneshot after the restore at every boot, started without waiting", async () => {
    fs.writeFileSync(path.join(dir, "calls"), "");
    const r = await runBootstrap(true, { readyTag: true });
    expect(show(r)).toMatch(/^exit 0 /);
    expect(r.stderr).toContain("host-bootstrap: installing the ready tag at boot (for the wake link)\n");
    const script = path.join(dir, "infra", "host-ready.sh");
    expect(fs.readFileSync(script, "utf8").trimEnd()).toBe(fs.readFileSync(path.join(SCRIPTS, "host-ready.sh"), "utf8").trimEnd());
    const unit = path.join(dir, "units", "neko-ready.service");
    expect(fs.readFileSync(unit, "utf8")).toBe(
      [
        "[Unit]",
        "Description=Tag this instance neko-infra:ready once neko answers after a boot",
        "After=docker.service neko-restore.service network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=oneshot",
        `Environment=NEKO_STATE_DIR=${dir}/infra/host`,
        `ExecStart=/usr/bin/bash ${script}`,
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
      ].join("\n"),
    );
    expect(calls()).toEqual([
      "systemctl enable neko-restore.service",
      "systemctl start neko-restore.service",
      "systemctl daemon-reload",
      "systemctl enable neko-ready.service",
      "systemctl start --no-block neko-ready.service",
    ]);
    const verify = await run("systemd-analyze", ["verify", unit], { timeoutMs: 30_000 });
    expect(verify.stdout + verify.stderr).toBe("");
    fs.rmSync(unit);
    fs.rmSync(script);
  });

  test("EC2: the metadata guard in force now (real iptables, in the run's own network namespace) and at every boot before Docker, which requires it", async () => {
    fs.writeFileSync(path.join(dir, "calls"), "");
    const r = await runBootstrap(true, { imdsGuard: true });
    expect(show(r)).toMatch(/^exit 0 /);
    const uids = IMDS_GUARD_UIDS.join(" ");
    expect(r.stderr).toContain(`host-bootstrap: keeping uids ${uids} (Caddy, coturn) away from the instance metadata service\n`);
    expect(r.stderr).toContain(`imds-guard: packets from uids ${uids} to 169.254.169.254 are rejected (iptables chain NEKO-IMDS)\n`);
    const rules = fs.readFileSync(path.join(dir, "rules"), "utf8").trim().split("\n");
    expect(rules.filter((l) => /NEKO-IMDS/.test(l))).toEqual([
      "-N NEKO-IMDS",
      "-A OUTPUT -d 169.254.169.254/32 -j NEKO-IMDS",
      ...IMDS_GUARD_UIDS.map((u) => `-A NEKO-IMDS -m owner --uid-owner ${u} -j REJECT --reject-with icmp-port-unreachable`),
    ]);
    const script = path.join(dir, "infra", "imds-guard.sh");
    const unit = path.join(dir, "units", "neko-imds-guard.service");
    expect(fs.readFileSync(unit, "utf8")).toBe(
      [
        "[Unit]",
        "Description=Keep neko's host-network containers away from the instance metadata service",
        "Before=docker.service",
        "",
        "[Service]",
        "Type=oneshot",
        "RemainAfterExit=yes",
        `ExecStart=/usr/bin/bash ${script} ${uids}`,
        "",
        "[Install]",
        "RequiredBy=docker.service",
        "",
      ].join("\n"),
    );
    expect(calls()).toContain("systemctl enable neko-imds-guard.service");
    const verify = await run("systemd-analyze", ["verify", unit], { timeoutMs: 30_000 });
    expect(verify.stdout + verify.stderr).toBe("");
    fs.rmSync(unit);
    fs.rmSync(script);
  });

  test("without systemd (an ssh host with another init): the script only, and how to run it by hand", async () => {
    fs.writeFileSync(path.join(dir, "calls"), "");
    fs.rmSync(path.join(dir, "units", "neko-restore.service"));
    const r = await runBootstrap(false);
    expect(show(r)).toMatch(/^exit 0 /);
    expect(r.stderr).toContain(
      `host-bootstrap: no systemd here: after a reboot or a Docker restart, bring neko back with: bash ${dir}/infra/neko-restore.sh (as root)\n`,
    );
    expect(fs.existsSync(path.join(dir, "units", "neko-restore.service"))).toBe(false);
    expect(calls()).toEqual([]);
  });
});
