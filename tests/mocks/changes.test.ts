/**
 * What a config change does to the graph, compared by the inputs each resource would be registered
 * with (equal inputs mean no diff for the engine): builder teardown touches only the builder's side,
 * a neko setting moves only neko's step (and its wake step), a new image moves build, push and
 * rollout. Plus the other machine kinds' shapes. The engine suite proves the same with real runs
 * where the resources can be registered here (tests/engine).
 */
import { tlsRemoveCommand } from "../../lib/caddy";
import { removeCommand } from "../../lib/neko";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { Registered, runStack, stackConfig, StackRun } from "../support/stack";

const base = () => stackConfig("dev", { realAddresses: true });
function withConfig(key: string, change: (v: any) => void, cfg = base()): Record<string, string> {
  const value = JSON.parse(cfg[`neko-infra:${key}`]);
  change(value);
  return { ...cfg, [`neko-infra:${key}`]: JSON.stringify(value) };
}

/** Names of resources whose inputs differ between two runs, plus those only in one of them. */
function changed(a: StackRun, b: StackRun): { differ: string[]; removed: string[]; added: string[] } {
  const key = (r: Registered) => `${r.type}::${r.name}`;
  const ma = new Map(a.resources.map((r) => [key(r), r]));
  const mb = new Map(b.resources.map((r) => [key(r), r]));
  const names = (ks: string[]) => ks.map((k) => k.split("::")[1]).sort();
  return {
    differ: names([...ma.keys()].filter((k) => mb.has(k) && JSON.stringify(ma.get(k)!.inputs) !== JSON.stringify(mb.get(k)!.inputs))),
    removed: names([...ma.keys()].filter((k) => !mb.has(k))),
    added: names([...mb.keys()].filter((k) => !ma.has(k))),
  };
}

/** Which inputs of one resource differ. */
function differingInputs(a: StackRun, b: StackRun, name: string): string[] {
  const [x, y] = [a.byName(name).inputs, b.byName(name).inputs];
  return [...new Set([...Object.keys(x), ...Object.keys(y)])].filter((k) => JSON.stringify(x[k]) !== JSON.stringify(y[k])).sort();
}

let dev: StackRun;
beforeAll(async () => {
  dev = await runStack(base(), { stack: "dev" });
}, 30_000);

test("the same config twice registers identical inputs (nothing to update)", async () => {
  expect(changed(dev, await runStack(base(), { stack: "dev" }))).toEqual({ differ: [], removed: [], added: [] });
});

test("builder.enabled: false removes the builder, keeps what steps connect with, and runs no step", async () => {
  const off = await runStack(
    withConfig("builder", (b) => (b.enabled = false)),
    { stack: "dev" },
  );
  expect(changed(dev, off)).toEqual({
    // the wake steps learn the builder is off: an update that runs nothing (`update: ":"`)
    differ: ["image-build-wake", "registry-push-wake"],
    removed: [
      "builder-ci-ssh",
      "builder-eip-assoc",
      "builder-instance",
      "builder-key",
      "builder-profile",
      "builder-role",
      "builder-setup",
      "builder-setup-wake",
      "builder-sg",
      "cache-builder-access",
      "registry-builder-push",
    ],
    added: [],
  });
  for (const wake of ["image-build-wake", "registry-push-wake"]) expect(differingInputs(dev, off, wake)).toEqual(["environment"]);
  expect(off.byName("image-build-wake").inputs.environment.DISABLED).toMatch(/turn it back on first: npm run builder:up -- dev$/);
  // kept: the Elastic IP and keys the steps connect with, so nothing is rebuilt when it comes back
  expect(
    off.resources
      .filter((r) => r.name.startsWith("builder"))
      .map((r) => r.name)
      .sort(),
  ).toEqual(["builder", "builder-eip", "builder-host-key", "builder-ssh-key"]);
  expect(off.outputs.imageRef).toBe(dev.outputs.imageRef);
});

test("a neko setting moves neko's rollout (and its wake step) only", async () => {
  const run = await runStack(
    withConfig("neko", (n) => (n.screen = "1280x720@25")),
    { stack: "dev" },
  );
  expect(changed(dev, run)).toEqual({ differ: ["host-neko", "host-neko-wake"], removed: [], added: [] });
  // the command line changes too: the readable specification under it (a preview's line diff)
  expect(differingInputs(dev, run, "host-neko")).toEqual(["create", "stdin"]);
  expect(differingInputs(dev, run, "host-neko-wake")).toEqual(["triggers"]);
  const spec = (r: typeof run) =>
    r
      .byName("host-neko")
      .inputs.create.split("\n")
      .filter((l: string) => l.includes("NEKO_DESKTOP_SCREEN"));
  expect([spec(dev), spec(run)]).toEqual([["#   NEKO_DESKTOP_SCREEN=1600x900@30"], ["#   NEKO_DESKTOP_SCREEN=1280x720@25"]]);
});

test("the UDP range moves neko and the host firewall, not the instance", async () => {
  const run = await runStack(
    withConfig("neko", (n) => (n.webrtc = { epr: "53000-53010" })),
    { stack: "dev" },
  );
  expect(changed(dev, run)).toEqual({ differ: ["host-neko", "host-neko-wake", "host-sg"], removed: [], added: [] });
});

test("a new flake revision rebuilds, pushes and rolls neko over; builder and host stay", async () => {
  const run = await runStack(
    withConfig("image", (i) => (i.flake = "github:G-structure/neko/0000000000000000000000000000000000000001")),
    { stack: "dev" },
  );
  expect(changed(dev, run)).toEqual({
    // ...and, once neko runs it, the host tags the new image in ECR (running-host)
    differ: [
      "host-keep-image",
      "host-keep-image-wake",
      "host-neko",
      "host-neko-wake",
      "image-build",
      "image-build-wake",
      "registry-push",
      "registry-push-wake",
    ],
    removed: [],
    added: [],
  });
  expect(run.outputs.imageRef).not.toBe(dev.outputs.imageRef);
});

test("turning TURN on adds the relay and its credentials, and moves the firewall and neko", async () => {
  const run = await runStack(
    withConfig("neko", (n) => (n.turn = true)),
    { stack: "dev" },
  );
  expect(changed(dev, run)).toEqual({
    differ: ["host-neko", "host-neko-wake", "host-sg"],
    removed: [],
    added: ["host-turn", "host-turn-password", "host-turn-wake"],
  });
});

test("bad config: the program registers nothing and fails with every problem", async () => {
  const bad = withConfig("host", (h) => Object.assign(h, { sshCidrs: ["0.0.0.0/0"], instanceType: "t4g.large" }));
  await expect(runStack(bad, { stack: "dev" })).rejects.toThrow(
    /invalid stack configuration \(2 problems\):\n {2}- neko-infra:host.instanceType: t4g.large is an arm64[^\n]*\n {2}- neko-infra:host.sshCidrs\[0\]: 0.0.0.0\/0 opens SSH/,
  );
});

describe("other kinds", () => {
  const KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE=\n-----END OPENSSH PRIVATE KEY-----\n";
  const HOSTKEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB9nDl2ZH6Tz5R5bLPMbUE6EaF7HFGWU2mmKDzHgDm4G";
  const flakeDir = fs.mkdtempSync(path.join(os.tmpdir(), "neko-infra-flake-"));
  fs.writeFileSync(path.join(flakeDir, "flake.nix"), "{ outputs = _: { }; }\n");
  const secrets = { secretKeys: ["neko-infra:builder", "neko-infra:registry", "neko-infra:host", "neko-infra:neko"] };
  const passwords = { userPassword: "user-pass-1", adminPassword: "admin-pass-1", apiToken: "api-token-0123456789" };

  const shape = (extra: Record<string, unknown> = {}) => ({
    "neko-infra:builder": JSON.stringify({ kind: "ssh", host: "10.231.7.2", privateKey: KEY, hostKey: HOSTKEY }),
    "neko-infra:image": JSON.stringify({ flake: flakeDir, attr: "image" }),
    "neko-infra:registry": JSON.stringify({
      kind: "oci",
      url: "10.231.7.1:5000/neko",
      username: "neko",
      password: "s3cret-pw",
      insecure: true,
    }),
    "neko-infra:host": JSON.stringify({ kind: "local" }),
    "neko-infra:neko": JSON.stringify(passwords),
    ...extra,
  });

  jest.setTimeout(30_000);

  test("ssh builder, oci registry, local host: only Commands, no secret on any command line", async () => {
    const run = await runStack(shape(), secrets);
    const custom = run.resources.filter((r) => !r.type.startsWith("neko-infra:"));
    expect(custom.map((r) => `${r.type} ${r.name}`).sort()).toEqual([
      "command:local:Command host-neko",
      "command:local:Command host-neko-wake",
      "command:local:Command image-build-wake",
      "command:local:Command image-ship",
      "command:local:Command image-ship-wake",
      "command:local:Command registry-push-wake",
      "command:remote:Command image-build",
      "command:remote:Command registry-push",
    ]);
    // the flake as configured, so the command line is the same on every machine
    expect(run.byName("image-ship").inputs.create).toBe(`bash -s -- ${flakeDir} root@10.231.7.2 22`);
    expect(run.byName("image-build").inputs.create).toMatch(
      /^timeout -k 15s 7200s bash -s -- path:\/nix\/store\/[0-9a-f]{32}-source image$/,
    );
    expect(run.byName("registry-push").inputs.create).toBe(`timeout -k 15s 3600s bash -s -- ${run.outputs.storePath} 10.231.7.1:5000/neko`);
    for (const r of custom) {
      const line = `${r.inputs.create ?? ""} ${r.inputs.update ?? ""} ${r.inputs.delete ?? ""}`;
      expect([r.name, line]).not.toEqual([r.name, expect.stringMatching(/s3cret-pw|PRIVATE KEY|admin-pass|api-token/)]);
    }
    for (const name of ["image-ship", "registry-push", "host-neko"]) expect(run.secretInputs[name]).toContain("stdin");
    expect(run.byName("host-neko").inputs.delete).toBe(removeCommand("test"));
    expect(run.byName("host-neko").inputs.delete).toMatch(/^docker rm -f neko neko-candidate neko-previous >\/dev\/null 2>&1 \|\| true; /);
    expect(run.outputs.imageRef).toMatch(/^10\.231\.7\.1:5000\/neko@sha256:[0-9a-f]{64}$/);
    expect(run.outputs.url).toBe("http://localhost:8080/");
    expect(run.secretOutputs.sort()).toEqual(["adminPassword", "builderSsh", "userPassword"]);
  });

  test("a local flake is shipped again only when its content changes", async () => {
    const a = await runStack(shape(), secrets);
    fs.writeFileSync(path.join(flakeDir, "extra.nix"), "{}\n");
    const b = await runStack(shape(), secrets);
    expect(changed(a, b).differ).toEqual([
      "host-neko",
      "host-neko-wake",
      "image-build",
      "image-build-wake",
      "image-ship",
      "image-ship-wake",
      "registry-push",
      "registry-push-wake",
    ]);
  });

  test("the local stack: this machine's Nix, `docker load` into its Docker, neko on localhost", async () => {
    const run = await runStack(
      shape({
        "neko-infra:builder": JSON.stringify({ kind: "local" }),
        "neko-infra:registry": JSON.stringify({ kind: "docker" }),
      }),
      secrets,
    );
    expect(run.ofType("command:remote:Command")).toEqual([]);
    expect(run.byName("image-build").inputs.create).toBe(`bash -s -- path:${flakeDir} image`);
    expect(run.byName("registry-load").inputs.create).toBe(`bash -s -- ${run.outputs.storePath} neko-infra/neko`);
    expect(run.outputs.imageRef).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(run.byName("image-build-wake").inputs.environment).toMatchObject({ TARGET: "local", READY: "nix" });
    expect(run.byName("host-neko-wake").inputs.environment).toMatchObject({ TARGET: "local", READY: "docker" });
  });

  test("an ssh host known by name: neko gets the address it resolves to, never the name (pion takes addresses only)", async () => {
    const run = await runStack(
      shape({
        "neko-infra:host": JSON.stringify({ kind: "ssh", host: "localhost", user: "neko", privateKey: KEY, hostKey: HOSTKEY, tls: false }),
      }),
      secrets,
    );
    expect(run.byName("host-neko").inputs.stdin).toContain("NEKO_WEBRTC_NAT1TO1=127.0.0.1");
    expect(run.byName("host-neko").inputs.stdin).not.toContain("NEKO_WEBRTC_NAT1TO1=localhost");
  });

  test("an ssh host: reached with the given key, TLS on its public address, neko named by it", async () => {
    const run = await runStack(
      shape({
        "neko-infra:host": JSON.stringify({
          kind: "ssh",
          host: "10.0.0.5",
          publicAddress: "8.8.4.4",
          user: "neko",
          privateKey: KEY,
          hostKey: HOSTKEY,
          gpu: true,
        }),
      }),
      secrets,
    );
    expect(run.ofType("aws:ec2/instance:Instance")).toEqual([]);
    expect(run.byName("host-neko").type).toBe("command:remote:Command");
    expect(run.byName("host-neko").inputs.connection).toMatchObject({ host: "10.0.0.5", user: "neko", port: 22 });
    // its setup step (as root through sudo: the user is not root) needs a Docker engine; every
    // later step waits for the setup's marker
    expect(run.byName("host-setup").inputs.create).toBe("timeout -k 15s 1200s sudo -n bash -s -- neko 0 - - 0");
    expect(run.byName("host-setup-wake").inputs.environment).toMatchObject({ READY: "docker", WAKE: "none" });
    expect(run.byName("host-neko-wake").inputs.environment).toMatchObject({
      READY: "marker",
      WAKE: "none",
      SSH_HOST_KEY_SETTING: "host.hostKey",
    });
    expect(run.byName("host-neko").inputs.triggers).toEqual(["host-setup-id"]);
    // The host outlives the stack: destroy takes neko, its specs and the front off it.
    expect(run.byName("host-neko").inputs.delete).toBe(removeCommand("test"));
    expect(run.byName("host-tls").inputs.delete).toBe(tlsRemoveCommand());
    expect(run.byName("host-tls").deleteBeforeReplace).toBe(true);
    expect(run.byName("host-neko").deleteBeforeReplace).toBe(true); // its delete must not undo its replacement
    expect(run.byName("host-neko").inputs.stdin).toContain("NEKO_WEBRTC_NAT1TO1=8.8.4.4");
    expect(run.byName("host-tls").inputs.create).toBe("timeout -k 15s 600s bash -s -- public.ecr.aws/docker/library/caddy:2.11 8.8.4.4");
    expect(run.outputs.url).toBe("https://8.8.4.4/");
  });

  test("a local builder sends the build to the configured remote builders", async () => {
    const builders = "ssh-ng://root@10.231.7.2 x86_64-linux /root/.ssh/builder 1 1 - - c3NoLWVkMjU1MTk=";
    const run = await runStack(shape({ "neko-infra:builder": JSON.stringify({ kind: "local", remoteBuilders: builders }) }), secrets);
    const build = run.byName("image-build");
    expect(build.type).toBe("command:local:Command");
    expect(build.inputs.create).toBe(`bash -s -- path:${flakeDir} image`);
    expect(
      build.inputs.stdin.startsWith(`export STEP_SCRIPT=nix-build\nexport STEP_BUDGET=7200s\nexport NIX_BUILDERS='${builders}'\n`),
    ).toBe(true);
    expect(build.inputs.triggers).toHaveLength(1);
  });
});
