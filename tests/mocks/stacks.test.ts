/**
 * The dev (x86, spot builder) and prod (GPU) stacks under mocks: the resource graph and the inputs
 * that carry the project's security, cost and correctness rules.
 */
import { parse } from "yaml";
import { runStack, stackConfig, StackRun, EIP, AMIS } from "../support/stack";

const AL2023 = AMIS["/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"];
const GPU_AMI = AMIS["/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-amazon-linux-2023/latest/ami-id"];

let dev: StackRun;
let prod: StackRun;
beforeAll(async () => {
  dev = await runStack(stackConfig("dev"), { stack: "dev" });
  prod = await runStack(stackConfig("prod"), { stack: "prod" });
}, 60_000);

const componentOf = (run: StackRun, name: string) => run.byName(name).parent.split("::").pop();
const ruleKey = (r: any) => `${r.fromPort}-${r.toPort}/${r.protocol}`;

describe.each([["dev"], ["prod"]])("%s stack", (stack) => {
  const run = () => (stack === "dev" ? dev : prod);

  test("four components, every resource parented to the component that owns it", () => {
    const components = run().resources.filter((r) => r.type.startsWith("neko-infra:"));
    expect(components.map((c) => `${c.type} ${c.name}`).sort()).toEqual([
      "neko-infra:build:BinaryCache cache",
      "neko-infra:build:NixBuilder builder",
      "neko-infra:build:NixImage image",
      "neko-infra:host:NekoHost host",
      "neko-infra:registry:ImageRegistry registry",
    ]);
    for (const r of run().resources.filter((r) => !r.type.startsWith("neko-infra:"))) {
      expect([r.name, componentOf(run(), r.name)]).toEqual([r.name, r.name.split("-")[0]]);
    }
  });

  test.each([["builder-instance"], ["host-instance"]])("%s: IMDSv2 required, encrypted gp3 root volume, AMI changes ignored", (name) => {
    const i = run().byName(name);
    expect(i.inputs.metadataOptions).toMatchObject({ httpTokens: "required", httpEndpoint: "enabled", httpPutResponseHopLimit: 1 });
    expect(i.inputs.rootBlockDevice).toMatchObject({ encrypted: true, volumeType: "gp3", deleteOnTermination: true });
    expect(i.ignoreChanges).toEqual(["ami"]);
    expect(i.inputs.userData).toMatch(/^#cloud-config\n/);
  });

  test("builder: x86 AL2023, SSH only from the configured networks, no permissions of its own", () => {
    const cfg = JSON.parse(stackConfig(stack)["neko-infra:builder"]);
    expect(run().byName("builder-instance").inputs).toMatchObject({ ami: AL2023, instanceType: cfg.instanceType });
    const sg = run().byName("builder-sg").inputs;
    expect(sg.ingress).toHaveLength(1);
    expect(sg.ingress[0]).toMatchObject({ protocol: "tcp", fromPort: 22, toPort: 22 });
    expect([...sg.ingress[0].cidrBlocks, ...(sg.ingress[0].ipv6CidrBlocks ?? [])].sort()).toEqual([...cfg.sshCidrs].sort());
    expect(
      run()
        .ofType("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
        .map((r) => r.name),
    ).toEqual(["host-ssm"]);
  });

  test("builder: stops itself when idle (stop, not terminate), and up starts it again", () => {
    expect(run().byName("builder-instance").inputs.instanceInitiatedShutdownBehavior).toBe("stop");
    expect(run().byName("builder-running").inputs).toEqual({ instanceId: "builder-instance-id", state: "running" });
    expect(run().byName("builder-ready").dependencies).toContain(run().byName("builder-running").urn);
    expect(parse(run().byName("builder-instance").inputs.userData).runcmd[1]).toEqual([
      "systemctl",
      "enable",
      "--now",
      "neko-builder-idle.timer",
    ]);
  });

  test("binary cache: a private, encrypted, expiring bucket only the builder may use", () => {
    const bucket = run().byName("cache-bucket");
    expect(bucket.inputs.forceDestroy).toBe(true);
    expect(run().byName("cache-private").inputs).toMatchObject({
      blockPublicAcls: true,
      blockPublicPolicy: true,
      ignorePublicAcls: true,
      restrictPublicBuckets: true,
    });
    expect(run().byName("cache-encryption").inputs.rules[0].applyServerSideEncryptionByDefault.sseAlgorithm).toBe("AES256");
    expect(run().byName("cache-expiry").inputs.rules[0].expiration.days).toBe(90);
    const access = run().byName("cache-builder-access");
    expect(access.inputs.role).toBe("builder-role-id");
    expect(JSON.parse(access.inputs.policy).Statement.map((s: any) => s.Resource)).toEqual([
      "arn:aws:s3:::neko-cache-bucket-a1b2c3",
      "arn:aws:s3:::neko-cache-bucket-a1b2c3/*",
    ]);
  });

  test("the builder may push to this stack's repository only", () => {
    const repoArn = `arn:aws:ecr:eu-central-1:123456789012:repository/${run().byName("registry-repo").inputs.name}`;
    const push = run().byName("registry-builder-push");
    expect(push.inputs.role).toBe("builder-role-id");
    const doc = JSON.parse(push.inputs.policy);
    expect(doc.Statement.map((s: any) => s.Resource).sort()).toEqual(["*", repoArn]);
    expect(doc.Statement.find((s: any) => s.Resource === "*").Action).toBe("ecr:GetAuthorizationToken");
  });

  test("the host may pull from that repository only, and is reachable through SSM", () => {
    const doc = JSON.parse(run().byName("host-ecr-pull").inputs.policy);
    const actions = doc.Statement.flatMap((s: any) => [s.Action].flat());
    expect(actions.some((a: string) => /Put|Upload|Delete/.test(a))).toBe(false);
    expect(run().byName("host-ssm").inputs.policyArn).toBe("arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore");
  });

  test("ECR: immutable tags, scan on push, encrypted, lifecycle", () => {
    const repo = run().byName("registry-repo").inputs;
    const cfg = JSON.parse(stackConfig(stack)["neko-infra:registry"]);
    expect(repo).toMatchObject({
      name: cfg.repository,
      imageTagMutability: "IMMUTABLE",
      imageScanningConfiguration: { scanOnPush: true },
      forceDelete: cfg.forceDelete ?? false,
    });
    expect(repo.encryptionConfigurations).toEqual([{ encryptionType: "AES256" }]);
    expect(JSON.parse(run().byName("registry-lifecycle").inputs.policy).rules[0].selection.countNumber).toBe(cfg.keepImages);
  });

  test("the build runs nix-build.sh on the builder, over SSH with the pinned host key", () => {
    const build = run().byName("image-build");
    const img = JSON.parse(stackConfig(stack)["neko-infra:image"]);
    expect(build.type).toBe("command:remote:Command");
    const cacheKey = "neko-infra-" + stack + "-1:[A-Za-z0-9+/]+=*";
    expect(build.inputs.create).toMatch(
      new RegExp(
        `^NIX_CACHE='s3://neko-cache-bucket-a1b2c3\\?region=eu-central-1' NIX_CACHE_PUBLIC_KEY=${cacheKey} NIX_CACHE_SECRET_KEY=${cacheKey} bash -s -- ${img.flake} ${img.attr}$`,
      ),
    );
    expect(run().secretInputs["image-build"]).toContain("create");
    expect(build.inputs.logging).toBe("stderr");
    expect(build.inputs.stdin).toContain("usage: nix-build.sh FLAKE_REF ATTR");
    expect(build.inputs.connection).toMatchObject({ host: EIP.builder, user: "ec2-user", port: 22 });
    expect(build.inputs.connection.hostKey).toMatch(/^ssh-ed25519 \S+$/);
    expect(build.inputs.connection.hostKey).toBe(run().byName("builder-ready").inputs.connection.hostKey);
    expect(build.inputs.addPreviousOutputInEnv).toBe(false);
    expect(run().secretInputs["image-build"]).toContain("connection");
  });

  test("the push runs on the builder with ECR auth from its role: no registry token anywhere", () => {
    const push = run().byName("registry-push");
    const storePath = String(run().outputs.storePath);
    expect(push.inputs.create).toBe(
      `REGISTRY_AUTH=ecr bash -s -- ${storePath} 123456789012.dkr.ecr.eu-central-1.amazonaws.com/${run().byName("registry-repo").inputs.name}`,
    );
    expect(push.dependencies).toContain(run().resources.find((r) => r.name === "registry-builder-push")!.urn);
    const all = JSON.stringify(run().resources.map((r) => r.inputs));
    expect(all).not.toMatch(/"(password|registryAuth|authorizationToken|proxyEndpoint)"/);
  });

  test("host security group: SSH from admins, exactly the container's ports from clients", () => {
    const sg = run().byName("host-sg").inputs;
    const host = JSON.parse(stackConfig(stack)["neko-infra:host"]);
    const [ssh, ...neko] = sg.ingress;
    expect(ssh).toMatchObject({ fromPort: 22, toPort: 22, protocol: "tcp", cidrBlocks: host.sshCidrs });
    for (const r of neko) expect([...r.cidrBlocks, ...(r.ipv6CidrBlocks ?? [])].sort()).toEqual([...host.clientCidrs].sort());
    const covered = neko.flatMap((r: any) =>
      Array.from({ length: r.toPort - r.fromPort + 1 }, (_, i) => `${r.fromPort + i}/${r.protocol}`),
    );
    const published = run()
      .byName("host-neko")
      .inputs.ports.map((p: any) => `${p.external}/${p.protocol}`);
    expect(covered.sort()).toEqual(published.sort());
    expect(neko.map(ruleKey)).toEqual(["8080-8080/tcp", "52000-52100/udp"]);
  });

  test("container: pinned digest, linux/amd64, 1:1 ports, 2 GB shm, health-gated, passwords secret", () => {
    const c = run().byName("host-neko").inputs;
    // the image ID printed by the pull of imageRef (by digest)
    expect(c.image).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(run().outputs.imageRef).toMatch(/@sha256:[0-9a-f]{64}$/);
    expect(c).toMatchObject({ name: "neko", platform: "linux/amd64", shmSize: 2048, restart: "unless-stopped", wait: false });
    expect(c.ports.every((p: any) => p.internal === p.external)).toBe(true);
    expect(c.ports).toHaveLength(1 + 101);
    expect(c.healthcheck).toMatchObject({
      tests: ["CMD-SHELL", "wget -q -O - http://127.0.0.1:8080/health || exit 1"],
      retries: 8,
      interval: "10s",
      timeout: "5s",
    });
    expect(c.envs).toContain(`NEKO_WEBRTC_NAT1TO1=${EIP.host}`);
    expect(c.envs).toContain("NEKO_SERVER_BIND=:8080");
    expect(c.envs).toContain("NEKO_WEBRTC_EPR=52000-52100");
    expect(c.envs).toContain("NEKO_MEMBER_MULTIUSER_ADMIN_PASSWORD=generated-host-admin-password");
    expect(c.envs.filter((e: string) => /^NEKO_(EPR|NAT1TO1|PASSWORD|SCREEN|ICELITE)=/.test(e))).toEqual([]);
    expect(run().secretInputs["host-neko"]).toEqual(["envs"]);
    const healthy = run().byName("host-healthy");
    expect(healthy.inputs.create).toBe("bash -s -- neko 150");
    expect(healthy.inputs.triggers).toEqual(["host-neko-id"]);
    expect(healthy.dependencies).toContain(run().byName("host-neko").urn);
  });

  test("the image is pulled by digest on the host before the container is created", () => {
    const pull = run().byName("host-pull");
    expect(pull.inputs.create).toBe(`bash -s -- ${run().outputs.imageRef}`);
    expect(run().byName("host-neko").dependencies).toContain(pull.urn);
  });

  test("docker runs over SSH on the host, after the host answered", () => {
    const provider = run().byName("host-docker");
    expect(provider.inputs.host).toBe(`ssh://ec2-user@${EIP.host}:22`);
    expect(JSON.parse(provider.inputs.sshOpts).join(" ")).toContain("StrictHostKeyChecking=yes");
    expect(provider.dependencies).toContain(run().byName("host-ready").urn);
    expect(run().byName("host-neko").provider).toContain("host-docker");
  });

  test("stack outputs: url, digest, addresses, ssh hint; passwords secret", () => {
    const o = run().outputs;
    expect(o.url).toBe(`http://${EIP.host}:8080/`);
    expect(o).toMatchObject({ hostIp: EIP.host, builderIp: EIP.builder });
    expect(o.sshCommand).toMatch(
      new RegExp(`^ssh -i \\S+/${stack}-host/id -o UserKnownHostsFile=\\S+ -p 22 ec2-user@${EIP.host.replace(/\./g, "\\.")}$`),
    );
    expect(run().secretOutputs.sort()).toEqual(["adminPassword", "userPassword"]);
  });
});

describe("dev vs prod", () => {
  test("dev: a cheap x86 host with VP8 and a spot builder", () => {
    expect(dev.byName("host-instance").inputs).toMatchObject({
      ami: AL2023,
      instanceType: "c6i.xlarge",
      rootBlockDevice: { volumeSize: 30 },
    });
    expect(dev.byName("host-neko").inputs.gpus).toBeUndefined();
    expect(dev.byName("host-neko").inputs.envs).toContain("NEKO_CAPTURE_VIDEO_CODEC=vp8");
    expect(dev.byName("builder-instance").inputs.instanceMarketOptions).toEqual({
      marketType: "spot",
      spotOptions: { spotInstanceType: "persistent", instanceInterruptionBehavior: "stop" },
    });
  });

  test("prod: the NVIDIA AMI on a GPU type, the GPU handed to the container, NVENC H.264", () => {
    expect(prod.byName("host-instance").inputs).toMatchObject({
      ami: GPU_AMI,
      instanceType: "g5.xlarge",
      rootBlockDevice: { volumeSize: 120 },
    });
    const c = prod.byName("host-neko").inputs;
    expect(c.gpus).toBe("all");
    expect(c.envs).toEqual(
      expect.arrayContaining(["NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_DRIVER_CAPABILITIES=all", "NEKO_CAPTURE_VIDEO_CODEC=h264"]),
    );
    expect(c.envs.find((e: string) => e.startsWith("NEKO_CAPTURE_VIDEO_PIPELINE="))).toContain("nvh264enc");
    expect(prod.byName("builder-instance").inputs.instanceMarketOptions).toBeUndefined();
    expect(parse(prod.byName("host-instance").inputs.userData).runcmd[0].slice(2, 4)).toEqual(["ec2-user", "1"]);
    expect(parse(dev.byName("host-instance").inputs.userData).runcmd[0].slice(2, 4)).toEqual(["ec2-user", "0"]);
  });

  test("prod: IPv6 admin networks land in ipv6CidrBlocks", () => {
    expect(prod.byName("builder-sg").inputs.ingress[0]).toMatchObject({
      cidrBlocks: ["198.51.100.24/32"],
      ipv6CidrBlocks: ["2001:db8:10::/48"],
    });
  });
});
