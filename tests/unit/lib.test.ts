import { execFileSync, spawnSync } from "child_process";
import * as crypto from "crypto";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { parse } from "yaml";
import { hashDirectory } from "../../lib/flakeSource";
import { nixSigningKeys, s3CacheUri } from "../../lib/nixCache";
import { gpuInstanceProblem, isArmInstanceType } from "../../lib/instanceTypes";
import { ecrHostOfArn, lifecyclePolicy, pullPolicy, pushPolicy, runningTag } from "../../lib/registry";
import { commandLine, envPreamble, scriptCommand, scriptInput, shellQuote } from "../../lib/shell";
import { builderSetup, hostSetup } from "../../lib/setup";
import { TLS_UID } from "../../lib/caddy";
import { TURN_PROC_UID } from "../../lib/turn";
import { machineUserData } from "../../lib/userdata";

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), "neko-infra-unit-"));

describe("shell command lines", () => {
  test.each(["plain", "with space", "it's", "$(touch /tmp/pwned)", 'a"b', "new\nline", "", "*", "--flag"])(
    "quoting survives a real shell: %j",
    (word) => {
      const out = execFileSync("/bin/sh", ["-c", `printf %s ${shellQuote(word)}`]).toString();
      expect(out).toBe(word);
    },
  );

  test("the environment goes on stdin, never in the command line; the script runs after it", () => {
    const run = { script: "push-image.sh" as const, args: ["a b", "c"], env: { REGISTRY_PASSWORD: "p'w $x" }, budgetSeconds: 60 };
    const cmd = scriptCommand(run);
    expect(cmd.command).toBe("bash -s -- 'a b' c");
    expect(cmd.command).not.toContain("p'w");
    // the budget, for the script's own message when timeout(1) stops it, then the environment
    expect(cmd.stdin.startsWith(`export STEP_SCRIPT=push-image\nexport STEP_BUDGET=60s\nexport REGISTRY_PASSWORD='p'\\''w $x'\n`)).toBe(
      true,
    );
    expect(cmd.stdin.endsWith(fs.readFileSync(path.join(__dirname, "../../scripts/push-image.sh"), "utf8"))).toBe(true);
    // what a real shell makes of it: the preamble, then a stand-in script that prints what it got
    const input = envPreamble(run.env) + 'printf "%s|%s|%s" "$1" "$2" "$REGISTRY_PASSWORD"';
    expect(execFileSync("/bin/sh", ["-c", cmd.command], { input }).toString()).toBe("a b|c|p'w $x");
  });

  test("every line a step prints is capped at 2000 characters, saying so, on stdout and stderr", () => {
    const run = { script: "push-image.sh" as const, args: [], budgetSeconds: 60 };
    // the step's real stdin with the script swapped for one that prints an over-long line
    const stdin = scriptCommand(run).stdin.replace(fs.readFileSync(path.join(__dirname, "../../scripts/push-image.sh"), "utf8"), "");
    const body = 'head -c 100000 /dev/zero | tr "\\0" x; echo; echo short; head -c 70000 /dev/zero | tr "\\0" y >&2; echo >&2';
    const r = spawnSync("bash", ["-s"], { input: stdin + body, encoding: "utf8" });
    const cut = " [... line cut at 2000 characters]";
    expect(r.stdout).toBe(`${"x".repeat(2000)}${cut}\nshort\n`);
    expect(r.stderr).toBe(`${"y".repeat(2000)}${cut}\n`);
  });

  test("a remote command is bounded by timeout(1) on the machine; a local one is not", () => {
    expect(commandLine({ args: ["x"], budgetSeconds: 90 }, true)).toBe("timeout -k 15s 90s bash -s -- x");
    expect(commandLine({ args: ["x"], budgetSeconds: 90 }, false)).toBe("bash -s -- x");
  });

  test("timeout(1) really stops a remote-style command at its budget", () => {
    const started = Date.now();
    const r = (() => {
      try {
        execFileSync("/bin/sh", ["-c", commandLine({ args: [], budgetSeconds: 1 }, true)], { input: "sleep 30" });
        return 0;
      } catch (e) {
        return (e as { status: number }).status;
      }
    })();
    expect(r).toBe(124);
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  test("the preamble refuses an environment name a shell would misread", () => {
    expect(() => envPreamble({ "A;rm": "x" })).toThrow(/bad environment name/);
  });
});

describe("ECR policies", () => {
  const arn = "arn:aws:ecr:eu-central-1:123456789012:repository/neko";

  test("push is scoped to the one repository; only the login token is on *", () => {
    const doc = JSON.parse(pushPolicy(arn));
    const star = doc.Statement.filter((s: any) => s.Resource === "*");
    expect(star).toEqual([{ Sid: "Login", Effect: "Allow", Action: "ecr:GetAuthorizationToken", Resource: "*" }]);
    const repo = doc.Statement.find((s: any) => s.Resource === arn);
    expect(repo.Action).toEqual(
      expect.arrayContaining(["ecr:PutImage", "ecr:InitiateLayerUpload", "ecr:UploadLayerPart", "ecr:CompleteLayerUpload"]),
    );
  });

  test("pull cannot push", () => {
    const actions = JSON.parse(pullPolicy(arn)).Statement.flatMap((s: any) => [s.Action].flat());
    expect(actions).toEqual(expect.arrayContaining(["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]));
    expect(actions.filter((a: string) => /Put|Upload/.test(a))).toEqual([]);
  });

  test("lifecycle keeps the newest N, and first claims the images hosts run (running-*), which no lower rule can expire", () => {
    const rules = JSON.parse(lifecyclePolicy(7)).rules;
    expect(rules.map((r: { rulePriority: number }) => r.rulePriority)).toEqual([1, 2]);
    expect(rules[0].selection).toEqual({
      tagStatus: "tagged",
      tagPatternList: ["running-*"],
      countType: "imageCountMoreThan",
      countNumber: 100,
    });
    expect(rules[1].selection).toEqual({ tagStatus: "any", countType: "imageCountMoreThan", countNumber: 7 });
    expect(runningTag("host")).toBe("running-host");
  });

  test("registry host from a repository ARN", () => {
    expect(ecrHostOfArn(arn)).toBe("123456789012.dkr.ecr.eu-central-1.amazonaws.com");
  });
});

describe("instance types", () => {
  test.each([
    ["c7g.large", true],
    ["t4g.small", true],
    ["c6gn.xlarge", true],
    ["x2gd.large", true],
    ["a1.large", true],
    ["g5g.xlarge", true],
    ["c6i.2xlarge", false],
    ["g4dn.xlarge", false],
    ["m5zn.large", false],
    ["gr6.4xlarge", false],
    ["t3.micro", false],
  ])("isArmInstanceType(%s) = %s", (t, arm) => expect(isArmInstanceType(t)).toBe(arm));

  test.each([["g4dn.xlarge"], ["g5.2xlarge"], ["g6.xlarge"], ["g6e.xlarge"], ["gr6.4xlarge"]])("%s runs the NVIDIA AMI", (t) =>
    expect(gpuInstanceProblem(t)).toBeUndefined(),
  );
  test.each([
    ["g4ad.xlarge", /AMD/],
    ["g5g.xlarge", /arm64/],
    ["p2.xlarge", /no NVIDIA GPU/],
    ["c6i.large", /no NVIDIA GPU/],
  ])("%s does not", (t, why) => expect(gpuInstanceProblem(t)).toMatch(why));
});

describe("user-data and the setup steps", () => {
  const hostKey = {
    privateKey: "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
    publicKey: "ssh-ed25519 AAAAC3Nz host",
  };

  test("user-data holds the pinned host key and nothing else, so no program change ever touches it", () => {
    const text = machineUserData(hostKey);
    expect(text.startsWith("#cloud-config\n")).toBe(true);
    expect(parse(text)).toEqual({
      ssh_deletekeys: true,
      ssh_genkeytypes: ["ed25519"],
      ssh_keys: { ed25519_private: hostKey.privateKey, ed25519_public: hostKey.publicKey },
    });
  });

  test("builder setup: user, max-jobs and idle minutes as plain arguments; the idle script travels in its environment", () => {
    expect(builderSetup({ sshUser: "ec2-user", maxJobs: 8, idleMinutes: 0 })).toEqual({
      script: "builder-bootstrap.sh",
      args: ["ec2-user", "8", "0"],
      env: {},
    });
    expect(builderSetup({ sshUser: "ec2-user", maxJobs: "auto", idleMinutes: 45 })).toEqual({
      script: "builder-bootstrap.sh",
      args: ["ec2-user", "auto", "45"],
      env: { IDLE_STOP_SCRIPT: fs.readFileSync(path.join(__dirname, "../../scripts/builder-idle-stop.sh"), "utf8") },
    });
  });

  test("host setup: GPU flag, ECR registry, profile volume and idle minutes; '-' for none", () => {
    const gpu = hostSetup({
      sshUser: "ec2-user",
      gpu: true,
      ecrRegistry: "1.dkr.ecr.eu-central-1.amazonaws.com",
      profileVolumeId: "vol-0abc",
      idleMinutes: 20,
    });
    expect(gpu.args).toEqual(["ec2-user", "1", "1.dkr.ecr.eu-central-1.amazonaws.com", "vol-0abc", "20"]);
    expect(gpu.env.IDLE_STOP_SCRIPT).toBe(fs.readFileSync(path.join(__dirname, "../../scripts/host-idle-stop.sh"), "utf8"));
    // The restore with its library in front: systemd runs it from one file.
    const restore = ["neko-lib.sh", "neko-restore.sh"]
      .map((f) => fs.readFileSync(path.join(__dirname, "../../scripts", f), "utf8"))
      .join("");
    expect(gpu.env.NEKO_RESTORE_SCRIPT).toBe(restore);
    expect(gpu.env.NEKO_READY_SCRIPT).toBeUndefined(); // only with a wake link
    const ready = hostSetup({ sshUser: "ec2-user", gpu: false, idleMinutes: 30, readyTag: true });
    expect(ready.env.NEKO_READY_SCRIPT).toBe(fs.readFileSync(path.join(__dirname, "../../scripts/host-ready.sh"), "utf8"));
    expect(gpu.env.NEKO_IMDS_GUARD_SCRIPT).toBeUndefined(); // EC2 hosts only
    // With a TLS front on EC2: its certificates' volume, a sixth argument.
    expect(
      hostSetup({ sshUser: "ec2-user", gpu: false, profileVolumeId: "vol-0abc", tlsVolumeId: "vol-0tls", idleMinutes: 0 }).args,
    ).toEqual(["ec2-user", "0", "-", "vol-0abc", "0", "vol-0tls"]);
    const guarded = hostSetup({ sshUser: "ec2-user", gpu: false, idleMinutes: 0, imdsGuard: true });
    expect(guarded.env.NEKO_IMDS_GUARD_SCRIPT).toBe(fs.readFileSync(path.join(__dirname, "../../scripts/imds-guard.sh"), "utf8"));
    expect(guarded.env.IMDS_GUARD_UIDS).toBe(`${TLS_UID} ${TURN_PROC_UID}`);
    expect(hostSetup({ sshUser: "admin", gpu: false, idleMinutes: 0 })).toEqual({
      script: "host-bootstrap.sh",
      args: ["admin", "0", "-", "-", "0"],
      env: { NEKO_RESTORE_SCRIPT: restore },
    });
  });

  test("a setup step runs as root through sudo, its library and the step preamble before it", () => {
    const run = { ...builderSetup({ sshUser: "ec2-user", maxJobs: 4, idleMinutes: 0 }), budgetSeconds: 1800, asRoot: true };
    expect(commandLine(run, true)).toBe("timeout -k 15s 1800s sudo -n bash -s -- ec2-user 4 0");
    const stdin = scriptInput(run);
    const at = (name: string) => stdin.indexOf(fs.readFileSync(path.join(__dirname, "../../scripts", name), "utf8"));
    expect(at("step-preamble.sh")).toBeGreaterThan(0);
    expect(at("setup-lib.sh")).toBeGreaterThan(at("step-preamble.sh"));
    expect(at("builder-bootstrap.sh")).toBeGreaterThan(at("setup-lib.sh"));
    expect(stdin.startsWith("export STEP_SCRIPT=builder-bootstrap\nexport STEP_BUDGET=1800s\n")).toBe(true);
  });
});

describe("flake content hash", () => {
  function flakeDir(): string {
    const dir = tmp();
    fs.writeFileSync(path.join(dir, "flake.nix"), "{ outputs = _: {}; }");
    fs.mkdirSync(path.join(dir, "nix"));
    fs.writeFileSync(path.join(dir, "nix", "a.nix"), "1");
    return dir;
  }

  test("same content, same hash, wherever it lives", () => {
    expect(hashDirectory(flakeDir())).toBe(hashDirectory(flakeDir()));
  });

  test("a changed, added or renamed file, or an exec bit, changes it", () => {
    const dir = flakeDir();
    const seen = new Set([hashDirectory(dir)]);
    fs.writeFileSync(path.join(dir, "nix", "a.nix"), "2");
    seen.add(hashDirectory(dir));
    fs.writeFileSync(path.join(dir, "nix", "b.nix"), "");
    seen.add(hashDirectory(dir));
    fs.renameSync(path.join(dir, "nix", "b.nix"), path.join(dir, "nix", "c.nix"));
    seen.add(hashDirectory(dir));
    fs.chmodSync(path.join(dir, "nix", "c.nix"), 0o755);
    seen.add(hashDirectory(dir));
    expect(seen.size).toBe(5);
  });

  test(".git, result links and node_modules do not count", () => {
    const dir = flakeDir();
    const before = hashDirectory(dir);
    fs.mkdirSync(path.join(dir, ".git"));
    fs.writeFileSync(path.join(dir, ".git", "HEAD"), "ref");
    fs.symlinkSync("/nix/store/x", path.join(dir, "result"));
    fs.mkdirSync(path.join(dir, "node_modules"));
    expect(hashDirectory(dir)).toBe(before);
  });

  test("a .DS_Store (macOS Finder's, in any folder) does not count", () => {
    const dir = flakeDir();
    const before = hashDirectory(dir);
    const finder = Buffer.from("00000001427564310000100000000800", "hex"); // a .DS_Store's first bytes
    fs.writeFileSync(path.join(dir, ".DS_Store"), finder);
    fs.writeFileSync(path.join(dir, "nix", ".DS_Store"), finder);
    expect(hashDirectory(dir)).toBe(before);
    fs.writeFileSync(path.join(dir, "nix", "DS_Store"), finder); // only that exact name is Finder's
    expect(hashDirectory(dir)).not.toBe(before);
  });
});

describe("nix signing keys", () => {
  const { privateKey } = crypto.generateKeyPairSync("ed25519");
  const pem = privateKey.export({ format: "pem", type: "pkcs8" }).toString();

  test("secret is seed||public, public is the last 32 bytes, both named", () => {
    const keys = nixSigningKeys("neko-infra-dev-1", pem);
    const [name, secret] = keys.secretKey.split(":");
    const [pubName, pub] = keys.publicKey.split(":");
    expect([name, pubName]).toEqual(["neko-infra-dev-1", "neko-infra-dev-1"]);
    expect(Buffer.from(secret, "base64")).toHaveLength(64);
    expect(Buffer.from(secret, "base64").subarray(32).toString("base64")).toBe(pub);
  });

  test("a signature made with the seed verifies with the public key", () => {
    const keys = nixSigningKeys("k", pem);
    const seed = Buffer.from(keys.secretKey.split(":")[1], "base64").subarray(0, 32);
    const priv = crypto.createPrivateKey({
      key: Buffer.concat([Buffer.from("302e020100300506032b657004220420", "hex"), seed]),
      format: "der",
      type: "pkcs8",
    });
    const pubKey = crypto.createPublicKey({
      key: Buffer.concat([Buffer.from("302a300506032b6570032100", "hex"), Buffer.from(keys.publicKey.split(":")[1], "base64")]),
      format: "der",
      type: "spki",
    });
    const sig = crypto.sign(null, Buffer.from("1;/nix/store/x"), priv);
    expect(crypto.verify(null, Buffer.from("1;/nix/store/x"), pubKey, sig)).toBe(true);
  });

  test("refuses other key types and bad names", () => {
    const rsa = crypto.generateKeyPairSync("rsa", { modulusLength: 1024 }).privateKey.export({ format: "pem", type: "pkcs8" }).toString();
    expect(() => nixSigningKeys("k", rsa)).toThrow(/ed25519 key is needed, not rsa/);
    expect(() => nixSigningKeys("a b", pem)).toThrow(/bad key name/);
  });

  test("S3 store URI", () => expect(s3CacheUri("neko-cache-1a2b", "eu-central-1")).toBe("s3://neko-cache-1a2b?region=eu-central-1"));
});
