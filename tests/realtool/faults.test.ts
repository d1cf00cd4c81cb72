/**
 * What the build and push scripts say when something is wrong, run as their Pulumi Commands run
 * them (command line and stdin from `scriptCommand`; remote ones bounded by `timeout` on the
 * machine). Each fault must fail the script and name its cause in a few lines, never a secret; a
 * push that fails must leave nothing in the registry; a step that outlives its budget is stopped on
 * the machine and says so.
 */
import * as fs from "fs";
import * as net from "net";
import * as path from "path";
import { pushEnv } from "../../lib/registry";
import { scriptCommand } from "../../lib/shell";
import {
  BUILDER_AND_REGISTRY_TOOLS,
  BuilderEnv,
  buildersLine,
  countUploads,
  fixtureCopy,
  FIXTURE,
  freeTcpPort,
  inspectRemote,
  ok,
  onBuilder,
  RegistryEnv,
  requireTools,
  run,
  runLocal,
  runRemote,
  Services,
  settings,
  reEscape,
  uniqueMarker,
} from "./support";

jest.setTimeout(120_000);

/** How long a script may take to report an unreachable builder. */
const UNREACHABLE_BOUND_SECONDS = 40;

const svc = new Services();
let b: BuilderEnv;
let reg: RegistryEnv;
let wrongKey: string;
/** A store path on the builder holding the fixture image (built once in beforeAll). */
let image: string;
/** The fixture flake in the builder's store (`path:/nix/store/...-source`). */
let fixtureRef: string;
/** An address in the builder's /24 (reached over its veth) that no host owns: "No route to host". */
let deadAddr: string;
/** An address of the builder's netns that silently drops what it gets, like a stopped or firewalled host. */
let dropAddr: string;

beforeAll(async () => {
  requireTools([...BUILDER_AND_REGISTRY_TOOLS]);
  b = await svc.builder();
  reg = await svc.registry("registry", `${b.HOST_SIDE_ADDR}:${await freeTcpPort(b.HOST_SIDE_ADDR)}`);
  wrongKey = path.join(svc.dir, "wrong_ed25519");
  ok(await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "not-authorized", "-f", wrongKey]), "ssh-keygen");
  // Never an address off this machine: the builder is 10.231.N.2 behind 10.231.N.1, and .3 of the
  // same /24 goes out the same veth into the builder's netns, where nobody owns it.
  deadAddr = b.BUILDER_ADDR.replace(/\.2$/, ".3");
  dropAddr = b.BUILDER_ADDR.replace(/\.2$/, ".4");
  if (deadAddr === b.BUILDER_ADDR) throw new Error(`unexpected builder address ${b.BUILDER_ADDR}`);
  // .4 answers ARP (it is on the netns' eth0) but its replies go to a blackhole route: a SYN gets
  // no answer at all. All of it lives in the builder's netns and goes away with it.
  for (const args of [
    ["addr", "add", `${dropAddr}/24`, "dev", "eth0"],
    ["rule", "add", "from", dropAddr, "lookup", "100"],
    ["route", "add", "blackhole", "default", "table", "100"],
  ]) {
    ok(await run("ip", ["-n", b.BUILDER_NETNS, ...args]), `ip -n ${b.BUILDER_NETNS} ${args.join(" ")}`);
  }

  fixtureRef = await shipToBuilder(FIXTURE);
  const built = await runRemote(b, build(fixtureRef, "image"));
  image = ok(built, "nix-build.sh on the builder").trim();
}, 180_000);

afterAll(async () => {
  await svc.stopAll();
}, 180_000);

function shipEnv(key: string, hostKey = b.BUILDER_HOST_KEY) {
  return { SSH_PRIVATE_KEY: key, SSH_HOST_KEY: hostKey };
}

/** ship-flake.sh as components/nixImage.ts runs it (on this machine). */
function ship(dir: string, target: string, port: string, env: Record<string, string>) {
  return scriptCommand({ script: "ship-flake.sh", args: [dir, target, port], env, budgetSeconds: 1800 });
}

/** A flake copied into the builder's store; returns its `path:` ref there. */
async function shipToBuilder(dir: string): Promise<string> {
  const r = await runLocal(
    ship(dir, `${b.BUILDER_USER}@${b.BUILDER_ADDR}`, b.BUILDER_PORT, shipEnv(fs.readFileSync(b.BUILDER_KEY, "utf8"))),
  );
  return `path:${ok(r, "ship-flake.sh").trim()}`;
}

/** nix-build.sh on the builder, as components/nixImage.ts runs it: bounded by `timeout` there. */
function build(ref: string, attr: string, budgetSeconds = 7200, env: Record<string, string> = {}) {
  return scriptCommand({ script: "nix-build.sh", args: [ref, attr], env, budgetSeconds }, true);
}

/** push-image.sh on the builder, as components/imageRegistry.ts runs it. */
function push(storePath: string, r: ReturnType<typeof registrySettings>, budgetSeconds = 3600) {
  return scriptCommand({ script: "push-image.sh", args: [storePath, r.url], env: pushEnv(r), budgetSeconds }, true);
}

const localEnv = () => ({ NEKO_INFRA_LOG_DIR: path.join(svc.dir, "logs") });

/** nix-build.sh of a fresh fixture copy, as for a `local` builder with `remoteBuilders`. */
async function buildLocalWithBuilders(builders: string, attr = "image") {
  const dir = fixtureCopy(svc.dir, uniqueMarker("fault"));
  const s = settings({ builder: { kind: "local", remoteBuilders: builders }, image: { flake: dir, attr } });
  if (s.builder.kind !== "local" || !s.builder.remoteBuilders) throw new Error("expected a local builder with remoteBuilders");
  return runLocal(
    scriptCommand({
      script: "nix-build.sh",
      args: [`path:${s.image.localPath}`, s.image.attr],
      env: { NIX_BUILDERS: s.builder.remoteBuilders },
    }),
    localEnv(),
  );
}

function registrySettings(password = reg.REGISTRY_PASSWORD, addr = reg.REGISTRY_ADDR) {
  const s = settings({
    image: { flake: FIXTURE, attr: "image" },
    registry: { kind: "oci", url: `${addr}/neko`, username: reg.REGISTRY_USER, password, insecure: true },
  });
  if (s.registry.kind !== "oci") throw new Error("expected an oci registry");
  return s.registry;
}

describe("builder access", () => {
  test("NIX_BUILDERS with a key the builder does not accept: the ssh error, not Nix's 'required system features'", async () => {
    const r = await buildLocalWithBuilders(buildersLine(b, { key: wrongKey }));
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toContain(
      `nix-build: remote builder ssh-ng://root@${b.BUILDER_ADDR} cannot be used: root@${b.BUILDER_ADDR}: Permission denied (publickey).`,
    );
  });

  test("ship-flake.sh with a key the builder does not accept", async () => {
    const r = await runLocal(ship(FIXTURE, `root@${b.BUILDER_ADDR}`, "22", shipEnv(fs.readFileSync(wrongKey, "utf8"))));
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toContain(
      `ship-flake: cannot reach the builder root@${b.BUILDER_ADDR}:22 over SSH: root@${b.BUILDER_ADDR}: Permission denied (publickey).`,
    );
  });

  test("ship-flake.sh refuses a builder whose host key is not the pinned one", async () => {
    const other = fs.readFileSync(`${wrongKey}.pub`, "utf8").split(" ").slice(0, 2).join(" ");
    const r = await runLocal(ship(FIXTURE, `root@${b.BUILDER_ADDR}`, "22", shipEnv(fs.readFileSync(b.BUILDER_KEY, "utf8"), other)));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /^ship-flake: cannot reach the builder root@\S+:22 over SSH: .*(REMOTE HOST IDENTIFICATION|Host key verification failed)/m,
    );
  });

  test(`NIX_BUILDERS naming an unreachable builder fails within ${UNREACHABLE_BOUND_SECONDS}s, naming the cause`, async () => {
    const r = await buildLocalWithBuilders(buildersLine(b, { addr: deadAddr }));
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(
      `nix-build: remote builder ssh-ng://root@${deadAddr} cannot be used: ssh: connect to host ${deadAddr} port 22: No route to host`,
    );
    expect(r.seconds).toBeLessThan(UNREACHABLE_BOUND_SECONDS);
    console.log(`unreachable builder reported by nix-build.sh after ${r.seconds.toFixed(1)}s`);
  });

  test(`ship-flake.sh to an unreachable builder fails within ${UNREACHABLE_BOUND_SECONDS}s, naming the cause`, async () => {
    const r = await runLocal(ship(FIXTURE, `root@${deadAddr}`, "22", shipEnv(fs.readFileSync(b.BUILDER_KEY, "utf8"))));
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(
      `ship-flake: cannot reach the builder root@${deadAddr}:22 over SSH: ssh: connect to host ${deadAddr} port 22: No route to host`,
    );
    expect(r.seconds).toBeLessThan(UNREACHABLE_BOUND_SECONDS);
    console.log(`unreachable builder reported by ship-flake.sh after ${r.seconds.toFixed(1)}s`);
  });

  test(`NIX_BUILDERS naming a builder that drops packets (stopped, firewalled) fails within ${UNREACHABLE_BOUND_SECONDS}s, naming the cause`, async () => {
    const r = await buildLocalWithBuilders(buildersLine(b, { addr: dropAddr }));
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(
      `nix-build: remote builder ssh-ng://root@${dropAddr} cannot be used: ssh: connect to host ${dropAddr} port 22: Connection timed out`,
    );
    expect(r.seconds).toBeLessThan(UNREACHABLE_BOUND_SECONDS);
    console.log(`silent builder reported by nix-build.sh after ${r.seconds.toFixed(1)}s`);
  });

  test(`ship-flake.sh to a builder that drops packets fails within ${UNREACHABLE_BOUND_SECONDS}s, naming the cause`, async () => {
    const r = await runLocal(ship(FIXTURE, `root@${dropAddr}`, "22", shipEnv(fs.readFileSync(b.BUILDER_KEY, "utf8"))));
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(
      `ship-flake: cannot reach the builder root@${dropAddr}:22 over SSH: ssh: connect to host ${dropAddr} port 22: Connection timed out`,
    );
    expect(r.seconds).toBeLessThan(UNREACHABLE_BOUND_SECONDS);
    console.log(`silent builder reported by ship-flake.sh after ${r.seconds.toFixed(1)}s`);
  });
});

describe("failing build", () => {
  test("on the builder (kind ssh): Nix's own error text reaches stderr, in a few lines with the log's path", async () => {
    const ref = fixtureRef;
    const r = await runRemote(b, build(ref, "broken"));
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toMatch(
      new RegExp(
        `^nix-build: building ${reEscape(ref)}#broken failed after \\d+s \\(full log: \\S+:/root/\\.cache/neko-infra/logs/build-\\S+\\.log\\)$`,
        "m",
      ),
    );
    expect(r.stderr).toContain("neko-fixture-broken> error: fixture build failure (neko-infra broken fixture)");
    expect(r.stderr).toMatch(/^error: builder for '\/nix\/store\/\S+-neko-fixture-broken\.drv' failed with exit code 1/m);
    // The command provider puts all of stderr into its error message: keep it short.
    expect(r.stderr.trimEnd().split("\n").length).toBeLessThanOrEqual(25);
  });

  test("through NIX_BUILDERS (kind local): Nix's own error text reaches stderr", async () => {
    const r = await buildLocalWithBuilders(buildersLine(b), "broken");
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("error: fixture build failure (neko-infra broken fixture)");
    // A failing build is not a builder problem: no ssh diagnosis.
    expect(r.stderr).not.toContain("cannot be used");
  });

  test("an attr the flake does not have: its x86_64-linux packages, images first, and the key to set", async () => {
    // image-x86_64 is the default of image.attr; the fixture has no such output.
    const r = await runRemote(b, build(fixtureRef, "image-x86_64"));
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    const lines = r.stderr.trimEnd().split("\n");
    expect(lines).toEqual([
      expect.stringMatching(/^nix-build: building \S+#image-x86_64 on \S+; full log: \S+\.log$/),
      `nix-build: ${fixtureRef} has no output image-x86_64 for x86_64-linux (looked for packages.x86_64-linux.image-x86_64, legacyPackages.x86_64-linux.image-x86_64 and image-x86_64)`,
      expect.stringMatching(
        /^nix-build: its x86_64-linux packages \(images first\): image, image-arm64, image-crash, image-slow, (\S+, )*broken, (\S+, )*default, /,
      ),
      "nix-build: set neko-infra:image.attr to the one that is the image, e.g. pulumi config set --path image.attr image",
      expect.stringMatching(/^nix-build: full log: \S+:\/root\/\.cache\/neko-infra\/logs\/build-\S+\.log$/),
    ]);
    expect(r.seconds).toBeLessThan(15);
  });

  test("a build that outlives its time budget is stopped on the builder and says so, with what it was doing and the log", async () => {
    // A fresh copy: image-slow takes 6 s to build, the budget is 3 s.
    const ref = await shipToBuilder(fixtureCopy(svc.dir, uniqueMarker("budget")));
    const sc = build(ref, "image-slow", 3);
    expect(sc.command).toBe(`timeout -k 15s 3s bash -s -- ${ref} image-slow`);
    const r = await runRemote(b, sc, 60_000);
    // timeout(1)'s own status for a command it stopped.
    expect(r.code).toBe(124);
    expect(r.stdout).toBe("");
    expect(r.stderr).toMatch(
      new RegExp(
        `^nix-build: ran out of its time budget \\(3s\\) after [34]s while building ${reEscape(ref)}#image-slow: 0 of 1 derivations built; last log line: neko-fixture-image-slow\\.tar> fixture: slow build, second \\d of 6$`,
        "m",
      ),
    );
    expect(r.stderr).toMatch(/^nix-build: full log: \S+:\/root\/\.cache\/neko-infra\/logs\/build-\S+\.log$/m);
    // Within the budget plus the stop, well before timeout's 15 s KILL.
    expect(r.seconds).toBeLessThan(10);
    console.log(`build with a 3 s budget stopped after ${r.seconds.toFixed(1)}s`);
    // Nothing of it runs on: no Nix process for this flake copy is left on the builder.
    const left = await onBuilder(b, `pgrep -af '[n]ix build.*${ref}#image-slow' || true`);
    expect(ok(left, "pgrep on the builder")).toBe("");
  });
});

describe("push", () => {
  test("a wrong registry password: the refused credentials are named and nothing is pushed", async () => {
    const r0 = registrySettings("wrong-password");
    const before = await countUploads(reg);
    const r = await runRemote(b, push(image, r0));
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toMatch(
      new RegExp(`^push-image: the registry ${reEscape(reg.REGISTRY_ADDR)} refused the credentials \\(basic auth\\): `, "m"),
    );
    expect(await countUploads(reg)).toBe(before);
    // Neither the password nor the basic-auth string reaches stderr (shown and kept in state).
    expect(r.stderr).not.toContain("wrong-password");
    expect(r.stderr).not.toContain(Buffer.from(`${reg.REGISTRY_USER}:wrong-password`).toString("base64"));
    const tag = path.basename(image).split("-")[0];
    const inspect = await inspectRemote(reg, `${r0.url}:${tag}`);
    expect(inspect.code).not.toBe(0);
    expect(inspect.stderr).toMatch(/manifest unknown|name unknown|not found/i);
  });

  test("the registry down: named unreachable", async () => {
    // A registry of its own, stopped: its address then refuses connections. Its port holds "401"
    // (once misread as an HTTP 401): pick a free one of 40100-40199.
    let port = 0;
    for (let p = 40100; p < 40200 && !port; p++) if (await tcpPortFree(b.HOST_SIDE_ADDR, p)) port = p;
    expect(port).toBeGreaterThan(0);
    const addr = `${b.HOST_SIDE_ADDR}:${port}`;
    await svc.registry("registry-down", addr);
    await svc.stop("registry-down");
    const r0 = registrySettings(reg.REGISTRY_PASSWORD, addr);
    const r = await runRemote(b, push(image, r0));
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toMatch(new RegExp(`^push-image: the registry ${reEscape(addr)} is unreachable: .*connection refused`, "m"));
  });

  test("a store path that is not a docker-archive: named unreadable, nothing pushed", async () => {
    const added = await onBuilder(b, 'f=$(mktemp --suffix=.tar) && printf \'not a tar archive\\n\' >"$f" && nix store add-file "$f"');
    const junk = ok(added, "nix store add-file on the builder").trim();
    expect(junk).toMatch(/^\/nix\/store\/[0-9a-z]{32}-tmp\.\w+\.tar$/);
    const r0 = registrySettings();
    const before = await countUploads(reg);
    const r = await runRemote(b, push(junk, r0));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^push-image: ${reEscape(junk)} is not a readable docker-archive: `, "m"));
    expect(await countUploads(reg)).toBe(before);
  });

  test("a truncated archive in a temp file on the builder: named unreadable", async () => {
    const made = await onBuilder(b, `f=$(mktemp --suffix=.tar) && head -c 5000 ${image} >"$f" && echo "$f"`);
    const tmp = ok(made, "truncated copy on the builder").trim();
    const r0 = registrySettings();
    const r = await runRemote(b, push(tmp, r0));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^push-image: ${reEscape(tmp)} is not a readable docker-archive: `, "m"));
  });

  test("a store path the builder does not have (built elsewhere, or collected)", async () => {
    const missing = "/nix/store/00000000000000000000000000000000-neko-fixture-image.tar";
    const r0 = registrySettings();
    const r = await runRemote(b, push(missing, r0));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^push-image: no image archive at ${reEscape(missing)} on \\S+ `, "m"));
  });
  test("should a tool print the credentials in its error, stderr shows them replaced", async () => {
    // A skopeo that fails as the real one does, then echoes the password and the auth file (what a
    // future version, or a debug flag, might do). Run here: this machine reaches the registry too.
    const local = ok(await run("nix", ["build", "--no-link", "--json", `path:${FIXTURE}#image`]), "nix build here");
    const storePath = JSON.parse(local)[0].outputs.out as string;
    const bin = fs.mkdtempSync(path.join(svc.dir, "leaky-"));
    fs.writeFileSync(
      path.join(bin, "skopeo"),
      [
        "#!/bin/sh",
        'auth=""; prev=""',
        'for a in "$@"; do [ "$prev" = --authfile ] && auth=$(cat "$a"); prev=$a; done',
        '/usr/bin/skopeo "$@" || { rc=$?; echo "leaky: password $REGISTRY_PASSWORD, auth file $auth" >&2; exit $rc; }',
        "",
      ].join("\n"),
      { mode: 0o755 },
    );
    const password = `wrong-${uniqueMarker("pw")}`;
    const r0 = registrySettings(password);
    const r = await runLocal(scriptCommand({ script: "push-image.sh", args: [storePath, r0.url], env: pushEnv(r0) }), {
      PATH: `${bin}:${process.env.PATH}`,
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /^push-image: the registry \S+ refused the credentials \(basic auth\): leaky: password \[password\], auth file .*\[credentials\]/m,
    );
    expect(r.stderr).not.toContain(password);
    expect(r.stderr).not.toContain(Buffer.from(`${reg.REGISTRY_USER}:${password}`).toString("base64"));
  });

  test("a registry that accepts connections but never answers: the push is stopped at its time budget and says where it was", async () => {
    const held: net.Socket[] = [];
    const silent = net.createServer((sock) => held.push(sock));
    const port = await freeTcpPort(b.HOST_SIDE_ADDR);
    await new Promise<void>((res) => silent.listen(port, b.HOST_SIDE_ADDR, res));
    try {
      const addr = `${b.HOST_SIDE_ADDR}:${port}`;
      const r0 = registrySettings(reg.REGISTRY_PASSWORD, addr);
      const r = await runRemote(b, push(image, r0, 3), 60_000);
      expect(r.code).toBe(124);
      expect(r.stdout).toBe("");
      const tag = path.basename(image).split("-")[0];
      expect(r.stderr).toMatch(
        new RegExp(
          `^push-image: ran out of its time budget \\(3s\\) after [34]s while looking for ${reEscape(`${addr}/neko:${tag}`)} in the registry$`,
          "m",
        ),
      );
      expect(r.stderr).not.toContain(reg.REGISTRY_PASSWORD);
      expect(r.seconds).toBeLessThan(10);
    } finally {
      for (const sock of held) sock.destroy();
      await new Promise((res) => silent.close(res));
    }
  });
});

function tcpPortFree(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once("error", () => resolve(false));
    srv.listen(port, host, () => srv.close(() => resolve(true)));
  });
}
