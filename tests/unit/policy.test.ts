/**
 * The neko-infra policy pack (policy/): every rule against the dev and prod resource graphs (no
 * violation, and the graphs do hold what each rule inspects), against bad resources (each rule
 * fires, with its message), and served through @pulumi/policy's own analyze RPC, which unwraps
 * secrets and hides unknowns the way the engine's requests make it.
 */
import * as fs from "fs";
import * as path from "path";
import type { ResourceValidationArgs, ResourceValidationPolicy } from "@pulumi/policy";
import { parse } from "yaml";
import { policies, SPECS } from "../../policy/policies";
import {
  checkResource,
  ecrRepositoryHardened,
  ecrWildcardOnlyForAuthToken,
  encryptedVolumes,
  gpuInstance,
  imdsV2Required,
  noSshFromAnywhere,
  noWorldClients,
  PolicyResource,
  Rule,
  RuleConfig,
  RuleName,
  RULES,
  TYPES,
} from "../../policy/rules";
import { installSecretPaths, secretPathsIn } from "../../policy/secrets";
import { EIP, ROOT, runStack, stackConfig, StackRun } from "../support/stack";

const STACKS = ["dev", "prod"] as const;
type Stack = (typeof STACKS)[number];
const runs = {} as Record<Stack, StackRun>;
beforeAll(async () => {
  for (const stack of STACKS) runs[stack] = await runStack(stackConfig(stack, { realAddresses: true }), { stack });
}, 60_000);

type PackConfig = Partial<Record<RuleName, RuleConfig>>;
const packConfig = (stack: string): PackConfig => JSON.parse(fs.readFileSync(path.join(ROOT, "policy", "config", `${stack}.json`), "utf8"));

/** The custom resources of a run, as a policy sees them: inputs, and which of them are secret. */
function policyResources(run: StackRun): PolicyResource[] {
  return run.resources
    .filter((r) => !r.type.startsWith("neko-infra:"))
    .map((r) => ({ type: r.type, name: r.name, props: r.inputs, secretPaths: run.secretInputs[r.name] ?? [] }));
}
const resource = (stack: Stack, name: string): PolicyResource => {
  const found = policyResources(runs[stack]).filter((r) => r.name === name);
  expect(found.map((r) => r.name)).toEqual([name]);
  return structuredClone(found[0]);
};
const inspected = (stack: Stack, rule: RuleName) =>
  policyResources(runs[stack])
    .filter((r) => SPECS[rule].types.includes(r.type))
    .map((r) => r.name)
    .sort();

/** The stack files (Pulumi.<stack>.yaml) and the policy config files (policy/config/<stack>.json), by stack. */
const STACK_FILES = fs
  .readdirSync(ROOT)
  .filter((f) => /^Pulumi\.[^.]+\.yaml$/.test(f))
  .map((f) => f.split(".")[1])
  .sort();
const CONFIG_FILES = fs
  .readdirSync(path.join(ROOT, "policy", "config"))
  .filter((f) => f.endsWith(".json"))
  .map((f) => f.replace(/\.json$/, ""))
  .sort();

/** The policy config a stack's settings call for: an allowance for each /0 in its SSH or client networks. */
function packConfigFor(config: Record<string, string>): PackConfig {
  const section = (key: string) => JSON.parse(config[`neko-infra:${key}`] ?? "{}");
  const world = (...lists: unknown[]) => lists.flatMap((l) => (Array.isArray(l) ? l : [])).some((c) => /\/0$/.test(String(c).trim()));
  const host = section("host");
  const builder = section("builder");
  return {
    "no-ssh-from-anywhere": { allowSshFromAnywhere: world(host.sshCidrs, builder.sshCidrs) },
    "no-world-open-neko-ports": { allowWorldClients: world(host.clientCidrs) },
  };
}

/** A policy config file's text, laid out as policy/config/*.json are (one line per policy, as Prettier keeps it). */
function configText(cfg: PackConfig): string {
  const flags = (f: object) =>
    `{ ${Object.entries(f)
      .map(([k, v]) => `${JSON.stringify(k)}: ${JSON.stringify(v)}`)
      .join(", ")} }`;
  return `{\n${Object.entries(cfg)
    .map(([policy, f]) => `  ${JSON.stringify(policy)}: ${flags(f ?? {})}`)
    .join(",\n")}\n}\n`;
}

/** What is missing or left over among the policy config files, each with what to do about it. */
function configFileProblems(stacks: string[], configs: string[], wanted: (stack: string) => PackConfig): string[] {
  const missing = stacks
    .filter((s) => !configs.includes(s))
    .map(
      (s) =>
        `Pulumi.${s}.yaml has no policy config. The CI previews and deploys run the pack with --policy-pack-config ` +
        `policy/config/<stack>.json, so add policy/config/${s}.json; for this stack's sshCidrs and clientCidrs it holds:\n` +
        configText(wanted(s)),
    );
  const leftover = configs
    .filter((c) => !stacks.includes(c))
    .map((c) => `policy/config/${c}.json belongs to no stack (there is no Pulumi.${c}.yaml): delete it, or add the stack file`);
  return [...missing, ...leftover];
}

describe("policy config", () => {
  test("one config file per stack", () => {
    const problems = configFileProblems(STACK_FILES, CONFIG_FILES, (stack) => packConfigFor(stackConfig(stack)));
    if (problems.length) throw new Error(problems.join("\n\n"));
  });

  test("a stack file without one: the failure names the file to add and its content", () => {
    const staging = packConfigFor({
      "neko-infra:builder": JSON.stringify({ kind: "ec2", sshCidrs: ["100.64.0.1/32"] }),
      "neko-infra:host": JSON.stringify({ kind: "ec2", sshCidrs: ["100.64.0.1/32"], clientCidrs: ["0.0.0.0/0"] }),
    });
    expect(configFileProblems(["dev", "staging"], ["dev", "old"], () => staging)).toEqual([
      "Pulumi.staging.yaml has no policy config. The CI previews and deploys run the pack with --policy-pack-config " +
        "policy/config/<stack>.json, so add policy/config/staging.json; for this stack's sshCidrs and clientCidrs it holds:\n" +
        "{\n" +
        '  "no-ssh-from-anywhere": { "allowSshFromAnywhere": false },\n' +
        '  "no-world-open-neko-ports": { "allowWorldClients": true }\n' +
        "}\n",
      "policy/config/old.json belongs to no stack (there is no Pulumi.old.yaml): delete it, or add the stack file",
    ]);
    // what the message proposes for each stack is what its file holds (a missing file fails the test above)
    for (const stack of STACK_FILES.filter((s) => CONFIG_FILES.includes(s))) {
      expect([stack, JSON.parse(configText(packConfigFor(stackConfig(stack))))]).toEqual([stack, packConfig(stack)]);
    }
  });

  test.each(CONFIG_FILES)("%s.json names only configurable policies and their boolean flags", (stack) => {
    for (const [policy, cfg] of Object.entries(packConfig(stack))) {
      const schema = SPECS[policy as RuleName]?.configSchema;
      expect([stack, policy, schema === undefined]).toEqual([stack, policy, false]);
      for (const [key, value] of Object.entries(cfg as object)) {
        expect([stack, key, schema!.properties[key]?.type, typeof value]).toEqual([stack, key, "boolean", "boolean"]);
      }
    }
  });
});

describe.each(STACKS)("%s stack graph", (stack) => {
  const all = () => policyResources(runs[stack]);

  test("holds the resources every rule inspects", () => {
    // at least these (a new resource of an inspected type is checked by the next test too)
    const holds = (rule: RuleName, names: string[]) => expect(inspected(stack, rule)).toEqual(expect.arrayContaining(names));
    holds("imdsv2-required", ["builder-instance", "host-instance"]);
    holds("encrypted-volumes", ["builder-instance", "host-instance", "host-browser-profile"]);
    holds("gpu-instance", ["builder-instance", "host-instance"]);
    holds("no-ssh-from-anywhere", ["builder-sg", "host-sg"]);
    holds("no-world-open-neko-ports", ["builder-sg", "host-sg"]);
    holds("ecr-scan-on-push-immutable-tags", ["registry-repo"]);
    holds("ecr-wildcard-only-for-auth-token", ["host-ecr-pull", "registry-builder-push"]);
  });

  test("and the fields the rules read", () => {
    for (const name of ["builder-instance", "host-instance"]) {
      expect(resource(stack, name).props).toMatchObject({
        metadataOptions: { httpTokens: "required" },
        rootBlockDevice: { encrypted: true },
      });
    }
    for (const name of ["builder-sg", "host-sg"]) {
      expect(resource(stack, name).props.ingress).toEqual(
        expect.arrayContaining([expect.objectContaining({ protocol: "tcp", fromPort: 22, toPort: 22 })]),
      );
    }
    expect(resource(stack, "host-browser-profile").props).toMatchObject({ encrypted: true });
    expect(resource(stack, "host-sg").props.ingress).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ protocol: "tcp", fromPort: 80, toPort: 80, cidrBlocks: ["0.0.0.0/0"] }),
        expect.objectContaining({ protocol: "tcp", fromPort: 443, toPort: 443 }),
      ]),
    );
    for (const name of ["host-ecr-pull", "registry-builder-push"]) {
      const statements = JSON.parse(resource(stack, name).props.policy).Statement;
      expect(statements.find((s: any) => s.Resource === "*").Action).toBe("ecr:GetAuthorizationToken");
    }
  });

  test("no rule finds a violation, with the stack's policy config", () => {
    expect(all().flatMap((r) => checkResource(r, packConfig(stack)))).toEqual([]);
  });
});

describe("dev vs prod under the rules", () => {
  test("prod's GPU host is what the GPU rule checks", () => {
    expect(resource("prod", "host-instance").props).toMatchObject({ instanceType: "g5.xlarge", rootBlockDevice: { volumeSize: 120 } });
    expect(resource("dev", "host-instance").props.instanceType).toBe("c6i.xlarge");
  });

  test("prod serves everyone: only its allowWorldClients keeps the neko ports rule quiet", () => {
    const world = policyResources(runs.prod).flatMap((r) => checkResource(r, {}));
    const tail =
      'list the client networks in neko-infra:host.clientCidrs, or set "allowWorldClients": true for policy ' +
      '"no-world-open-neko-ports" in policy/config/<stack>.json to serve neko to everyone';
    expect(world).toEqual(
      [
        "ingress[1] opens 52000-52100/udp (WebRTC media (EPR))",
        "ingress[4] opens 443/tcp (neko over HTTPS)",
        "ingress[5] opens 3478/udp (TURN over UDP)",
        "ingress[6] opens 3478/tcp (TURN over TCP)",
        "ingress[7] opens 5349/tcp (TURN over TLS)",
      ].map((what) => `[no-world-open-neko-ports] aws:ec2/securityGroup:SecurityGroup "host-sg": ${what} to 0.0.0.0/0, ::/0; ${tail}`),
    );
  });

  test("what stays quiet there: port 80 beside 443 (the TLS front), and the host's own /32 (the TURN relay's hairpin)", () => {
    const ingress: any[] = resource("prod", "host-sg").props.ingress;
    const hairpin = ingress.filter((x) => x.cidrBlocks.some((c: string) => c.endsWith("/32")) && x.fromPort !== 22);
    expect(hairpin.map((x) => `${x.fromPort}-${x.toPort}/${x.protocol} ${x.cidrBlocks} ${x.description}`)).toEqual([
      `52000-52100/udp ${EIP.host}/32 WebRTC media (EPR), from the TURN relay`,
      `49160-49200/udp ${EIP.host}/32 TURN relay`,
    ]);
    expect(ingress.find((x) => x.fromPort === 80)).toMatchObject({
      protocol: "tcp",
      toPort: 80,
      cidrBlocks: ["0.0.0.0/0"],
      ipv6CidrBlocks: ["::/0"],
    });
    expect(ingress.some((x) => x.fromPort === 443 && x.protocol === "tcp")).toBe(true);
    expect(ingress.some((x) => x.fromPort <= 8080 && 8080 <= x.toPort)).toBe(false); // neko's own port stays on 127.0.0.1
  });
});

/** Runs `rule` on `r`, and checks every message names the resource. */
function fire(rule: Rule, r: PolicyResource, config?: RuleConfig): string[] {
  const messages = rule(r, config);
  for (const m of messages) expect(m).toContain(`${r.type} "${r.name}": `);
  return messages;
}

describe("bad resources: each rule fires, naming the resource and the fix", () => {
  test("imdsv2-required", () => {
    const i = resource("prod", "host-instance");
    i.props.metadataOptions.httpTokens = "optional";
    expect(fire(imdsV2Required, i)).toEqual([
      'aws:ec2/instance:Instance "host-instance": IMDSv2 is not required (metadataOptions.httpTokens is "optional"); ' +
        'set metadataOptions: { httpTokens: "required", httpPutResponseHopLimit: 1 }',
    ]);
    delete i.props.metadataOptions;
    expect(fire(imdsV2Required, i)).toEqual([expect.stringContaining("(metadataOptions.httpTokens is unset); set metadataOptions")]);
    i.props.metadataOptions = { httpEndpoint: "disabled" };
    expect(fire(imdsV2Required, i)).toEqual([]);
  });

  test("encrypted-volumes", () => {
    const i = resource("dev", "builder-instance");
    i.props.rootBlockDevice.encrypted = false;
    i.props.ebsBlockDevices = [
      { deviceName: "/dev/sdf", volumeSize: 10, encrypted: true },
      { deviceName: "/dev/sdg", volumeSize: 10 },
    ];
    expect(fire(encryptedVolumes, i)).toEqual([
      'aws:ec2/instance:Instance "builder-instance": the root volume is not encrypted (rootBlockDevice.encrypted is false); set rootBlockDevice: { encrypted: true, ... }',
      'aws:ec2/instance:Instance "builder-instance": ebsBlockDevices[1] (/dev/sdg) is not encrypted; set encrypted: true on it',
    ]);
    delete i.props.rootBlockDevice;
    delete i.props.ebsBlockDevices;
    expect(fire(encryptedVolumes, i)).toEqual([expect.stringContaining("rootBlockDevice.encrypted is unset")]);
    // the browser profile's own volume
    const profile = resource("prod", "host-browser-profile");
    expect(fire(encryptedVolumes, profile)).toEqual([]);
    profile.props.encrypted = false;
    expect(fire(encryptedVolumes, profile)).toEqual([
      'aws:ebs/volume:Volume "host-browser-profile": the volume is not encrypted; set encrypted: true',
    ]);
    delete profile.props.encrypted;
    expect(fire(encryptedVolumes, profile)).toEqual([expect.stringContaining("not encrypted")]);
  });

  test("gpu-instance: the GPU AMI's volume size, and no GPU builder", () => {
    const host = resource("prod", "host-instance");
    host.props.rootBlockDevice.volumeSize = 50;
    expect(fire(gpuInstance, host)).toEqual([
      'aws:ec2/instance:Instance "host-instance": g5.xlarge runs the NVIDIA GPU AMI, whose root snapshot needs at least 75 GB ' +
        "(rootBlockDevice.volumeSize is 50); set neko-infra:host.volumeSize to 75 or more",
    ]);
    const builder = resource("prod", "builder-instance");
    builder.props.instanceType = "g6e.2xlarge";
    expect(fire(gpuInstance, builder)).toEqual([
      'aws:ec2/instance:Instance "builder-instance": the Nix builder is a GPU instance (g6e.2xlarge), billed for a GPU that builds ' +
        "never use; set neko-infra:builder.instanceType to a compute type such as c6i.2xlarge",
    ]);
    const small = resource("dev", "host-instance"); // c6i with 30 GB: not a GPU type
    expect(small.props.rootBlockDevice.volumeSize).toBeLessThan(75);
    expect(fire(gpuInstance, small)).toEqual([]);
  });

  test("no-ssh-from-anywhere: inline, classic and VPC ingress rules; IPv4 and IPv6; all-protocol rules", () => {
    const sg = resource("prod", "builder-sg");
    sg.props.ingress[0].cidrBlocks = ["198.51.100.24/32", "0.0.0.0/0"];
    expect(fire(noSshFromAnywhere, sg)).toEqual([
      'aws:ec2/securityGroup:SecurityGroup "builder-sg": ingress[0] opens SSH (22/tcp) to 0.0.0.0/0; list your admin networks in ' +
        'neko-infra:builder.sshCidrs / neko-infra:host.sshCidrs instead, or set "allowSshFromAnywhere": true for policy ' +
        '"no-ssh-from-anywhere" in policy/config/<stack>.json to mean it',
    ]);
    expect(fire(noSshFromAnywhere, sg, { allowSshFromAnywhere: true })).toEqual([]);

    const v6 = resource("prod", "builder-sg");
    v6.props.ingress[0].ipv6CidrBlocks = ["::/0"];
    expect(fire(noSshFromAnywhere, v6)).toEqual([expect.stringContaining("ingress[0] opens SSH (22/tcp) to ::/0;")]);

    const everything = resource("dev", "host-sg");
    everything.props.ingress.push({ protocol: "-1", fromPort: 0, toPort: 0, cidrBlocks: ["0.0.0.0/0"] });
    expect(fire(noSshFromAnywhere, everything)).toEqual([
      expect.stringContaining("ingress[4] opens SSH (every port and protocol) to 0.0.0.0/0;"),
    ]);
    expect(fire(noWorldClients, everything)).toEqual([expect.stringContaining("ingress[4] opens every port and protocol to 0.0.0.0/0;")]);

    const classic = {
      type: TYPES.securityGroupRule,
      name: "ssh-rule",
      props: { type: "ingress", protocol: "tcp", fromPort: 0, toPort: 1024, cidrBlocks: ["0.0.0.0/0"], securityGroupId: "sg-1" },
    };
    expect(fire(noSshFromAnywhere, classic)).toEqual([
      expect.stringContaining('aws:ec2/securityGroupRule:SecurityGroupRule "ssh-rule": rule opens SSH (0-1024/tcp) to 0.0.0.0/0;'),
    ]);
    expect(fire(noWorldClients, classic)).toEqual([expect.stringContaining("rule opens 0-1024/tcp to 0.0.0.0/0;")]);
    expect(fire(noSshFromAnywhere, { ...classic, props: { ...classic.props, type: "egress" } })).toEqual([]);

    const vpc = {
      type: TYPES.ingressRule,
      name: "ssh-v6",
      props: { ipProtocol: "tcp", fromPort: 22, toPort: 22, cidrIpv6: "::/0", securityGroupId: "sg-1" },
    };
    expect(fire(noSshFromAnywhere, vpc)).toEqual([expect.stringContaining('"ssh-v6": rule opens SSH (22/tcp) to ::/0;')]);
    expect(fire(noWorldClients, vpc)).toEqual([]);
  });

  test("no-world-open-neko-ports: every port but SSH; port 80 only beside 443", () => {
    const sg = resource("dev", "host-sg");
    expect(sg.props.ingress.map((x: any) => `${x.fromPort}/${x.protocol}`)).toEqual(["22/tcp", "52000/udp", "80/tcp", "443/tcp"]);
    for (const rule of sg.props.ingress.slice(1)) rule.cidrBlocks = ["0.0.0.0/0"];
    expect(fire(noWorldClients, sg)).toEqual([
      'aws:ec2/securityGroup:SecurityGroup "host-sg": ingress[1] opens 52000-52100/udp (WebRTC media (EPR)) to 0.0.0.0/0; list the ' +
        'client networks in neko-infra:host.clientCidrs, or set "allowWorldClients": true for policy "no-world-open-neko-ports" in ' +
        "policy/config/<stack>.json to serve neko to everyone",
      expect.stringContaining("ingress[3] opens 443/tcp (neko over HTTPS) to 0.0.0.0/0;"),
    ]);
    expect(fire(noWorldClients, sg, { allowWorldClients: true })).toEqual([]);

    // without 443 beside it, a world-open 80 is not the TLS front's ACME challenge
    const noHttps = resource("dev", "host-sg");
    noHttps.props.ingress = noHttps.props.ingress.filter((x: any) => x.fromPort !== 443);
    expect(fire(noWorldClients, noHttps)).toEqual([
      'aws:ec2/securityGroup:SecurityGroup "host-sg": ingress[2] opens 80/tcp (ACME HTTP challenge and redirect to HTTPS) to 0.0.0.0/0, ' +
        "::/0 (port 80 may be open to everyone only for the TLS front's ACME challenge, in a group that also opens 443/tcp: this one " +
        'does not); list the client networks in neko-infra:host.clientCidrs, or set "allowWorldClients": true for policy ' +
        '"no-world-open-neko-ports" in policy/config/<stack>.json to serve neko to everyone',
    ]);
    // 443 over UDP is no HTTPS front; a range that covers 80 is more than port 80; neko's own HTTP port is never exempt
    const other = resource("dev", "host-sg");
    other.props.ingress = [
      { protocol: "udp", fromPort: 443, toPort: 443, cidrBlocks: ["100.64.100.0/24"] },
      { protocol: "tcp", fromPort: 80, toPort: 80, cidrBlocks: ["0.0.0.0/0"] },
    ];
    expect(fire(noWorldClients, other)).toEqual([expect.stringContaining("ingress[1] opens 80/tcp to 0.0.0.0/0 (port 80 may be open")]);
    other.props.ingress = [
      { protocol: "tcp", fromPort: 443, toPort: 443, cidrBlocks: ["100.64.100.0/24"] },
      { protocol: "tcp", fromPort: 0, toPort: 1024, cidrBlocks: ["0.0.0.0/0"] },
      { protocol: "tcp", fromPort: 8080, toPort: 8080, cidrBlocks: ["100.64.100.0/24"], ipv6CidrBlocks: ["::/0"] },
    ];
    expect(fire(noWorldClients, other)).toEqual([
      expect.stringContaining("ingress[1] opens 0-1024/tcp to 0.0.0.0/0; list"),
      expect.stringContaining("ingress[2] opens 8080/tcp to ::/0; list"),
    ]);
    // a standalone rule cannot show that its group opens 443
    const standalone = {
      type: TYPES.ingressRule,
      name: "acme",
      props: { ipProtocol: "tcp", fromPort: 80, toPort: 80, cidrIpv4: "0.0.0.0/0", securityGroupId: "sg-1" },
    };
    expect(fire(noWorldClients, standalone)).toEqual([
      expect.stringContaining(
        '"acme": rule opens 80/tcp to 0.0.0.0/0 (port 80 may be open to everyone only for the TLS front\'s ACME challenge, declared in the ' +
          "ingress of a security group that also opens 443/tcp; a standalone rule cannot show that); list",
      ),
    ]);
    // the host's own address (the TURN relay's hairpin) and other narrow sources are no world
    const narrow = resource("prod", "host-sg");
    expect(
      fire(noWorldClients, {
        ...narrow,
        props: { ...narrow.props, ingress: narrow.props.ingress.filter((x: any) => !x.cidrBlocks.includes("0.0.0.0/0")) },
      }),
    ).toEqual([]);
    // SSH has its own rule; a /0 written another way is still the whole internet
    sg.props.ingress = [
      { protocol: "tcp", fromPort: 22, toPort: 22, cidrBlocks: ["0.0.0.0/0"] },
      { protocol: "udp", fromPort: 52000, toPort: 52000, cidrBlocks: ["10.0.0.0/0"] },
    ];
    expect(fire(noWorldClients, sg)).toEqual([expect.stringContaining("ingress[1] opens 52000/udp to 10.0.0.0/0;")]);
  });

  test("ecr-scan-on-push-immutable-tags", () => {
    const repo = resource("dev", "registry-repo");
    repo.props.imageScanningConfiguration.scanOnPush = false;
    repo.props.imageTagMutability = "MUTABLE";
    expect(fire(ecrRepositoryHardened, repo)).toEqual([
      'aws:ecr/repository:Repository "registry-repo": images are not scanned on push; set imageScanningConfiguration: { scanOnPush: true } (neko-infra:registry.scanOnPush: true)',
      'aws:ecr/repository:Repository "registry-repo": tags are mutable (imageTagMutability is "MUTABLE"); set imageTagMutability: "IMMUTABLE"',
    ]);
    delete repo.props.imageScanningConfiguration;
    delete repo.props.imageTagMutability;
    expect(fire(ecrRepositoryHardened, repo)).toEqual([
      expect.stringContaining("not scanned on push"),
      expect.stringContaining("imageTagMutability is unset"),
    ]);
  });

  test("ecr-wildcard-only-for-auth-token", () => {
    const withStatements = (...Statement: unknown[]) => {
      const p = resource("prod", "host-ecr-pull");
      p.props.policy = JSON.stringify({ Version: "2012-10-17", Statement });
      return p;
    };
    const pull = resource("prod", "host-ecr-pull");
    const doc = JSON.parse(pull.props.policy);
    doc.Statement[1].Resource = "*";
    pull.props.policy = JSON.stringify(doc);
    expect(fire(ecrWildcardOnlyForAuthToken, pull)).toEqual([
      'aws:iam/rolePolicy:RolePolicy "host-ecr-pull": statement "Repository" (#1) grants ecr:BatchCheckLayerAvailability, ' +
        'ecr:BatchGetImage, ecr:GetDownloadUrlForLayer on Resource "*"; only ecr:GetAuthorizationToken may use "*": put the other ' +
        "ECR actions in a statement whose Resource is the repository ARN",
    ]);
    expect(fire(ecrWildcardOnlyForAuthToken, withStatements({ Effect: "Allow", Action: "ecr:*", Resource: ["arn:x", "*"] }))).toEqual([
      expect.stringContaining('statement #0 grants ecr:* on Resource "*";'),
    ]);
    expect(fire(ecrWildcardOnlyForAuthToken, withStatements({ Effect: "Allow", Action: ["s3:GetObject", "*"], Resource: "*" }))).toEqual([
      expect.stringContaining('grants * on Resource "*";'),
    ]);
    expect(
      fire(
        ecrWildcardOnlyForAuthToken,
        withStatements({ Effect: "Allow", Action: "ecr:PutImage", NotResource: "arn:aws:ecr:eu-central-1:1:repository/x" }),
      ),
    ).toEqual([expect.stringContaining("grants ecr:PutImage on NotResource (every other resource);")]);
    expect(fire(ecrWildcardOnlyForAuthToken, withStatements({ Effect: "Allow", NotAction: "iam:*", Resource: "*" }))).toEqual([
      expect.stringContaining('allows every action but iam:* on Resource "*", ECR included;'),
    ]);
    // fine: the login statement alone, a Deny, other services, a single statement object
    expect(
      fire(ecrWildcardOnlyForAuthToken, withStatements({ Effect: "Allow", Action: ["ECR:GetAuthorizationToken"], Resource: "*" })),
    ).toEqual([]);
    expect(fire(ecrWildcardOnlyForAuthToken, withStatements({ Effect: "Deny", Action: "ecr:*", Resource: "*" }))).toEqual([]);
    expect(fire(ecrWildcardOnlyForAuthToken, withStatements({ Effect: "Allow", Action: "ssm:GetParameter", Resource: "*" }))).toEqual([]);
    const single = resource("prod", "host-ecr-pull");
    single.props.policy = { Version: "2012-10-17", Statement: { Effect: "Allow", Action: "ecr:BatchGetImage", Resource: "*" } };
    expect(fire(ecrWildcardOnlyForAuthToken, single)).toEqual([expect.stringContaining("grants ecr:BatchGetImage")]);
    // a managed policy too; and a document that is not JSON
    const managed = { type: TYPES.iamPolicy, name: "pull-all", props: { policy: "{not json" } };
    expect(fire(ecrWildcardOnlyForAuthToken, managed)).toEqual([
      'aws:iam/policy:Policy "pull-all": policy is not valid JSON; give a JSON policy document',
    ]);
  });

  test("every rule has a policy, each mandatory, and each fired above", () => {
    expect(policies.map((p) => p.name).sort()).toEqual(Object.keys(RULES).sort());
    expect(policies.every((p) => p.enforcementLevel === "mandatory")).toBe(true);
  });
});

/** Calls a policy's validateResource the way @pulumi/policy does, with a given policy config. */
function validate(policy: ResourceValidationPolicy, r: PolicyResource, config: object = {}): string[] {
  const messages: string[] = [];
  const args = {
    type: r.type,
    name: r.name,
    urn: `urn:pulumi:dev::neko-infra::${r.type}::${r.name}`,
    props: r.props,
    getConfig: () => config,
  };
  const fns = [policy.validateResource!].flat();
  for (const fn of fns) fn(args as unknown as ResourceValidationArgs, (m) => messages.push(m));
  return messages;
}
const policyNamed = (name: RuleName) => policies.find((p) => p.name === name)!;

describe("policies (policy/policies.ts)", () => {
  test("pass the policy config through to the rule", () => {
    const sg = resource("prod", "host-sg");
    expect(validate(policyNamed("no-world-open-neko-ports"), sg)).toHaveLength(5);
    expect(validate(policyNamed("no-world-open-neko-ports"), sg, { allowWorldClients: true })).toEqual([]);
    sg.props.ingress[0].cidrBlocks = ["0.0.0.0/0"];
    expect(validate(policyNamed("no-ssh-from-anywhere"), sg)).toHaveLength(1);
    expect(validate(policyNamed("no-ssh-from-anywhere"), sg, { allowSshFromAnywhere: true })).toEqual([]);
  });

  test("look only at their resource types", () => {
    const bad = { type: "aws:ec2/launchTemplate:LaunchTemplate", name: "lt", props: { metadataOptions: { httpTokens: "optional" } } };
    expect(policies.flatMap((p) => validate(p, bad))).toEqual([]);
  });

  test("configurable flags default to false", () => {
    const flags = policies.filter((p) => p.configSchema).map((p) => [p.name, p.configSchema!.properties]);
    expect(flags).toEqual([
      ["no-ssh-from-anywhere", { allowSshFromAnywhere: expect.objectContaining({ type: "boolean", default: false }) }],
      ["no-world-open-neko-ports", { allowWorldClients: expect.objectContaining({ type: "boolean", default: false }) }],
    ]);
  });

  test("policy/index.ts serves them all as the mandatory pack neko-infra, secret hook installed", async () => {
    const made: { name: string; args: any }[] = [];
    let patched = false;
    await jest.isolateModulesAsync(async () => {
      jest.doMock("@pulumi/policy", () => ({ PolicyPack: jest.fn((name: string, args: any) => made.push({ name, args })) }));
      await import("../../policy/index");
      patched = require("@pulumi/policy/deserialize")[Symbol.for("neko-infra.policy.secretPaths")] === true;
    });
    expect(made.map((m) => m.name)).toEqual(["neko-infra"]);
    expect(made[0].args.enforcementLevel).toBe("mandatory");
    expect(made[0].args.policies.map((p: ResourceValidationPolicy) => p.name)).toEqual(policies.map((p) => p.name));
    expect(patched).toBe(true);
    const yaml = parse(fs.readFileSync(path.join(ROOT, "policy", "PulumiPolicy.yaml"), "utf8"));
    expect(yaml.runtime).toEqual({ name: "nodejs", options: { typescript: true } });
    expect(JSON.parse(fs.readFileSync(path.join(ROOT, "policy", "package.json"), "utf8")).version).toMatch(/^\d+\.\d+\.\d+$/);
  });
});

// ------------------------------------------------------------------------------------------------
// Through @pulumi/policy's analyze RPC: what the engine's request turns into
// ------------------------------------------------------------------------------------------------

const SIG_KEY = "4dabf18193072939515e22adb298388d";
const SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270";
const UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9";
const LEVEL = ["advisory", "mandatory", "disabled", "remediate"];

interface Diagnostic {
  policy: string;
  level: string;
  message: string;
}

/** The engine's marshalling of inputs: secrets wrapped at `paths` (`envs`, `envs[3]`), unknowns at `unknown`. */
function marshal(r: PolicyResource, paths: readonly string[], unknown: string[] = []): Record<string, unknown> {
  const props = JSON.parse(JSON.stringify(r.props));
  for (const p of paths) {
    const m = /^(\w+)(?:\[(\d+)\])?$/.exec(p)!;
    if (m[2] === undefined) props[m[1]] = { [SIG_KEY]: SECRET_SIG, value: props[m[1]] };
    else props[m[1]][Number(m[2])] = { [SIG_KEY]: SECRET_SIG, value: props[m[1]][Number(m[2])] };
  }
  for (const k of unknown) props[k] = UNKNOWN;
  return props;
}

async function analyze(r: PolicyResource, paths: readonly string[] = r.secretPaths ?? [], unknown: string[] = []): Promise<Diagnostic[]> {
  const pb = require("@pulumi/pulumi/proto/analyzer_pb");
  const { Struct } = require("google-protobuf/google/protobuf/struct_pb");
  const server = require("@pulumi/policy/server");
  const req = new pb.AnalyzeRequest();
  req.setType(r.type);
  req.setName(r.name);
  req.setUrn(`urn:pulumi:dev::neko-infra::${r.type}::${r.name}`);
  req.setProperties(Struct.fromJavaScript(marshal(r, paths, unknown)));
  req.setOptions(new pb.AnalyzerResourceOptions());
  const rpc = server.makeAnalyzeRpcFun("neko-infra", "0.1.0", "mandatory", policies);
  const resp: any = await new Promise((resolve, reject) =>
    rpc({ request: req }, (err: unknown, res: unknown) => (err ? reject(err) : resolve(res))),
  );
  return resp
    .getDiagnosticsList()
    .map((d: any) => ({ policy: d.getPolicyname(), level: LEVEL[d.getEnforcementlevel()], message: d.getMessage() }));
}

describe("served by @pulumi/policy's analyze RPC (secrets unwrapped, unknowns hidden)", () => {
  beforeAll(() => installSecretPaths());

  test("secretPathsIn: what the hook records", () => {
    expect(secretPathsIn(marshal({ type: "t", name: "n", props: { a: [1, 2], b: { c: "x" }, d: 1 } }, ["a[1]", "b"]))).toEqual([
      "a[1]",
      "b",
    ]);
  });

  test.each(STACKS)("%s: every resource of the graph, as the engine sends it", async (stack) => {
    const found: Diagnostic[] = [];
    for (const r of policyResources(runs[stack])) found.push(...(await analyze(r)));
    // The RPC here has no policy config: prod's world-open client ports show, nothing else does.
    const expected = stack === "prod" ? ["52000-52100/udp", "443/tcp", "3478/udp", "3478/tcp", "5349/tcp"] : [];
    expect(found.map((d) => [d.policy, d.level, /opens (\S+)/.exec(d.message)?.[1]])).toEqual(
      expected.map((port) => ["no-world-open-neko-ports", "mandatory", port]),
    );
  });

  test("bad resources through the RPC: the messages reach the engine, mandatory", async () => {
    const i = resource("dev", "host-instance");
    i.props.metadataOptions.httpTokens = "optional";
    i.props.rootBlockDevice.encrypted = false;
    expect((await analyze(i)).map((d) => [d.policy, d.level])).toEqual([
      ["imdsv2-required", "mandatory"],
      ["encrypted-volumes", "mandatory"],
    ]);
    const sg = resource("dev", "builder-sg");
    sg.props.ingress[0].ipv6CidrBlocks = ["::/0"];
    expect((await analyze(sg)).map((d) => d.policy)).toEqual(["no-ssh-from-anywhere"]);
  });

  test("during preview an unknown input makes the policy advisory 'can't run', not a pass or a failure", async () => {
    const host = resource("prod", "host-instance");
    const found = await analyze(host, [], ["rootBlockDevice"]);
    expect(found.map((d) => [d.policy, d.level])).toEqual([
      ["encrypted-volumes", "advisory"],
      ["gpu-instance", "advisory"],
    ]);
    expect(found[0].message).toContain("can't run policy 'encrypted-volumes' from policy pack 'neko-infra@v0.1.0' during preview");
  });
});

describe("CI runs the pack", () => {
  const workflow = (name: string) => parse(fs.readFileSync(path.join(ROOT, ".github", "workflows", name), "utf8"));
  const pulumiSteps = (wf: any) =>
    Object.values(wf.jobs).flatMap((job: any) =>
      (job.steps ?? []).filter((s: any) => String(s.uses ?? "").startsWith("pulumi/actions@")).map((s: any) => ({ job, step: s })),
    );

  test.each(["pr.yml", "deploy.yml"])("%s: every preview and up with the pack and the stack's policy config", (file) => {
    const steps = pulumiSteps(workflow(file)).filter(({ step }) => step.with?.command);
    expect(steps.length).toBeGreaterThan(0);
    for (const { step } of steps) {
      expect(step.with).toMatchObject({ policyPacks: "policy" });
      expect(step.with.policyPackConfigs).toMatch(
        /^policy\/config\/\$\{\{ *(matrix\.stack|env\.STACK) *\}\}\.json$|^policy\/config\/(dev|prod)\.json$/,
      );
    }
  });
});
