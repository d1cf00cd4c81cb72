/**
 * The bootstrap scripts' marker: removed first, `ok <versions>` as the last step, `failed <step>`
 * when a step fails; and scripts/wake.js reading it.
 *
 * The package steps are stubbed: dnf, the Determinate Nix installer (fetched with curl), nixpkgs,
 * systemctl, usermod, docker and the NVIDIA tools need Amazon Linux 2023 and the internet, neither
 * of which CI has. Stubs (first on PATH) record each call with the marker's state at that moment,
 * and can fail or be slow. What runs for real is each script's own logic: step names, the trap, the
 * atomic marker, the links into /usr/local/bin, the ECR helper's config files. Each run gets a
 * private mount namespace with temp directories on /nix, /usr/local/bin and /root, so nothing of
 * this machine is touched; the marker goes to NEKO_INFRA_MARKER in the test's temp directory.
 */
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
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

const NIXPKGS = "github:NixOS/nixpkgs/nixos-25.05";

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
    `profile) ${failIf("nix-profile", "error: unable to download 'https://github.com/NixOS/nixpkgs/archive/nixos-25.05.tar.gz': HTTP error 404")}`,
    '  mkdir -p "$4/bin" && cp "$STUBS/fake-skopeo" "$4/bin/skopeo" ;;',
    "esac",
  ].join("\n"),
  "fake-skopeo": "echo 'skopeo version 1.18.0'",
  systemctl: LOG_CALL,
  usermod: LOG_CALL,
  chown: LOG_CALL,
  // install -d -m MODE -o USER DIR: the ssh user does not exist here; the directory is made.
  install: `${LOG_CALL}\nfor a; do last=$a; done; mkdir -p "$last"`,
  getent: `${LOG_CALL}\necho "ec2-user:x:1000:1000::$STUB_HOME:/bin/bash"`,
  docker: `${LOG_CALL}\n${failIf("docker", "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?")}\necho 24.0.5`,
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
  for (const d of ["bin", "stubs", "nix", "usr-local-bin", "root", "home", "state", "dev-disk"]) fs.mkdirSync(path.join(dir, d));
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
 * Runs a bootstrap script as cloud-init does (`bash FILE args`, as root) in a private mount
 * namespace; its stderr also goes to `<dir>/bootstrap.log`, standing in for cloud-init's log.
 */
function bootstrap(b: Bootstrap, script: string, args: string[], env: Record<string, string> = {}): Promise<Result> {
  const inner =
    'set -e; d=$1; shift; mount --bind "$d/nix" /nix; mount --bind "$d/usr-local-bin" /usr/local/bin; mount --bind "$d/root" /root; ' +
    'mount --bind "$d/fstab" /etc/fstab; mkdir -p /dev/disk; mount --bind "$d/dev-disk" /dev/disk; ' +
    'bash "$@" 2> >(tee -a "$d/bootstrap.log" >&2) && rc=0 || rc=$?; if [ -n "${AFTER:-}" ]; then eval "$AFTER"; fi; exit $rc';
  return run("unshare", ["-m", "--propagation", "private", "bash", "-c", inner, "bootstrap", b.dir, path.join(SCRIPTS, script), ...args], {
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

const marker = (b: Bootstrap) => fs.readFileSync(b.marker, "utf8");

describe("builder-bootstrap.sh", () => {
  test("success: Nix, then skopeo from the pinned nixpkgs, both linked; `ok nix=... skopeo=...` written last", async () => {
    const b = prepare();
    fs.writeFileSync(b.marker, "failed installing Nix\n"); // an earlier run's
    const r = await bootstrap(b, "builder-bootstrap.sh", ["ec2-user", "8"]);
    expect(show(r)).toMatch(/^exit 0 /);
    expect(marker(b)).toBe("ok nix=2.30.1 skopeo=1.18.0\n");
    expect((fs.statSync(b.marker).mode & 0o777).toString(8)).toBe("644");
    const calls = b.calls();
    // The stale marker was gone before the first step, and nothing ran after the new one was written.
    expect(calls.every((c) => c.endsWith("[marker: absent]"))).toBe(true);
    expect(calls.map((c) => c.split(" ")[0])).toEqual(["dnf", "curl", "installer", "nix", "nix"]);
    expect(calls[2]).toContain(
      "install linux --no-confirm --init systemd --extra-conf trusted-users = root ec2-user --extra-conf max-jobs = 8",
    );
    expect(calls[3]).toBe(`nix profile install --profile /nix/var/nix/profiles/neko-infra-tools ${NIXPKGS}#skopeo [marker: absent]`);
    expect(calls[4]).toBe("nix --version [marker: absent]");
    expect(fs.readlinkSync(path.join(b.usrLocalBin, "nix"))).toBe("/nix/var/nix/profiles/default/bin/nix");
    expect(fs.readlinkSync(path.join(b.usrLocalBin, "nix-store"))).toBe("/nix/var/nix/profiles/default/bin/nix-store");
    expect(fs.readlinkSync(path.join(b.usrLocalBin, "skopeo"))).toBe("/nix/var/nix/profiles/neko-infra-tools/bin/skopeo");
    expect(fs.readdirSync(path.join(b.dir, "state"))).toEqual(["bootstrap.status"]); // no temp file left
  });

  test.each([
    ["dnf", "installing git", "Error: Failed to download metadata for repo 'amazonlinux'"],
    ["installer", "installing Nix", "nix-installer: error: Install failure"],
    ["nix-profile", `installing skopeo from ${NIXPKGS}`, "HTTP error 404"],
  ])("%s fails: exit 1, marker `failed %s`", async (stub, step, error) => {
    const b = prepare();
    const r = await bootstrap(b, "builder-bootstrap.sh", ["ec2-user", "auto"], { STUB_FAIL: stub });
    expect(r.code).toBe(1);
    expect(marker(b)).toBe(`failed ${step}\n`);
    expect(r.stderr).toContain(error);
    expect(r.stderr).toContain(`builder-bootstrap: failed while ${step} (exit 1)`);
  });

  test("wake.js waits for a slow bootstrap (marker absent, progress from its log) and reports its versions", async () => {
    const b = prepare();
    fs.writeFileSync(b.marker, "ok nix=old skopeo=old\n");
    const boot = bootstrap(b, "builder-bootstrap.sh", ["ec2-user", "auto"], { STUB_SLOW: "4" });
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
  test("CPU host: docker, the docker group, then `ok docker=<version>`", async () => {
    const b = prepare();
    const r = await bootstrap(b, "host-bootstrap.sh", ["ec2-user", "0"]);
    expect(show(r)).toMatch(/^exit 0 /);
    expect(marker(b)).toBe("ok docker=24.0.5\n");
    expect(b.calls()).toEqual([
      "systemctl enable --now docker [marker: absent]",
      "usermod -aG docker ec2-user [marker: absent]",
      `install -d -m 0755 -o ec2-user ${b.dir}/state/host [marker: absent]`,
      "docker version --format {{.Server.Version}} [marker: absent]",
    ]);
  });

  test("GPU host with ECR: every job finishes before `ok docker=<version> gpu=<driver>`", async () => {
    const b = prepare();
    const registry = "123456789012.dkr.ecr.eu-central-1.amazonaws.com";
    const r = await bootstrap(b, "host-bootstrap.sh", ["ec2-user", "1", registry]);
    expect(show(r)).toMatch(/^exit 0 /);
    expect(marker(b)).toBe("ok docker=24.0.5 gpu=550.127.05\n");
    const calls = b.calls();
    expect(calls.every((c) => c.endsWith("[marker: absent]"))).toBe(true);
    expect(calls.map((c) => c.replace(" [marker: absent]", ""))).toEqual([
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
        const r = await bootstrap(b, "host-bootstrap.sh", ["ec2-user", "0", "-", "vol-0abc"], {
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
    const r = await bootstrap(b, "host-bootstrap.sh", ["ec2-user", "1"]);
    expect(r.code).toBe(1);
    expect(marker(b)).toBe("failed checking for the NVIDIA container toolkit\n");
    expect(r.stderr).toContain("nvidia-ctk missing: is this the NVIDIA driver AMI?");
  });

  test("Docker does not answer: `failed checking that Docker answers`", async () => {
    const b = prepare();
    fs.writeFileSync(b.marker, "ok docker=20.10.0\n");
    const r = await bootstrap(b, "host-bootstrap.sh", ["ec2-user", "0"], { STUB_FAIL: "docker" });
    expect(r.code).toBe(1);
    expect(marker(b)).toBe("failed checking that Docker answers\n");
  });

  test("the ECR helper cannot be installed: `failed installing the ECR credential helper`", async () => {
    const b = prepare();
    const r = await bootstrap(b, "host-bootstrap.sh", ["ec2-user", "0", "123456789012.dkr.ecr.eu-central-1.amazonaws.com"], {
      STUB_FAIL: "dnf",
    });
    expect(r.code).toBe(1);
    expect(marker(b)).toBe("failed installing the ECR credential helper\n");
  });

  test("a usage error writes no marker at all (nothing was attempted)", async () => {
    const b = prepare();
    const r = await bootstrap(b, "host-bootstrap.sh", ["ec2-user"]);
    expect(r.code).toBe(2);
    expect(fs.existsSync(b.marker)).toBe(false);
  });
});
