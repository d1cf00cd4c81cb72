/**
 * What a config change does to the graph: builder teardown removes only the builder, neko settings
 * replace only the container, a new image moves only build, push, pull and container. Compared by
 * the inputs each resource would be registered with: equal inputs mean no diff for the engine.
 */
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { Registered, runStack, stackConfig, StackRun } from "../support/stack";

function withConfig(stack: string, key: string, change: (v: any) => void): Record<string, string> {
  const cfg = stackConfig(stack);
  const value = JSON.parse(cfg[`neko-infra:${key}`]);
  change(value);
  return { ...cfg, [`neko-infra:${key}`]: JSON.stringify(value) };
}

/** Names of resources whose inputs differ between two runs, plus those only in one of them. */
function changed(a: StackRun, b: StackRun): { differ: string[]; removed: string[]; added: string[] } {
  const key = (r: Registered) => `${r.type}::${r.name}`;
  const ma = new Map(a.resources.map((r) => [key(r), r]));
  const mb = new Map(b.resources.map((r) => [key(r), r]));
  // sshOpts name a per-run temp dir in these tests; in a real stack the path is fixed.
  const norm = (r: Registered) => JSON.stringify({ ...r.inputs, sshOpts: undefined });
  return {
    differ: [...ma.keys()]
      .filter((k) => mb.has(k) && norm(ma.get(k)!) !== norm(mb.get(k)!))
      .map((k) => k.split("::")[1])
      .sort(),
    removed: [...ma.keys()]
      .filter((k) => !mb.has(k))
      .map((k) => k.split("::")[1])
      .sort(),
    added: [...mb.keys()]
      .filter((k) => !ma.has(k))
      .map((k) => k.split("::")[1])
      .sort(),
  };
}

const sshDir = fs.mkdtempSync(path.join(os.tmpdir(), "neko-infra-ssh-"));
let dev: StackRun;
beforeAll(async () => {
  dev = await runStack(stackConfig("dev"), { stack: "dev", sshDir });
}, 30_000);

test("the same config twice registers identical inputs (nothing to update)", async () => {
  const again = await runStack(stackConfig("dev"), { stack: "dev", sshDir });
  expect(changed(dev, again)).toEqual({ differ: [], removed: [], added: [] });
});

test("builder.enabled: false removes the builder and nothing else; build and push keep their inputs", async () => {
  const off = await runStack(
    withConfig("dev", "builder", (b) => (b.enabled = false)),
    { stack: "dev", sshDir },
  );
  expect(changed(dev, off)).toEqual({
    differ: [],
    removed: [
      "builder-eip-assoc",
      "builder-instance",
      "builder-key",
      "builder-profile",
      "builder-ready",
      "builder-role",
      "builder-running",
      "builder-sg",
      "cache-builder-access",
      "registry-builder-push",
    ],
    added: [],
  });
  // kept: the Elastic IP and keys the build and push commands connect with, so they do not re-run
  expect(
    off.resources
      .filter((r) => r.name.startsWith("builder"))
      .map((r) => r.name)
      .sort(),
  ).toEqual(["builder", "builder-eip", "builder-host-key", "builder-ssh-key"]);
  expect(off.outputs.imageRef).toBe(dev.outputs.imageRef);
  expect(off.outputs.builderIp).toBe(dev.outputs.builderIp);
});

test("changing a neko setting replaces the container only", async () => {
  const run = await runStack(
    withConfig("dev", "neko", (n) => (n.screen = "1280x720@25")),
    { stack: "dev", sshDir },
  );
  expect(changed(dev, run)).toEqual({ differ: ["host-neko"], removed: [], added: [] });
  expect(run.byName("host-neko").inputs.envs).toContain("NEKO_DESKTOP_SCREEN=1280x720@25");
});

test("changing the UDP range moves the container and the host firewall, not the instance", async () => {
  const run = await runStack(
    withConfig("dev", "neko", (n) => (n.webrtc = { epr: "53000-53010" })),
    { stack: "dev", sshDir },
  );
  expect(changed(dev, run)).toEqual({ differ: ["host-neko", "host-sg"], removed: [], added: [] });
});

test("a new flake revision rebuilds, pushes, pulls and replaces the container; builder and host stay", async () => {
  const run = await runStack(
    withConfig("dev", "image", (i) => (i.flake = "github:G-structure/neko/0000000000000000000000000000000000000001")),
    { stack: "dev", sshDir },
  );
  expect(changed(dev, run)).toEqual({ differ: ["host-neko", "host-pull", "image-build", "registry-push"], removed: [], added: [] });
  expect(run.outputs.imageRef).not.toBe(dev.outputs.imageRef);
});

test("bad config: the program registers nothing and fails with every problem", async () => {
  const bad = withConfig("dev", "host", (h) => Object.assign(h, { sshCidrs: ["0.0.0.0/0"], instanceType: "t4g.large" }));
  await expect(runStack(bad, { stack: "dev", sshDir })).rejects.toThrow(
    /invalid stack configuration \(2 problems\):\n {2}- neko-infra:host.instanceType: t4g.large is an arm64[^\n]*\n {2}- neko-infra:host.sshCidrs: 0.0.0.0\/0 opens SSH/,
  );
});

describe("other kinds", () => {
  const KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE=\n-----END OPENSSH PRIVATE KEY-----\n";
  const HOSTKEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB9nDl2ZH6Tz5R5bLPMbUE6EaF7HFGWU2mmKDzHgDm4G";
  const flakeDir = fs.mkdtempSync(path.join(os.tmpdir(), "neko-infra-flake-"));
  fs.writeFileSync(path.join(flakeDir, "flake.nix"), "{ outputs = _: { }; }\n");

  const local = (extra: Record<string, unknown> = {}) => ({
    "neko-infra:builder": JSON.stringify({ kind: "ssh", host: "10.231.7.2", privateKey: KEY, hostKey: HOSTKEY }),
    "neko-infra:image": JSON.stringify({ flake: flakeDir, attr: "image" }),
    "neko-infra:registry": JSON.stringify({
      kind: "oci",
      url: "10.231.7.1:5000/neko",
      username: "neko",
      password: "s3cret-pw",
      insecure: true,
    }),
    "neko-infra:host": JSON.stringify({ kind: "none" }),
    ...extra,
  });

  jest.setTimeout(30_000);

  test("the local stack's shape: ssh builder, oci registry, no host: command resources only", async () => {
    const run = await runStack(local(), { secretKeys: ["neko-infra:builder", "neko-infra:registry"] });
    const custom = run.resources.filter((r) => !r.type.startsWith("neko-infra:"));
    expect(custom.map((r) => `${r.type} ${r.name}`).sort()).toEqual([
      "command:local:Command image-ship",
      "command:remote:Command builder-ready",
      "command:remote:Command image-build",
      "command:remote:Command registry-push",
    ]);
    const ship = run.byName("image-ship");
    expect(ship.inputs.create).toMatch(
      new RegExp(`^SSH_PRIVATE_KEY='${KEY.replace(/\n/g, "\\n")}' SSH_HOST_KEY='${HOSTKEY}' bash -s -- ${flakeDir} root@10.231.7.2 22$`),
    );
    expect(run.secretInputs["image-ship"]).toContain("create");
    expect(run.byName("image-build").inputs.create).toMatch(/^bash -s -- path:\/nix\/store\/[0-9a-f]{32}-source image$/);
    const push = run.byName("registry-push");
    expect(push.inputs.create).toBe(
      `REGISTRY_AUTH=basic REGISTRY_USER=neko REGISTRY_PASSWORD=s3cret-pw REGISTRY_INSECURE=1 bash -s -- ${run.outputs.storePath} 10.231.7.1:5000/neko`,
    );
    expect(run.secretInputs["registry-push"]).toContain("create");
    expect(push.inputs.logging).toBe("none");
    expect(run.outputs.imageRef).toMatch(/^10\.231\.7\.1:5000\/neko@sha256:[0-9a-f]{64}$/);
    expect(run.secretOutputs).toEqual([]);
  });

  test("a local flake is shipped again only when its content changes", async () => {
    const a = await runStack(local(), { secretKeys: ["neko-infra:builder", "neko-infra:registry"] });
    fs.writeFileSync(path.join(flakeDir, "extra.nix"), "{}\n");
    const b = await runStack(local(), { secretKeys: ["neko-infra:builder", "neko-infra:registry"] });
    expect(changed(a, b).differ).toEqual(["image-build", "image-ship", "registry-push"]);
    expect(a.byName("image-ship").inputs.triggers).not.toEqual(b.byName("image-ship").inputs.triggers);
  });

  test("a local builder builds with the operator's Nix, sending the build to the configured remote builders", async () => {
    const builders = "ssh-ng://root@10.231.7.2 x86_64-linux /root/.ssh/builder 1 1 - - c3NoLWVkMjU1MTk=";
    const run = await runStack(local({ "neko-infra:builder": JSON.stringify({ kind: "local", remoteBuilders: builders }) }), {
      secretKeys: ["neko-infra:registry"],
    });
    expect(run.ofType("command:remote:Command")).toEqual([]);
    const build = run.byName("image-build");
    expect(build.type).toBe("command:local:Command");
    expect(build.inputs.create).toBe(`NIX_BUILDERS='${builders}' bash -s -- path:${flakeDir} image`);
    expect(build.inputs.triggers).toHaveLength(1);
    expect(run.byName("registry-push").type).toBe("command:local:Command");
  });

  test("an ssh host runs the container with the given key and public address", async () => {
    const run = await runStack(
      local({
        "neko-infra:host": JSON.stringify({
          kind: "ssh",
          host: "10.0.0.5",
          publicAddress: "198.51.100.9",
          user: "neko",
          privateKey: KEY,
          hostKey: HOSTKEY,
          gpu: true,
        }),
      }),
      { secretKeys: ["neko-infra:builder", "neko-infra:registry", "neko-infra:host"] },
    );
    expect(run.ofType("aws:ec2/instance:Instance")).toEqual([]);
    expect(run.byName("host-docker").inputs.host).toBe("ssh://neko@10.0.0.5:22");
    expect(run.byName("host-neko").inputs.envs).toContain("NEKO_WEBRTC_NAT1TO1=198.51.100.9");
    expect(run.byName("host-neko").inputs.gpus).toBe("all");
    expect(run.byName("host-pull").inputs.create).toBe(`REGISTRY_USER=neko REGISTRY_PASSWORD=s3cret-pw bash -s -- ${run.outputs.imageRef}`);
    expect(run.secretInputs["host-pull"]).toContain("create");
    expect(run.outputs.url).toBe("http://198.51.100.9:8080/");
  });
});
