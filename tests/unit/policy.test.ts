/**
 * The neko-infra policy pack (policy/): every rule against the dev and prod resource graphs (no
 * violation, and the graphs do hold what each rule inspects; also a graph whose credentials come
 * from the operator's config), against bad resources (each rule fires, with its message), and
 * served through @pulumi/policy's own analyze RPC, which unwraps secrets and hides unknowns the way
 * the engine's requests make it. Also: one policy config file per stack file.
 */
import * as fs from "fs";
import * as os from "os";
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
  noCredentialsInFunctionEnvironment,
  noSecretInCommandLines,
  noSshFromAnywhere,
  noWorldClients,
  PolicyResource,
  Rule,
  RuleConfig,
  RuleName,
  RULES,
  scopedInstanceActions,
  TYPES,
} from "../../policy/rules";
import { credentialsIn } from "../../policy/credentials";
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
    holds("encrypted-volumes", ["builder-instance", "host-instance", "host-browser-profile", "host-tls-state"]);
    holds("gpu-instance", ["builder-instance", "host-instance"]);
    holds("no-ssh-from-anywhere", ["builder-sg", "host-sg"]);
    holds("no-world-open-neko-ports", ["builder-sg", "host-sg"]);
    holds("ecr-scan-on-push-immutable-tags", ["registry-repo"]);
    holds("ecr-wildcard-only-for-auth-token", ["host-ecr-pull", "registry-builder-push"]);
    holds("no-credentials-in-function-environment", ["host-visit-fn"]);
    holds("scoped-instance-actions", [
      "host-ecr-pull",
      "registry-builder-push",
      "cache-builder-access",
      "host-visit-start",
      "host-ready-tag",
    ]);
    const steps = ["image-build", "registry-push", "host-tls", "host-neko", ...(stack === "prod" ? ["host-turn"] : [])];
    holds(
      "no-secret-in-command-lines",
      steps.flatMap((step) => [step, `${step}-wake`]),
    );
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
    // the wake-on-visit function: describe anything (EC2 has no narrower resource), start and tag this instance only
    expect(JSON.parse(resource(stack, "host-visit-start").props.policy).Statement).toEqual([
      { Sid: "Describe", Effect: "Allow", Action: "ec2:DescribeInstances", Resource: "*" },
      {
        Sid: "Start",
        Effect: "Allow",
        Action: "ec2:StartInstances",
        Resource: "arn:aws:ec2:eu-central-1:123456789012:instance/host-instance-id",
      },
      {
        Sid: "Count",
        Effect: "Allow",
        Action: "ec2:CreateTags",
        Resource: "arn:aws:ec2:eu-central-1:123456789012:instance/host-instance-id",
        Condition: { "ForAllValues:StringEquals": { "aws:TagKeys": ["neko-infra:wake-starts"] } },
      },
    ]);
    // its function compares the link's token with a digest: the token itself is nowhere in its configuration
    expect(resource(stack, "host-visit-fn").props.environment.variables).toEqual({
      INSTANCE_ID: "host-instance-id",
      NEKO_URL: `https://${EIP.host}/`,
      MAX_STARTS: "6",
      TOKEN_SHA256: expect.stringMatching(/^[0-9a-f]{64}$/),
    });
    // credentials on stdin, in the wake steps' environment and in the connection, each secret; plain command lines
    const holding = (name: string, input: string) =>
      credentialsIn(JSON.stringify(resource(stack, name).props[input]).replace(/\\n/g, "\n"));
    for (const [name, input] of [
      ["image-build", "stdin"], // the cache's signing key
      ["host-neko", "stdin"], // neko's passwords and API token
      ["host-neko-wake", "environment"], // the SSH key
      ["host-neko", "connection"],
      ...(stack === "prod" ? [["host-turn", "stdin"]] : []), // the TURN password
    ]) {
      expect([name, input, holding(name, input).length > 0]).toEqual([name, input, true]);
      expect([name, resource(stack, name).secretPaths]).toEqual([name, expect.arrayContaining([input])]);
    }
    for (const r of all().filter((r) => r.type.startsWith("command:"))) {
      expect([r.name, typeof r.props.create]).toEqual([r.name, "string"]);
      expect([r.name, r.secretPaths]).toEqual([r.name, expect.not.arrayContaining(["create", "update", "delete"])]);
    }
  });

  test("no rule finds a violation, with the stack's policy config", () => {
    expect(all().flatMap((r) => checkResource(r, packConfig(stack)))).toEqual([]);
  });
});

describe("another shape: an ssh builder with the operator's key, an OCI registry with a password, neko on this machine", () => {
  const KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE=\n-----END OPENSSH PRIVATE KEY-----\n";
  const flake = fs.mkdtempSync(path.join(os.tmpdir(), "neko-infra-policy-flake-"));
  afterAll(() => fs.rmSync(flake, { recursive: true, force: true }));
  let run: StackRun;
  beforeAll(async () => {
    fs.writeFileSync(path.join(flake, "flake.nix"), "{ outputs = _: { }; }\n");
    const config = {
      "neko-infra:builder": JSON.stringify({
        kind: "ssh",
        host: "10.231.7.2",
        privateKey: KEY,
        hostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB9nDl2ZH6Tz5R5bLPMbUE6EaF7HFGWU2mmKDzHgDm4G",
      }),
      "neko-infra:image": JSON.stringify({ flake, attr: "image" }),
      "neko-infra:registry": JSON.stringify({ kind: "oci", url: "10.231.7.1:5000/neko", username: "neko", password: "s3cret-pw" }),
      "neko-infra:host": JSON.stringify({ kind: "local" }),
      "neko-infra:neko": JSON.stringify({ userPassword: "user-pass-1", adminPassword: "admin-pass-1", apiToken: "api-token-0123456789" }),
    };
    run = await runStack(config, { secretKeys: Object.keys(config).filter((k) => k !== "neko-infra:image") });
  }, 30_000);

  test("the operator's credentials reach stdin, environment and connection, each secret: no rule finds a violation", () => {
    const steps = policyResources(run).filter((r) => r.type.startsWith("command:"));
    const where = steps.flatMap((r) =>
      ["stdin", "environment", "connection"].flatMap((input) =>
        credentialsIn(JSON.stringify(r.props[input] ?? "").replace(/\\n/g, "\n")).length ? [`${r.name} ${input}`] : [],
      ),
    );
    expect(where).toEqual(
      expect.arrayContaining([
        "image-ship stdin", // the builder's key, for nix copy
        "image-build connection",
        "registry-push stdin", // REGISTRY_PASSWORD
        "host-neko stdin", // REGISTRY_PASSWORD and neko's passwords
        "image-build-wake environment",
      ]),
    );
    expect(policyResources(run).flatMap((r) => checkResource(r))).toEqual([]);
  });

  test("and through the analyze RPC: no violation; the registry password's stdin sent plain is one", async () => {
    installSecretPaths();
    const found: Diagnostic[] = [];
    for (const r of policyResources(run)) found.push(...(await analyze(r)));
    expect(found).toEqual([]);
    const push = policyResources(run).find((r) => r.name === "registry-push")!;
    expect(push.secretPaths).toEqual(expect.arrayContaining(["stdin"]));
    expect((await analyze(push, ["connection"])).map((d) => d.message.split("\n")[1])).toEqual([
      expect.stringMatching(
        /^command:remote:Command "registry-push": stdin holds a credential assignment \(REGISTRY_PASSWORD=…\) but is not/,
      ),
    ]);
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
const fired = new Set<Rule>();
function fire(rule: Rule, r: PolicyResource, config?: RuleConfig): string[] {
  const messages = rule(r, config);
  for (const m of messages) expect(m).toContain(`${r.type} "${r.name}": `);
  if (messages.length) fired.add(rule);
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
    // As built: immutable but for running-*, which passes.
    expect(repo.props.imageTagMutability).toBe("IMMUTABLE_WITH_EXCLUSION");
    expect(fire(ecrRepositoryHardened, { ...repo, props: { ...repo.props, imageScanningConfiguration: { scanOnPush: true } } })).toEqual(
      [],
    );
    // Any other exclusion makes tags movable that deploys might read.
    expect(
      fire(ecrRepositoryHardened, {
        ...repo,
        props: {
          ...repo.props,
          imageScanningConfiguration: { scanOnPush: true },
          imageTagMutabilityExclusionFilters: [{ filter: "*", filterType: "WILDCARD" }],
        },
      }),
    ).toEqual([
      'aws:ecr/repository:Repository "registry-repo": tags are mutable (imageTagMutability is "IMMUTABLE_WITH_EXCLUSION", excluding ["*"]); set imageTagMutability: "IMMUTABLE" (or "IMMUTABLE_WITH_EXCLUSION" excluding only running-*)',
    ]);
    repo.props.imageTagMutability = "MUTABLE";
    delete repo.props.imageTagMutabilityExclusionFilters;
    expect(fire(ecrRepositoryHardened, repo)).toEqual([
      'aws:ecr/repository:Repository "registry-repo": images are not scanned on push; set imageScanningConfiguration: { scanOnPush: true } (neko-infra:registry.scanOnPush: true)',
      'aws:ecr/repository:Repository "registry-repo": tags are mutable (imageTagMutability is "MUTABLE"); set imageTagMutability: "IMMUTABLE" (or "IMMUTABLE_WITH_EXCLUSION" excluding only running-*)',
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

  test("scoped-instance-actions: start, stop, tag and terminate only one instance's ARN; describe on anything", () => {
    const INSTANCE = "arn:aws:ec2:eu-central-1:123456789012:instance/host-instance-id";
    const withStatements = (...Statement: unknown[]) => {
      const p = resource("dev", "host-visit-start");
      p.props.policy = JSON.stringify({ Version: "2012-10-17", Statement });
      return p;
    };
    const start = resource("dev", "host-visit-start");
    const doc = JSON.parse(start.props.policy);
    doc.Statement[1].Resource = "*";
    start.props.policy = JSON.stringify(doc);
    expect(fire(scopedInstanceActions, start)).toEqual([
      'aws:iam/rolePolicy:RolePolicy "host-visit-start": statement "Start" (#1) grants ec2:StartInstances on ' +
        'Resource "*"; these act on instances: give them a statement of their own whose Resource is the instance\'s ARN ' +
        '(arn:aws:ec2:<region>:<account>:instance/<id>, one per instance, no wildcard); only ec2:Describe* may use "*"',
    ]);
    // wildcards that reach them, a NotAction that leaves them in, every instance, another kind of resource, NotResource
    expect(fire(scopedInstanceActions, withStatements({ Effect: "Allow", Action: "ec2:*", Resource: ["*"] }))).toEqual([
      expect.stringContaining(
        'statement #0 grants ec2:StartInstances, ec2:StopInstances, ec2:CreateTags, ec2:TerminateInstances (by ec2:*) on Resource "*";',
      ),
    ]);
    expect(fire(scopedInstanceActions, withStatements({ Effect: "Allow", Action: ["s3:GetObject", "*"], Resource: "*" }))).toEqual([
      expect.stringContaining("grants ec2:StartInstances, ec2:StopInstances, ec2:CreateTags, ec2:TerminateInstances (by s3:GetObject, *)"),
    ]);
    expect(
      fire(scopedInstanceActions, withStatements({ Effect: "Allow", Action: "EC2:stop?nstances", Resource: "arn:aws:ec2:*:*:instance/*" })),
    ).toEqual([
      expect.stringContaining("grants ec2:StopInstances (by EC2:stop?nstances) on arn:aws:ec2:*:*:instance/* (not one instance's ARN);"),
    ]);
    expect(
      fire(
        scopedInstanceActions,
        withStatements({
          Effect: "Allow",
          Action: "ec2:CreateTags",
          Resource: [INSTANCE, "arn:aws:ec2:eu-central-1:123456789012:volume/vol-1"],
        }),
      ),
    ).toEqual([
      expect.stringContaining("grants ec2:CreateTags on arn:aws:ec2:eu-central-1:123456789012:volume/vol-1 (not one instance's ARN);"),
    ]);
    expect(fire(scopedInstanceActions, withStatements({ Effect: "Allow", NotAction: ["iam:*", "ec2:Terminate*"], Resource: "*" }))).toEqual(
      [
        expect.stringContaining(
          'grants ec2:StartInstances, ec2:StopInstances, ec2:CreateTags (every action but iam:*, ec2:Terminate*) on Resource "*";',
        ),
      ],
    );
    expect(
      fire(scopedInstanceActions, withStatements({ Effect: "Allow", Action: "ec2:TerminateInstances", NotResource: INSTANCE })),
    ).toEqual([expect.stringContaining("grants ec2:TerminateInstances on NotResource (every other resource);")]);
    // fine: describe on "*", instances by ARN (any case of the action), a Deny, other services, a NotAction that leaves them out
    for (const fine of [
      { Effect: "Allow", Action: ["ec2:Describe*", "ec2:DescribeTags"], Resource: "*" },
      { Effect: "Allow", Action: ["EC2:startinstances", "ec2:StopInstances"], Resource: [INSTANCE, `${INSTANCE}-2`] },
      { Effect: "Deny", Action: "ec2:*", Resource: "*" },
      { Effect: "Allow", Action: "ecr:GetAuthorizationToken", Resource: "*" },
      { Effect: "Allow", NotAction: "ec2:*", Resource: "*" },
    ]) {
      expect([fine, fire(scopedInstanceActions, withStatements(fine))]).toEqual([fine, []]);
    }
    const managed = { type: TYPES.iamPolicy, name: "wake", props: { policy: "{not json" } };
    expect(fire(scopedInstanceActions, managed)).toEqual([
      'aws:iam/policy:Policy "wake": policy is not valid JSON; give a JSON policy document',
    ]);
  });

  test("no-secret-in-command-lines: credentials off command lines, and secret wherever else they are", () => {
    const neko = resource("prod", "host-neko");
    const line = neko.props.create;
    neko.props.create = `${line} --password=hunter2`;
    expect(fire(noSecretInCommandLines, neko)).toEqual([
      'command:remote:Command "host-neko": create holds a credential assignment (password=…); a command line is stored in plain ' +
        "text and shown in every preview: pass the credential on stdin (an export line above the script, lib/shell.ts) or in " +
        "environment, as a Pulumi secret",
    ]);
    expect(fire(noSecretInCommandLines, neko).join()).not.toContain("hunter2");
    // a private key, an AWS secret key, a token in update or delete; a variable's expansion is fine, so is a git revision
    neko.props.create = line;
    neko.props.update = "KEY='-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----' bash -s";
    neko.props.delete = "AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE aws s3 rm --secret wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY s3://x";
    expect(fire(noSecretInCommandLines, neko)).toEqual([
      expect.stringContaining('"host-neko": update holds a private key block (BEGIN RSA PRIVATE KEY); a command line'),
      expect.stringContaining('"host-neko": delete holds a 40-character string shaped like an AWS secret access key; a command line'),
    ]);
    neko.props.update =
      'REGISTRY_PASSWORD="$REGISTRY_PASSWORD" NEKO_API_TOKEN=${NEKO_API_TOKEN:-} bash -s -- github:o/neko/8bd6b3bd1674044d0cba441214e04118268bc1cc';
    neko.props.delete = "export GITHUB_TOKEN=ghp_x; true";
    expect(fire(noSecretInCommandLines, neko)).toEqual([
      expect.stringContaining('"host-neko": delete holds a credential assignment (GITHUB_TOKEN=…); a command line'),
    ]);
    delete neko.props.update;
    delete neko.props.delete;
    expect(fire(noSecretInCommandLines, neko)).toEqual([]);

    // a secret command line: previews would hide what runs
    neko.secretPaths = [...neko.secretPaths!, "create"];
    expect(fire(noSecretInCommandLines, neko)).toEqual([
      'command:remote:Command "host-neko": create is a Pulumi secret, so previews show [secret] instead of what runs and where; ' +
        "build the command line from plain values only and pass secret ones on stdin",
    ]);

    // stdin, environment and connection holding credentials, not secret
    neko.secretPaths = ["connection"];
    expect(fire(noSecretInCommandLines, neko)).toEqual([
      'command:remote:Command "host-neko": stdin holds a credential assignment (NEKO_MEMBER_MULTIUSER_USER_PASSWORD=…), a credential ' +
        "assignment (NEKO_MEMBER_MULTIUSER_ADMIN_PASSWORD=…), a credential assignment (NEKO_SESSION_API_TOKEN=…), a credential " +
        "assignment (NEKO_API_TOKEN=…) but is not a Pulumi secret, so it would be stored unencrypted in the state and shown in diffs; " +
        "make it a Pulumi secret (pulumi.secret())",
    ]);
    expect(fire(noSecretInCommandLines, neko).join()).not.toContain("generated-host");
    neko.secretPaths = ["stdin"];
    expect(fire(noSecretInCommandLines, neko)).toEqual([
      expect.stringContaining(
        '"host-neko": connection.privateKey holds a credential under the name privateKey, a private key block (BEGIN OPENSSH PRIVATE KEY) but is not a Pulumi secret',
      ),
    ]);
    const wake = resource("prod", "host-neko-wake");
    wake.secretPaths = [];
    expect(fire(noSecretInCommandLines, wake)).toEqual([
      expect.stringContaining(
        '"host-neko-wake": environment.SSH_PRIVATE_KEY holds a credential under the name SSH_PRIVATE_KEY, a private key block',
      ),
    ]);
    wake.secretPaths = ["environment.SSH_PRIVATE_KEY"]; // entry by entry is as good as the whole map
    expect(fire(noSecretInCommandLines, wake)).toEqual([]);
    wake.props.environment.REGISTRY_TOKEN = "abc";
    expect(fire(noSecretInCommandLines, wake)).toEqual([
      expect.stringContaining("environment.REGISTRY_TOKEN holds a credential under the name REGISTRY_TOKEN but is not a Pulumi secret"),
    ]);
    const turn = resource("prod", "host-turn");
    turn.secretPaths = ["connection"];
    expect(fire(noSecretInCommandLines, turn)).toEqual([
      expect.stringContaining('"host-turn": stdin holds a TURN user=NAME:PASSWORD line but is not a Pulumi secret'),
    ]);

    // no secret information at all: fail closed, once, naming what would have to be secret
    const unknown = resource("prod", "host-neko");
    delete unknown.secretPaths;
    expect(fire(noSecretInCommandLines, unknown)).toEqual([
      'command:remote:Command "host-neko": cannot tell whether stdin, connection.privateKey are secret (no secret information ' +
        "reached the policy: see policy/secrets.ts), and they hold a credential assignment (NEKO_MEMBER_MULTIUSER_USER_PASSWORD=…), " +
        "a credential assignment (NEKO_MEMBER_MULTIUSER_ADMIN_PASSWORD=…), a credential assignment (NEKO_SESSION_API_TOKEN=…), a " +
        "credential assignment (NEKO_API_TOKEN=…), a credential under the name privateKey, a private key block (BEGIN OPENSSH " +
        "PRIVATE KEY); make them Pulumi secrets (pulumi.secret())",
    ]);
    // ... but a step with nothing credential-like needs no secret information: the TLS front's stdin
    const tls = resource("dev", "host-tls");
    delete tls.secretPaths;
    delete tls.props.connection;
    expect(fire(noSecretInCommandLines, tls)).toEqual([]);
  });

  test("no-credentials-in-function-environment: a digest, never the token or another credential", () => {
    const fn = resource("prod", "host-visit-fn");
    expect(fire(noCredentialsInFunctionEnvironment, fn)).toEqual([]);
    fn.props.environment.variables.TOKEN = "generated-host-visit-token";
    fn.props.environment.variables.SSH_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl\n-----END OPENSSH PRIVATE KEY-----\n";
    fn.props.environment.variables.EXTRA = "DB_PASSWORD=hunter2";
    expect(fire(noCredentialsInFunctionEnvironment, fn)).toEqual([
      'aws:lambda/function:Function "host-visit-fn": environment.variables.TOKEN holds a credential under the name TOKEN; Lambda ' +
        "returns its environment in plain text to anyone allowed lambda:GetFunctionConfiguration, Pulumi secret or not: keep only a " +
        "digest to compare with (as the wake link's TOKEN_SHA256), or have the function read the credential when it runs (Secrets " +
        "Manager, SSM Parameter Store)",
      expect.stringContaining("environment.variables.SSH_KEY holds a private key block (BEGIN OPENSSH PRIVATE KEY);"),
      expect.stringContaining("environment.variables.EXTRA holds a credential assignment (DB_PASSWORD=…);"),
    ]);
    expect(fire(noCredentialsInFunctionEnvironment, fn).join()).not.toMatch(/generated-host-visit-token|hunter2/);
    // secret or not makes no difference there
    fn.secretPaths = ["environment"];
    expect(fire(noCredentialsInFunctionEnvironment, fn)).toHaveLength(3);
    expect(
      fire(noCredentialsInFunctionEnvironment, { type: TYPES.lambdaFunction, name: "bare", props: { runtime: "nodejs22.x" } }),
    ).toEqual([]);
  });

  test("what counts as credential-looking text", () => {
    const yes: [string, string][] = [
      ["-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl\n-----END OPENSSH PRIVATE KEY-----", "a private key block (BEGIN OPENSSH PRIVATE KEY)"],
      ["-----BEGIN PRIVATE KEY-----", "a private key block (BEGIN PRIVATE KEY)"],
      ["-----BEGIN EC PRIVATE KEY-----", "a private key block (BEGIN EC PRIVATE KEY)"],
      ["export NEKO_PASSWORD='a b'", "a credential assignment (NEKO_PASSWORD=…)"],
      ["docker login --password=x", "a credential assignment (password=…)"],
      ["NIX_CACHE_SECRET_KEY=neko-1:abc", "a credential assignment (NIX_CACHE_SECRET_KEY=…)"],
      ["static-auth-secret=abc", "a credential assignment (static-auth-secret=…)"],
      ["API_TOKEN=abc", "a credential assignment (API_TOKEN=…)"],
      ["gpg --passphrase=abc", "a credential assignment (passphrase=…)"],
      ["user=neko:s3cret", "a TURN user=NAME:PASSWORD line"],
      ["wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "a 40-character string shaped like an AWS secret access key"],
    ];
    for (const [text, what] of yes) expect([text, credentialsIn(text)]).toEqual([text, [what]]);
    const no = [
      "timeout -k 15s 7200s bash -s -- github:G-structure/neko/8bd6b3bd1674044d0cba441214e04118268bc1cc chromium-x86_64",
      "bash -s -- 123456789012.dkr.ecr.eu-central-1.amazonaws.com/neko@sha256:06ddf0dd5358d0d8298eff44bf7160f4f33b176866b5709388ef1d23faf7fdf0",
      "/nix/store/4aa3f19859e2399e67fd00fa923d613c-docker-image-neko.tar.gz",
      "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB9nDl2ZH6Tz5R5bLPMbUE6EaF7HFGWU2mmKDzHgDm4G",
      'password="" token=() secret=$(cat /run/key) PASSWORD=${REGISTRY_PASSWORD:?unset} user=${REGISTRY_USER:?unset}',
      "TOKEN_SHA256=b106f022276d9f539bb04e21689f4f570b6048c397a4d424a7124e53da80cdb3 PASSWORD_FILE= [[ $key =~ PASS|SECRET|TOKEN ]]",
      "if (TOKEN==x) ; -----BEGIN CERTIFICATE-----",
    ];
    for (const text of no) expect([text, credentialsIn(text)]).toEqual([text, []]);
  });

  test("every rule has a policy, each mandatory, and each fired above", () => {
    expect(policies.map((p) => p.name).sort()).toEqual(Object.keys(RULES).sort());
    expect(policies.every((p) => p.enforcementLevel === "mandatory")).toBe(true);
    expect(Object.entries(RULES).flatMap(([name, rule]) => (fired.has(rule) ? [] : [name]))).toEqual([]);
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

/** The engine's marshalling of inputs: secrets wrapped at `paths` (`stdin`, `a[3]`, `environment.KEY`), unknowns at `unknown`. */
function marshal(r: PolicyResource, paths: readonly string[], unknown: string[] = []): Record<string, unknown> {
  const props = JSON.parse(JSON.stringify(r.props));
  for (const p of paths) {
    const keys = [...p.matchAll(/([^.[\]]+)|\[(\d+)\]/g)].map((m) => (m[2] !== undefined ? Number(m[2]) : m[1]));
    const holder = keys.slice(0, -1).reduce((o: any, k) => o[k], props);
    holder[keys[keys.length - 1]] = { [SIG_KEY]: SECRET_SIG, value: holder[keys[keys.length - 1]] };
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
    const props = { a: [1, 2], b: { c: "x" }, d: 1, e: { f: "y", g: "z" } };
    expect(secretPathsIn(marshal({ type: "t", name: "n", props }, ["a[1]", "b", "e.g"]))).toEqual(["a[1]", "b", "e.g"]);
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
    const start = resource("prod", "host-visit-start");
    start.props.policy = start.props.policy.replace(/"arn:aws:ec2:[^"]*"/, '"*"');
    expect((await analyze(start)).map((d) => [d.policy, d.level])).toEqual([["scoped-instance-actions", "mandatory"]]);
    const fn = resource("dev", "host-visit-fn");
    fn.props.environment.variables.NEKO_API_TOKEN = "generated-host-api-token";
    expect((await analyze(fn, ["environment"])).map((d) => [d.policy, d.level])).toEqual([
      ["no-credentials-in-function-environment", "mandatory"],
    ]);
  });

  test("a step whose credentials arrive as plain values: mandatory violations; secret ones, none", async () => {
    const neko = resource("prod", "host-neko");
    expect(neko.secretPaths).toEqual(["connection", "stdin"]);
    expect(await analyze(neko)).toEqual([]);
    const found = await analyze(neko, ["connection"]);
    expect(found.map((d) => [d.policy, d.level])).toEqual([["no-secret-in-command-lines", "mandatory"]]);
    // what the engine shows: the policy's description, then the message
    const [description, message] = found[0].message.split("\n");
    expect(description).toBe(SPECS["no-secret-in-command-lines"].description);
    expect(message).toMatch(
      /^command:remote:Command "host-neko": stdin holds a credential assignment \(NEKO_MEMBER_MULTIUSER_USER_PASSWORD=…\)/,
    );
    expect(found[0].message).not.toContain("generated-host");
    // the wake step: the whole environment secret, or only the key in it
    const wake = resource("dev", "image-build-wake");
    expect(await analyze(wake, ["environment"])).toEqual([]);
    expect(await analyze(wake, ["environment.SSH_PRIVATE_KEY"])).toEqual([]);
    expect((await analyze(wake, ["environment.SSH_HOST_KEY"])).map((d) => /\n.*?: (\S+) holds/.exec(d.message)?.[1])).toEqual([
      "environment.SSH_PRIVATE_KEY",
    ]);
    // a secret command line
    expect((await analyze(neko, ["connection", "stdin", "create"])).map((d) => d.message.split("\n")[1])).toEqual([
      expect.stringContaining("create is a Pulumi secret, so previews show [secret]"),
    ]);
  });

  test("without the hook (another @pulumi/policy, props not from its deserializer), the rule fails closed", () => {
    // validate() hands the props over as they are, with no secret information, as a broken hook would
    const messages = validate(policyNamed("no-secret-in-command-lines"), resource("dev", "host-neko"));
    expect(messages).toEqual([expect.stringContaining('"host-neko": cannot tell whether stdin, connection.privateKey are secret')]);
  });

  test("during preview an unknown input makes the policy advisory 'can't run', not a pass or a failure", async () => {
    const neko = resource("prod", "host-neko");
    const unknownStdin = await analyze(neko, ["connection"], ["stdin"]);
    expect(unknownStdin.map((d) => [d.policy, d.level])).toEqual([["no-secret-in-command-lines", "advisory"]]);
    expect(unknownStdin[0].message).toContain(
      "can't run policy 'no-secret-in-command-lines' from policy pack 'neko-infra@v0.1.0' during preview",
    );

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

  // `run:` steps that call the CLI itself (pr.yml's preview --json), as one line each
  const cliRuns = (wf: any) =>
    Object.values(wf.jobs).flatMap((job: any) =>
      (job.steps ?? [])
        .map((s: any) => String(s.run ?? "").replace(/\\\n\s*/g, " "))
        .flatMap((run: string) => run.split("\n").filter((l) => /^\s*pulumi (preview|up)\b/.test(l))),
    );

  test.each(["pr.yml", "deploy.yml"])("%s: every preview and up with the pack and the stack's policy config", (file) => {
    const steps = pulumiSteps(workflow(file)).filter(({ step }) => step.with?.command);
    const runs = cliRuns(workflow(file));
    expect(steps.length + runs.length).toBeGreaterThan(0);
    for (const { step } of steps) {
      expect(step.with).toMatchObject({ policyPacks: "policy" });
      expect(step.with.policyPackConfigs).toMatch(
        /^policy\/config\/\$\{\{ *(matrix\.stack|env\.STACK) *\}\}\.json$|^policy\/config\/(dev|prod)\.json$/,
      );
    }
    for (const run of runs) expect(run).toMatch(/ --policy-pack policy --policy-pack-config "policy\/config\/\$STACK\.json"/);
  });
});
