/**
 * The dev (x86, spot builder) and prod (GPU, TURN) stacks under Pulumi mocks, their example
 * addresses replaced as an operator would: the resource graph and the inputs that carry the
 * project's security, cost and correctness rules. AWS resources can only be checked this way here;
 * the steps they wire are proven against real tools in tests/realtool and tests/engine.
 */
import { parse } from "yaml";
import { TLS_IMAGE } from "../../lib/caddy";
import { TURN_IMAGE } from "../../lib/turn";
import { AMIS, EIP, runStack, stackConfig, StackRun, stdinEnv } from "../support/stack";

const AL2023 = AMIS["/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"];
const GPU_AMI = AMIS["/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-amazon-linux-2023/latest/ami-id"];
const config = (stack: string) => stackConfig(stack, { realAddresses: true });
const section = (stack: string, key: string) => JSON.parse(config(stack)[`neko-infra:${key}`]);

let dev: StackRun;
let prod: StackRun;
beforeAll(async () => {
  dev = await runStack(config("dev"), { stack: "dev" });
  prod = await runStack(config("prod"), { stack: "prod" });
}, 60_000);

const componentOf = (run: StackRun, name: string) => run.byName(name).parent.split("::").pop();
const ruleKey = (r: any) => `${r.fromPort}-${r.toPort}/${r.protocol}`;

describe.each([["dev"], ["prod"]])("%s stack", (stack) => {
  const run = () => (stack === "dev" ? dev : prod);

  test("the components, and every resource under the component that owns it (wake steps under their machine)", () => {
    const components = run().resources.filter((r) => r.type.startsWith("neko-infra:"));
    expect(components.map((c) => `${c.type} ${c.name}`).sort()).toEqual([
      "neko-infra:build:BinaryCache cache",
      "neko-infra:build:NixBuilder builder",
      "neko-infra:build:NixImage image",
      "neko-infra:host:NekoHost host",
      "neko-infra:host:WakeOnVisit host-visit",
      "neko-infra:registry:ImageRegistry registry",
    ]);
    for (const r of run().resources.filter((r) => !r.type.startsWith("neko-infra:"))) {
      const owner = /^(image|registry)-.*-wake$/.test(r.name)
        ? "builder"
        : r.name.startsWith("host-visit")
          ? "host-visit"
          : r.name.split("-")[0];
      expect([r.name, componentOf(run(), r.name)]).toEqual([r.name, owner]);
    }
  });

  test.each([["builder-instance"], ["host-instance"]])(
    "%s: IMDSv2 required, encrypted gp3 root volume, AMI changes ignored, stops on shutdown",
    (name) => {
      const i = run().byName(name);
      expect(i.inputs.metadataOptions).toMatchObject({ httpTokens: "required", httpEndpoint: "enabled", httpPutResponseHopLimit: 1 });
      expect(i.inputs.rootBlockDevice).toMatchObject({ encrypted: true, volumeType: "gp3", deleteOnTermination: true });
      // the wake link's start counter and the host's ready tag are not drift; the root volume's tags are its own (no volumeTags)
      expect(i.ignoreChanges).toEqual([
        "ami",
        'tags["neko-infra:wake-starts"]',
        'tagsAll["neko-infra:wake-starts"]',
        'tags["neko-infra:ready"]',
        'tagsAll["neko-infra:ready"]',
      ]);
      expect(i.inputs.volumeTags).toBeUndefined();
      expect(i.inputs.rootBlockDevice.tags).toMatchObject({ "neko-infra:stack": `neko-infra/${stack}` });
      expect(i.inputs.instanceInitiatedShutdownBehavior).toBe("stop"); // the idle timers power off
      expect(i.inputs.userData).toMatch(/^#cloud-config\n/);
      expect(i.inputs.tags).toMatchObject({ "neko-infra:stack": `neko-infra/${stack}`, "neko-infra:role": name.split("-")[0] });
    },
  );

  test("builder: x86 AL2023, SSH only from the configured networks; user-data the host key only; the rest a setup step over SSH", () => {
    const cfg = section(stack, "builder");
    expect(run().byName("builder-instance").inputs).toMatchObject({ ami: AL2023, instanceType: cfg.instanceType });
    const sg = run().byName("builder-sg").inputs;
    expect(sg.ingress).toHaveLength(1);
    expect(sg.ingress[0]).toMatchObject({ protocol: "tcp", fromPort: 22, toPort: 22 });
    expect([...sg.ingress[0].cidrBlocks, ...(sg.ingress[0].ipv6CidrBlocks ?? [])].sort()).toEqual([...cfg.sshCidrs].sort());
    // What changes with the program is not in user-data (cloud-init runs it once per instance).
    expect(Object.keys(parse(run().byName("builder-instance").inputs.userData)).sort()).toEqual([
      "ssh_deletekeys",
      "ssh_genkeytypes",
      "ssh_keys",
    ]);
    const setup = run().byName("builder-setup");
    expect(setup.type).toBe("command:remote:Command");
    expect(setup.inputs.create).toBe(`timeout -k 15s 1800s sudo -n bash -s -- ec2-user ${cfg.maxJobs ?? "auto"} 30`);
    expect(setup.inputs.triggers).toEqual(["builder-instance-id"]); // a new instance is set up again
    expect(stdinEnv(setup.inputs.stdin).IDLE_STOP_SCRIPT).toContain("builder-idle-stop.sh IDLE_MINUTES");
    expect(run().byName("builder-setup-wake").inputs.environment).toMatchObject({ READY: "login" });
    // every later step waits for the setup (its wake step too)
    for (const step of ["image-build", "registry-push"]) expect(run().byName(`${step}-wake`).dependencies).toContain(setup.urn);
  });

  test("nothing asks for a running machine: no InstanceState; the steps' wake steps start them when they run", () => {
    expect(run().ofType("aws:ec2transitgateway/instanceState:InstanceState")).toEqual([]);
    for (const [step, role] of [
      ["image-build", "builder"],
      ["registry-push", "builder"],
      ["host-tls", "host"],
      ["host-neko", "host"],
    ]) {
      const wake = run().byName(`${step}-wake`);
      expect(wake.type).toBe("command:local:Command");
      expect(wake.inputs).toMatchObject({ create: expect.stringMatching(/^node - # wake /), update: ":", addPreviousOutputInEnv: false });
      expect(wake.inputs.stdin).toContain("scripts/wake.js");
      expect(wake.inputs.environment).toMatchObject({
        WAKE: "ec2",
        EC2_STACK_TAG: `neko-infra/${stack}`,
        EC2_ROLE_TAG: role,
        EC2_INSTANCE_ID: `${role}-instance-id`, // a replacement's old instance carries the same tags
        READY: "marker",
      });
      expect(run().secretInputs[`${step}-wake`]).toContain("environment"); // the SSH key
      expect(wake.inputs.triggers).toEqual([expect.stringMatching(/^[0-9a-f]{64}$/)]);
      expect(run().byName(step).dependencies).toContain(wake.urn);
    }
  });

  test("binary cache: a private, encrypted, expiring bucket only the builder may use", () => {
    expect(run().byName("cache-bucket").inputs.forceDestroy).toBe(true);
    expect(run().byName("cache-private").inputs).toMatchObject({
      blockPublicAcls: true,
      blockPublicPolicy: true,
      ignorePublicAcls: true,
      restrictPublicBuckets: true,
    });
    expect(run().byName("cache-encryption").inputs.rules[0].applyServerSideEncryptionByDefault.sseAlgorithm).toBe("AES256");
    expect(run().byName("cache-expiry").inputs.rules[0].expiration.days).toBe(90);
    expect(run().byName("cache-expiry").inputs.rules[1].abortIncompleteMultipartUpload.daysAfterInitiation).toBe(1);
    expect(JSON.parse(run().byName("cache-tls-only").inputs.policy).Statement[0]).toMatchObject({
      Effect: "Deny",
      Condition: { Bool: { "aws:SecureTransport": "false" } },
    });
    const access = run().byName("cache-builder-access");
    expect(access.inputs.role).toBe("builder-role-id");
    expect(JSON.parse(access.inputs.policy).Statement.map((s: any) => s.Resource)).toEqual([
      "arn:aws:s3:::neko-cache-bucket-a1b2c3",
      "arn:aws:s3:::neko-cache-bucket-a1b2c3/*",
    ]);
  });

  test("the builder may push to this stack's repository only; the host may pull from it only", () => {
    const repoArn = `arn:aws:ecr:eu-central-1:123456789012:repository/${run().byName("registry-repo").inputs.name}`;
    const push = JSON.parse(run().byName("registry-builder-push").inputs.policy);
    expect(push.Statement.map((s: any) => s.Resource).sort()).toEqual(["*", repoArn]);
    expect(push.Statement.find((s: any) => s.Resource === "*").Action).toBe("ecr:GetAuthorizationToken");
    const pull = JSON.parse(run().byName("host-ecr-pull").inputs.policy).Statement.flatMap((s: any) => [s.Action].flat());
    expect(pull.some((a: string) => /Put|Upload|Delete/.test(a))).toBe(false);
    // nothing on the host uses SSM: no AmazonSSMManagedInstanceCore (it reads every SSM parameter)
    expect(
      run()
        .ofType("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
        .map((r) => r.inputs.policyArn),
    ).not.toContain("arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore");
  });

  test("ECR: immutable tags, scan on push, encrypted, lifecycle", () => {
    const repo = run().byName("registry-repo").inputs;
    const cfg = section(stack, "registry");
    expect(repo).toMatchObject({
      name: cfg.repository,
      imageTagMutability: "IMMUTABLE_WITH_EXCLUSION",
      imageScanningConfiguration: { scanOnPush: true },
    });
    // The one tag that moves: the one each host puts on the image it runs.
    expect(repo.imageTagMutabilityExclusionFilters).toEqual([{ filter: "running-*", filterType: "WILDCARD" }]);
    expect(repo.encryptionConfigurations).toEqual([{ encryptionType: "AES256" }]);
    const rules = JSON.parse(run().byName("registry-lifecycle").inputs.policy).rules;
    expect(rules.map((r: { selection: { tagStatus: string } }) => r.selection.tagStatus)).toEqual(["tagged", "any"]);
    expect(rules[1].selection.countNumber).toBe(cfg.keepImages);
  });

  test("the build: a readable command line bounded on the builder, the cache key only on stdin, the host key pinned", () => {
    const build = run().byName("image-build");
    const img = section(stack, "image");
    expect(build.type).toBe("command:remote:Command");
    expect(build.inputs.create).toBe(`timeout -k 15s 7200s bash -s -- ${img.flake} ${img.attr}`);
    expect(run().secretInputs["image-build"]).not.toContain("create");
    expect(run().secretInputs["image-build"]).toEqual(expect.arrayContaining(["stdin", "connection"]));
    const env = stdinEnv(build.inputs.stdin);
    expect(env).toMatchObject({ NIX_CACHE: "s3://neko-cache-bucket-a1b2c3?region=eu-central-1" });
    expect(env.NIX_CACHE_SECRET_KEY).toMatch(new RegExp(`^neko-infra-${stack}-1:[A-Za-z0-9+/]+=*$`));
    expect(build.inputs.stdin).toContain("usage: nix-build.sh FLAKE_REF ATTR");
    expect(build.inputs.connection).toMatchObject({ host: EIP.builder, user: "ec2-user", port: 22, dialErrorLimit: 4 });
    expect(build.inputs.connection.hostKey).toMatch(/^ssh-ed25519 \S+$/);
    expect(build.inputs.addPreviousOutputInEnv).toBe(false);
  });

  test("the push runs on the builder with ECR auth from its role: no registry token anywhere", () => {
    const push = run().byName("registry-push");
    const repo = `123456789012.dkr.ecr.eu-central-1.amazonaws.com/${run().byName("registry-repo").inputs.name}`;
    expect(push.inputs.create).toBe(`timeout -k 15s 3600s bash -s -- ${run().outputs.storePath} ${repo}`);
    expect(stdinEnv(push.inputs.stdin)).toEqual({ STEP_SCRIPT: "push-image", STEP_BUDGET: "3600s", REGISTRY_AUTH: "ecr" });
    expect(push.dependencies).toContain(run().byName("registry-builder-push").urn);
    const all = JSON.stringify(run().resources.map((r) => r.inputs));
    expect(all).not.toMatch(/"(registryAuth|authorizationToken|proxyEndpoint)"/);
    expect(run().outputs.imageRef).toMatch(new RegExp(`^${repo.replace(/\./g, "\\.")}@sha256:[0-9a-f]{64}$`));
  });

  test("the profile: its own encrypted volume, in the zone chosen once; the instance follows it; one instance holds it at a time", () => {
    const vol = run().byName("host-browser-profile");
    expect(vol.inputs).toMatchObject({ encrypted: true, type: "gp3", size: 10, availabilityZone: "eu-central-1a" });
    expect(vol.ignoreChanges).toEqual(["availabilityZone"]);
    expect(vol.inputs.finalSnapshot).toBe(true); // destroy keeps a snapshot of the profile
    expect(run().byName("host-instance").inputs.availabilityZone).toBe("eu-central-1a");
    const attach = run().byName("host-browser-profile-attach");
    expect(attach.inputs).toMatchObject({
      instanceId: "host-instance-id",
      volumeId: "host-browser-profile-id",
      stopInstanceBeforeDetaching: true,
    });
    // the host's setup step mounts it: PROFILE_VOLUME_ID is its fourth argument
    expect(run().byName("host-setup").inputs.create.split(" -- ")[1].split(" ")[3]).toBe("host-browser-profile-id");
  });

  test("the TLS certificates' volume: encrypted gp3, in the profile volume's zone, attached like it; the setup's sixth argument", () => {
    const vol = run().byName("host-tls-state");
    expect(vol.inputs).toMatchObject({ size: 1, type: "gp3", encrypted: true });
    expect(vol.inputs.availabilityZone).toBe(run().byName("host-browser-profile").inputs.availabilityZone);
    expect(run().byName("host-tls-state-attach").inputs).toMatchObject({
      instanceId: "host-instance-id",
      volumeId: "host-tls-state-id",
      deviceName: "/dev/sdg",
      stopInstanceBeforeDetaching: true,
    });
    expect(run().byName("host-setup").inputs.create.split(" -- ")[1].split(" ")[5]).toBe("host-tls-state-id");
  });

  test("after the rollout, the host tags the image it runs running-host, with PutImage on this repository only", () => {
    const keep = run().byName("host-keep-image");
    expect(keep.inputs.create).toMatch(/ -- \S+\.dkr\.ecr\.eu-central-1\.amazonaws\.com\/\S+@sha256:[0-9a-f]{64} running-host$/);
    expect(keep.inputs.create.split(" -- ")[1].split(" ")[0]).toBe(run().outputs.imageRef);
    expect(keep.dependencies).toContain(run().byName("host-neko").urn);
    const policy = JSON.parse(run().byName("host-ecr-keep").inputs.policy);
    expect(policy.Statement).toEqual([
      { Sid: "TagWhatRuns", Effect: "Allow", Action: "ecr:PutImage", Resource: expect.stringMatching(/^arn:aws:ecr:.*:repository\//) },
    ]);
  });

  test("host setup: the metadata guard for the host-network containers' uids (Caddy, turnserver)", () => {
    const env = stdinEnv(run().byName("host-setup").inputs.stdin);
    expect(env.IMDS_GUARD_UIDS).toBe("10080 65534");
    expect(env.NEKO_IMDS_GUARD_SCRIPT).toContain("usage: imds-guard.sh UID [UID ...]");
  });

  test("host security group: SSH from the admins; HTTPS and media from the clients; 80 (ACME) from anyone; neko's own port closed", () => {
    const sg = run().byName("host-sg").inputs;
    const host = section(stack, "host");
    const [ssh, ...rest] = sg.ingress;
    expect(ssh).toMatchObject({ fromPort: 22, toPort: 22, protocol: "tcp" });
    expect([...ssh.cidrBlocks, ...(ssh.ipv6CidrBlocks ?? [])].sort()).toEqual([...host.sshCidrs].sort());
    const byPort = Object.fromEntries(
      rest.map((r: any) => [`${ruleKey(r)} ${r.description}`, [...r.cidrBlocks, ...(r.ipv6CidrBlocks ?? [])]]),
    );
    expect(byPort["80-80/tcp ACME HTTP challenge and redirect to HTTPS"]).toEqual(["0.0.0.0/0", "::/0"]);
    expect(byPort["443-443/tcp neko over HTTPS"].sort()).toEqual([...host.clientCidrs].sort());
    expect(byPort["52000-52100/udp WebRTC media (EPR)"].sort()).toEqual([...host.clientCidrs].sort());
    expect(rest.some((r: any) => r.fromPort === 8080)).toBe(false);
  });

  test("the HTTPS front: Caddy with an IP certificate (short-lived profile) for the Elastic IP, before neko is deployed", () => {
    const tls = run().byName("host-tls");
    expect(tls.inputs.create).toBe(`timeout -k 15s 600s bash -s -- ${TLS_IMAGE} ${EIP.host}`);
    const caddyfile = stdinEnv(tls.inputs.stdin).TLS_CADDYFILE;
    expect(caddyfile).toContain(`${EIP.host} {`);
    expect(caddyfile).toContain("profile shortlived");
    expect(caddyfile).toContain("dir https://acme-v02.api.letsencrypt.org/directory");
    expect(caddyfile).toContain("reverse_proxy 127.0.0.1:8080");
    expect(run().byName("host-neko").dependencies).toContain(run().byName(stack === "prod" ? "host-turn" : "host-tls").urn);
    expect(run().outputs.url).toBe(`https://${EIP.host}/`);
  });

  test("neko's rollout: the image by digest on a readable command line; passwords only on stdin; again on a new instance", () => {
    const neko = run().byName("host-neko");
    const [line, ...spec] = neko.inputs.create.split("\n");
    expect(line).toBe(`timeout -k 15s 1800s bash -s -- ${run().outputs.imageRef}`);
    // under it, as comments, the rollout's non-secret specification; secrets by name only
    expect(spec[0]).toBe("# neko's rollout and its container environment (not secret; secrets travel on standard input):");
    expect(spec).toEqual(
      expect.arrayContaining([
        `#   NEKO_WEBRTC_NAT1TO1=${EIP.host}`,
        "#   NEKO_PUBLISH: 127.0.0.1:8080:8080/tcp",
        "#   NEKO_MEMBER_MULTIUSER_ADMIN_PASSWORD (secret)",
        "#   NEKO_API_TOKEN (secret)",
      ]),
    );
    expect(neko.inputs.create).not.toContain("generated-host-admin-password");
    expect(run().secretInputs["host-neko"]).not.toContain("create");
    expect(neko.inputs.triggers).toEqual(["host-setup-id"]); // the setup step's, which a new instance replaces
    expect(run().byName("host-setup").inputs.triggers).toEqual(["host-instance-id"]);
    expect(neko.inputs.delete).toBeUndefined(); // an EC2 host's containers go with the instance
    expect(run().secretInputs["host-neko"]).toEqual(expect.arrayContaining(["stdin"]));
    const env = stdinEnv(neko.inputs.stdin);
    expect(env).toMatchObject({
      NEKO_NAME: "neko",
      NEKO_PUBLISH: "127.0.0.1:8080:8080/tcp\n52000-52100:52000-52100/udp",
      NEKO_PROFILE: "/var/lib/neko-infra/profile",
      NEKO_PROFILE_DIR: "/home/neko/.config/chromium",
      NEKO_STATE_DIR: "/var/lib/neko-infra/host",
      NEKO_API_TOKEN: "generated-host-api-token",
    });
    const nekoEnv = Object.fromEntries(
      env.NEKO_ENV.trim()
        .split("\n")
        .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
    );
    expect(nekoEnv).toMatchObject({
      NEKO_SERVER_BIND: ":8080",
      NEKO_SERVER_PROXY: "true",
      NEKO_WEBRTC_NAT1TO1: EIP.host,
      NEKO_MEMBER_MULTIUSER_ADMIN_PASSWORD: "generated-host-admin-password",
      NEKO_SESSION_API_TOKEN: "generated-host-api-token",
    });
    expect(Object.keys(nekoEnv).filter((k) => /^NEKO_(EPR|NAT1TO1|PASSWORD|SCREEN|ICELITE)$/.test(k))).toEqual([]);
  });

  test("wake on visit: a function URL whose token the function itself never holds, allowed to start this instance only", () => {
    const fn = run().byName("host-visit-fn");
    expect(fn.inputs).toMatchObject({ runtime: "nodejs22.x", handler: "index.handler" });
    const vars = fn.inputs.environment.variables;
    expect(vars).toMatchObject({ INSTANCE_ID: "host-instance-id", NEKO_URL: `https://${EIP.host}/`, MAX_STARTS: "6" });
    expect(vars.TOKEN_SHA256).toMatch(/^[0-9a-f]{64}$/);
    expect(JSON.stringify(fn.inputs)).not.toContain("generated-host-visit-token");
    expect(run().byName("host-visit-url").inputs.authorizationType).toBe("NONE");
    const policy = JSON.parse(run().byName("host-visit-start").inputs.policy);
    for (const sid of ["Start", "Count"]) {
      expect(policy.Statement.find((s: any) => s.Sid === sid).Resource).toBe(
        `arn:aws:ec2:eu-central-1:123456789012:instance/host-instance-id`,
      );
    }
    // the host says when neko answers (the function cannot reach it): one tag, on its own instance only
    expect(JSON.parse(run().byName("host-ready-tag").inputs.policy).Statement).toEqual([
      {
        Sid: "Ready",
        Effect: "Allow",
        Action: "ec2:CreateTags",
        Resource: "arn:aws:ec2:eu-central-1:123456789012:instance/host-instance-id",
        Condition: { "ForAllValues:StringEquals": { "aws:TagKeys": ["neko-infra:ready"] } },
      },
    ]);
    expect(run().byName("host-ready-tag").inputs.role).toBe("host-role-id");
    // a public URL: AWS wants lambda:InvokeFunction granted too (since October 2025), else it answers 403
    expect(run().byName("host-visit-invoke").inputs).toMatchObject({
      action: "lambda:InvokeFunction",
      principal: "*",
      invokedViaFunctionUrl: true,
    });
    expect(fn.inputs.reservedConcurrentExecutions).toBe(2);
    expect(run().byName("host-visit-log-group").inputs.retentionInDays).toBe(14);
    expect(run().outputs.wakeLink).toBe("https://host-visit-url.lambda-url.eu-central-1.on.aws/?t=generated-host-visit-token");
  });

  test("stack outputs: url, digest, addresses, ssh hint; passwords, logins and the wake link secret", () => {
    const o = run().outputs;
    expect(o).toMatchObject({ hostIp: EIP.host, builderIp: EIP.builder, sshCommand: `npm run ssh -- ${stack} host` });
    expect(run().secretOutputs.sort()).toEqual(["adminPassword", "builderSsh", "hostSsh", "userPassword", "wakeLink"]);
  });
});

describe("dev vs prod", () => {
  test("dev: a cheap x86 host with VP8; builders run on demand (no spot request to strand them)", () => {
    expect(dev.byName("host-instance").inputs).toMatchObject({
      ami: AL2023,
      instanceType: "c6i.xlarge",
      rootBlockDevice: { volumeSize: 30 },
    });
    for (const stack of [dev, prod]) expect(stack.byName("builder-instance").inputs.instanceMarketOptions).toBeUndefined();
  });

  test("prod: the NVIDIA AMI on a GPU type, the GPU handed to neko, the encoder chosen on the host", () => {
    expect(prod.byName("host-instance").inputs).toMatchObject({
      ami: GPU_AMI,
      instanceType: "g5.xlarge",
      rootBlockDevice: { volumeSize: 120 },
    });
    const env = stdinEnv(prod.byName("host-neko").inputs.stdin);
    expect(env.NEKO_RUN_ARGS.split("\n")).toContain("--gpus=all");
    expect(env.NEKO_NVENC).toBe("auto");
    expect(env.NEKO_ENV).toContain("NVIDIA_VISIBLE_DEVICES=all");
    expect(env.NEKO_ENV).toContain("NEKO_CAPTURE_VIDEO_CODEC=h264");
    expect(stdinEnv(dev.byName("host-neko").inputs.stdin).NEKO_NVENC).toBeUndefined();
    const setupArgs = (r: typeof prod) => r.byName("host-setup").inputs.create.split(" -- ")[1].split(" ").slice(0, 2);
    expect(setupArgs(prod)).toEqual(["ec2-user", "1"]);
    expect(setupArgs(dev)).toEqual(["ec2-user", "0"]);
  });

  test("prod: a TURN relay with generated credentials; neko's ICE servers point at it and ICE lite is off", () => {
    const turn = prod.byName("host-turn");
    const [line, ...shown] = turn.inputs.create.split("\n");
    expect(line).toBe(`timeout -k 15s 300s bash -s -- ${TURN_IMAGE}`);
    // the configuration readable under it, without the password's line
    expect(shown).toContain("#   TURN_CONF: listening-port=3478");
    expect(turn.inputs.create).not.toContain("generated-host-turn-password");
    expect(turn.inputs.create).not.toMatch(/TURN_CONF: user=/);
    const conf = stdinEnv(turn.inputs.stdin).TURN_CONF;
    expect(conf).toContain("user=neko:generated-host-turn-password");
    expect(conf).toContain(`external-ip=${EIP.host}`);
    const nekoEnv = stdinEnv(prod.byName("host-neko").inputs.stdin).NEKO_ENV;
    expect(nekoEnv).toContain("NEKO_WEBRTC_ICELITE=0");
    const frontend = JSON.parse(
      nekoEnv
        .split("\n")
        .find((l) => l.startsWith("NEKO_WEBRTC_ICESERVERS_FRONTEND="))!
        .split("=")
        .slice(1)
        .join("="),
    );
    expect(frontend).toEqual([
      {
        urls: [`turn:${EIP.host}:3478?transport=udp`, `turn:${EIP.host}:3478?transport=tcp`, `turns:${EIP.host}:5349?transport=tcp`],
        username: "neko",
        credential: "generated-host-turn-password",
      },
    ]);
    const sg = prod
      .byName("host-sg")
      .inputs.ingress.map((r: any) => `${ruleKey(r)} ${[...r.cidrBlocks, ...(r.ipv6CidrBlocks ?? [])].join(",")}`);
    expect(sg).toEqual(
      expect.arrayContaining([`49160-49200/udp ${EIP.host}/32`, `52000-52100/udp ${EIP.host}/32`, "3478-3478/udp 0.0.0.0/0,::/0"]),
    );
    expect(dev.resources.some((r) => r.name === "host-turn")).toBe(false);
  });

  test("prod: IPv6 admin networks land in ipv6CidrBlocks", () => {
    expect(prod.byName("builder-sg").inputs.ingress[0]).toMatchObject({
      cidrBlocks: ["100.64.100.24/32"],
      ipv6CidrBlocks: ["fd00:db8:10::/48"],
    });
  });
});

describe("preflight, before anything is created", () => {
  test("a zero GPU quota fails prod with the quota, the setting and how to raise it; nothing is registered", async () => {
    await expect(runStack(config("prod"), { stack: "prod", account: { quotas: { "L-DB2E81BA": 0 } } })).rejects.toThrow(
      /preflight failed \(1 problem\):\n {2}- neko-infra:host\.instanceType: host g5\.xlarge \(4 vCPUs\) needs 4 vCPUs of the EC2 quota "Running On-Demand G and VT instances" \(L-DB2E81BA\), which is 0 in eu-central-1/,
    );
  });

  test("no default VPC fails dev, naming both machines' subnetId", async () => {
    await expect(runStack(config("dev"), { stack: "dev", account: { defaultVpc: false } })).rejects.toThrow(
      /neko-infra:builder\.subnetId: eu-central-1 has no default VPC.*\n.*neko-infra:host\.subnetId: eu-central-1 has no default VPC/,
    );
  });

  test("given subnets need no default VPC; the security groups go into the subnet's VPC", async () => {
    const c = config("dev");
    const withSubnet = (key: string) => JSON.stringify({ ...JSON.parse(c[key]), subnetId: "subnet-0123456789abcdef0" });
    const run = await runStack(
      { ...c, "neko-infra:builder": withSubnet("neko-infra:builder"), "neko-infra:host": withSubnet("neko-infra:host") },
      { stack: "dev", account: { defaultVpc: false } },
    );
    expect(run.byName("host-sg").inputs.vpcId).toBe("vpc-0given000000000000");
    expect(run.byName("host-instance").inputs).toMatchObject({ subnetId: "subnet-0123456789abcdef0" });
    expect(run.byName("host-browser-profile").inputs.availabilityZone).toBe("eu-central-1c");
  });

  test("vCPUs other instances of the account already run count against the quota; this stack's own do not", async () => {
    const others: { id: string; type: string; tags?: Record<string, string> }[] = [
      { id: "i-0other", type: "g4dn.12xlarge", tags: { Name: "training" } }, // 48 G vCPUs
      { id: "i-0p4", type: "p4d.24xlarge" }, // a quota of its own: not counted
      { id: "i-0mine", type: "g5.xlarge", tags: { "neko-infra:stack": "neko-infra/prod" } }, // this stack's host
    ];
    await expect(runStack(config("prod"), { stack: "prod", account: { quotas: { "L-DB2E81BA": 50 }, running: others } })).rejects.toThrow(
      /host g5\.xlarge \(4 vCPUs\) needs 4 vCPUs, besides the 48 vCPUs other instances of the account already run, of the EC2 quota "Running On-Demand G and VT instances" \(L-DB2E81BA\), which is 50 in eu-central-1.*--desired-value 52 .*stop other instances, or choose a smaller type/,
    );
    const fits = await runStack(config("prod"), { stack: "prod", account: { quotas: { "L-DB2E81BA": 52 }, running: others } });
    expect(fits.byName("host-instance").inputs.instanceType).toBe("g5.xlarge");
    // listing denied: a warning, the stack's own needs are still checked
    const denied = await runStack(config("prod"), { stack: "prod", account: { quotas: { "L-DB2E81BA": 4 }, running: null } });
    expect(denied.byName("host-instance").inputs.instanceType).toBe("g5.xlarge");
  });

  test("a quota the operator may not read is a warning, not a failure", async () => {
    const run = await runStack(config("prod"), { stack: "prod", account: { quotas: { "L-DB2E81BA": null } } });
    expect(run.byName("host-instance").inputs.instanceType).toBe("g5.xlarge");
  });
});
