/**
 * The stack outputs `npm run status` reads (tools/status.js): `machines` (no secret: kind, role,
 * where and how to reach each machine, the EC2 region and the stack tag its instances carry) and
 * the SSH logins hostSsh / builderSsh (secret), for ec2 stacks and for ssh and local machines.
 */
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { EIP, runStack, stackConfig } from "../support/stack";
import { rolloutUrn } from "../../tools/status-report";

const KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE=\n-----END OPENSSH PRIVATE KEY-----\n";
const HOSTKEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB9nDl2ZH6Tz5R5bLPMbUE6EaF7HFGWU2mmKDzHgDm4G";

test("an ec2 stack: both machines by region and stack tag, the builder's cache; logins secret", async () => {
  const run = await runStack(stackConfig("dev", { realAddresses: true }), { stack: "dev" });
  expect(run.outputs.machines).toEqual([
    {
      role: "builder",
      kind: "ec2",
      stackTag: "neko-infra/dev",
      address: EIP.builder,
      port: 22,
      user: "ec2-user",
      region: expect.any(String),
      enabled: true,
      cache: expect.stringMatching(/^s3:\/\//),
    },
    { role: "host", kind: "ec2", stackTag: "neko-infra/dev", address: EIP.host, port: 22, user: "ec2-user", region: expect.any(String) },
  ]);
  expect(run.secretOutputs).toEqual(expect.arrayContaining(["builderSsh", "hostSsh"]));
  expect(run.secretOutputs).not.toContain("machines");
  expect(JSON.stringify(run.outputs.machines)).not.toContain("PRIVATE KEY");
  // The fix status gives for a neko container that drifted replaces exactly the rollout step.
  expect(rolloutUrn("dev", { role: "host", kind: "ec2" })).toBe(run.byName("host-neko").urn);
});

test("an ssh builder and host: their configured logins become the secret *Ssh outputs; a local machine has none", async () => {
  const flakeDir = fs.mkdtempSync(path.join(os.tmpdir(), "neko-infra-flake-"));
  fs.writeFileSync(path.join(flakeDir, "flake.nix"), "{ outputs = _: { }; }\n");
  const ssh = (host: string) =>
    JSON.stringify({ kind: "ssh", host, port: 2222, user: "neko", privateKey: KEY, hostKey: HOSTKEY, tls: false });
  const config = {
    "neko-infra:builder": JSON.stringify({ kind: "ssh", host: "10.231.7.2", privateKey: KEY, hostKey: HOSTKEY }),
    "neko-infra:image": JSON.stringify({ flake: flakeDir, attr: "image" }),
    "neko-infra:registry": JSON.stringify({ kind: "oci", url: "10.231.7.1:5000/neko", insecure: true }),
    "neko-infra:host": ssh("10.0.0.5"),
    "neko-infra:neko": JSON.stringify({ userPassword: "user-pass-1", adminPassword: "admin-pass-1", apiToken: "api-token-0123456789" }),
  };
  const secrets = { secretKeys: ["neko-infra:builder", "neko-infra:host", "neko-infra:neko"] };
  const run = await runStack(config, secrets);
  expect(run.outputs.machines).toEqual([
    {
      role: "builder",
      kind: "ssh",
      stackTag: expect.stringMatching(/^neko-infra\//),
      address: "10.231.7.2",
      port: 22,
      user: "root",
      enabled: true,
    },
    { role: "host", kind: "ssh", stackTag: expect.stringMatching(/^neko-infra\//), address: "10.0.0.5", port: 2222, user: "neko" },
  ]);
  expect(run.outputs.hostSsh).toEqual({ host: "10.0.0.5", port: 2222, user: "neko", privateKey: KEY, hostKey: HOSTKEY });
  expect(run.outputs.builderSsh).toEqual({ host: "10.231.7.2", port: 22, user: "root", privateKey: KEY, hostKey: HOSTKEY });
  expect(run.secretOutputs).toEqual(expect.arrayContaining(["builderSsh", "hostSsh"]));

  const local = await runStack(
    { ...config, "neko-infra:builder": JSON.stringify({ kind: "local" }), "neko-infra:host": JSON.stringify({ kind: "local" }) },
    secrets,
  );
  expect(local.outputs.machines).toEqual([
    { role: "builder", kind: "local", stackTag: expect.stringMatching(/^neko-infra\//), enabled: true },
    { role: "host", kind: "local", stackTag: expect.stringMatching(/^neko-infra\//) },
  ]);
  expect(local.outputs.hostSsh).toBeUndefined();
  expect(local.outputs.builderSsh).toBeUndefined();
  expect(rolloutUrn(local.byName("host-neko").urn.split("::")[0].slice("urn:pulumi:".length), { role: "host", kind: "local" })).toBe(
    local.byName("host-neko").urn,
  );
});
