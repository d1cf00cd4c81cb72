/**
 * tools/ci-ssh-access.js, as the deploy workflow runs it (a subprocess with the real AWS SDK),
 * against the fake EC2 API on loopback: SSH opened for the runner's address in the stack's CI access
 * groups only, closed after a deploy that failed, and two runs never removing each other's rules.
 */
import { spawn } from "child_process";
import * as path from "path";
import { FakeEc2, FakeGroup, startFakeEc2 } from "../support/fakeEc2";

jest.setTimeout(30_000); // each call starts node and the AWS SDK (about 0.5 s here)

const TOOL = path.join(__dirname, "..", "..", "tools", "ci-ssh-access.js");
const ACTIONS = [
  "DescribeSecurityGroups",
  "DescribeSecurityGroupRules",
  "AuthorizeSecurityGroupIngress",
  "RevokeSecurityGroupIngress",
] as const;
const ci = (stack: string, role: string): FakeGroup => ({
  tags: { "neko-infra:stack": `neko-infra/${stack}`, "neko-infra:role": role, "neko-infra:access": "ci-ssh" },
});

let ec2: FakeEc2;
beforeEach(async () => {
  ec2 = await startFakeEc2({
    allow: [...ACTIONS],
    groups: {
      "sg-0devhost": ci("dev", "host"),
      "sg-0devbuilder": ci("dev", "builder"),
      "sg-0prodhost": ci("prod", "host"),
      // the machines' main groups: same stack tag, no access tag
      "sg-0devhostmain": { tags: { "neko-infra:stack": "neko-infra/dev", "neko-infra:role": "host" } },
    },
  });
});
afterEach(async () => {
  expect(ec2.violations).toEqual([]);
  await ec2.close();
});

function tool(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [TOOL, ...args], {
      env: {
        PATH: process.env.PATH,
        AWS_REGION: "eu-central-1",
        AWS_ACCESS_KEY_ID: "AKIDFAKEEC2",
        AWS_SECRET_ACCESS_KEY: "fake-secret",
        AWS_ENDPOINT_URL_EC2: ec2.endpoint,
        ...env,
      },
    });
    let out = "";
    let err = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (err += d));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, out, err }));
  });
}

const rules = (group: string) =>
  Object.values(ec2.groups[group].rules ?? {}).map((r) =>
    `${r.protocol}/${r.fromPort}-${r.toPort} ${r.cidr} ${r.description ?? ""}`.trim(),
  );
const UNTIL = /until (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)/;

test("open: port 22 from the runner's address only, in each CI access group of the stack, named after the run; close removes them", async () => {
  const started = Date.now();
  const open = await tool(["open", "dev", "--address", "198.51.100.7", "--run", "1001-1"]);
  expect(open).toMatchObject({ code: 0, err: "" });
  for (const g of ["sg-0devhost", "sg-0devbuilder"]) {
    expect(rules(g)).toEqual([expect.stringMatching(/^tcp\/22-22 198\.51\.100\.7\/32 neko-infra CI run 1001-1 until \S+$/)]);
    // it expires after the default 4 hours (a job killed before its cleanup leaves a rule the next run removes)
    const until = Date.parse(UNTIL.exec(rules(g)[0])![1]);
    expect(until - started).toBeGreaterThan(4 * 3600_000 - 60_000);
    expect(until - started).toBeLessThan(4 * 3600_000 + 60_000);
  }
  expect(rules("sg-0prodhost")).toEqual([]); // another stack
  expect(rules("sg-0devhostmain")).toEqual([]); // the inline-rule group is never touched
  expect(open.out.trim().split("\n")).toEqual([
    expect.stringMatching(/^ci-ssh-access: sg-0devhost: SSH open for 198\.51\.100\.7\/32 until \S+ \(run 1001-1\)$/),
    expect.stringMatching(/^ci-ssh-access: sg-0devbuilder: SSH open for 198\.51\.100\.7\/32 until \S+ \(run 1001-1\)$/),
  ]);
  // the deploy in between failed; the workflow's `if: always()` step closes
  const close = await tool(["close", "dev", "--run", "1001-1"]);
  expect(close).toMatchObject({ code: 0, err: "" });
  expect([rules("sg-0devhost"), rules("sg-0devbuilder")]).toEqual([[], []]);
  expect(close.out).toContain("sg-0devhost: removed 198.51.100.7/32 (this run)");
  // closing twice (a retried cleanup) is no failure
  expect(await tool(["close", "dev", "--run", "1001-1"])).toMatchObject({ code: 0, out: expect.stringContaining("no rule of run 1001-1") });
});

test("two runs: each close removes its own rule only; a same-address rule stays its owner's; expired rules of killed runs go; others' rules never", async () => {
  ec2.groups["sg-0devhost"].rules = {
    "sgr-0admin": { protocol: "tcp", fromPort: 22, toPort: 22, cidr: "192.0.2.0/24", description: "SSH (Pulumi and admins)" },
    "sgr-0killed": {
      protocol: "tcp",
      fromPort: 22,
      toPort: 22,
      cidr: "203.0.113.9/32",
      description: "neko-infra CI run 900-1 until 2026-01-01T00:00:00Z",
    },
  };
  expect((await tool(["open", "dev", "--address", "198.51.100.7", "--run", "1001-1"])).code).toBe(0);
  const b = await tool(["open", "dev", "--address", "198.51.100.8"], { GITHUB_RUN_ID: "1002", GITHUB_RUN_ATTEMPT: "2" });
  expect(b.code).toBe(0);
  // the killed run's rule went with A's open; B's is named after GITHUB_RUN_ID-GITHUB_RUN_ATTEMPT
  expect(rules("sg-0devhost").map((r) => r.replace(/ until \S+$/, ""))).toEqual([
    "tcp/22-22 192.0.2.0/24 SSH (Pulumi and admins)",
    "tcp/22-22 198.51.100.7/32 neko-infra CI run 1001-1",
    "tcp/22-22 198.51.100.8/32 neko-infra CI run 1002-2",
  ]);
  // a third run from A's address: the rule is A's, and stays A's
  const c = await tool(["open", "dev", "--address", "198.51.100.7", "--run", "1003-1"]);
  expect(c.code).toBe(0);
  expect(c.out).toMatch(/sg-0devhost: SSH already open for 198\.51\.100\.7\/32 \(neko-infra CI run 1001-1 until \S+\): left as it is/);
  expect((await tool(["close", "dev", "--run", "1003-1"])).code).toBe(0);
  expect(rules("sg-0devhost")).toHaveLength(3);
  expect((await tool(["close", "dev", "--run", "1001-1"])).code).toBe(0);
  expect(rules("sg-0devhost").map((r) => r.replace(/ until \S+$/, ""))).toEqual([
    "tcp/22-22 192.0.2.0/24 SSH (Pulumi and admins)",
    "tcp/22-22 198.51.100.8/32 neko-infra CI run 1002-2",
  ]);
  expect((await tool(["close", "dev"], { GITHUB_RUN_ID: "1002", GITHUB_RUN_ATTEMPT: "2" })).code).toBe(0);
  expect(rules("sg-0devhost")).toEqual(["tcp/22-22 192.0.2.0/24 SSH (Pulumi and admins)"]);
  // on the host's group: the killed run's rule, then A's, then B's (the builder's group had A's and B's)
  const revoked = ec2.calls.filter((c) => c.action === "RevokeSecurityGroupIngress").map((c) => c.params);
  expect(revoked.filter((p) => p.GroupId === "sg-0devbuilder")).toHaveLength(2);
  expect(revoked.filter((p) => p.GroupId === "sg-0devhost")).toEqual([
    { GroupId: "sg-0devhost", "SecurityGroupRuleId.1": "sgr-0killed" },
    { GroupId: "sg-0devhost", "SecurityGroupRuleId.1": expect.stringMatching(/^sgr-/) },
    { GroupId: "sg-0devhost", "SecurityGroupRuleId.1": expect.stringMatching(/^sgr-/) },
  ]);
});

test("an IPv6 runner gets a /128 rule", async () => {
  expect((await tool(["open", "prod", "--address", "2001:db8::7", "--run", "7-1"])).code).toBe(0);
  expect(rules("sg-0prodhost")).toEqual([expect.stringMatching(/^tcp\/22-22 2001:db8::7\/128 neko-infra CI run 7-1 until /)]);
  expect((await tool(["close", "prod", "--run", "7-1"])).code).toBe(0);
  expect(rules("sg-0prodhost")).toEqual([]);
});

test("usage and failures: no address, no run id, a denied call (named, with the fix), a stack without EC2 machines", async () => {
  expect(await tool(["open", "dev", "--run", "1-1"])).toMatchObject({ code: 2, err: expect.stringContaining("--address must be") });
  expect(await tool(["open", "dev", "--address", "198.51.100.7"])).toMatchObject({ code: 2, err: expect.stringContaining("--run ID") });
  expect(await tool(["open", "dev", "--address", "example.com", "--run", "1-1"])).toMatchObject({ code: 2 });
  expect(ec2.calls).toEqual([]); // usage errors call nothing
  ec2.failNext("AuthorizeSecurityGroupIngress", "UnauthorizedOperation", "You are not authorized to perform this operation.");
  const denied = await tool(["open", "dev", "--address", "198.51.100.7", "--run", "1-1"]);
  expect(denied.code).toBe(1);
  expect(denied.err).toContain("open dev failed: UnauthorizedOperation: You are not authorized");
  expect(denied.err).toContain("the CI role needs the EC2 statements in README");
  const none = await tool(["open", "local", "--address", "198.51.100.7", "--run", "1-1"]);
  expect(none).toMatchObject({ code: 0, out: expect.stringContaining("no EC2 machine of local to open SSH on") });
  expect(await tool(["close", "local", "--run", "1-1"])).toMatchObject({ code: 0, out: expect.stringContaining("nothing to close") });
});
