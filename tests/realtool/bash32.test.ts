/**
 * The operator's machine is a Mac: the scripts that run there (local steps, the npm run wrappers)
 * run under the real bash 3.2.48 (macOS's /bin/bash line, ../shared/tools/bash-3.2.48) with a
 * PATH that has no GNU-only tools (no timeout, flock, sha256sum, setsid, nproc; bsdtar as tar:
 * tests/harness/bsd-path.sh), exactly as a local Command runs them (`/bin/sh -c 'bash -s -- ...'`,
 * the step's standard input from lib/shell.ts).
 *
 * The three steps that looked green and did nothing under bash 3.2 (an empty array under set -u
 * was an error, and the EXIT trap's status 0 ended the script): a push to an OCI registry without
 * credentials, a rollout without a persistent profile, a pull without registry credentials. Each
 * now does its job; and a step that does fail fails with its status.
 * Not imitated: GNU options of tools a Mac also has (stat -c, sed -i, date -d ...): the static
 * check in tests/unit/portability.test.ts covers those.
 */
import * as fs from "fs";
import * as path from "path";
import { rolloutEnv, envFile, nekoEnv, nekoSecretEnv } from "../../lib/neko";
import { scriptCommand, ScriptRun } from "../../lib/shell";
import {
  DOCKERD_TOOLS,
  DockerEnv,
  fixtureCopy,
  freeNekoPorts,
  HARNESS,
  ok,
  RegistryEnv,
  requireTools,
  run,
  runLocal,
  Services,
  settings,
  show,
} from "./support";

jest.setTimeout(300_000);

const svc = new Services();
let bsdPath: string;
let reg: RegistryEnv;
let dk: DockerEnv;
let storePath: string;
let imageRef = "";

/** A local step under bash 3.2 and the BSD-like PATH. */
function asOnAMac(r: ScriptRun, env: Record<string, string> = {}) {
  return runLocal(scriptCommand(r), { PATH: bsdPath, DOCKER_HOST: dk.DOCKER_HOST, DOCKER_CONFIG: dk.DOCKER_CONFIG, ...env }, 240_000);
}

beforeAll(async () => {
  requireTools(["nix", "/bin/busybox", "skopeo", "curl", "/usr/bin/docker-registry", ...DOCKERD_TOOLS]);
  const made = await run("bash", [path.join(HARNESS, "bsd-path.sh"), path.join(svc.dir, "bsd")], { timeoutMs: 30_000 });
  bsdPath = ok(made, "tests/harness/bsd-path.sh").trim();
  // An anonymous registry: a pull and a push without credentials.
  reg = await svc.registry("registry", "127.0.0.1:5391", { REGISTRY_ANONYMOUS: "1" });
  dk = await svc.dockerd("docker", reg.REGISTRY_ADDR);
  const flake = fixtureCopy(svc.dir, `bash32-${process.pid}`);
  const built = await run("nix", ["build", "--json", "--no-link", `path:${flake}#image`], { timeoutMs: 300_000 });
  storePath = (JSON.parse(ok(built, "nix build")) as { outputs: { out: string } }[])[0].outputs.out;
}, 600_000);

afterAll(async () => {
  await svc.stopAll();
}, 180_000);

test("the shell is macOS's: bash 3.2.48, no timeout, flock or sha256sum on PATH, bsdtar as tar", async () => {
  const r = await run(
    "/bin/sh",
    ["-c", "bash --version | head -n 1; for t in timeout flock sha256sum; do command -v $t || echo no-$t; done; tar --version | head -n 1"],
    {
      env: { PATH: bsdPath },
    },
  );
  expect(r.stdout).toMatch(/^GNU bash, version 3\.2\.48/);
  expect(r.stdout).toContain("no-timeout\nno-flock\nno-sha256sum\n");
  expect(r.stdout).toMatch(/bsdtar/);
});

test("push-image.sh to an OCI registry without credentials pushes (it used to end green having pushed nothing)", async () => {
  const r = await asOnAMac({
    script: "push-image.sh",
    args: [storePath, `${reg.REGISTRY_ADDR}/neko`],
    env: { REGISTRY_INSECURE: "1" },
    budgetSeconds: 600,
  });
  expect(show(r)).toMatch(/^exit 0 /);
  expect(r.stdout).toMatch(new RegExp(`^${reg.REGISTRY_ADDR.replace(/\./g, "\\.")}/neko@sha256:[0-9a-f]{64}\n$`));
  imageRef = r.stdout.trim();
  const tags = await run("curl", ["-s", `http://${reg.REGISTRY_ADDR}/v2/neko/tags/list`]);
  expect(tags.stdout).toContain(path.basename(storePath).split("-")[0]);
});

test("docker-load.sh loads and tags the archive", async () => {
  const r = await asOnAMac({ script: "docker-load.sh", args: [storePath, "neko-infra/neko"], budgetSeconds: 600 });
  expect(show(r)).toMatch(/^exit 0 /);
  expect(r.stdout).toMatch(/^sha256:[0-9a-f]{64}\n$/);
});

/** The rollout's environment for a local host, as components/nekoHost.ts builds it. */
async function rollout(profile: boolean) {
  const ports = await freeNekoPorts();
  const s = settings({
    image: { flake: "github:a/b/0123456789012345678901234567890123456789" },
    neko: { persistProfile: profile, httpPort: ports.httpPort, webrtc: { epr: ports.epr } },
  });
  const rt = { publicAddress: "127.0.0.1", gpu: false, tls: false };
  const env = {
    ...rolloutEnv(s.neko, rt, {
      bindAddress: "127.0.0.1",
      profile: profile ? "neko-infra-bash32-profile" : undefined,
      stackTag: "neko-infra/bash32",
    }),
    // With the API token: the candidate's screenshot needs it.
    NEKO_ENV: envFile({
      ...nekoEnv(s.neko, rt),
      ...nekoSecretEnv({ userPassword: "user-Pa55-bash32", adminPassword: "admin-Pa55-bash32", apiToken: "api-Tok3n-bash32-0123456789" }),
    }),
  };
  return asOnAMac({ script: "neko-rollout.sh", args: [imageRef], env, budgetSeconds: 600 });
}

test("neko-rollout.sh without a persistent profile, pulling without registry credentials: neko starts and answers", async () => {
  expect(imageRef).not.toBe("");
  const r = await rollout(false);
  expect(show(r)).toMatch(/^exit 0 /);
  expect(r.stdout).toMatch(/^neko (started|replaced) sha256:[0-9a-f]{64} http:\/\/127\.0\.0\.1:\d+\n$/);
  const url = r.stdout.trim().split(" ").pop()!;
  expect((await run("curl", ["-sf", `${url}/health`])).stdout).toBe("true");
  // once more: the same spec runs, nothing restarts (the lock, the spec hash: no flock, no sha256sum)
  const again = await rollout(false);
  expect(show(again)).toMatch(/^exit 0 /);
});

test("a step that fails under bash 3.2 fails with its status, never 0", async () => {
  const r = await asOnAMac({
    script: "neko-rollout.sh",
    args: ["not-an-image-ref"],
    env: { NEKO_HTTP_PORT: "8080", NEKO_PUBLISH: "127.0.0.1:1:8080/tcp" },
    budgetSeconds: 60,
  });
  expect(r.code).toBe(1);
  expect(r.stderr).toContain("IMAGE_REF must be REPOSITORY@sha256:DIGEST or sha256:IMAGE_ID");
  const push = await asOnAMac({
    script: "push-image.sh",
    args: ["/nix/store/nothing-here", `${reg.REGISTRY_ADDR}/neko`],
    budgetSeconds: 60,
  });
  expect(push.code).toBe(1);
  expect(push.stderr).toContain("no image archive at /nix/store/nothing-here");
});

test("nix-build.sh with remote builders refuses up front when the Nix daemon would ignore them for this user", async () => {
  // A Mac's Nix is a daemon that honours --builders only for trusted users. A stand-in `nix` (the
  // real daemon would need a multi-user install here) answers `nix store info` as Nix 2.19+ does.
  fs.chmodSync(svc.dir, 0o755); // the unprivileged user reaches bsd/ and the stand-in below
  const stub = path.join(svc.dir, "untrusted-nix");
  fs.mkdirSync(stub, { mode: 0o755 });
  fs.writeFileSync(
    path.join(stub, "nix"),
    '#!/bin/sh\n# stand-in: a Nix daemon that does not trust this user\ncase "$*" in *"store info"*) printf "Store URL: daemon\\nVersion: 2.24.9\\nTrusted: 0\\n" ;; *) echo "stand-in nix: $*" >&2; exit 3 ;; esac\n',
    { mode: 0o755 },
  );
  const home = path.join(svc.dir, "nobody-home");
  fs.mkdirSync(home);
  fs.chmodSync(home, 0o777);
  const sc = scriptCommand({
    script: "nix-build.sh",
    args: ["github:a/b/0123456789012345678901234567890123456789", "image"],
    env: { NIX_BUILDERS: "ssh-ng://b x86_64-linux - 1" },
    budgetSeconds: 60,
  });
  const r = await run(
    "runuser",
    ["-u", "nobody", "--", "env", `PATH=${stub}:${bsdPath}`, `HOME=${home}`, "NIX_REMOTE=daemon", "/bin/sh", "-c", sc.command],
    {
      input: sc.stdin,
      timeoutMs: 60_000,
    },
  );
  expect(r.code).toBe(1);
  expect(r.stderr).toContain(
    "nix-build: the Nix daemon ignores the remote builders (builder.remoteBuilders) for nobody, who is not one of its trusted-users",
  );
  expect(r.stderr).toContain("extra-trusted-users = nobody");
  expect(r.stderr).not.toContain("stand-in nix: "); // refused before any build was tried
});
