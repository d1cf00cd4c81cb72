/**
 * tests/harness/nshost.sh in login mode: the "dress rehearsal" host shaped like an EC2 Amazon Linux
 * instance as the program meets it (an ssh login as ec2-user, not root, in group docker, with
 * passwordless sudo; a Docker engine; nothing else: no container, no /var/lib/neko-infra), and
 * `wipe`, which turns it into its replacement machine (nothing left, a new host key).
 *
 * Real: OpenSSH's sshd and ssh, Debian's sudo and dockerd 20.10, all in the host's netns and one
 * private mount namespace. The image run is a one-layer `docker import` of busybox.
 */
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { HARNESS, ok, readEnvFile, requireTools, Result, run, show } from "./support";

jest.setTimeout(120_000);

interface LoginHostEnv {
  DOCKER_HOST: string;
  NSHOST_ADDR: string;
  NSHOST_NETNS: string;
  NSHOST_SSH_USER: string;
  NSHOST_SSH_PORT: string;
  NSHOST_SSH_KEY: string;
  NSHOST_HOST_KEY: string;
  NSHOST_KNOWN_HOSTS: string;
  NSHOST_SSH_CONFIG: string;
}

const NSHOST = path.join(HARNESS, "nshost.sh");
const IMAGE = "nshost-login-test:1";
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "nlog-"));
const state = path.join(dir, "h");
let h: LoginHostEnv;

/** A command on the host, over ssh as its login user (the script gets `input` on stdin). */
function onHost(cmd: string, input?: string, knownHosts?: string): Promise<Result> {
  const extra = knownHosts ? ["-o", `UserKnownHostsFile=${knownHosts}`] : [];
  return run("ssh", ["-F", h.NSHOST_SSH_CONFIG, ...extra, "nshost", cmd], { input, timeoutMs: 60_000 });
}

async function out(cmd: string): Promise<string> {
  return ok(await onHost(cmd), `ssh nshost ${JSON.stringify(cmd)}`).trim();
}

/** True when the process is gone (a zombie waiting for init counts as gone). */
function gone(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    return /^\d+ \(.*\) [ZX]/.test(stat);
  } catch {
    return true;
  }
}

beforeAll(async () => {
  requireTools(["ssh", "ssh-keygen", "/usr/sbin/sshd", "ip", "unshare", "/usr/sbin/dockerd", "/usr/bin/docker", "/bin/busybox"]);
  if (!fs.existsSync("/usr/bin/sudo")) throw new Error("missing /usr/bin/sudo: run tools/install-deps.sh (or apt-get install sudo)");
  const r = await run(NSHOST, ["start", state], { env: { NSHOST_LOGIN_USER: "ec2-user" }, timeoutMs: 90_000 });
  ok(r, "NSHOST_LOGIN_USER=ec2-user tests/harness/nshost.sh start");
  h = (await readEnvFile(path.join(state, "env"))) as unknown as LoginHostEnv;
});

afterAll(async () => {
  const r = await run(NSHOST, ["stop", state], { timeoutMs: 90_000 });
  if (r.code !== 0) throw new Error(`tests/harness/nshost.sh stop failed (state kept in ${dir}): ${show(r)}`);
  fs.rmSync(dir, { recursive: true, force: true });
}, 120_000);

describe("nshost.sh login mode: a new EC2 Amazon Linux host as the program meets it", () => {
  test("the env file says how to log in", () => {
    expect(h.NSHOST_SSH_USER).toBe("ec2-user");
    expect(h.NSHOST_SSH_PORT).toBe("22");
    expect(h.NSHOST_HOST_KEY).toMatch(/^ssh-ed25519 AAAA[A-Za-z0-9+/=]+$/);
    expect(fs.readFileSync(h.NSHOST_SSH_KEY, "utf8")).toMatch(/BEGIN OPENSSH PRIVATE KEY/);
    expect(fs.readFileSync(h.NSHOST_KNOWN_HOSTS, "utf8")).toContain(`${h.NSHOST_ADDR},nshost ${h.NSHOST_HOST_KEY}`);
  });

  test("the login user is ec2-user, not root, in group docker", async () => {
    expect(await out("id -un")).toBe("ec2-user");
    expect(await out("id -u")).not.toBe("0");
    expect((await out("id -Gn")).split(" ")).toContain("docker");
    expect(await out('echo "$HOME $SHELL"')).toBe("/home/ec2-user /bin/bash");
    // Without a key of its own, nobody gets in; root not at all.
    const r = await run("ssh", ["-F", h.NSHOST_SSH_CONFIG, "-o", "User=root", "-o", `IdentityFile=${h.NSHOST_SSH_KEY}`, "nshost", "true"], {
      timeoutMs: 30_000,
    });
    expect(r.code).toBe(255);
    expect(r.stderr).toMatch(/Permission denied \(publickey\)/);
  });

  test("sudo needs no password", async () => {
    expect(await out("sudo -n id -u")).toBe("0");
  });

  test("it starts empty: no container, no image, nothing in /var/lib", async () => {
    expect(await out("docker ps -aq")).toBe("");
    expect(await out("docker images -aq")).toBe("");
    expect(await out("ls -A /var/lib")).toBe("");
    const r = await onHost("ls /var/lib/neko-infra");
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/No such file or directory/);
  });

  test("root's files stay root's: /etc/shadow only through sudo; the socket is root:docker 0660", async () => {
    const r = await onHost("cat /etc/shadow");
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/Permission denied/);
    expect(await out("sudo -n cat /etc/shadow")).toMatch(/^ec2-user:\*:/m);
    expect(await out('stat -c "%U:%G %a" "${DOCKER_HOST#unix://}"')).toBe("root:docker 660");
    expect(await out("echo $DOCKER_HOST")).toBe(h.DOCKER_HOST);
  });

  test("docker run without sudo mounts what a session wrote under /var/lib/neko-infra", async () => {
    const rootfs = fs.mkdtempSync(path.join(dir, "rootfs-"));
    fs.mkdirSync(path.join(rootfs, "bin"));
    fs.copyFileSync("/bin/busybox", path.join(rootfs, "bin", "busybox"));
    fs.chmodSync(path.join(rootfs, "bin", "busybox"), 0o755);
    ok(
      await run("bash", ["-c", `tar -C '${rootfs}' -c . | ssh -F '${h.NSHOST_SSH_CONFIG}' nshost 'docker import - ${IMAGE}'`]),
      "docker import",
    );
    await out("sudo -n mkdir -p /var/lib/neko-infra/host && echo from-the-session | sudo -n tee /var/lib/neko-infra/host/f >/dev/null");
    expect(await out(`docker run --rm -v /var/lib/neko-infra/host:/x ${IMAGE} /bin/busybox cat /x/f`)).toBe("from-the-session");
    // The host's /var/lib is STATE_DIR/varlib, not this machine's.
    expect(fs.readFileSync(path.join(state, "varlib", "neko-infra", "host", "f"), "utf8")).toBe("from-the-session\n");
    await out(`docker run -d --name left-running ${IMAGE} /bin/busybox sleep 600`);
    expect(await out("docker ps --format '{{.Names}}'")).toBe("left-running");
  });

  test("wipe: the replacement machine has a new host key and nothing of the old one", async () => {
    const oldKnownHosts = path.join(dir, "old_known_hosts");
    fs.copyFileSync(h.NSHOST_KNOWN_HOSTS, oldKnownHosts);
    const oldKey = h.NSHOST_HOST_KEY;
    await out("echo old > ~/mark; echo old > /tmp/mark");

    ok(await run(NSHOST, ["wipe", state], { timeoutMs: 90_000 }), "tests/harness/nshost.sh wipe");
    h = (await readEnvFile(path.join(state, "env"))) as unknown as LoginHostEnv;
    expect(h.NSHOST_HOST_KEY).toMatch(/^ssh-ed25519 AAAA/);
    expect(h.NSHOST_HOST_KEY).not.toBe(oldKey);

    const stale = await onHost("true", undefined, oldKnownHosts);
    expect(stale.code).toBe(255);
    expect(stale.stderr).toMatch(/REMOTE HOST IDENTIFICATION HAS CHANGED/);

    expect(await out("id -un")).toBe("ec2-user");
    expect(await out("sudo -n id -u")).toBe("0");
    expect(await out("docker ps -aq")).toBe("");
    expect(await out("docker images -aq")).toBe("");
    expect(await out("ls -A /var/lib")).toBe("");
    expect(await out("ls -A ~ | tr '\\n' ' '")).not.toMatch(/mark/);
    expect((await onHost("cat /tmp/mark")).code).not.toBe(0);
  });

  test("stop leaves no process, no netns; a second stop is fine", async () => {
    const pids = ["dockerd.pid", "sshd.pid"].map((f) => Number(fs.readFileSync(path.join(state, f), "utf8").trim()));
    ok(await run(NSHOST, ["stop", state], { timeoutMs: 90_000 }), "tests/harness/nshost.sh stop");
    for (const pid of pids) expect({ pid, gone: gone(pid) }).toEqual({ pid, gone: true });
    const ns = ok(await run("ip", ["netns", "list"], { timeoutMs: 10_000 }), "ip netns list");
    expect(ns.split("\n").map((l) => l.split(" ")[0])).not.toContain(h.NSHOST_NETNS);
    expect(fs.existsSync(path.join(state, "env"))).toBe(false);
    const r = await run("ssh", ["-F", h.NSHOST_SSH_CONFIG, "-o", "ConnectTimeout=2", "nshost", "true"], { timeoutMs: 30_000 });
    expect(r.code).toBe(255);
    ok(await run(NSHOST, ["stop", state], { timeoutMs: 90_000 }), "a second nshost.sh stop");
  });
});
