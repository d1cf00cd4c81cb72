import { execFileSync } from "child_process";
import * as crypto from "crypto";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { parse } from "yaml";
import { hashDirectory } from "../../lib/flakeSource";
import { nixSigningKeys, s3CacheUri } from "../../lib/nixCache";
import { gpuInstanceProblem, isArmInstanceType } from "../../lib/instanceTypes";
import { ecrHostOfArn, lifecyclePolicy, pullPolicy, pushPolicy } from "../../lib/registry";
import { scriptCommand, shellQuote } from "../../lib/shell";
import { knownHostsLine, sshOptions, writeSshFiles } from "../../lib/sshFiles";
import { builderUserData, hostUserData } from "../../lib/userdata";

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), "neko-infra-unit-"));

describe("shell command lines", () => {
  test.each(["plain", "with space", "it's", "$(touch /tmp/pwned)", 'a"b', "new\nline", "", "*", "--flag"])(
    "quoting survives a real shell: %j",
    (word) => {
      const out = execFileSync("/bin/sh", ["-c", `printf %s ${shellQuote(word)}`]).toString();
      expect(out).toBe(word);
    },
  );

  test("scriptCommand runs the script from stdin with args and inline env", () => {
    const cmd = scriptCommand("wait-for-nix.sh", ["a b", "c"], { REGISTRY_PASSWORD: "p'w $x" });
    expect(cmd.command).toBe(`REGISTRY_PASSWORD='p'\\''w $x' bash -s -- 'a b' c`);
    expect(cmd.stdin).toBe(fs.readFileSync(path.join(__dirname, "../../scripts/wait-for-nix.sh"), "utf8"));
    const echo = execFileSync("/bin/sh", ["-c", cmd.command], { input: 'printf "%s|%s|%s" "$1" "$2" "$REGISTRY_PASSWORD"' }).toString();
    expect(echo).toBe("a b|c|p'w $x");
  });

  test("scriptCommand refuses an environment name a shell would misread", () => {
    expect(() => scriptCommand("wait-for-nix.sh", [], { "A;rm": "x" })).toThrow(/bad environment name/);
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

  test("lifecycle keeps the newest N", () => {
    expect(JSON.parse(lifecyclePolicy(7)).rules[0].selection).toEqual({
      tagStatus: "any",
      countType: "imageCountMoreThan",
      countNumber: 7,
    });
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

describe("user-data", () => {
  const hostKey = {
    privateKey: "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
    publicKey: "ssh-ed25519 AAAAC3Nz host",
  };

  test("builder: pinned host key only, bootstrap script embedded verbatim and run with its args", () => {
    const text = builderUserData({ hostKey, sshUser: "ec2-user", maxJobs: 8, idleMinutes: 0 });
    expect(text.startsWith("#cloud-config\n")).toBe(true);
    const doc = parse(text);
    expect(doc.ssh_keys).toEqual({ ed25519_private: hostKey.privateKey, ed25519_public: hostKey.publicKey });
    expect(doc.ssh_genkeytypes).toEqual(["ed25519"]);
    expect(doc.ssh_deletekeys).toBe(true);
    expect(doc.write_files[0].content).toBe(fs.readFileSync(path.join(__dirname, "../../scripts/builder-bootstrap.sh"), "utf8"));
    expect(doc.runcmd).toEqual([["bash", "/var/lib/neko-infra/builder-bootstrap.sh", "ec2-user", "8"]]);
  });

  test("builder: the idle timer runs builder-idle-stop.sh every minute with the configured limit", () => {
    const doc = parse(builderUserData({ hostKey, sshUser: "ec2-user", maxJobs: "auto", idleMinutes: 45 }));
    const files = Object.fromEntries(doc.write_files.map((f: any) => [f.path, f.content]));
    expect(files["/var/lib/neko-infra/builder-idle-stop.sh"]).toBe(
      fs.readFileSync(path.join(__dirname, "../../scripts/builder-idle-stop.sh"), "utf8"),
    );
    expect(files["/etc/systemd/system/neko-builder-idle.service"]).toContain(
      "ExecStart=/usr/bin/bash /var/lib/neko-infra/builder-idle-stop.sh 45\n",
    );
    expect(files["/etc/systemd/system/neko-builder-idle.timer"]).toContain("OnUnitActiveSec=1min");
    expect(doc.runcmd[1]).toEqual(["systemctl", "enable", "--now", "neko-builder-idle.timer"]);
  });

  test("host: GPU flag and ECR registry reach the bootstrap", () => {
    const doc = parse(hostUserData({ hostKey, sshUser: "ec2-user", gpu: true, ecrRegistry: "1.dkr.ecr.eu-central-1.amazonaws.com" }));
    expect(doc.runcmd).toEqual([
      ["bash", "/var/lib/neko-infra/host-bootstrap.sh", "ec2-user", "1", "1.dkr.ecr.eu-central-1.amazonaws.com"],
    ]);
    expect(parse(hostUserData({ hostKey, sshUser: "ec2-user", gpu: false })).runcmd).toEqual([
      ["bash", "/var/lib/neko-infra/host-bootstrap.sh", "ec2-user", "0"],
    ]);
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
});

describe("ssh files for the docker provider", () => {
  test("key 0600, host key pinned, options use exactly them", () => {
    const dir = path.join(tmp(), "dev-host");
    const opts = writeSshFiles(dir, { host: "203.0.113.20", port: 22, privateKey: "KEY", hostKey: "ssh-ed25519 AAAA\n" });
    expect(fs.statSync(path.join(dir, "id")).mode & 0o777).toBe(0o600);
    expect(fs.readFileSync(path.join(dir, "id"), "utf8")).toBe("KEY\n");
    expect(fs.readFileSync(path.join(dir, "known_hosts"), "utf8")).toBe("203.0.113.20 ssh-ed25519 AAAA\n");
    expect(opts).toEqual(sshOptions(dir));
    expect(opts.join(" ")).toContain("StrictHostKeyChecking=yes");
  });

  test("a non-default port is written the way ssh looks it up", () => {
    expect(knownHostsLine({ host: "10.0.0.2", port: 2222, hostKey: "ssh-ed25519 AAAA" })).toBe("[10.0.0.2]:2222 ssh-ed25519 AAAA\n");
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
