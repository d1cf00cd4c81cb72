/**
 * lambda/wake-on-visit.js: its pure logic (decide, render, pruneStarts, tokenMatches), then its
 * handler for real against a fake EC2 API (tests/support/fakeEc2.ts) through the real
 * @aws-sdk/client-ec2 (the instance's state, its last launch and the ready tag the host sets on
 * itself, scripts/host-ready.sh).
 *
 * Stand-ins: the fake EC2 endpoint (its answers follow the real API's XML and error codes; the
 * real service is not reachable here). The function never asks neko itself: port 443 may admit
 * only the client networks (checked in the handler tests: no fetch is given or made).
 */
import * as crypto from "crypto";
import { FakeEc2, startFakeEc2 } from "../support/fakeEc2";

interface Decision {
  action: "deny" | "redirect" | "start" | "wait" | "limit" | "error";
  status: number;
  title: string;
  message: string;
  refresh: boolean;
  location?: string;
  retryAfter?: number;
  starts?: number[];
}
interface DecideInput {
  tokenOk: boolean;
  state: string;
  ready: boolean;
  launchedAt?: number;
  starts: number[];
  now: number;
  maxStarts: number;
  nekoUrl?: string;
  instanceId?: string;
}
interface Response {
  statusCode: number;
  headers: Record<string, string>;
  body: string;
}
interface WakeModule {
  decide(i: DecideInput): Decision;
  render(d: Decision): Response;
  pruneStarts(tag: string | undefined, now: number): number[];
  tokenMatches(token: string | undefined, expectedHex: string | undefined): boolean;
  createHandler(deps: {
    ec2?: { send(c: any): Promise<any> };
    env?: Record<string, string | undefined>;
    now?: () => number;
    log?: (line: string) => void;
  }): (event: any) => Promise<Response>;
  handler(event: any): Promise<Response>;
  STARTS_TAG: string;
  READY_TAG: string;
  READY_DEADLINE: number;
}
const wake: WakeModule = require("../../lambda/wake-on-visit");

const NOW = 1_800_000_000;
const TOKEN = "5f0c2b8e9a7d4c1e8b3a6f9d2c5e8b1a";
const TOKEN_SHA256 = crypto.createHash("sha256").update(TOKEN).digest("hex");
const ID = "i-0123456789abcdef0";
const NEKO = "https://203.0.113.20/";
const base: DecideInput = {
  tokenOk: true,
  state: "stopped",
  ready: false,
  starts: [],
  now: NOW,
  maxStarts: 6,
  nekoUrl: NEKO,
  instanceId: ID,
};
const ago = (...seconds: number[]) => seconds.map((s) => NOW - s);

describe("pruneStarts", () => {
  test("keeps the starts of the last hour, ascending; drops junk, old and far-future times", () => {
    expect(wake.pruneStarts(undefined, NOW)).toEqual([]);
    expect(wake.pruneStarts("", NOW)).toEqual([]);
    const tag = [NOW - 10, NOW - 3600, NOW - 3599, "x", "-5", "1.5", NOW + 60, NOW + 301, NOW - 7200, ` ${NOW - 20} `].join(",");
    expect(wake.pruneStarts(tag, NOW)).toEqual([NOW - 3599, NOW - 20, NOW - 10, NOW + 60]);
  });
  test("hour rollover: a start exactly one hour old no longer counts", () => {
    expect(wake.pruneStarts(`${NOW - 3600},${NOW - 3599}`, NOW)).toEqual([NOW - 3599]);
    expect(wake.pruneStarts(`${NOW - 3600},${NOW - 3599}`, NOW + 1)).toEqual([]);
  });
});

describe("tokenMatches", () => {
  test("sha256 of the token against the configured digest", () => {
    expect(wake.tokenMatches(TOKEN, TOKEN_SHA256)).toBe(true);
    expect(wake.tokenMatches(TOKEN, TOKEN_SHA256.toUpperCase())).toBe(true);
    expect(wake.tokenMatches(`${TOKEN}x`, TOKEN_SHA256)).toBe(false);
    expect(wake.tokenMatches(undefined, TOKEN_SHA256)).toBe(false);
    expect(wake.tokenMatches("", TOKEN_SHA256)).toBe(false);
    expect(wake.tokenMatches(TOKEN_SHA256, TOKEN_SHA256)).toBe(false); // the digest is not the token
    expect(wake.tokenMatches(TOKEN, undefined)).toBe(false); // no digest configured: nobody gets in
    expect(wake.tokenMatches(TOKEN, "abc")).toBe(false);
  });
});

describe("decide", () => {
  test("sleeping: start, and record this start", () => {
    const d = wake.decide({ ...base, starts: ago(100) });
    expect(d).toMatchObject({ action: "start", status: 200, refresh: true, starts: [NOW - 100, NOW] });
    expect(d.message).toMatch(/starting/);
  });
  test("starting (pending), or running but not ready yet: wait, saying since when and how long it usually takes", () => {
    expect(wake.decide({ ...base, state: "pending" })).toMatchObject({ action: "wait", status: 200, refresh: true });
    const d = wake.decide({ ...base, state: "running", ready: false, launchedAt: NOW - 40 });
    expect(d).toMatchObject({ action: "wait", status: 200, refresh: true });
    expect(d.message).toBe("The host started 40 seconds ago. neko usually answers within 3 minutes of a start; this page opens it then.");
    expect(wake.decide({ ...base, state: "running", launchedAt: NOW - 300 }).message).toMatch(/^The host started 5 minutes ago/);
  });
  test("running and ready: redirect to neko", () => {
    expect(wake.decide({ ...base, state: "running", ready: true })).toMatchObject({ action: "redirect", status: 302, location: NEKO });
  });
  test("running and still not ready READY_DEADLINE after the launch: the page ends, says so, offers neko anyway", () => {
    const late = wake.decide({ ...base, state: "running", launchedAt: NOW - wake.READY_DEADLINE });
    expect(late).toMatchObject({ action: "error", status: 503, refresh: false, title: "neko did not come up", location: NEKO });
    expect(late.message).toMatch(/^The host has been running for 15 minutes and neko has not answered\. .*npm run status/);
    const r = wake.render(late);
    expect(r.headers.Location).toBeUndefined(); // not a redirect: a link the visitor may follow
    expect(r.body).toContain(`<a href="${NEKO}">Try neko anyway</a>`);
    expect(r.body).not.toContain("refresh");
    expect(wake.decide({ ...base, state: "running", launchedAt: NOW - wake.READY_DEADLINE + 1 }).action).toBe("wait");
  });
  test("stopping: wait, and say it will be started once stopped", () => {
    const d = wake.decide({ ...base, state: "stopping" });
    expect(d).toMatchObject({ action: "wait", refresh: true });
    expect(d.starts).toBeUndefined();
    expect(d.message).toMatch(/stopping; it will be started again when it has stopped/);
  });
  test("wrong or missing token: deny, whatever the instance does", () => {
    for (const state of ["stopped", "running", "missing"]) {
      expect(wake.decide({ ...base, tokenOk: false, state, ready: true })).toMatchObject({ action: "deny", status: 403, refresh: false });
    }
  });
  test("too many starts in the last hour: limit, with when the next start is possible", () => {
    const d = wake.decide({ ...base, starts: ago(3000, 2500, 2000, 1500, 1000, 10) });
    expect(d).toMatchObject({ action: "limit", status: 429, refresh: false, retryAfter: 600 });
    expect(d.message).toContain("started 6 times in the last hour (the limit is 6)");
    expect(d.message).toContain("10 minutes");
    expect(wake.decide({ ...base, maxStarts: 1, starts: ago(3599) })).toMatchObject({ action: "limit", retryAfter: 1 });
  });
  test("hour rollover: starts older than an hour stop counting", () => {
    const d = wake.decide({ ...base, starts: ago(3600, 3000, 2500, 2000, 1500, 1000) });
    expect(d).toMatchObject({ action: "start", starts: [...ago(3000, 2500, 2000, 1500, 1000), NOW] });
  });
  test("instance missing or terminated: an error naming it", () => {
    for (const state of ["missing", "terminated", "shutting-down"]) {
      const d = wake.decide({ ...base, state });
      expect(d).toMatchObject({ action: "error", status: 500 });
      expect(d.message).toContain(ID);
    }
  });
});

describe("render", () => {
  const common = { "Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "Content-Type": "text/html; charset=utf-8" };
  test("waiting page: refreshes every 5 s, never cached, no Referer", () => {
    const r = wake.render(wake.decide({ ...base, state: "pending" }));
    expect(r.statusCode).toBe(200);
    expect(r.headers).toMatchObject(common);
    expect(r.body).toContain('<meta http-equiv="refresh" content="5">');
    expect(r.body).toContain('<meta name="referrer" content="no-referrer">');
    expect(r.body).toMatch(/<h1>neko is starting<\/h1>/);
    expect(r.body).not.toMatch(/<script|https?:\/\/(?!www\.w3)/); // self-contained
  });
  test("redirect: 302 to neko without the token, no Referer", () => {
    const r = wake.render(wake.decide({ ...base, state: "running", ready: true }));
    expect(r.statusCode).toBe(302);
    expect(r.headers).toMatchObject({ ...common, Location: NEKO });
    expect(r.body).not.toContain("http-equiv");
  });
  test("limit: 429 with Retry-After; deny and error pages do not refresh", () => {
    const limit = wake.render(wake.decide({ ...base, maxStarts: 1, starts: ago(60) }));
    expect(limit.statusCode).toBe(429);
    expect(limit.headers).toMatchObject({ ...common, "Retry-After": "3540" });
    for (const d of [
      wake.decide({ ...base, tokenOk: false }),
      wake.decide({ ...base, state: "missing" }),
      wake.decide({ ...base, maxStarts: 1, starts: ago(60) }),
    ]) {
      expect(wake.render(d).body).not.toContain("http-equiv");
    }
    expect(wake.render(wake.decide({ ...base, tokenOk: false })).statusCode).toBe(403);
  });
  test("text is escaped", () => {
    const r = wake.render({ action: "error", status: 500, title: "<b>", message: `a "quoted" <script>&`, refresh: false });
    expect(r.body).toContain("&#60;b&#62;");
    expect(r.body).toContain("a &#34;quoted&#34; &#60;script&#62;&#38;");
    expect(r.body).not.toContain("<script>");
  });
});

// ------------------------------------------------------------------ the handler, against fakes

describe("handler (real SDK against a fake EC2 endpoint)", () => {
  let ec2: FakeEc2;
  let logs: string[];
  const visit = (t: string | undefined, env: Record<string, string> = {}) => {
    const h = wake.createHandler({
      ec2: ec2.client(),
      env: { INSTANCE_ID: ID, NEKO_URL: NEKO, TOKEN_SHA256, MAX_STARTS: "3", ...env },
      now: () => NOW,
      log: (l) => logs.push(l),
    });
    return h({ rawQueryString: t === undefined ? "" : `t=${t}`, queryStringParameters: t === undefined ? undefined : { t } });
  };
  const actions = () => ec2.calls.map((c) => c.action);
  const describe1 = { action: "DescribeInstances", params: { "InstanceId.1": ID } };

  beforeEach(async () => {
    ec2 = await startFakeEc2({ instances: { [ID]: { state: "stopped" } }, allow: ["DescribeInstances", "StartInstances", "CreateTags"] });
    logs = [];
  });
  afterEach(async () => {
    expect(ec2.violations).toEqual([]);
    for (const l of logs) expect(l).not.toContain(TOKEN);
    await ec2.close();
  });

  test("wrong or missing token: 403 without any AWS call", async () => {
    for (const t of [undefined, "", "guess", TOKEN_SHA256]) {
      const r = await visit(t);
      expect(r.statusCode).toBe(403);
    }
    expect(ec2.calls).toEqual([]);
  });

  test("sleeping: records the start in the tag, starts the instance, shows the waiting page", async () => {
    ec2.instances[ID].tags = { Name: "neko-host", [wake.STARTS_TAG]: `${NOW - 4000},${NOW - 100}` };
    const r = await visit(TOKEN);
    expect(r.statusCode).toBe(200);
    expect(r.body).toContain("Starting neko");
    expect(r.body).toContain('http-equiv="refresh"');
    expect(ec2.calls).toEqual([
      describe1,
      { action: "CreateTags", params: { "ResourceId.1": ID, "Tag.1.Key": "neko-infra:wake-starts", "Tag.1.Value": `${NOW - 100},${NOW}` } },
      { action: "StartInstances", params: { "InstanceId.1": ID } },
    ]);
    expect(ec2.instances[ID]).toMatchObject({
      state: "pending",
      tags: { Name: "neko-host", "neko-infra:wake-starts": `${NOW - 100},${NOW}` },
    });
    expect(logs).toEqual([expect.stringMatching(/^wake-on-visit: start \(200\): /)]);
  });

  test("a wake: started, running but not ready, then the host's ready tag (newer than the launch) -> 302 to NEKO_URL", async () => {
    // The last boot said it was ready; that tag predates the start below, so it does not count.
    ec2.instances[ID].tags = { [wake.READY_TAG]: String(NOW - 7200) };
    await visit(TOKEN);
    expect(ec2.instances[ID].state).toBe("pending");
    const launched = Math.floor(Date.parse(ec2.instances[ID].launchTime ?? "") / 1000);
    expect(Math.abs(launched - Math.floor(Date.now() / 1000))).toBeLessThan(5); // StartInstances set it
    expect((await visit(TOKEN)).body).toContain("The host is booting");
    ec2.instances[ID].state = "running";
    ec2.instances[ID].launchTime = new Date((NOW - 50) * 1000).toISOString();
    const waiting = await visit(TOKEN);
    expect(waiting.statusCode).toBe(200);
    expect(waiting.body).toContain("The host started 50 seconds ago. neko usually answers within 3 minutes");
    ec2.instances[ID].tags = { [wake.READY_TAG]: String(NOW - 10) }; // scripts/host-ready.sh after /health answered
    const r = await visit(TOKEN);
    expect(r.statusCode).toBe(302);
    expect(r.headers.Location).toBe(NEKO);
    expect(r.headers["Referrer-Policy"]).toBe("no-referrer");
    expect(actions()).toEqual(["DescribeInstances", "CreateTags", "StartInstances", ...Array(3).fill("DescribeInstances")]);
  });

  test("a host that never says it is ready: after READY_DEADLINE the page ends (503, no refresh); junk tags do not count", async () => {
    ec2.instances[ID].state = "running";
    ec2.instances[ID].launchTime = new Date((NOW - wake.READY_DEADLINE - 5) * 1000).toISOString();
    for (const junk of ["", "yes", "-1", `${NOW}x`]) {
      ec2.instances[ID].tags = { [wake.READY_TAG]: junk };
      const r = await visit(TOKEN);
      expect(r.statusCode).toBe(503);
      expect(r.body).toContain("neko did not come up");
      expect(r.body).not.toContain('http-equiv="refresh"');
    }
    // no launch time known (should not happen): waits rather than guessing
    delete ec2.instances[ID].launchTime;
    ec2.instances[ID].tags = { [wake.READY_TAG]: String(NOW) };
    expect((await visit(TOKEN)).statusCode).toBe(200);
  });

  test("stopping: waiting page, no start; once stopped, a later refresh starts it", async () => {
    ec2.instances[ID].state = "stopping";
    const r = await visit(TOKEN);
    expect(r.statusCode).toBe(200);
    expect(r.body).toContain("stopping; it will be started again when it has stopped");
    expect(actions()).toEqual(["DescribeInstances"]);
    ec2.instances[ID].state = "stopped";
    await visit(TOKEN);
    expect(actions()).toEqual(["DescribeInstances", "DescribeInstances", "CreateTags", "StartInstances"]);
    expect(ec2.instances[ID].state).toBe("pending");
  });

  test("too many starts: 429, nothing started or tagged; after the hour rolls over it starts again", async () => {
    ec2.instances[ID].tags = { "neko-infra:wake-starts": `${NOW - 3599},${NOW - 1800},${NOW - 60}` };
    const r = await visit(TOKEN);
    expect(r.statusCode).toBe(429);
    expect(r.headers["Retry-After"]).toBe("1");
    expect(actions()).toEqual(["DescribeInstances"]);
    ec2.instances[ID].tags = { "neko-infra:wake-starts": `${NOW - 3600},${NOW - 1800},${NOW - 60}` };
    expect((await visit(TOKEN)).statusCode).toBe(200);
    expect(ec2.instances[ID].tags).toEqual({ "neko-infra:wake-starts": `${NOW - 1800},${NOW - 60},${NOW}` });
    expect(ec2.instances[ID].state).toBe("pending");
  });

  test("instance missing (EC2 answers InvalidInstanceID.NotFound) or terminated: 500 naming INSTANCE_ID", async () => {
    delete ec2.instances[ID];
    let r = await visit(TOKEN);
    expect(r.statusCode).toBe(500);
    expect(r.body).toContain(`The instance ${ID} is not found`);
    ec2.instances[ID] = { state: "terminated" };
    r = await visit(TOKEN);
    expect(r.statusCode).toBe(500);
    expect(r.body).toContain(`The instance ${ID} is terminated`);
    expect(actions()).toEqual(["DescribeInstances", "DescribeInstances"]);
  });

  test("EC2 refusing the start: no capacity is a 500 that says so (the attempt still counts); a race with a stop waits", async () => {
    ec2.failNext("StartInstances", "InsufficientInstanceCapacity", "We currently do not have sufficient g5.xlarge capacity");
    let r = await visit(TOKEN);
    expect(r.statusCode).toBe(500);
    expect(r.body).toContain("AWS has no capacity");
    expect(ec2.instances[ID]).toMatchObject({ state: "stopped", tags: { "neko-infra:wake-starts": `${NOW}` } });
    ec2.failNext("StartInstances", "IncorrectInstanceState", "The instance is not in a state from which it can be started.");
    r = await visit(TOKEN);
    expect(r.statusCode).toBe(200);
    expect(r.body).toContain("stopping");
    ec2.failNext("DescribeInstances", "UnauthorizedOperation", "You are not authorized to perform this operation.");
    r = await visit(TOKEN);
    expect(r.statusCode).toBe(500);
    expect(r.body).toContain("UnauthorizedOperation");
  });

  test("misconfiguration is a 500 after the token check, before any AWS call", async () => {
    const bad: Record<string, string>[] = [
      { INSTANCE_ID: "" },
      { NEKO_URL: "https://203.0.113.20" },
      { MAX_STARTS: "0" },
      { MAX_STARTS: "x" },
    ];
    for (const env of bad) {
      const r = await visit(TOKEN, env);
      expect(r.statusCode).toBe(500);
      expect(r.body).toContain("Misconfigured");
    }
    expect(ec2.calls).toEqual([]);
  });
});
