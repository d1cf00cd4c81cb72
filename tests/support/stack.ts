/**
 * Runs index.ts under Pulumi mocks with a given stack config, and returns the resource graph the
 * program registered: type, name, inputs, parent and dependencies of every resource, plus the stack
 * outputs. Each call loads a fresh copy of the SDK and the program (jest.isolateModules).
 *
 * The mocks answer like AWS would (ids, ARNs, repository URLs, an Elastic IP), run no command, and
 * fail on any invoke the program is not expected to make.
 */
import * as crypto from "crypto";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { parse } from "yaml";
import { readScript } from "../../lib/shell";

export interface Registered {
  type: string;
  name: string;
  urn: string;
  inputs: Record<string, any>;
  parent: string;
  dependencies: string[];
  ignoreChanges: string[];
  deleteBeforeReplace: boolean;
  provider: string;
}

export interface StackRun {
  resources: Registered[];
  outputs: Record<string, unknown>;
  /** Stack outputs that are Pulumi secrets. */
  secretOutputs: string[];
  /** Inputs that were secret, per resource name (`inputs` holds their plain values). */
  secretInputs: Record<string, string[]>;
  byName(name: string): Registered;
  ofType(type: string): Registered[];
}

const ROOT = path.join(__dirname, "..", "..");
const ACCOUNT = "123456789012";
const EIP = { builder: "203.0.113.10", host: "203.0.113.20" };
const AMIS: Record<string, string> = {
  "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64": "ami-0a1b2c3d4e5f60001",
  "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-amazon-linux-2023/latest/ami-id": "ami-0a1b2c3d4e5f6gpu1",
};

export { ACCOUNT, AMIS, EIP, ROOT };

/**
 * The `config:` map of a stack file, as Pulumi hands it to the program (objects as JSON).
 * `realAddresses` swaps the documentation-range examples (which the settings refuse) for
 * carrier-grade NAT and ULA networks, as an operator edits them.
 */
export function stackConfig(stack: string, opts: { realAddresses?: boolean } = {}): Record<string, string> {
  let text = fs.readFileSync(path.join(ROOT, `Pulumi.${stack}.yaml`), "utf8");
  if (opts.realAddresses) {
    text = text
      .replace(/198\.51\.100\./g, "100.64.100.")
      .replace(/203\.0\.113\./g, "100.64.113.")
      .replace(/192\.0\.2\./g, "100.64.2.")
      .replace(/2001:db8:/g, "fd00:db8:");
  }
  const doc = parse(text) as { config: Record<string, unknown> };
  return Object.fromEntries(Object.entries(doc.config).map(([k, v]) => [k, typeof v === "string" ? v : JSON.stringify(v)]));
}

function fakeState(type: string, name: string, inputs: Record<string, any>): Record<string, any> {
  const region = "eu-central-1";
  switch (type) {
    case "aws:ec2/eip:Eip":
      return { ...inputs, publicIp: name.startsWith("builder") ? EIP.builder : EIP.host, allocationId: `eipalloc-${name}` };
    case "aws:s3/bucket:Bucket":
      return { ...inputs, bucket: `neko-${name}-a1b2c3`, arn: `arn:aws:s3:::neko-${name}-a1b2c3`, region: "eu-central-1" };
    case "aws:ecr/repository:Repository":
      return {
        ...inputs,
        arn: `arn:aws:ecr:${region}:${ACCOUNT}:repository/${inputs.name}`,
        repositoryUrl: `${ACCOUNT}.dkr.ecr.${region}.amazonaws.com/${inputs.name}`,
      };
    case "aws:ec2/instance:Instance":
      return {
        ...inputs,
        arn: `arn:aws:ec2:${region}:${ACCOUNT}:instance/${name}-id`,
        privateIp: "172.31.7.9",
        ...(inputs.instanceMarketOptions ? { spotInstanceRequestId: `sir-${name}` } : {}),
      };
    case "aws:lambda/functionUrl:FunctionUrl":
      return { ...inputs, functionUrl: `https://${name}.lambda-url.${region}.on.aws/` };
    case "aws:lambda/function:Function":
      return { ...inputs, arn: `arn:aws:lambda:${region}:${ACCOUNT}:function:${name}`, name: `${name}-7654321` };
    case "aws:iam/role:Role":
      return { ...inputs, arn: `arn:aws:iam::${ACCOUNT}:role/${name}`, name: `${name}-1234567` };
    case "aws:iam/instanceProfile:InstanceProfile":
      return { ...inputs, name: `${name}-7654321` };
    case "aws:ec2/keyPair:KeyPair":
      return { ...inputs, keyName: `${name}-abcdef` };
    case "tls:index/privateKey:PrivateKey":
      return {
        ...inputs,
        // a real ed25519 key, derived from the name so that runs are repeatable
        privateKeyPem: crypto
          .createPrivateKey({
            key: Buffer.concat([Buffer.from("302e020100300506032b657004220420", "hex"), crypto.createHash("sha256").update(name).digest()]),
            format: "der",
            type: "pkcs8",
          })
          .export({ format: "pem", type: "pkcs8" })
          .toString(),
        privateKeyOpenssh: `-----BEGIN OPENSSH PRIVATE KEY-----\n${name}-private\n-----END OPENSSH PRIVATE KEY-----\n`,
        publicKeyOpenssh: `ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA${Buffer.from(name).toString("base64").replace(/=/g, "")}\n`,
      };
    case "random:index/randomPassword:RandomPassword":
      return { ...inputs, result: `generated-${name}` };
    case "command:remote:Command":
    case "command:local:Command":
      return { ...inputs, stdout: fakeStdout(inputs), stderr: "" };
    default:
      return inputs;
  }
}

/** Which script a step runs: its standard input ends with the script's text. */
function scriptOf(stdin: string): string | undefined {
  for (const name of [
    "nix-build.sh",
    "ship-flake.sh",
    "push-image.sh",
    "docker-load.sh",
    "neko-rollout.sh",
    "tls-front.sh",
    "turn-relay.sh",
    "builder-bootstrap.sh",
    "host-bootstrap.sh",
    "ecr-keep.sh",
  ] as const) {
    if (stdin.endsWith(readScript(name))) return name;
  }
  return undefined;
}

/** What each script prints on success, so outputs flow on as in a real run. */
function fakeStdout(inputs: Record<string, any>): string {
  const stdin = String(inputs.stdin ?? "");
  const create = String(inputs.create ?? "");
  if (create === ":") return "";
  if (create.startsWith("node - ")) return "ready: the machine\n";
  const args =
    create
      .split(" -- ")[1]
      ?.split(" ")
      .map((w) => w.replace(/^'|'$/g, "")) ?? [];
  const nixHash = (text: string) => crypto.createHash("sha256").update(text).digest("hex").slice(0, 32);
  const digest = (text: string) => crypto.createHash("sha256").update(text).digest("hex");
  switch (scriptOf(stdin)) {
    case "nix-build.sh":
      return `/nix/store/${nixHash(args.join(" "))}-docker-image-neko.tar.gz\n`;
    case "ship-flake.sh": // content-addressed, like `nix flake archive`: the trigger carries the flake's content hash
      return `/nix/store/${nixHash(args[0] + JSON.stringify(inputs.triggers))}-source\n`;
    case "push-image.sh":
      return `${args[1]}@sha256:${digest(args[0])}\n`;
    case "docker-load.sh":
      return `sha256:${digest(args[0])}\n`;
    case "neko-rollout.sh":
      return `neko started sha256:${digest(args[0])} http://127.0.0.1:8080\n`;
    case "tls-front.sh":
      return `https://${args[1]}/ serves a certificate\n`;
    case "turn-relay.sh":
      return "neko-turn listens\n";
    case "ecr-keep.sh": {
      const [repo, dig] = args[0].slice(args[0].indexOf("/") + 1).split("@");
      return `${repo}@${dig.slice(0, 19)} is tagged ${args[1]}\n`;
    }
    case "builder-bootstrap.sh":
    case "host-bootstrap.sh":
      return ""; // the marker on the machine is the result; stdout stays empty
    default:
      throw new Error(`mock: a command runs a script the mocks do not know: ${create}`);
  }
}

export interface FakeAccount {
  /** false: the region has no default VPC. */
  defaultVpc?: boolean;
  /** vCPU quota values by code (default 64); null: reading it is denied. */
  quotas?: Record<string, number | null>;
  /** Instances already running in the account (default none); null: listing them is denied. */
  running?: { id: string; type: string; tags?: Record<string, string> }[] | null;
}

const VCPUS: Record<string, number> = {
  "c6i.xlarge": 4,
  "c6i.2xlarge": 8,
  "c6i.4xlarge": 16,
  "t3.xlarge": 4,
  "g4dn.xlarge": 4,
  "g5.xlarge": 4,
  "g5.2xlarge": 8,
  "g4dn.12xlarge": 48,
  "p4d.24xlarge": 96,
};

/** Answers the invokes the program makes, like AWS would; undefined for any other. */
function fakeInvoke(token: string, inputs: Record<string, any>, account: FakeAccount): Record<string, any> | undefined {
  switch (token) {
    case "aws:ssm/getParameter:getParameter": {
      const value = AMIS[inputs.name];
      if (!value) throw new Error(`unexpected SSM parameter ${inputs.name}`);
      return { ...inputs, value, type: "String" };
    }
    case "aws:ec2/getVpcs:getVpcs":
      if (JSON.stringify(inputs.filters) !== JSON.stringify([{ name: "is-default", values: ["true"] }]))
        throw new Error(`unexpected VPC look-up ${JSON.stringify(inputs)}`);
      return { ...inputs, ids: account.defaultVpc === false ? [] : ["vpc-0default0000000000"] };
    case "aws:ec2/getInstanceType:getInstanceType": {
      const vcpus = VCPUS[inputs.instanceType];
      if (vcpus === undefined) throw new Error(`mock: no vCPU count for ${inputs.instanceType}`);
      return { ...inputs, defaultVcpus: vcpus };
    }
    case "aws:servicequotas/getServiceQuota:getServiceQuota": {
      const value = account.quotas?.[inputs.quotaCode];
      if (value === null) throw new Error("AccessDeniedException: not authorized to perform servicequotas:GetServiceQuota");
      return { ...inputs, value: value ?? 64, adjustable: true };
    }
    case "aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings":
      return {
        ...inputs,
        locations: ["eu-central-1b", "eu-central-1a", "eu-central-1c"],
        locationTypes: ["availability-zone"],
        instanceTypes: [],
      };
    case "aws:ec2/getInstances:getInstances": {
      if (account.running === null) throw new Error("UnauthorizedOperation: not authorized to perform ec2:DescribeInstances");
      if (JSON.stringify(inputs.instanceStateNames) !== JSON.stringify(["pending", "running"]))
        throw new Error(`unexpected instance listing ${JSON.stringify(inputs)}`);
      return { ...inputs, ids: (account.running ?? []).map((i) => i.id), privateIps: [], publicIps: [], ipv6Addresses: [] };
    }
    case "aws:ec2/getInstance:getInstance": {
      const i = (account.running ?? []).find((r) => r.id === inputs.instanceId);
      if (!i) throw new Error(`mock: no instance ${inputs.instanceId}`);
      return { ...inputs, instanceType: i.type, tags: i.tags ?? {} };
    }
    case "aws:ec2/getSubnet:getSubnet":
      return { ...inputs, vpcId: "vpc-0given000000000000", availabilityZone: "eu-central-1c" };
    default:
      return undefined;
  }
}

export async function runStack(
  config: Record<string, string>,
  opts: { secretKeys?: string[]; stack?: string; preview?: boolean; sshDir?: string; account?: FakeAccount } = {},
): Promise<StackRun> {
  const resources: Registered[] = [];
  const secretInputs: Record<string, string[]> = {};
  const invokeErrors: string[] = [];
  process.setMaxListeners(100); // every fresh SDK copy adds exit hooks
  const previousSshDir = process.env.NEKO_INFRA_SSH_DIR;
  process.env.NEKO_INFRA_SSH_DIR = opts.sshDir ?? fs.mkdtempSync(path.join(os.tmpdir(), "neko-infra-ssh-"));
  const outputs: Record<string, unknown> = {};
  const secretOutputs: string[] = [];
  try {
    let exports: Record<string, any> = {};
    let pulumi: typeof import("@pulumi/pulumi") = undefined as any;
    await jest.isolateModulesAsync(async () => {
      pulumi = require("@pulumi/pulumi");
      const stack = opts.stack ?? "test";
      await pulumi.runtime.setMocks(
        {
          newResource(args) {
            const state = fakeState(args.type, args.name, unwrapSecrets(args.inputs));
            return { id: `${args.name}-id`, state };
          },
          call(args) {
            const answer = fakeInvoke(args.token, args.inputs, opts.account ?? {});
            if (answer === undefined) {
              invokeErrors.push(args.token);
              throw new Error(`unexpected invoke ${args.token}`);
            }
            return answer;
          },
        },
        "neko-infra",
        stack,
        opts.preview ?? false,
      );
      pulumi.runtime.setAllConfig(config, opts.secretKeys ?? []);
      const monitor = pulumi.runtime.getMonitor() as any;
      const register = monitor.registerResource.bind(monitor);

      monitor.registerResource = (req: any, cb: any) => {
        if (req.getCustom()) {
          const obj = req.getObject().toJavaScript();
          const secrets = Object.entries(obj)
            .filter(([, v]) => isSecretValue(v))
            .map(([k]) => k);
          if (secrets.length) secretInputs[req.getName()] = secrets;
        }
        return register(req, (err: any, resp: any) => {
          resources.push({
            type: req.getType(),
            name: req.getName(),
            urn: resp?.getUrn?.() ?? "",
            inputs: unwrapSecrets(req.getObject().toJavaScript()),
            parent: req.getParent(),
            dependencies: req.getDependenciesList(),
            ignoreChanges: req.getIgnorechangesList(),
            deleteBeforeReplace: req.getDeletebeforereplace(),
            provider: req.getProvider(),
          });
          cb(err, resp);
        });
      };
      const program = require("../../index");
      exports = typeof program === "function" ? await program() : program;
    });
    for (const [key, value] of Object.entries(exports)) {
      if (pulumi.Output.isInstance(value)) {
        outputs[key] = await new Promise((resolve) => value.apply(resolve));
        if (await pulumi.isSecret(value)) secretOutputs.push(key);
      } else {
        outputs[key] = value;
      }
    }
    await pulumi.runtime.disconnect();
    if (invokeErrors.length) throw new Error(`the program made unexpected invokes: ${invokeErrors.join(", ")}`);
  } finally {
    if (previousSshDir === undefined) delete process.env.NEKO_INFRA_SSH_DIR;
    else process.env.NEKO_INFRA_SSH_DIR = previousSshDir;
  }
  return {
    resources,
    outputs,
    secretOutputs,
    secretInputs,
    byName(name) {
      const found = resources.filter((r) => r.name === name);
      if (found.length !== 1)
        throw new Error(`expected one resource named ${name}, found ${found.length}: ${resources.map((r) => r.name).join(", ")}`);
      return found[0];
    },
    ofType(type) {
      return resources.filter((r) => r.type === type);
    },
  };
}

const SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270";
function isSecretValue(v: unknown): boolean {
  return typeof v === "object" && v !== null && (v as Record<string, unknown>)["4dabf18193072939515e22adb298388d"] === SECRET_SIG;
}
function unwrapSecrets(v: any): any {
  if (isSecretValue(v)) return unwrapSecrets(v.value);
  if (Array.isArray(v)) return v.map(unwrapSecrets);
  if (v && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, unwrapSecrets(x)]));
  return v;
}

/** The `export NAME=value` lines at the top of a step's stdin, as a map. */
export function stdinEnv(stdin: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const m of stdin.matchAll(/^export ([A-Z_][A-Z0-9_]*)=('(?:[^']|'\\'')*'|\S*)$/gm)) {
    env[m[1]] = m[2].startsWith("'") ? m[2].slice(1, -1).replace(/'\\''/g, "'") : m[2];
  }
  return env;
}
