/**
 * tools/status-report.js: the judgement of `npm run status` (facts in, one line per finding out).
 * The facts are shaped as scripts/neko-status.sh prints them; tests/realtool/status.test.ts runs
 * that script on a real host.
 */
import * as report from "../../tools/status-report";

const STACK = "dev";
const HOST = {
  role: "host",
  kind: "ec2",
  address: "203.0.113.7",
  port: 22,
  user: "ec2-user",
  region: "eu-central-1",
  stackTag: "neko-infra/dev",
} as const;
const IMAGE = `sha256:${"a".repeat(64)}`;
const OTHER = `sha256:${"b".repeat(64)}`;
const short = (id: string) => id.slice(0, 19); // as docker shows an image ID
const REF = `registry.example/neko@sha256:${"c".repeat(64)}`;
const SPEC = "d".repeat(64);
const NOW = Date.parse("2026-12-03T12:00:00Z") / 1000;
const VALUES = { NEKO_NAME: "neko", NEKO_HTTP_PORT: "8080", NEKO_PUBLISH: "8080:8080/tcp\n52000-52100:52000-52100/udp" };

/** What neko-status.sh prints on a host where the last deploy runs and answers. */
function healthy(over: Record<string, string | undefined> = {}): string {
  const facts: Record<string, string | undefined> = {
    now: String(NOW),
    boot: String(NOW - 7200),
    docker: "20.10.24",
    specs: "/var/lib/neko-infra/host/neko-specs",
    current: SPEC,
    "deploy-time": String(NOW - 3600),
    "deploy-outcome": "replaced",
    "deploy-ref": REF,
    "deploy-image": IMAGE,
    "deploy-spec": SPEC,
    "deploy-shown": report.shownDigest(VALUES),
    container: "running 0 2026-12-03T10:00:00.123456789Z 0001-01-01T00:00:00Z",
    "container-image": IMAGE,
    "container-spec": SPEC,
    "container-stack": "neko-infra/dev",
    health: "200 127.0.0.1:8080",
    stats: "2 1",
    screenshot: "/var/lib/neko-infra/host/screenshot.jpg 4521 " + String(NOW - 3500),
    "idle-minutes": "30",
    "idle-stamp": String(NOW - 120),
    ...over,
  };
  return Object.entries(facts)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k} ${v}`)
    .join("\n");
}

const judge = (text: string, expectedNeko: Record<string, string> | null = VALUES, imageRef = REF) =>
  report.hostFindings({ stack: STACK, machine: HOST, facts: report.parseFacts(text), imageRef, expectedNeko: expectedNeko ?? undefined });
const drifts = (f: report.Finding[]) => f.filter((x) => x.status === "DRIFT").map(report.format);

describe("the host's findings", () => {
  test("the deploy runs and answers: no drift, and what is worth knowing", () => {
    const f = judge(healthy());
    expect(drifts(f)).toEqual([]);
    expect(report.exitCode(f)).toBe(0);
    const lines = f.map(report.format);
    expect(lines).toContain(
      `OK      host neko: running since 2026-12-03 10:00Z (2h 0m ago), ${short(IMAGE)}, /health 200 at 127.0.0.1:8080`,
    );
    expect(lines).toContain("INFO    host connected: 2 user(s), 1 admin(s)");
    expect(lines).toContain("OK      host spec: the deployed spec is the one the stack expects");
    expect(lines.find((l) => l.startsWith("INFO    host screenshot:"))).toContain(
      "npm run ssh -- dev host cat /var/lib/neko-infra/host/screenshot.jpg > dev-screenshot.jpg",
    );
    expect(lines).toContain("INFO    host idle stop: stops after 30 min idle; last busy 2m ago");
  });

  test("the container removed by hand: a drift whose fix runs the rollout again", () => {
    const f = judge(
      healthy({
        container: "absent",
        "container-image": undefined,
        "container-spec": undefined,
        "container-stack": undefined,
        health: undefined,
      }),
    );
    expect(drifts(f)).toEqual([
      `DRIFT   host neko: no container named neko (removed by hand?); the last deploy ran ${short(IMAGE)} -- fix: npm run up -- dev --target-replace 'urn:pulumi:dev::neko-infra::neko-infra:host:NekoHost$command:remote:Command::host-neko'`,
    ]);
    expect(report.exitCode(f)).toBe(1);
  });

  test("another image under the name neko, without the rollout's label", () => {
    const f = judge(healthy({ "container-image": OTHER, "container-spec": "" }));
    expect(drifts(f)).toHaveLength(1);
    expect(drifts(f)[0]).toContain(`runs image ${short(OTHER)}, not ${short(IMAGE)} that the last deploy ran`);
    // What runs is said, not called OK.
    expect(f.filter((x) => x.status === "OK").map((x) => x.what)).toEqual(["host image", "host spec"]);
    expect(f.map(report.format)).toContainEqual(
      expect.stringMatching(/^INFO {4}host neko: running since .*, \/health 200 at 127\.0\.0\.1:8080$/),
    );
  });

  test("the same image, not made by the rollout (no spec label)", () => {
    expect(drifts(judge(healthy({ "container-spec": "" })))[0]).toContain(`its spec label is '', the recorded spec ${SPEC}`);
  });

  test("an exited neko: when it stopped, and the restore as the quick fix", () => {
    const d = drifts(judge(healthy({ container: "exited 9 2026-12-03T10:00:00Z 2026-12-03T10:05:00Z", health: "none" })));
    expect(d).toHaveLength(1);
    expect(d[0]).toMatch(
      /^DRIFT {3}host neko: exited \(exit code 9\) at 2026-12-03 10:05Z .* -- fix: npm run ssh -- dev host sudo bash \/var\/lib\/neko-infra\/neko-restore.sh/,
    );
  });

  test("/health failing, a leftover, another stack's label", () => {
    const d = drifts(judge(healthy({ health: "000 127.0.0.1:8080", leftover: "neko-previous", "container-stack": "neko-infra/prod" })));
    expect(d.map((l) => l.split(" -- ")[0])).toEqual([
      "DRIFT   host neko: /health answered nothing at 127.0.0.1:8080",
      "DRIFT   host neko: labelled for stack 'neko-infra/prod', not neko-infra/dev",
      "DRIFT   host neko: neko-previous was left by an interrupted rollout",
    ]);
  });

  test("the stack expects another image, or another spec", () => {
    const other = `registry.example/neko@sha256:${"e".repeat(64)}`;
    expect(drifts(judge(healthy(), VALUES, other))).toEqual([
      `DRIFT   host image: the stack expects ${other}; the last deploy ran ${REF} -- fix: npm run up -- dev`,
    ]);
    expect(drifts(judge(healthy(), { ...VALUES, NEKO_HTTP_PORT: "8081" }))[0]).toContain("host spec: the deployed spec differs");
    // Without the stack's `expected` output: said, not a drift.
    const f = judge(healthy(), null);
    expect(drifts(f)).toEqual([]);
    expect(f.map(report.format)).toContain(
      "INFO    host spec: the stack has no `expected` output: only the image and the recorded spec label were compared",
    );
  });

  test("no Docker, or nothing recorded: one drift, nothing judged from it", () => {
    const noDocker = judge(`now ${NOW}\ndocker-error Cannot connect to the Docker daemon at unix:///var/run/docker.sock`);
    expect(drifts(noDocker)).toEqual([
      "DRIFT   host docker: the Docker engine does not answer: Cannot connect to the Docker daemon at unix:///var/run/docker.sock -- fix: npm run ssh -- dev host sudo systemctl start docker",
    ]);
    expect(drifts(judge(`now ${NOW}\ndocker 20.10.24\nspecs none\ncontainer absent`))[0]).toContain(
      "no deploy is recorded on this machine",
    );
  });

  test("a local host's fixes run here, with the local rollout step", () => {
    const f = report.hostFindings({
      stack: "local",
      machine: { role: "host", kind: "local", stackTag: "neko-infra/local" },
      facts: report.parseFacts(healthy({ container: "absent", "container-stack": undefined })),
    });
    expect(drifts(f)[0]).toContain(
      "npm run up -- local --target-replace 'urn:pulumi:local::neko-infra::neko-infra:host:NekoHost$command:local:Command::host-neko'",
    );
    expect(f.map(report.format).find((l) => l.includes("screenshot"))).toMatch(
      /^INFO {4}host screenshot: \/var\/lib\S+ \(4521 bytes, [^)]*\)\)$/,
    );
    expect(f.find((x) => x.what === "host idle stop")).toBeUndefined();
  });
});

describe("EC2 machines", () => {
  const builder = { role: "builder", kind: "ec2", region: "eu-central-1", stackTag: "neko-infra/dev", enabled: true } as const;
  test("stopped: ASLEEP since the time in its state reason, not to be asked over SSH", () => {
    const e = report.ec2Findings(
      builder,
      [
        {
          InstanceId: "i-0b",
          InstanceType: "c6i.2xlarge",
          State: { Name: "stopped" },
          StateTransitionReason: "User initiated (2026-12-03 08:00:00 GMT)",
        },
      ],
      STACK,
      Date.parse("2026-12-03T10:30:00Z") / 1000,
    );
    expect(e.ssh).toBe(false);
    expect(e.findings.map(report.format)).toEqual([
      "ASLEEP  builder instance: i-0b (c6i.2xlarge) stopped since 2026-12-03 08:00Z (2h 30m ago); not woken: the next build (npm run up) starts it",
    ]);
    expect(report.exitCode(e.findings)).toBe(0);
  });
  test("running: asked over SSH; none, or two: drifts; disabled: said", () => {
    const run = report.ec2Findings(
      builder,
      [{ InstanceId: "i-0b", State: { Name: "running" }, LaunchTime: new Date("2026-12-03T10:00:00Z") }],
      STACK,
      Date.parse("2026-12-03T10:30:00Z") / 1000,
    );
    expect(run.ssh).toBe(true);
    expect(report.format(run.findings[0])).toBe("OK      builder instance: i-0b (?) running since 2026-12-03 10:00Z (30m ago)");
    expect(report.format(report.ec2Findings(builder, [], STACK, NOW).findings[0])).toMatch(
      /^DRIFT .*no instance tagged neko-infra:stack=neko-infra\/dev and neko-infra:role=builder .* -- fix: npm run up -- dev --refresh$/,
    );
    expect(report.ec2Findings(builder, [{ InstanceId: "i-1" }, { InstanceId: "i-2" }], STACK, NOW).findings[0].status).toBe("DRIFT");
    expect(report.ec2Findings({ ...builder, enabled: false }, [], STACK, NOW).findings[0].status).toBe("INFO");
  });
});

describe("the builder", () => {
  test("Nix, its store, the cache and the idle stop; no Nix is a drift", () => {
    const m = { role: "builder", kind: "ec2", cache: "s3://bucket?region=eu-central-1" } as const;
    const facts = report.parseFacts(
      `now ${NOW}\nnix nix (Nix) 2.24.9\nstore-paths 1234\nstore-free-kb 52428800\nidle-minutes 30\nidle-stamp ${NOW - 600}`,
    );
    expect(report.builderFindings({ stack: STACK, machine: m, facts }).map(report.format)).toEqual([
      "OK      builder nix: nix (Nix) 2.24.9, store: 1234 paths, 50.0 GiB free",
      "INFO    builder cache: binary cache s3://bucket?region=eu-central-1 (outlives the builder)",
      "INFO    builder idle stop: stops after 30 min idle; last busy 10m ago",
    ]);
    expect(report.builderFindings({ stack: STACK, machine: m, facts: report.parseFacts(`nix none\nidle-timer none`) })[0].status).toBe(
      "DRIFT",
    );
  });
});

describe("lines and digests", () => {
  test("every line is capped, one line even when a fact holds line breaks", () => {
    const line = report.format({ status: "DRIFT", what: "host neko", detail: "x".repeat(1000) + "\nsecond", fix: "y" });
    expect(line).toHaveLength(300);
    expect(line).not.toContain("\n");
    // A long detail gives way to the fix, which stays whole.
    const fix = `npm run up -- dev --target-replace '${report.rolloutUrn("dev", HOST)}'`;
    const long = report.format({ status: "DRIFT", what: "host neko", detail: "z".repeat(400), fix });
    expect(long).toHaveLength(300);
    expect(long.endsWith(`... -- fix: ${fix}`)).toBe(true);
  });

  test("the shown digest leaves out empty values, whatever their order; any value changes it", () => {
    const d = report.shownDigest(VALUES);
    expect(report.shownDigest({ NEKO_PUBLISH: VALUES.NEKO_PUBLISH, NEKO_HTTP_PORT: "8080", NEKO_NAME: "neko", NEKO_FRONT_URL: "" })).toBe(
      d,
    );
    expect(report.shownDigest({ ...VALUES, NEKO_NAME: "neko2" })).not.toBe(d);
    expect(report.shownDigest({ ...VALUES, NEKO_HTTP_PORT: "8081" })).not.toBe(d);
    expect(report.shownDigest({ ...VALUES, NEKO_PUBLISH: "8080:8080/tcp 52000-52100:52000-52100/udp" })).not.toBe(d);
  });
});
