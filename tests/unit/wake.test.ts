/**
 * The pure parts of scripts/wake.js: what OpenSSH's error texts mean, what to do with an EC2
 * instance in each state, what the readiness check's output says, and how a failure reads.
 *
 * The ssh texts below are OpenSSH 9.2's own output (Debian 12), captured by running the system ssh
 * with wake.js's options against the harness builder (tests/harness/builder.sh) and small listeners;
 * tests/realtool/wake.test.ts checks that the real ssh still prints them.
 */
import * as sdk from "@aws-sdk/client-ec2";
import { classify, ec2Decision, Fail, formatFailure, readiness, sshLines, wakeEc2 } from "../../scripts/wake";

const WRONG_HOST_KEY = `@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!
Someone could be eavesdropping on you right now (man-in-the-middle attack)!
It is also possible that a host key has just been changed.
The fingerprint for the ED25519 key sent by the remote host is
SHA256:9CgWZrEHJG3/r++sFlSxnTk82lXWijjKUKLFRpCv05I.
Please contact your system administrator.
Add correct host key in /tmp/wk-yYKt/kh to get rid of this message.
Offending ED25519 key in /tmp/wk-yYKt/kh:1
  remove with:
  ssh-keygen -f "/tmp/wk-yYKt/kh" -R "10.231.38.2"
Host key for 10.231.38.2 has changed and you have requested strict checking.
Host key verification failed.
`;

/** [what happened, stderr, ssh's exit code, kind, the line(s) a message quotes] */
const SSH_TEXTS: [string, string, number | null, string, string][] = [
  [
    "another ed25519 host key than the pinned one",
    WRONG_HOST_KEY,
    255,
    "hostkey",
    "Host key for 10.231.38.2 has changed and you have requested strict checking. / Host key verification failed.",
  ],
  [
    "no pinned key for that host name or port",
    "No ED25519 host key is known for 10.231.38.2 and you have requested strict checking.\nHost key verification failed.\n",
    255,
    "hostkey",
    "No ED25519 host key is known for 10.231.38.2 and you have requested strict checking. / Host key verification failed.",
  ],
  [
    "a key the server does not accept",
    "root@10.231.38.2: Permission denied (publickey).\n",
    255,
    "denied",
    "root@10.231.38.2: Permission denied (publickey).",
  ],
  [
    "a private key ssh cannot read",
    'Load key "/tmp/wk-yYKt/badkey": error in libcrypto\nroot@10.231.38.2: Permission denied (publickey).\n',
    255,
    "denied",
    'Load key "/tmp/wk-yYKt/badkey": error in libcrypto / root@10.231.38.2: Permission denied (publickey).',
  ],
  [
    "nothing listens",
    "ssh: connect to host 10.231.38.2 port 2222: Connection refused\n",
    255,
    "refused",
    "ssh: connect to host 10.231.38.2 port 2222: Connection refused",
  ],
  [
    "a name that does not resolve",
    "ssh: Could not resolve hostname no-such-host.invalid: Name or service not known\n",
    255,
    "resolve",
    "ssh: Could not resolve hostname no-such-host.invalid: Name or service not known",
  ],
  [
    "no host key type in common",
    "Unable to negotiate with 10.231.38.2 port 22: no matching host key type found. Their offer: ssh-ed25519\n",
    255,
    "negotiate",
    "Unable to negotiate with 10.231.38.2 port 22: no matching host key type found. Their offer: ssh-ed25519",
  ],
  [
    "no key exchange in common",
    "Unable to negotiate with 10.231.38.2 port 22: no matching key exchange method found. Their offer: sntrup761x25519-sha512,sntrup761x25519-sha512@openssh.com,curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256,ecdh-sha2-nistp384,ecdh-sha2-nistp521,diffie-hellman-group-exchange-sha256,diffie-hellman-group16-sha512,diffie-hellman-group18-sha512,diffie-hellman-group14-sha256,kex-strict-s-v00@openssh.com\n",
    255,
    "negotiate",
    "Unable to negotiate with 10.231.38.2 port 22: no matching key exchange method found. Their offer: sntrup761x25519-sha512,sntrup761x25519-sha512@openssh.com,curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256,ecdh-sha2-nistp384,ecdh-sha2-nistp521,diffie-hellman-group-exchange-sha256,diffie-hellman-group16-sha512,diffie-hellman-group18-sha512,diffie-hellman-group14-sha256,kex-strict-s-v00@openssh.com",
  ],
  [
    "an address nobody owns",
    "ssh: connect to host 10.231.38.3 port 22: No route to host\n",
    255,
    "silent",
    "ssh: connect to host 10.231.38.3 port 22: No route to host",
  ],
  [
    "a host that drops packets (stopped, firewalled)",
    "ssh: connect to host 10.231.38.4 port 22: Connection timed out\n",
    255,
    "silent",
    "ssh: connect to host 10.231.38.4 port 22: Connection timed out",
  ],
  [
    "a port that accepts TCP and never speaks",
    "Connection timed out during banner exchange\nConnection to 127.0.0.1 port 40001 timed out\n",
    255,
    "silent",
    "Connection timed out during banner exchange / Connection to 127.0.0.1 port 40001 timed out",
  ],
  [
    "a port that answers and closes (sshd at MaxStartups, or not sshd)",
    "kex_exchange_identification: Connection closed by remote host\nConnection closed by 127.0.0.1 port 40002\n",
    255,
    "closed",
    "kex_exchange_identification: Connection closed by remote host / Connection closed by 127.0.0.1 port 40002",
  ],
  [
    "a port that resets the connection",
    "kex_exchange_identification: read: Connection reset by peer\nConnection reset by 127.0.0.1 port 40003\n",
    255,
    "closed",
    "kex_exchange_identification: read: Connection reset by peer / Connection reset by 127.0.0.1 port 40003",
  ],
  ["an ssh that our timer stopped", "", null, "silent", "(ssh printed nothing)"],
  ["an ssh error nobody knows", "ssh: something new\n", 255, "other", "ssh: something new"],
  ["the login worked; the command's own exit code", "Permission denied (not ssh's)\n", 1, "ok", "Permission denied (not ssh's)"],
  ["the login worked", "", 0, "ok", "(ssh printed nothing)"],
];

describe("classify", () => {
  test.each(SSH_TEXTS)("%s", (_what, stderr, code, kind, line) => {
    expect(classify(stderr, code)).toBe(kind);
    expect(sshLines(stderr, classify(stderr, code))).toBe(line);
  });
});

describe("ec2Decision", () => {
  const one = (state: string) => [{ InstanceId: "i-0abc", State: { Name: state } }];
  test.each([
    ["stopped", "start"],
    ["stopping", "wait"],
    ["pending", "none"],
    ["running", "none"],
  ])("an instance that is %s: %s", (state, action) => {
    expect(ec2Decision(one(state))).toEqual({ action, id: "i-0abc", state });
  });

  test("no instance: missing; two: ambiguous", () => {
    expect(ec2Decision([]).action).toBe("missing");
    const two = [...one("stopped"), { InstanceId: "i-0def", State: { Name: "running" } }];
    expect(ec2Decision(two)).toEqual({ action: "ambiguous", id: "i-0abc, i-0def", state: "stopped, running" });
  });
});

interface Call {
  command: "DescribeInstancesCommand" | "StartInstancesCommand";
  input: unknown;
  output?: unknown;
  error?: Error;
}

/**
 * An EC2 client that answers exactly the expected calls, in order, and fails the test on any
 * other call (another command, other input, one call too many). `left()` lists unmade calls.
 */
function fakeEc2(expected: Call[]) {
  const queue = [...expected];
  const client = {
    async send(command: { constructor: { name: string }; input: unknown }) {
      const name = command.constructor.name;
      const next = queue.shift();
      if (!next) throw new Error(`unexpected EC2 call ${name} ${JSON.stringify(command.input)}: no more calls expected`);
      if (name !== next.command || JSON.stringify(command.input) !== JSON.stringify(next.input)) {
        throw new Error(`expected ${next.command} ${JSON.stringify(next.input)}, got ${name} ${JSON.stringify(command.input)}`);
      }
      if (next.error) throw next.error;
      return next.output;
    },
  };
  return { client, left: () => queue.map((c) => c.command) };
}

const describeInput = {
  Filters: [
    { Name: "tag:neko-infra:stack", Values: ["neko-infra/dev"] },
    { Name: "tag:neko-infra:role", Values: ["builder"] },
    { Name: "instance-state-name", Values: ["pending", "running", "stopping", "stopped"] },
  ],
};
const describe_ = (...states: string[]): Call => ({
  command: "DescribeInstancesCommand",
  input: describeInput,
  output: { Reservations: states.length ? [{ Instances: states.map((s, i) => ({ InstanceId: `i-0${i}`, State: { Name: s } })) }] : [] },
});
const start: Call = { command: "StartInstancesCommand", input: { InstanceIds: ["i-00"] }, output: { StartingInstances: [] } };
const opts = (untilMs = 10_000) => ({
  machine: "the builder",
  region: "eu-central-1",
  stack: "neko-infra/dev",
  role: "builder",
  until: Date.now() + untilMs,
  pause: 10,
});

describe("wakeEc2", () => {
  test("a sleeping (stopped) instance is started", async () => {
    const ec2 = fakeEc2([describe_("stopped"), start]);
    await expect(wakeEc2(ec2.client, sdk, opts())).resolves.toBe("started instance i-00");
    expect(ec2.left()).toEqual([]);
  });

  test("a stopping instance is started once it has stopped", async () => {
    const ec2 = fakeEc2([describe_("stopping"), describe_("stopping"), describe_("stopped"), start]);
    await expect(wakeEc2(ec2.client, sdk, opts())).resolves.toBe("started instance i-00");
    expect(ec2.left()).toEqual([]);
  });

  test("an instance still stopping when the wake's time is up: named, not started", async () => {
    // Asked again every `pause` until `until`; how often in 60 ms depends on the machine's load,
    // so the fake may be asked up to 30 times, and must have been asked at least twice.
    const ec2 = fakeEc2(Array.from({ length: 30 }, () => describe_("stopping")));
    const o = { ...opts(60), pause: 10 };
    await expect(wakeEc2(ec2.client, sdk, o)).rejects.toThrow("instance i-00 is still stopping");
    expect(ec2.left().length).toBeLessThanOrEqual(28);
    expect(ec2.left().every((c) => c === "DescribeInstancesCommand")).toBe(true);
  });

  test.each(["running", "pending"])("a %s instance is left alone", async (state) => {
    const ec2 = fakeEc2([describe_(state)]);
    await expect(wakeEc2(ec2.client, sdk, opts())).resolves.toBe(`instance i-00 is ${state}`);
    expect(ec2.left()).toEqual([]);
  });

  test("no instance: says it is disabled or deleted outside Pulumi, and how to recreate it", async () => {
    const ec2 = fakeEc2([describe_()]);
    const err = await wakeEc2(ec2.client, sdk, opts()).catch((e: Fail & { fix: string }) => e);
    expect(err).toBeInstanceOf(Fail);
    expect((err as Error).message).toBe(
      "no instance of the builder exists (it is disabled or was deleted outside Pulumi): none has tags neko-infra:stack=neko-infra/dev and neko-infra:role=builder in eu-central-1",
    );
    expect((err as { fix: string }).fix).toContain("pulumi up --refresh");
  });

  test("with the id Pulumi manages: only that instance (the old one of a replacement carries the same tags)", async () => {
    const input = { Filters: [...describeInput.Filters, { Name: "instance-id", Values: ["i-00"] }] };
    const ec2 = fakeEc2([{ ...describe_("stopped"), input }, start]);
    await expect(wakeEc2(ec2.client, sdk, { ...opts(), instanceId: "i-00" })).resolves.toBe("started instance i-00");
    expect(ec2.left()).toEqual([]);
    const gone = fakeEc2([{ ...describe_(), input }]);
    await expect(wakeEc2(gone.client, sdk, { ...opts(), instanceId: "i-00" })).rejects.toThrow(
      "none has tags neko-infra:stack=neko-infra/dev and neko-infra:role=builder and the id i-00 in eu-central-1",
    );
  });

  test("two instances with the stack's tags: refused, both named", async () => {
    const ec2 = fakeEc2([describe_("stopped", "running")]);
    await expect(wakeEc2(ec2.client, sdk, opts())).rejects.toThrow("i-00, i-01 all carry tags neko-infra:stack=neko-infra/dev");
  });

  test("an AWS error reaches the caller as it is", async () => {
    const denied = Object.assign(new Error("You are not authorized to perform this operation."), { name: "UnauthorizedOperation" });
    const ec2 = fakeEc2([{ ...describe_("stopped"), output: undefined, error: denied }]);
    await expect(wakeEc2(ec2.client, sdk, opts())).rejects.toBe(denied);
  });

  test("the fake refuses calls it does not expect", async () => {
    const ec2 = fakeEc2([describe_("running")]);
    await expect(ec2.client.send(new sdk.StartInstancesCommand({ InstanceIds: ["i-00"] }))).rejects.toThrow(
      'expected DescribeInstancesCommand {"Filters"',
    );
    await expect(ec2.client.send(new sdk.DescribeInstancesCommand(describeInput))).rejects.toThrow("no more calls expected");
  });
});

describe("readiness", () => {
  test("marker ok: ready, with the versions it holds", () => {
    expect(readiness("marker", "wake-check\nmarker ok nix=2.24.9 skopeo=1.18.0\nlast log line\n")).toEqual({
      state: "ready",
      details: "nix=2.24.9 skopeo=1.18.0",
    });
  });

  test("marker failed: the failing step and the log", () => {
    const s = readiness("marker", "wake-check\nmarker failed installing Nix\nline 1\ncurl: (6) Could not resolve host\n");
    expect(s).toMatchObject({ state: "failed", cause: "its bootstrap failed at: installing Nix", said: "failed installing Nix" });
    expect(s.state === "failed" && s.log).toEqual(["line 1", "curl: (6) Could not resolve host"]);
  });

  test("no marker: still running, showing the log's last line", () => {
    expect(readiness("marker", "wake-check\nmarker-absent\nbuilder-bootstrap: installing Nix\n")).toMatchObject({
      state: "waiting",
      status: ": bootstrap still running: builder-bootstrap: installing Nix",
    });
  });

  test("a build needs nix, a push skopeo: each ready with its version", () => {
    const out = "wake-check\nhave nix nix (Nix) 2.8.0\nhave skopeo skopeo version 1.9.3\npath /usr/bin:/bin\n";
    expect(readiness("nix", out, ["nix"])).toEqual({ state: "ready", details: "nix=2.8.0" });
    expect(readiness("nix", out, ["skopeo"])).toEqual({ state: "ready", details: "skopeo=1.9.3" });
  });

  test("a build is not held up by a missing skopeo (a local builder that loads into Docker never needs it)", () => {
    const out = "wake-check\nhave nix nix (Nix) 2.8.0\npath /usr/bin:/bin\n";
    expect(readiness("nix", out, ["nix"])).toEqual({ state: "ready", details: "nix=2.8.0" });
  });

  test("skopeo missing for a push: fails, naming it, the PATH and what to install", () => {
    const out = "wake-check\nmissing skopeo sh: 1: skopeo: not found\npath /usr/bin:/bin\n";
    const s = readiness("nix", out, ["skopeo"]);
    expect(s).toMatchObject({
      state: "failed",
      cause: "skopeo not found on the non-interactive PATH (/usr/bin:/bin)",
      said: "sh: 1: skopeo: not found",
    });
    expect(s.state === "failed" && s.fix).toContain("install skopeo there");
  });

  test("docker missing for a load: fails, saying to install and start it", () => {
    const out = "wake-check\nmissing docker sh: 1: docker: not found\npath /usr/bin:/bin\n";
    const s = readiness("nix", out, ["docker"]);
    expect(s).toMatchObject({ state: "failed", cause: "docker not found on the non-interactive PATH (/usr/bin:/bin)" });
    expect(s.state === "failed" && s.fix).toContain("install docker there (and start its engine)");
    const down = "wake-check\nmissing docker Cannot connect to the Docker daemon at unix:///var/run/docker.sock.\npath /usr/bin\n";
    expect(readiness("nix", down, ["docker"])).toMatchObject({ state: "failed", cause: "the Docker engine does not answer" });
  });

  test("docker: ready, permission denied (the docker group), engine not up yet", () => {
    expect(readiness("docker", "wake-check\nhave docker 20.10.24\n")).toEqual({ state: "ready", details: "docker=20.10.24" });
    const denied =
      "wake-check\nmissing docker permission denied while trying to connect to the Docker daemon socket at unix:///var/run/docker.sock: Get ...\n";
    expect(readiness("docker", denied)).toMatchObject({ state: "failed", cause: "this user may not use the Docker engine" });
    expect(readiness("docker", denied).state === "failed" && readiness("docker", denied)).toMatchObject({
      fix: expect.stringContaining("docker group"),
    });
    const down =
      "wake-check\nmissing docker Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?\n";
    expect(readiness("docker", down)).toMatchObject({ state: "waiting" });
  });

  test("output that is not the check's: fails, quoting it", () => {
    expect(readiness("nix", "Welcome!\n")).toMatchObject({ state: "failed", said: "Welcome!" });
  });
});

test("formatFailure: what was tried, the cause, the fix, ssh's words, then more lines", () => {
  expect(
    formatFailure({
      machine: "the builder",
      purpose: "the build of github:o/r/abc#chromium-x86_64",
      tried: "ssh root@10.0.0.2:22 (pinned host key: ssh-ed25519)",
      cause: "the server refused the login of root with the configured private key",
      fix: "authorize that key",
      said: "root@10.0.0.2: Permission denied (publickey).",
      more: ["  last lines:", "    | x"],
    }),
  ).toBe(
    [
      "wake: the builder is not usable for the build of github:o/r/abc#chromium-x86_64: the server refused the login of root with the configured private key",
      "  tried: ssh root@10.0.0.2:22 (pinned host key: ssh-ed25519)",
      "  fix:   authorize that key",
      "  said:  root@10.0.0.2: Permission denied (publickey).",
      "  last lines:",
      "    | x",
    ].join("\n"),
  );
});
