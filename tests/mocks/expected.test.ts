/**
 * The stack output `expected` (what each step on the host is asked for, readable in a preview's
 * Outputs section as `old => new`): the prod stack (TLS front and TURN relay) under Pulumi mocks,
 * once with generated secrets and once with secrets given in the config. It must stay a plain
 * (non-secret) output, or a preview shows only `[secret]`, and no secret value may reach it. Also
 * the CI access groups a deploy job opens SSH in (tools/ci-ssh-access.js): rule-less, tagged.
 */
import { shownDigest } from "../../lib/spec";
import { runStack, stackConfig, StackRun, stdinEnv } from "../support/stack";

const given = {
  userPassword: "given-user-password-1234",
  adminPassword: "given-admin-password-1234",
  apiToken: "given-api-token-0123456789",
  turnPassword: "given-turn-password-0123456789",
};
let generated: StackRun;
let configured: StackRun;
beforeAll(async () => {
  const config = stackConfig("prod", { realAddresses: true });
  generated = await runStack(config, { stack: "prod" });
  const neko = { ...JSON.parse(config["neko-infra:neko"]), ...given };
  configured = await runStack({ ...config, "neko-infra:neko": JSON.stringify(neko) }, { stack: "prod", secretKeys: ["neko-infra:neko"] });
}, 60_000);

type Expected = { neko: Record<string, string>; front?: Record<string, string>; turn?: Record<string, string> };

test("expected: neko's spec, the front's and the relay's, in plain text", () => {
  const e = generated.outputs.expected as Expected;
  expect(generated.secretOutputs).not.toContain("expected");
  expect(Object.keys(e).sort()).toEqual(["front", "neko", "turn"]);
  expect(e.neko).toMatchObject({ NEKO_DESKTOP_SCREEN: "1920x1080@60", NEKO_NAME: "neko", NEKO_CAPTURE_VIDEO_CODEC: "h264" });
  expect(e.front).toMatchObject({
    TLS_SUBJECT: expect.stringMatching(/^[\d.]+$/),
    TLS_CADDYFILE: expect.stringContaining("reverse_proxy"),
  });
  expect(e.turn!.TURN_CONF).toMatch(/^listening-port=\d+$/m);
  // the same values the rollout shows under its command line, no more
  const create: string = generated.byName("host-neko").inputs.create;
  for (const [name, value] of Object.entries(e.neko)) if (!value.includes("\n")) expect(create).toContain(`#   ${name}=${value}\n`);
});

test("the rollout records the digest of expected.neko, which `npm run status` computes from the output", () => {
  for (const r of [generated, configured]) {
    const e = r.outputs.expected as Expected;
    expect(stdinEnv(r.byName("host-neko").inputs.stdin).NEKO_SHOWN_DIGEST).toBe(shownDigest(e.neko));
  }
});

test.each([
  ["generated", () => generated, /generated-/],
  ["given in the config", () => configured, new RegExp(Object.values(given).join("|"))],
])("expected holds no secret (%s): no password, token or TURN credential", (_what, run, secret) => {
  const text = JSON.stringify(run().outputs.expected);
  expect(run().secretOutputs).not.toContain("expected");
  expect(text).not.toMatch(secret);
  expect(text).not.toMatch(/user=neko:|PASSWORD|API_TOKEN|ICESERVERS/);
  // the secrets were really there to leak: the rollout's input holds them
  expect(JSON.stringify(run().byName("host-neko").inputs.stdin)).toMatch(secret);
});

test("each EC2 machine has a CI access group that declares no rules (tools/ci-ssh-access.js adds them), beside its own", () => {
  for (const machine of ["builder", "host"]) {
    const group = generated.byName(`${machine}-ci-ssh`);
    expect(group.type).toBe("aws:ec2/securityGroup:SecurityGroup");
    // no inline rules: a rule a CI job adds and removes is no drift, and an update never captures it
    expect(group.inputs.ingress).toBeUndefined();
    expect(group.inputs.tags).toMatchObject({
      "neko-infra:stack": "neko-infra/prod",
      "neko-infra:role": machine,
      "neko-infra:access": "ci-ssh",
    });
    expect(generated.byName(`${machine}-sg`).inputs.tags["neko-infra:access"]).toBeUndefined();
    const instance = generated.byName(`${machine}-instance`);
    expect(instance.inputs.vpcSecurityGroupIds).toEqual([`${machine}-sg-id`, `${machine}-ci-ssh-id`]);
  }
});
