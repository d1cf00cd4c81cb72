import { documentationRange, isPrivateAddress } from "../../lib/addresses";
import { preflightProblems, quotaFor, quotaOf, runningByQuota } from "../../lib/preflight";
import { wakeEnvironment, wakePolicy } from "../../lib/wake";

describe("preflight", () => {
  const facts = { region: "eu-central-1", defaultVpc: true, vcpus: { "g5.xlarge": 4, "c6i.2xlarge": 8, "t3.xlarge": 4 }, quotas: {} };

  test("each instance type counts against its on-demand quota: every G and VT family (gr6 too) or standard", () => {
    for (const type of ["g5.xlarge", "g4dn.xlarge", "g4ad.xlarge", "g6e.xlarge", "gr6.4xlarge", "g5g.xlarge", "vt1.3xlarge"])
      expect([type, quotaFor(type).code]).toEqual([type, "L-DB2E81BA"]);
    for (const type of ["c6i.2xlarge", "t3.xlarge", "m7i.large"]) expect([type, quotaFor(type).code]).toEqual([type, "L-1216C47A"]);
  });

  test("a zero GPU quota (a new account) names the quota, the setting and how to raise it", () => {
    const p = preflightProblems([{ section: "host", instanceType: "g5.xlarge" }], { ...facts, quotas: { "L-DB2E81BA": 0 } });
    expect(p).toEqual([
      'neko-infra:host.instanceType: host g5.xlarge (4 vCPUs) needs 4 vCPUs of the EC2 quota "Running On-Demand G and VT instances" (L-DB2E81BA), which is 0 in eu-central-1 (new accounts often start at 0); ask for more: aws service-quotas request-service-quota-increase --service-code ec2 --quota-code L-DB2E81BA --desired-value 4 --region eu-central-1 (or in the Service Quotas console), or choose a smaller type',
    ]);
  });

  test("builder and host on the same quota add up", () => {
    const needs = [
      { section: "builder" as const, instanceType: "c6i.2xlarge" },
      { section: "host" as const, instanceType: "t3.xlarge" },
    ];
    expect(preflightProblems(needs, { ...facts, quotas: { "L-1216C47A": 12 } })).toEqual([]);
    const [p] = preflightProblems(needs, { ...facts, quotas: { "L-1216C47A": 10 } });
    expect(p).toMatch(/builder c6i\.2xlarge \(8 vCPUs\) \+ host t3\.xlarge \(4 vCPUs\) need 12 vCPUs/);
  });

  test("quotaOf: families with quotas of their own count against neither", () => {
    for (const type of ["p4d.24xlarge", "inf2.xlarge", "trn1.2xlarge", "dl1.24xlarge", "hpc7g.4xlarge", "mac2.metal", "x2idn.16xlarge"])
      expect([type, quotaOf(type)]).toEqual([type, undefined]);
    expect(
      runningByQuota(["g5.xlarge", "c6i.xlarge", "p4d.24xlarge", "t3.xlarge"], { "g5.xlarge": 4, "c6i.xlarge": 4, "t3.xlarge": 4 }),
    ).toEqual({
      "L-DB2E81BA": 4,
      "L-1216C47A": 8,
    });
  });

  test("a quota that could not be read is not checked", () => {
    expect(preflightProblems([{ section: "host", instanceType: "g5.xlarge" }], { ...facts, quotas: { "L-DB2E81BA": undefined } })).toEqual(
      [],
    );
  });

  test("no default VPC: each machine without a subnet is named, with both fixes", () => {
    const p = preflightProblems(
      [
        { section: "builder", instanceType: "c6i.2xlarge", subnetId: "subnet-0123456789abcdef0" },
        { section: "host", instanceType: "t3.xlarge" },
      ],
      { ...facts, defaultVpc: false },
    );
    expect(p).toEqual([
      "neko-infra:host.subnetId: eu-central-1 has no default VPC to launch the host into; create one (aws ec2 create-default-vpc --region eu-central-1) or set host.subnetId to a public subnet of yours",
    ]);
  });
});

describe("addresses", () => {
  test.each([
    ["198.51.100.24/32", "198.51.100.0/24"],
    ["203.0.113.0/24", "203.0.113.0/24"],
    ["192.0.2.128/25", "192.0.2.0/24"],
    ["2001:db8:10::/48", "2001:db8::/32"],
    ["198.51.0.0/16", undefined],
    ["100.64.0.7/32", undefined],
    ["2001:db9::/32", undefined],
    ["0.0.0.0/0", undefined],
  ])("documentationRange(%s) = %s", (cidr, range) => expect(documentationRange(cidr)).toBe(range));

  test.each([
    ["10.1.2.3", true],
    ["172.31.0.1", true],
    ["172.32.0.1", false],
    ["192.168.0.1", true],
    ["127.0.0.1", true],
    ["100.100.0.1", true],
    ["8.8.4.4", false],
    ["::1", true],
    ["fd12::1", true],
    ["fe80::1", true],
    ["2a01:4f8::1", false],
  ])("isPrivateAddress(%s) = %s", (a, p) => expect(isPrivateAddress(a)).toBe(p));
});

describe("wake environment", () => {
  const connection = { host: "100.64.0.10", port: 22, user: "ec2-user", privateKey: "KEY", hostKey: "ssh-ed25519 AAAA" };

  test("an ec2 builder: reached over SSH, woken through EC2 by its tags, ready when its bootstrap marker says so", () => {
    const env = wakeEnvironment({
      machine: "the builder",
      target: { kind: "ssh", connection },
      method: { kind: "ec2", region: "eu-central-1", stackTag: "neko-infra/dev", role: "builder" },
      ready: "marker",
      readyTimeoutSeconds: 1200,
    });
    expect(env).toEqual({
      WAKE_MACHINE: "the builder",
      TARGET: "ssh",
      WAKE: "ec2",
      READY: "marker",
      READY_TIMEOUT: "1200",
      READY_MARKER: "/var/lib/neko-infra/bootstrap.status",
      READY_LOG: "/var/log/cloud-init-output.log",
      SSH_HOST: "100.64.0.10",
      SSH_PORT: "22",
      SSH_USER: "ec2-user",
      SSH_HOST_KEY: "ssh-ed25519 AAAA",
      SSH_PRIVATE_KEY: "KEY",
      SSH_HOST_KEY_SETTING: "the host key Pulumi generated for it (was the instance replaced outside Pulumi?)",
      EC2_REGION: "eu-central-1",
      EC2_STACK_TAG: "neko-infra/dev",
      EC2_ROLE_TAG: "builder",
      REFUSED_GRACE: "180",
    });
  });

  test("a disabled machine carries the text the wake step fails with; a local one needs no SSH", () => {
    const env = wakeEnvironment({
      machine: "the builder",
      target: { kind: "local" },
      method: { kind: "none" },
      ready: "nix",
      readyTimeoutSeconds: 60,
      disabled: "off",
    });
    expect(env).toEqual({ WAKE_MACHINE: "the builder", TARGET: "local", WAKE: "none", READY: "nix", READY_TIMEOUT: "60", DISABLED: "off" });
  });

  test("the wake-on-visit function may start one instance, set only its start counter tag on it, and describe", () => {
    const doc = JSON.parse(wakePolicy("arn:aws:ec2:eu-central-1:123456789012:instance/i-0abc"));
    expect(doc.Statement).toEqual([
      { Sid: "Describe", Effect: "Allow", Action: "ec2:DescribeInstances", Resource: "*" },
      { Sid: "Start", Effect: "Allow", Action: "ec2:StartInstances", Resource: "arn:aws:ec2:eu-central-1:123456789012:instance/i-0abc" },
      {
        Sid: "Count",
        Effect: "Allow",
        Action: "ec2:CreateTags",
        Resource: "arn:aws:ec2:eu-central-1:123456789012:instance/i-0abc",
        Condition: { "ForAllValues:StringEquals": { "aws:TagKeys": ["neko-infra:wake-starts"] } },
      },
    ]);
  });
});
