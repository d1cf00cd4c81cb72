/**
 * What the build and push scripts say when something is wrong, run as their Pulumi Commands run
 * them (command line and stdin from `scriptCommand`). Each fault must fail the script and name its
 * cause; a push that fails must leave nothing in the registry.
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

  const shipped = await runLocal(
    scriptCommand(
      "ship-flake.sh",
      [FIXTURE, `${b.BUILDER_USER}@${b.BUILDER_ADDR}`, b.BUILDER_PORT],
      shipEnv(fs.readFileSync(b.BUILDER_KEY, "utf8")),
    ),
  );
  const built = await runRemote(b, scriptCommand("nix-build.sh", [`path:${ok(shipped, "ship-flake.sh").trim()}`, "image"]));
  image = ok(built, "nix-build.sh on the builder").trim();
}, 180_000);

afterAll(async () => {
  await svc.stopAll();
}, 180_000);

function shipEnv(key: string, hostKey = b.BUILDER_HOST_KEY) {
  return { SSH_PRIVATE_KEY: key, SSH_HOST_KEY: hostKey };
}

const localEnv = () => ({ NEKO_INFRA_LOG_DIR: path.join(svc.dir, "logs") });

/** nix-build.sh of a fresh fixture copy, as for a `local` builder with `remoteBuilders`. */
async function buildLocalWithBuilders(builders: string, attr = "image") {
  const dir = fixtureCopy(svc.dir, uniqueMarker("fault"));
  const s = settings({ builder: { kind: "local", remoteBuilders: builders }, image: { flake: dir, attr } });
  if (s.builder.kind !== "local" || !s.builder.remoteBuilders) throw new Error("expected a local builder with remoteBuilders");
  return runLocal(
    scriptCommand("nix-build.sh", [`path:${s.image.localPath}`, s.image.attr], { NIX_BUILDERS: s.builder.remoteBuilders }),
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
    const r = await runLocal(
      scriptCommand("ship-flake.sh", [FIXTURE, `root@${b.BUILDER_ADDR}`, "22"], shipEnv(fs.readFileSync(wrongKey, "utf8"))),
    );
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toContain(
      `ship-flake: cannot reach the builder root@${b.BUILDER_ADDR}:22 over SSH: root@${b.BUILDER_ADDR}: Permission denied (publickey).`,
    );
  });

  test("ship-flake.sh refuses a builder whose host key is not the pinned one", async () => {
    const other = fs.readFileSync(`${wrongKey}.pub`, "utf8").split(" ").slice(0, 2).join(" ");
    const r = await runLocal(
      scriptCommand("ship-flake.sh", [FIXTURE, `root@${b.BUILDER_ADDR}`, "22"], shipEnv(fs.readFileSync(b.BUILDER_KEY, "utf8"), other)),
    );
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
    const r = await runLocal(
      scriptCommand("ship-flake.sh", [FIXTURE, `root@${deadAddr}`, "22"], shipEnv(fs.readFileSync(b.BUILDER_KEY, "utf8"))),
    );
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
    const r = await runLocal(
      scriptCommand("ship-flake.sh", [FIXTURE, `root@${dropAddr}`, "22"], shipEnv(fs.readFileSync(b.BUILDER_KEY, "utf8"))),
    );
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(
      `ship-flake: cannot reach the builder root@${dropAddr}:22 over SSH: ssh: connect to host ${dropAddr} port 22: Connection timed out`,
    );
    expect(r.seconds).toBeLessThan(UNREACHABLE_BOUND_SECONDS);
    console.log(`silent builder reported by ship-flake.sh after ${r.seconds.toFixed(1)}s`);
  });

  test("wait-for-nix.sh gives up after its timeout, naming what is missing", async () => {
    // A PATH with bash and the few tools the script itself uses, but neither nix nor skopeo.
    const bin = fs.mkdtempSync(path.join(svc.dir, "bin-"));
    for (const t of ["bash", "sleep", "hostname", "cat", "tail"]) {
      const real = ["/usr/bin", "/bin"].map((d) => path.join(d, t)).find((p) => fs.existsSync(p));
      if (!real) throw new Error(`no ${t} in /usr/bin or /bin`);
      fs.symlinkSync(real, path.join(bin, t));
    }
    const r = await runLocal(scriptCommand("wait-for-nix.sh", ["1"]), { PATH: bin });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^wait-for-nix: nix skopeo not answering on \S+ after 1s$/m);
  });
});

describe("failing build", () => {
  test("on the builder (kind ssh): Nix's own error text reaches stderr", async () => {
    const shipped = await runLocal(
      scriptCommand("ship-flake.sh", [FIXTURE, `root@${b.BUILDER_ADDR}`, "22"], shipEnv(fs.readFileSync(b.BUILDER_KEY, "utf8"))),
    );
    const ref = `path:${ok(shipped, "ship-flake.sh").trim()}`;
    const r = await runRemote(b, scriptCommand("nix-build.sh", [ref, "broken"]));
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toMatch(
      new RegExp(
        `^nix-build: building ${reEscape(ref)}#broken failed \\(full log: \\S+:/root/\\.cache/neko-infra/logs/build-\\S+\\.log\\)$`,
        "m",
      ),
    );
    expect(r.stderr).toContain("error: fixture build failure (neko-infra broken fixture)");
  });

  test("through NIX_BUILDERS (kind local): Nix's own error text reaches stderr", async () => {
    const r = await buildLocalWithBuilders(buildersLine(b), "broken");
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("error: fixture build failure (neko-infra broken fixture)");
    // A failing build is not a builder problem: no ssh diagnosis.
    expect(r.stderr).not.toContain("cannot be used");
  });
});

describe("push", () => {
  test("a wrong registry password: the refused credentials are named and nothing is pushed", async () => {
    const r0 = registrySettings("wrong-password");
    const before = await countUploads(reg);
    const r = await runRemote(b, scriptCommand("push-image.sh", [image, r0.url], pushEnv(r0)));
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toMatch(
      new RegExp(`^push-image: the registry ${reEscape(reg.REGISTRY_ADDR)} refused the credentials \\(basic auth\\): `, "m"),
    );
    expect(await countUploads(reg)).toBe(before);
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
    const r = await runRemote(b, scriptCommand("push-image.sh", [image, r0.url], pushEnv(r0)));
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
    const r = await runRemote(b, scriptCommand("push-image.sh", [junk, r0.url], pushEnv(r0)));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^push-image: ${reEscape(junk)} is not a readable docker-archive: `, "m"));
    expect(await countUploads(reg)).toBe(before);
  });

  test("a truncated archive in a temp file on the builder: named unreadable", async () => {
    const made = await onBuilder(b, `f=$(mktemp --suffix=.tar) && head -c 5000 ${image} >"$f" && echo "$f"`);
    const tmp = ok(made, "truncated copy on the builder").trim();
    const r0 = registrySettings();
    const r = await runRemote(b, scriptCommand("push-image.sh", [tmp, r0.url], pushEnv(r0)));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^push-image: ${reEscape(tmp)} is not a readable docker-archive: `, "m"));
  });

  test("a store path the builder does not have (built elsewhere, or collected)", async () => {
    const missing = "/nix/store/00000000000000000000000000000000-neko-fixture-image.tar";
    const r0 = registrySettings();
    const r = await runRemote(b, scriptCommand("push-image.sh", [missing, r0.url], pushEnv(r0)));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^push-image: no image archive at ${reEscape(missing)} on \\S+ `, "m"));
  });
});

function tcpPortFree(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once("error", () => resolve(false));
    srv.listen(port, host, () => srv.close(() => resolve(true)));
  });
}
