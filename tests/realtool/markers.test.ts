/**
 * The setup steps (the bootstrap scripts, run as root over SSH with the step preamble and
 * scripts/setup-lib.sh before them, exactly as lib/shell.ts sends them): the marker removed first,
 * `ok <versions>` as the last step, `failed <step>` when a step fails; scripts/wake.js reading it;
 * and a second run on the same machine (a changed setting or script) changing only what differs.
 *
 * The package steps are stubbed: dnf, the Determinate Nix installer (fetched with curl), nixpkgs,
 * systemctl, usermod, docker and the NVIDIA tools need Amazon Linux 2023 and the internet, neither
 * of which CI has. Stubs (first on PATH) record each call with the marker's state at that moment,
 * and can fail or be slow. What runs for real is each script's own logic: step names, the trap, the
 * atomic marker, the links into /usr/local/bin, the ECR helper's config files, Nix's settings
 * file, the trust policy, the idle timer's units. Each run gets a private mount namespace with temp
 * directories on /nix, /usr/local/bin, /root, /etc/nix, /etc/containers and /etc/systemd/system,
 * so nothing of this machine is touched; the marker goes to NEKO_INFRA_MARKER in the test's temp
 * directory.
 */
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { ScriptName, scriptInput } from "../../lib/shell";
import { REPO, requireTools, run, Result, SCRIPTS, show } from "./support";

jest.setTimeout(60_000);

let root: string;

beforeAll(() => {
  requireTools(["bash", "unshare"]);
  root = fs.mkdtempSync(path.join(os.tmpdir(), "nrt-markers-"));
});

afterAll(() => {
  if (root) fs.rmSync(root, { recursive: true, force: true });
});

const NIXPKGS = "github:NixOS/nixpkgs/nixos-26.05";

/** Each stub logs `name args [marker: <content or absent>]`, then does its job. */
const LOG_CALL = 'echo "${0##*/} $* [marker: $(cat "$NEKO_INFRA_MARKER" 2>/dev/null || echo absent)]" >>"$STUB_LOG"';
const failIf = (name: string, message: string) => `[ "\${STUB_FAIL:-}" != ${name} ] || { echo "${message}" >&2; exit 1; }`;

const STUBS: Record<string, string> = {
  dnf: `${LOG_CALL}\n${failIf("dnf", "Error: Failed to download metadata for repo 'amazonlinux'")}`,
  // curl -o FILE https://install.determinate.systems/nix: "downloads" the fake installer
  curl: `${LOG_CALL}\nwhile [ $# -gt 0 ]; do [ "$1" = -o ] && cp "$STUBS/installer.sh" "$2"; shift; done`,
  "installer.sh": [
    LOG_CALL.replace("${0##*/}", "installer"),
    failIf("installer", "nix-installer: error: Install failure: the systemd unit nix-daemon.socket did not start"),
    'sleep "${STUB_SLOW:-0}"',
    "mkdir -p /nix/var/nix/profiles/default/bin",
    'cp "$STUBS/fake-nix" /nix/var/nix/profiles/default/bin/nix',
    "ln -s nix /nix/var/nix/profiles/default/bin/nix-store",
  ].join("\n"),
  "fake-nix": [
    LOG_CALL.replace("${0##*/}", "nix"),
    'case "$1" in',
    "--version) echo 'nix (Determinate Nix 3.8.2) 2.30.1' ;;",
    `profile) ${failIf("nix-profile", "error: unable to download 'https://github.com/NixOS/nixpkgs/archive/nixos-26.05.tar.gz': HTTP error 404")}`,
    '  mkdir -p "$4/bin" && cp "$STUBS/fake-skopeo" "$4/bin/skopeo" ;;',
    "esac",
  ].join("\n"),
  "fake-skopeo": [
    LOG_CALL.replace("${0##*/}", "skopeo"),
    `case "$1" in copy) ${failIf("skopeo-copy", 'time=\\"x\\" level=fatal msg=\\"no policy.json file found\\"')} ;; esac`,
    "echo 'skopeo version 1.18.0'",
  ].join("\n"),
  // the Docker engine answers once systemctl has started it (or from the start with STUB_DOCKER_UP)
  systemctl: `${LOG_CALL}\ncase "$*" in *docker*) touch "$STUBS/docker-up" ;; esac`,
  // runuser -u USER -- CMD...: the ssh user does not exist here; CMD runs as root
  runuser: `${LOG_CALL}\nwhile [ "$1" != -- ]; do shift; done; shift; exec "$@"`,
  usermod: LOG_CALL,
  chown: LOG_CALL,
  // install -d -m MODE -o USER DIR: the ssh user does not exist here; the directory is made.
  install: `${LOG_CALL}\nfor a; do last=$a; done; mkdir -p "$last"`,
  getent: `${LOG_CALL}\necho "ec2-user:x:1000:1000::$STUB_HOME:/bin/bash"`,
  docker: `${LOG_CALL}\n${failIf("docker", "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?")}\n[ -e "$STUBS/docker-up" ] || [ -n "\${STUB_DOCKER_UP:-}" ] || { echo "Cannot connect to the Docker daemon" >&2; exit 1; }\necho 24.0.5`,
  "nvidia-ctk": LOG_CALL,
  "nvidia-smi": `${LOG_CALL}\ncase "$*" in -L) echo 'GPU 0: NVIDIA A10G (UUID: GPU-0)' ;; *) echo 550.127.05 ;; esac`,
};
/** Stubs that are not commands on PATH. */
const NOT_ON_PATH = ["installer.sh", "fake-nix", "fake-skopeo"];

interface Bootstrap {
  dir: string;
  marker: string;
  calls: () => string[];
  /** What the private /usr/local/bin, /root and the ssh user's home hold afterwards. */
  usrLocalBin: string;
  rootHome: string;
  userHome: string;
}

/** A fresh directory with the stubs (without `omit`) and empty stand-ins for /nix, /usr/local/bin, /root. */
function prepare(omit: string[] = []): Bootstrap {
  const dir = fs.mkdtempSync(path.join(root, "run-"));
  for (const d of ["bin", "stubs", "nix", "usr-local-bin", "root", "home", "state", "dev-disk", "etc/nix", "etc-work"])
    fs.mkdirSync(path.join(dir, d), { recursive: true });
  fs.writeFileSync(path.join(dir, "etc", "nix", "nix.conf"), "# the installer's\n");
  fs.writeFileSync(path.join(dir, "fstab"), "");
  for (const [name, body] of Object.entries(STUBS)) {
    if (omit.includes(name)) continue;
    const where = NOT_ON_PATH.includes(name) ? "stubs" : "bin";
    fs.writeFileSync(path.join(dir, where, name), `#!/bin/bash\n${body}\n`, { mode: 0o755 });
  }
  const log = path.join(dir, "calls.log");
  fs.writeFileSync(log, "");
  return {
    dir,
    marker: path.join(dir, "state", "bootstrap.status"),
    calls: () => fs.readFileSync(log, "utf8").trim().split("\n").filter(Boolean),
    usrLocalBin: path.join(dir, "usr-local-bin"),
    rootHome: path.join(dir, "root"),
    userHome: path.join(dir, "home"),
  };
}

/**
 * Runs a bootstrap script as its setup step does (`bash -s -- args`, the step's standard input from
 * lib/shell.ts, as root) in a private mount namespace; its stderr also goes to `<dir>/bootstrap.log`.
 */
function bootstrap(b: Bootstrap, script: ScriptName, args: string[], env: Record<string, string> = {}): Promise<Result> {
  const inner =
    'set -e; d=$1; shift; mount --bind "$d/nix" /nix; mount --bind "$d/usr-local-bin" /usr/local/bin; mount --bind "$d/root" /root; ' +
    // /etc as an overlay: what the script writes there lands in <dir>/etc, the machine's stays as it is
    'mount -t overlay overlay -o "lowerdir=/etc,upperdir=$d/etc,workdir=$d/etc-work" /etc; ' +
    // as on Amazon Linux: no trust policy for skopeo
    "rm -f /etc/containers/policy.json; " +
    'mount --bind "$d/fstab" /etc/fstab; mkdir -p /dev/disk; mount --bind "$d/dev-disk" /dev/disk; ' +
    'bash -s -- "$@" 2> >(tee -a "$d/bootstrap.log" >&2) && rc=0 || rc=$?; if [ -n "${AFTER:-}" ]; then eval "$AFTER"; fi; exit $rc';
  return run("unshare", ["-m", "--propagation", "private", "bash", "-c", inner, "bootstrap", b.dir, ...args], {
    input: scriptInput({ script, env: setupEnv(script), budgetSeconds: 60 }),
    env: {
      PATH: `${path.join(b.dir, "bin")}:/usr/sbin:/usr/bin:/sbin:/bin`,
      NEKO_INFRA_MARKER: b.marker,
      NEKO_INFRA_DIR: path.join(b.dir, "state"),
      STUB_LOG: path.join(b.dir, "calls.log"),
      STUBS: path.join(b.dir, "stubs"),
      STUB_HOME: b.userHome,
      ...env,
    },
    timeoutMs: 30_000,
  });
}

/** The idle-stop script, as lib/setup.ts hands it to the setup step. */
function setupEnv(script: ScriptName): Record<string, string> {
  const idle = script === "builder-bootstrap.sh" ? "builder-idle-stop.sh" : "host-idle-stop.sh";
  return { IDLE_STOP_SCRIPT: fs.readFileSync(path.join(SCRIPTS, idle), "utf8") };
}

const marker = (b: Bootstrap) => fs.readFileSync(b.marker, "utf8");

describe("builder-bootstrap.sh", () => {
  test("success: Nix, its settings, skopeo from the pinned nixpkgs, a real copy; `ok nix=... skopeo=...` written last", async () => {
    const b = prepare();
    fs.writeFileSync(b.marker, "failed installing Nix\n"); // an earlier run's
    const r = await bootstrap(b, "builder-bootstrap.sh", ["ec2-user", "8", "0"]);
    expect(show(r)).toMatch(/^exit 0 /);
    expect(marker(b)).toBe("ok nix=2.30.1 skopeo=1.18.0\n");
    expect((fs.statSync(b.marker).mode & 0o777).toString(8)).toBe("644");
    const calls = b.calls();
    // The stale marker was gone before the first step, and nothing ran after the new one was written.
    expect(calls.every((c) => c.endsWith("[marker: absent]"))).toBe(true);
    expect(calls.map((c) => c.split(" ").slice(0, 2).join(" "))).toEqual([
      "dnf install",
      "curl --proto",
      "installer install",
      "systemctl try-restart",
      "nix profile",
      "chown -R",
      "runuser -u",
      "skopeo copy",
      "nix --version",
      "skopeo --version",
    ]);
    // a pinned installer release, not whatever is newest the day a builder is made
    expect(calls[1]).toMatch(/^curl --proto =https --tlsv1\.2 -sSfL https:\/\/install\.determinate\.systems\/nix\/tag\/v3\.14\.0 -o /);
    expect(calls[2]).toContain("install linux --no-confirm --init systemd --extra-conf extra-experimental-features = nix-command flakes");
    expect(calls[4]).toBe(`nix profile install --profile /nix/var/nix/profiles/neko-infra-tools ${NIXPKGS}#skopeo [marker: absent]`);
    // the self-check copies a real (empty) OCI image as the ssh user
    expect(calls[6]).toMatch(/^runuser -u ec2-user -- \/usr\/local\/bin\/skopeo copy --quiet oci:\S+\/src:check dir:\S+\/dst /);
    expect(fs.readFileSync(path.join(b.dir, "etc", "nix", "neko-infra.conf"), "utf8")).toBe(
      "# Written by neko-infra (scripts/builder-bootstrap.sh)\ntrusted-users = root ec2-user\nmax-jobs = 8\n",
    );
    expect(fs.readFileSync(path.join(b.dir, "etc", "nix", "nix.conf"), "utf8")).toBe("# the installer's\n!include neko-infra.conf\n");
    expect(fs.readFileSync(path.join(b.dir, "etc", "containers", "policy.json"), "utf8")).toBe(
      '{"default":[{"type":"insecureAcceptAnything"}]}\n',
    );
    expect(fs.readlinkSync(path.join(b.usrLocalBin, "nix"))).toBe("/nix/var/nix/profiles/default/bin/nix");
    expect(fs.readlinkSync(path.join(b.usrLocalBin, "nix-store"))).toBe("/nix/var/nix/profiles/default/bin/nix-store");
    expect(fs.readlinkSync(path.join(b.usrLocalBin, "skopeo"))).toBe("/nix/var/nix/profiles/neko-infra-tools/bin/skopeo");
    expect(fs.readdirSync(path.join(b.dir, "state"))).toEqual(["bootstrap.status"]); // no temp file left
    expect(fs.existsSync(path.join(b.dir, "etc", "systemd"))).toBe(false); // idle minutes 0: no timer
  });

  test("run again with other settings on the same builder: only what changed, without a reboot", async () => {
    const b = prepare();
    expect(show(await bootstrap(b, "builder-bootstrap.sh", ["ec2-user", "8", "0"]))).toMatch(/^exit 0 /);
    const first = b.calls().length;
    // a new max-jobs and an idle stop: Nix is not installed again, its daemon restarts, the timer comes
    expect(show(await bootstrap(b, "builder-bootstrap.sh", ["ec2-user", "4", "45"]))).toMatch(/^exit 0 /);
    const second = b
      .calls()
      .slice(first)
      .map((c) => c.replace(/ \[marker: \w+\]$/, ""));
    expect(second.filter((c) => /^(curl|installer)/.test(c))).toEqual([]);
    expect(second).toContain("systemctl try-restart nix-daemon.service");
    expect(second).toContain("systemctl enable --now neko-builder-idle.timer");
    expect(fs.readFileSync(path.join(b.dir, "etc", "nix", "neko-infra.conf"), "utf8")).toContain("max-jobs = 4\n");
    expect(fs.readFileSync(path.join(b.dir, "etc", "nix", "nix.conf"), "utf8").match(/!include/g)).toHaveLength(1);
    expect(fs.readFileSync(path.join(b.dir, "etc", "systemd", "system", "neko-builder-idle.service"), "utf8")).toContain(
      `ExecStart=/usr/bin/bash ${b.dir}/state/builder-idle-stop.sh 45\n`,
    );
    expect(fs.readFileSync(path.join(b.dir, "etc", "systemd", "system", "neko-builder-idle.timer"), "utf8")).toContain(
      "OnUnitActiveSec=1min",
    );
    // the same settings once more: nothing restarts, nothing is reloaded
    const before = b.calls().length;
    expect(show(await bootstrap(b, "builder-bootstrap.sh", ["ec2-user", "4", "45"]))).toMatch(/^exit 0 /);
    const third = b.calls().slice(before);
    expect(third.filter((c) => /^systemctl (try-restart|daemon-reload)/.test(c))).toEqual([]);
    expect(marker(b)).toBe("ok nix=2.30.1 skopeo=1.18.0\n");
  });

  test("a skopeo that cannot copy fails the setup, naming the cause: `failed checking that skopeo can copy an image`", async () => {
    const b = prepare();
    const r = await bootstrap(b, "builder-bootstrap.sh", ["ec2-user", "auto", "0"], { STUB_FAIL: "skopeo-copy" });
    expect(r.code).toBe(1);
    expect(marker(b)).toBe("failed checking that skopeo can copy an image\n");
    expect(r.stderr).toContain("builder-bootstrap: skopeo cannot copy an image as ec2-user: no policy.json file found");
  });

  test.each([
    ["dnf", "installing git", "Error: Failed to download metadata for repo 'amazonlinux'"],
    ["installer", "installing Nix", "nix-installer: error: Install failure"],
    ["nix-profile", `installing skopeo from ${NIXPKGS}`, "HTTP error 404"],
  ])("%s fails: exit 1, marker `failed %s`", async (stub, step, error) => {
    const b = prepare();
    const r = await bootstrap(b, "builder-bootstrap.sh", ["ec2-user", "auto", "0"], { STUB_FAIL: stub });
    expect(r.code).toBe(1);
    expect(marker(b)).toBe(`failed ${step}\n`);
    expect(r.stderr).toContain(error);
    expect(r.stderr).toContain(`builder-bootstrap: failed while ${step} (exit 1)`);
  });

  test("wake.js waits for a slow bootstrap (marker absent, progress from its log) and reports its versions", async () => {
    const b = prepare();
    fs.writeFileSync(b.marker, "ok nix=old skopeo=old\n");
    const boot = bootstrap(b, "builder-bootstrap.sh", ["ec2-user", "auto", "0"], { STUB_SLOW: "4" });
    for (let i = 0; i < 100 && fs.existsSync(b.marker); i++) await new Promise((res) => setTimeout(res, 50));
    expect(fs.existsSync(b.marker)).toBe(false);
    const wake = await run("node", ["-"], {
      input: fs.readFileSync(path.join(SCRIPTS, "wake.js"), "utf8"),
      env: {
        WAKE_MACHINE: "the builder",
        TARGET: "local",
        READY: "marker",
        READY_MARKER: b.marker,
        READY_LOG: path.join(b.dir, "bootstrap.log"),
        READY_TIMEOUT: "30",
      },
      cwd: REPO,
      timeoutMs: 40_000,
    });
    expect(show(await boot)).toMatch(/^exit 0 /);
    expect(show(wake)).toMatch(/^exit 0 /);
    expect(wake.stdout).toBe("ready: the builder nix=2.30.1 skopeo=1.18.0\n");
    expect(wake.stderr).toMatch(
      /^wake: waiting for the builder \(this machine\): bootstrap still running: builder-bootstrap: installing Nix \(\d+ s of 30 s\)$/m,
    );
    console.log(`wake.js waited ${wake.seconds.toFixed(1)}s for the slow (4 s) stubbed bootstrap`);
  });
});

describe("host-bootstrap.sh", () => {
  test("CPU host: docker started, the docker group, then `ok docker=<version>`", async () => {
    const b = prepare();
    const r = await bootstrap(b, "host-bootstrap.sh", ["ec2-user", "0", "-", "-", "0"]);
    expect(show(r)).toMatch(/^exit 0 /);
    expect(marker(b)).toBe("ok docker=24.0.5\n");
    expect(b.calls()).toEqual([
      "docker version --format {{.Server.Version}} [marker: absent]",
      "systemctl enable --now docker [marker: absent]",
      "usermod -aG docker ec2-user [marker: absent]",
      `install -d -m 0755 -o ec2-user ${b.dir}/state/host [marker: absent]`,
      "docker version --format {{.Server.Version}} [marker: absent]",
    ]);
  });

  test("GPU host with ECR: every job finishes before `ok docker=<version> gpu=<driver>`", async () => {
    const b = prepare();
    const registry = "123456789012.dkr.ecr.eu-central-1.amazonaws.com";
    const r = await bootstrap(b, "host-bootstrap.sh", ["ec2-user", "1", registry, "-", "0"]);
    expect(show(r)).toMatch(/^exit 0 /);
    expect(marker(b)).toBe("ok docker=24.0.5 gpu=550.127.05\n");
    const calls = b.calls();
    expect(calls.every((c) => c.endsWith("[marker: absent]"))).toBe(true);
    expect(calls.map((c) => c.replace(" [marker: absent]", ""))).toEqual([
      "docker version --format {{.Server.Version}}",
      "systemctl enable --now docker",
      "usermod -aG docker ec2-user",
      "dnf install -y -q amazon-ecr-credential-helper",
      "getent passwd ec2-user",
      `chown -R ec2-user: ${b.userHome}/.docker`,
      `install -d -m 0755 -o ec2-user ${b.dir}/state/host`,
      "nvidia-ctk runtime configure --runtime=docker",
      "systemctl restart docker",
      "nvidia-smi -L",
      "nvidia-smi --query-gpu=driver_version --format=csv,noheader",
      "docker version --format {{.Server.Version}}",
    ]);
    const config = `{"credHelpers":{"${registry}":"ecr-login"}}\n`;
    expect(fs.readFileSync(path.join(b.rootHome, ".docker", "config.json"), "utf8")).toBe(config);
    expect(fs.readFileSync(path.join(b.userHome, ".docker", "config.json"), "utf8")).toBe(config);
  });

  test("the profile volume: formatted once, mounted, and kept as it is by the next instance's bootstrap", async () => {
    // Real: a loop device standing in for the EBS disk, mkfs.ext4, blkid, mount and /etc/fstab
    // (both private to the run's mount namespace). The disk's by-id name is Nitro's.
    const img = path.join(root, `vol-${process.pid}.img`);
    fs.writeFileSync(img, "");
    fs.truncateSync(img, 64 << 20);
    const loop = (await run("losetup", ["--find", "--show", img])).stdout.trim();
    expect(loop).toMatch(/^\/dev\/loop\d+$/);
    try {
      const runOnce = async () => {
        const b = prepare(["chown"]);
        fs.mkdirSync(path.join(b.dir, "dev-disk", "by-id"));
        fs.symlinkSync(loop, path.join(b.dir, "dev-disk", "by-id", "nvme-Amazon_Elastic_Block_Store_vol0abc"));
        // the mount stays inside the namespace; look at the file system through it before it ends
        const r = await bootstrap(b, "host-bootstrap.sh", ["ec2-user", "0", "-", "vol-0abc", "0"], {
          AFTER: 'ls -a "$NEKO_INFRA_DIR/profile"; cat "$NEKO_INFRA_DIR/profile/kept" 2>/dev/null || true',
        });
        return { b, r, fstab: fs.readFileSync(path.join(b.dir, "fstab"), "utf8") };
      };
      const first = await runOnce();
      expect(show(first.r)).toMatch(/^exit 0 /);
      expect(first.r.stderr).toContain("host-bootstrap: formatting the new profile volume");
      expect(first.fstab).toMatch(/^UUID=\S+ \S+\/state\/profile ext4 defaults,nofail 0 2\n$/);
      // a file written into the profile, then a "new instance" bootstraps with the same volume
      const mnt = fs.mkdtempSync(path.join(root, "mnt-"));
      expect((await run("unshare", ["-m", "bash", "-c", `mount ${loop} ${mnt} && echo kept >${mnt}/kept && umount ${mnt}`])).code).toBe(0);
      const second = await runOnce();
      expect(show(second.r)).toMatch(/^exit 0 /);
      expect(second.r.stderr).not.toContain("formatting");
      expect(second.r.stdout).toContain("kept");
    } finally {
      await run("losetup", ["-d", loop]);
    }
  });

  test("GPU host without the NVIDIA toolkit: `failed checking for the NVIDIA container toolkit`", async () => {
    const b = prepare(["nvidia-ctk"]);
    const r = await bootstrap(b, "host-bootstrap.sh", ["ec2-user", "1", "-", "-", "0"]);
    expect(r.code).toBe(1);
    expect(marker(b)).toBe("failed checking for the NVIDIA container toolkit\n");
    expect(r.stderr).toContain("nvidia-ctk missing: is this the NVIDIA driver AMI?");
  });

  test("Docker does not answer: `failed checking that Docker answers`", async () => {
    const b = prepare();
    fs.writeFileSync(b.marker, "ok docker=20.10.0\n");
    const r = await bootstrap(b, "host-bootstrap.sh", ["ec2-user", "0", "-", "-", "0"], { STUB_FAIL: "docker" });
    expect(r.code).toBe(1);
    expect(marker(b)).toBe("failed checking that Docker answers\n");
  });

  test("the ECR helper cannot be installed: `failed installing the ECR credential helper`", async () => {
    const b = prepare();
    const r = await bootstrap(b, "host-bootstrap.sh", ["ec2-user", "0", "123456789012.dkr.ecr.eu-central-1.amazonaws.com", "-", "0"], {
      STUB_FAIL: "dnf",
    });
    expect(r.code).toBe(1);
    expect(marker(b)).toBe("failed installing the ECR credential helper\n");
  });

  test("an existing Docker host (an ssh host) whose user is in the docker group: nothing installed, started or added", async () => {
    const b = prepare();
    const r = await bootstrap(b, "host-bootstrap.sh", ["root", "0", "-", "-", "0"], { STUB_DOCKER_UP: "1" });
    expect(show(r)).toMatch(/^exit 0 /);
    expect(b.calls().map((c) => c.split(" ")[0])).toEqual(["docker", "install", "docker"]);
  });

  test("the idle stop: installed with its minutes, changed in place, removed with 0", async () => {
    const b = prepare();
    const units = path.join(b.dir, "etc", "systemd", "system");
    expect(show(await bootstrap(b, "host-bootstrap.sh", ["ec2-user", "0", "-", "-", "30"], { STUB_DOCKER_UP: "1" }))).toMatch(/^exit 0 /);
    expect(fs.readFileSync(path.join(units, "neko-host-idle.service"), "utf8")).toContain(
      `ExecStart=/usr/bin/bash ${b.dir}/state/host-idle-stop.sh 30\n`,
    );
    expect(b.calls()).toContain("systemctl enable --now neko-host-idle.timer [marker: absent]");
    expect(show(await bootstrap(b, "host-bootstrap.sh", ["ec2-user", "0", "-", "-", "20"], { STUB_DOCKER_UP: "1" }))).toMatch(/^exit 0 /);
    expect(fs.readFileSync(path.join(units, "neko-host-idle.service"), "utf8")).toContain("host-idle-stop.sh 20\n");
    expect(show(await bootstrap(b, "host-bootstrap.sh", ["ec2-user", "0", "-", "-", "0"], { STUB_DOCKER_UP: "1" }))).toMatch(/^exit 0 /);
    expect(fs.readdirSync(units)).toEqual([]);
    expect(b.calls()).toContain("systemctl disable --now neko-host-idle.timer [marker: absent]");
  });

  test("a usage error writes no marker at all (nothing was attempted)", async () => {
    const b = prepare();
    const r = await bootstrap(b, "host-bootstrap.sh", ["ec2-user"]);
    expect(r.code).toBe(2);
    expect(fs.existsSync(b.marker)).toBe(false);
  });
});
