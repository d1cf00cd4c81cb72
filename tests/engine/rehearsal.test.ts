/**
 * The dress rehearsal: the whole program as wired, through the real Pulumi CLI and the real
 * command provider v1.2.1, on machines shaped like the ones users have, starting from nothing.
 *
 *   builder   an `ssh` builder (tests/harness/builder.sh: its own /nix and sshd) whose skopeo has
 *             no /etc/containers/policy.json, as skopeo from nixpkgs on Amazon Linux 2023
 *   registry  the harness's htpasswd OCI registry
 *   host      an `ssh` host shaped like EC2's AL2023 (tests/harness/nshost.sh login mode): the
 *             login user is ec2-user (docker group, passwordless sudo), not root; Docker runs;
 *             nothing else: no neko, no certificate, no /var/lib/neko-infra
 *   TLS       the HTTPS front with a certificate from Pebble (Let's Encrypt's test server),
 *             validated over the network namespace for real; the host trusts Pebble's root in its
 *             system store, as a real host trusts Let's Encrypt's
 *   TURN      coturn beside the front, sharing its certificate; a real allocation from outside
 *
 * What stands in: the Caddy and coturn images are loaded into the host's engine (as a pull from
 * their public registries would leave them; tests/harness/standin-image.sh), and neko is the
 * fixture image built by Nix on the builder. No AWS resource is registered: ssh kinds only.
 *
 * Each seam this found broken has a case here: the front that waited for a neko that came after it,
 * the push without a trust policy, TURN's certificate check as a non-root user, scripts that never
 * reached a running machine, and output lines the provider cannot read.
 */
import { ChildProcess, execFileSync, spawn } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { TLS_IMAGE } from "../../lib/caddy";
import { TURN_IMAGE } from "../../lib/turn";
import { render } from "../../tools/pr-comment";
import { fixtureCopy, uniqueMarker } from "../realtool/support";
import { changed, HARNESS, must, ops, processesUnder, Project, Run, startService, stopService, summary } from "./support";

jest.setTimeout(1_200_000);

const p = new Project("rehearsal");
const flake = fixtureCopy(p.work, uniqueMarker("rehearsal"));
// Short paths: unix sockets live in them.
const state = {
  builder: path.join(p.work, "b"),
  host: path.join(p.work, "h"),
  registry: path.join(p.work, "r"),
  pebble: path.join(p.work, "p"),
};
const PEER_PORT = 3480;
const secrets = {
  userPassword: "rehearsal-user-1234",
  adminPassword: "rehearsal-admin-1234",
  apiToken: "rehearsal-api-token-0123456789",
  turnPassword: "rehearsal-turn-0123456789",
};
let h: Record<string, string> = {};
const children: ChildProcess[] = [];
const timings: string[] = [];

function configure(neko: Record<string, unknown> = {}, attr = "image") {
  p.configure(
    {
      "neko-infra:builder": { kind: "ssh", host: h.BUILDER_ADDR, user: h.BUILDER_USER, hostKey: h.BUILDER_HOST_KEY, readyTimeout: 60 },
      "neko-infra:image": { flake, attr },
      "neko-infra:registry": { kind: "oci", url: `${h.REGISTRY_ADDR}/neko`, username: h.REGISTRY_USER, insecure: true },
      "neko-infra:host": {
        kind: "ssh",
        host: h.NSHOST_ADDR,
        user: h.NSHOST_SSH_USER,
        hostKey: h.NSHOST_HOST_KEY,
        readyTimeout: 60,
        tls: true,
        acmeServer: h.PEBBLE_DIR_URL,
        acmeRootCert: fs.readFileSync(h.PEBBLE_MINICA, "utf8"),
      },
      "neko-infra:neko": { turn: true, webrtc: { epr: "52000-52010" }, ...neko },
    },
    {
      "builder.privateKey": fs.readFileSync(h.BUILDER_KEY, "utf8"),
      "registry.password": h.REGISTRY_PASSWORD,
      "host.privateKey": fs.readFileSync(h.NSHOST_SSH_KEY, "utf8"),
      "neko.userPassword": secrets.userPassword,
      "neko.adminPassword": secrets.adminPassword,
      "neko.apiToken": secrets.apiToken,
      "neko.turnPassword": secrets.turnPassword,
    },
  );
}

const hostDocker = (args: string[]) =>
  execFileSync("/usr/bin/docker", args, { env: { ...process.env, DOCKER_HOST: h.DOCKER_HOST } })
    .toString()
    .trim();

/**
 * What an empty host has before the program touches it, beyond the OS: the images a pull from
 * their public registries would give (not reachable here), and Pebble's root in its trust store.
 */
function prepareHost() {
  for (const [kind, image] of [
    ["caddy", TLS_IMAGE],
    ["coturn", TURN_IMAGE],
  ]) {
    execFileSync("bash", [path.join(HARNESS, "standin-image.sh"), kind, image], { env: { ...process.env, DOCKER_HOST: h.DOCKER_HOST } });
  }
  const bundle = path.join(state.host, "ca-bundle.crt");
  fs.writeFileSync(bundle, fs.readFileSync("/etc/ssl/certs/ca-certificates.crt", "utf8") + fs.readFileSync(h.PEBBLE_ROOT_FILE, "utf8"));
  const pid = fs.readFileSync(path.join(state.host, "dockerd.pid"), "utf8").trim();
  execFileSync("nsenter", ["--target", pid, "--mount", "--", "mount", "--bind", bundle, "/etc/ssl/certs/ca-certificates.crt"]);
}

/** neko's /health as users reach it: https through the front, verified against Pebble's root. */
function healthOverHttps(): string {
  try {
    return execFileSync("curl", ["-sS", "--max-time", "10", "--cacert", h.PEBBLE_ROOT_FILE, `https://${h.NSHOST_ADDR}/health`])
      .toString()
      .trim();
  } catch (e) {
    return `curl failed: ${(e as Error).message}`;
  }
}

/** A TURN allocation from this machine, relaying to a peer on the host (UDP). */
function turnAllocation(): { code: number; out: string } {
  try {
    const out = execFileSync(
      "turnutils_uclient",
      ["-u", "neko", "-w", secrets.turnPassword, "-e", h.NSHOST_ADDR, "-r", String(PEER_PORT), "-n", "1", h.NSHOST_ADDR],
      { timeout: 30_000 },
    ).toString();
    return { code: 0, out };
  } catch (e) {
    const err = e as { status?: number; stdout?: Buffer; stderr?: Buffer };
    return { code: err.status ?? -1, out: `${err.stdout ?? ""}${err.stderr ?? ""}` };
  }
}

/** A TURN peer on the host (a relay's destination), started with the host's network. */
function startPeer() {
  const peer = spawn("ip", ["netns", "exec", h.NSHOST_NETNS, "turnutils_peer", "-L", h.NSHOST_ADDR, "-p", String(PEER_PORT)], {
    stdio: "ignore",
  });
  children.push(peer);
}

/**
 * Every secret the stack holds, as `pulumi stack output --show-secrets` and the test's config give
 * them: the values of the secret outputs (strings inside objects too; a key also line by line), the
 * configured passwords, token and keys. None may appear in a preview or a PR comment.
 */
function secretValues(): string[] {
  const plain = JSON.parse(must(p.pulumi(["stack", "output", "--json"]), "stack output").stdout);
  const all = JSON.parse(must(p.pulumi(["stack", "output", "--json", "--show-secrets"]), "stack output --show-secrets").stdout);
  // A login output (hostSsh, builderSsh) is secret for its key; its address, port, user and the
  // host's public key are not (they are in the plain outputs and the previews by design).
  const PUBLIC = new Set(["host", "port", "user", "hostKey"]);
  const leaves = (v: unknown): string[] =>
    typeof v === "string" ? [v] : v && typeof v === "object" ? Object.entries(v).flatMap(([k, x]) => (PUBLIC.has(k) ? [] : leaves(x))) : [];
  const fromOutputs = Object.keys(all)
    .filter((k) => JSON.stringify(plain[k]).includes("[secret]"))
    .flatMap((k) => leaves(all[k]));
  if (fromOutputs.length < 2) throw new Error(`the stack's secret outputs were not found: ${Object.keys(all).join(", ")}`);
  const configured = [
    ...Object.values(secrets),
    h.REGISTRY_PASSWORD,
    fs.readFileSync(h.BUILDER_KEY, "utf8"),
    fs.readFileSync(h.NSHOST_SSH_KEY, "utf8"),
  ];
  return [...fromOutputs, ...configured]
    .flatMap((v) => [v, ...(v.includes("\n") ? v.split("\n").filter((l) => l.length >= 16 && !l.startsWith("-----")) : [])])
    .filter((v) => v.length >= 8);
}

const timed = (what: string, r: Run) => (timings.push(`${what} ${r.seconds.toFixed(1)} s`), r);
const dockerdPid = () => fs.readFileSync(path.join(state.host, "dockerd.pid"), "utf8").trim();
const nekoStarted = () => hostDocker(["inspect", "--format", "{{.State.StartedAt}}", "neko"]);
const allOut = (r: Run) => r.stdout + r.stderr;

beforeAll(() => {
  must(p.pulumi(["version"]), "pulumi version"); // fails loudly without the toolchain
  const b = startService("builder.sh", state.builder);
  // dockerd may pull over plain HTTP from the harness's registry, on this machine's side of the veth
  // (a CIDR: the address is picked when the host starts).
  const host = startService("nshost.sh", state.host, [], {
    ...process.env,
    NSHOST_LOGIN_USER: "ec2-user",
    NSHOST_INSECURE_REGISTRY: "10.233.0.0/16",
  });
  const r = startService("registry.sh", state.registry, [`${host.NSHOST_SIDE_ADDR}:5000`]);
  const pebble = startService("pebble.sh", state.pebble, [host.NSHOST_SIDE_ADDR]);
  h = { ...b, ...host, ...r, ...pebble };
  // The builder reaches the registry through this machine (it owns the address; nothing is forwarded).
  execFileSync("ip", ["-n", b.BUILDER_NETNS, "route", "add", `${host.NSHOST_SIDE_ADDR}/32`, "via", b.HOST_SIDE_ADDR]);
  prepareHost();
  startPeer();
  must(p.pulumi(["stack", "init"]), "stack init");
  configure();
}, 600_000);

afterAll(() => {
  try {
    if (p.resourceCount() > 0) p.pulumi(["destroy", "--yes", "--skip-preview"]);
  } catch {
    /* the stack may not exist */
  } finally {
    stopAll();
    console.log(`rehearsal timings (s): ${timings.join(", ")}`);
    p.remove();
  }
}, 300_000);

test("a. the first up, from an empty host: built, pushed, set up, HTTPS, TURN, neko healthy through the front", () => {
  expect(hostDocker(["ps", "-aq"])).toBe(""); // nothing runs on the host yet
  // A pull request's preview of the new stack: everything to create, most inputs still unknown.
  const preview = must(p.pulumi(["preview", "--diff"]), "preview of the empty stack");
  expect(preview.stdout).toMatch(/host-neko/);
  const r = timed("first up from empty", p.up("first up"));
  const done = changed(r);
  for (const step of ["image-build", "registry-push", "host-setup", "host-tls", "host-turn", "host-neko"]) {
    expect({ step, op: done[step] }).toEqual({ step, op: "create" });
  }
  // the front came before neko and did not wait for it; the rollout checked /health through it
  expect(allOut(r)).toMatch(/https:\/\/[\d.]+\/health answers 200 through the HTTPS front/);
  expect(healthOverHttps()).toBe("true");
  expect(turnAllocation()).toEqual({ code: 0, out: expect.stringMatching(/Total lost packets 0 /) });
  expect(p.outputs().url).toBe(`https://${h.NSHOST_ADDR}/`);
  // The containers run as configured, and neko's own port is on loopback only.
  expect(hostDocker(["ps", "--format", "{{.Names}}"]).split("\n").sort()).toEqual(["neko", "neko-tls", "neko-turn"]);
  expect(hostDocker(["port", "neko", "8080/tcp"])).toBe("127.0.0.1:8080");
  for (const secret of Object.values(secrets)) expect(allOut(r)).not.toContain(secret);
});

test("b. nothing changed: no command runs, 0 changes, also with --refresh", () => {
  must(p.pulumi(["preview", "--expect-no-changes"]), "preview");
  const r = timed("no-op up", p.up("no-op up"));
  expect(changed(r)).toEqual({});
  must(p.pulumi(["preview", "--refresh", "--expect-no-changes"]), "preview --refresh");
  const refreshed = must(p.pulumi(["up", "--yes", "--skip-preview", "--refresh", "--json"]), "up --refresh");
  expect(changed(refreshed)).toEqual({});
  expect(summary(refreshed)).toEqual({ same: expect.any(Number) });
});

test("c. a neko setting: only neko's rollout runs; the preview and the PR comment read old => new, with no secret", () => {
  const before = hostDocker(["inspect", "--format", "{{.Id}}", "neko-tls"]);
  const secretsBefore = secretValues();
  configure({ screen: "1280x720@30" });
  // What a reviewer reads in the pull request's preview: old and new value, no secret.
  const preview = must(p.pulumi(["preview", "--diff"]), "preview of a screen change");
  // the Outputs section (the stack output `expected`), and the line diff under the rollout's command
  expect(preview.stdout).toMatch(/^\s*~ NEKO_DESKTOP_SCREEN\s*: "1920x1080@30" => "1280x720@30"$/m);
  expect(preview.stdout).toMatch(/^\s*- # {3}NEKO_DESKTOP_SCREEN=1920x1080@30$/m);
  expect(preview.stdout).toMatch(/^\s*\+ # {3}NEKO_DESKTOP_SCREEN=1280x720@30$/m);
  // The PR comment, rendered from the same change's `preview --json` and its event log, as pr.yml does.
  const events = path.join(p.work, "preview-events.jsonl");
  const json = must(
    p.pulumi(["preview", "--json", "--event-log", events], undefined, undefined, { PULUMI_DEBUG_COMMANDS: "true" }),
    "preview --json",
  );
  const eventLog = fs.readFileSync(events, "utf8");
  const comment = render({ stack: "rehearsal", preview: JSON.parse(json.stdout), eventLog });
  expect(comment).toContain("**Built:** nothing (the flake and attr are unchanged)");
  expect(comment).toContain(
    `- neko (the same image) on the host (https://${h.NSHOST_ADDR}/) by \`host-neko\` (update):\n  - NEKO_DESKTOP_SCREEN: \`1920x1080@30\` => \`1280x720@30\`\n`,
  );
  expect(comment).toMatch(/^\*\*A deploy wakes:\*\* \n- host, for `host-neko`\n\*\*Other changes:\*\* none$/m);
  const hidden = [...secretsBefore, ...secretValues()];
  for (const [what, text] of Object.entries({
    preview: preview.stdout + preview.stderr,
    json: json.stdout + json.stderr,
    eventLog,
    comment,
  })) {
    expect({ what, leaked: hidden.filter((s) => text.includes(s)).map((s) => `${s.slice(0, 3)}... (${s.length} chars)`) }).toEqual({
      what,
      leaked: [],
    });
  }
  timings.push(
    `screen change in the preview: ${preview.stdout
      .split("\n")
      .filter((l) => l.includes("NEKO_DESKTOP_SCREEN"))
      .map((l) => l.trim())
      .join(" / ")}`,
  );
  const r = p.up("screen change");
  expect(changed(r)).toEqual({ "host-neko-wake": "replace", "host-neko": "update" });
  expect(hostDocker(["inspect", "--format", "{{.Config.Env}}", "neko"])).toContain("NEKO_DESKTOP_SCREEN=1280x720@30");
  expect(hostDocker(["inspect", "--format", "{{.Id}}", "neko-tls"])).toBe(before);
  expect(healthOverHttps()).toBe("true");
});

test("c2. a build whose log holds a line longer than the provider reads fails the up, with the line cut, instead of hanging it", () => {
  configure({ screen: "1280x720@30" }, "broken-long-line");
  // A pull request's preview of an image change: every step downstream of the build has unknown inputs.
  const preview = must(p.pulumi(["preview", "--diff"]), "preview of an image change");
  expect(preview.stdout).toMatch(/image-build/);
  const r = p.pulumi(["up", "--yes", "--skip-preview"]);
  timings.push(`failing build with a 100,000-character log line reported after ${r.seconds.toFixed(1)} s`);
  expect(r.status).not.toBe(0);
  expect(allOut(r)).toContain("error: fixture build failure (neko-infra broken fixture)");
  // "neko-fixture-broken-long-line> xxx...": the line as Nix logs it, cut at 2000 characters
  expect(allOut(r)).toMatch(/\n\s*neko-fixture-broken-long-line> x{1969} \[\.\.\. line cut at 2000 characters\]\n/);
  expect(allOut(r)).not.toMatch(/x{1970}/);
  expect(healthOverHttps()).toBe("true"); // the running neko was not touched
  configure({ screen: "1280x720@30" });
  p.up("back to the good image"); // the failed step may run again: a cached build, a found tag, an unchanged rollout
  expect(changed(p.up("after the failed build"))).toEqual({});
});

test("d. a changed script reaches the running machine over SSH: its step runs again, nothing restarts", () => {
  const [pid, started] = [dockerdPid(), nekoStarted()];
  const script = path.join(p.dir, "scripts", "host-bootstrap.sh");
  fs.appendFileSync(script, "# a neko-infra upgrade changed this script\n");
  const r = p.up("script change");
  expect(changed(r)).toEqual({ "host-setup-wake": "replace", "host-setup": "update" });
  expect(allOut(r)).toMatch(/host-bootstrap: ready: docker/);
  expect([dockerdPid(), nekoStarted()]).toEqual([pid, started]);
  expect(changed(p.up("after the script change"))).toEqual({});
});

test("e. the host wiped back to empty, as a replacement instance: everything deployed again, in an order that works", () => {
  const wipe = spawnHarness("wipe", state.host, { NSHOST_KEEP_HOST_KEY: "1" });
  expect(wipe).toBe(0);
  prepareHost();
  startPeer(); // the wipe stopped every process on the host
  expect(hostDocker(["ps", "-aq"])).toBe("");
  // A new EC2 instance replaces the setup step (its trigger is the instance); here the operator says so.
  const urn = (JSON.parse(must(p.pulumi(["stack", "export"]), "stack export").stdout).deployment.resources as { urn: string }[])
    .map((x) => x.urn)
    .find((u) => u.endsWith("::host-setup"));
  expect(urn).toBeDefined();
  const r = timed(
    "wipe and redeploy",
    must(p.pulumi(["up", "--yes", "--skip-preview", "--json", "--replace", urn!]), "up --replace host-setup"),
  );
  const o = ops(r);
  for (const step of ["host-setup", "host-tls", "host-turn", "host-neko"]) expect({ step, op: o[step] }).toEqual({ step, op: "replace" });
  for (const step of ["image-build", "registry-push"]) expect({ step, op: o[step] }).toEqual({ step, op: "same" });
  expect(healthOverHttps()).toBe("true");
  expect(turnAllocation()).toEqual({ code: 0, out: expect.stringMatching(/Total lost packets 0 /) });
  expect(changed(p.up("after the redeploy"))).toEqual({});
});

test("f. destroy, from a checkout without node_modules, takes neko, the front and the relay off the host, with their secrets, and leaves an empty stack", () => {
  // A fresh clone on another machine: the project's files, no `npm ci`.
  const bare = path.join(p.work, "bare-checkout");
  fs.cpSync(p.dir, bare, { recursive: true, filter: (src) => path.basename(src) !== "node_modules" });
  expect(fs.existsSync(path.join(bare, "node_modules"))).toBe(false);
  must(p.pulumi(["destroy", "--yes", "--skip-preview"], undefined, undefined, {}, bare), "destroy from a bare checkout");
  expect(p.resourceCount()).toBe(0);
  // The host outlives the stack: nothing of it keeps running there, and no file with a secret
  // stays (neko's recorded specs, the relay's configuration, the front's keys); the profile (a
  // docker volume here) does.
  expect(hostDocker(["ps", "-a", "--format", "{{.Names}}"])).toBe("");
  const left = execFileSync("nsenter", [
    "--target",
    dockerdPid(),
    "--mount",
    "--",
    "find",
    "/var/lib/neko-infra",
    "-mindepth",
    "1",
    "-maxdepth",
    "2",
  ])
    .toString()
    .trim()
    .split("\n")
    .sort();
  expect(left.filter((f) => /neko-specs|\/tls|\/turn|api-token/.test(f))).toEqual([]);
  expect(left).toContain("/var/lib/neko-infra/host");
  expect(hostDocker(["volume", "ls", "--format", "{{.Name}}"]).split("\n")).toContain("neko-infra-profile");
  stopAll();
  expect(processesUnder(p.work)).toEqual([]);
});

function stopAll(): void {
  for (const c of children) if (c.exitCode === null) c.kill("SIGTERM");
  stopService("pebble.sh", state.pebble);
  stopService("registry.sh", state.registry);
  stopService("nshost.sh", state.host);
  stopService("builder.sh", state.builder);
}

function spawnHarness(verb: string, dir: string, env: Record<string, string>): number {
  try {
    execFileSync("bash", [path.join(HARNESS, "nshost.sh"), verb, dir], { stdio: "inherit", env: { ...process.env, ...env } });
    return 0;
  } catch (e) {
    return (e as { status?: number }).status ?? -1;
  }
}
