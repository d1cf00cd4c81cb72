/**
 * lambda/wake-on-visit.js: its pure logic (decide, render, pruneStarts, tokenMatches), then its
 * handler for real against a fake EC2 API (tests/support/fakeEc2.ts) through the real
 * @aws-sdk/client-ec2, and neko's /health served by a real HTTP server on 127.0.0.1 through the
 * real fetch. Also scripts/spot-cancel.js against the same fake.
 *
 * Stand-ins: the fake EC2 endpoint (its answers follow the real API's XML and error codes; the
 * real service is not reachable here) and the /health server (answers like neko's: 200 "true").
 */
import * as crypto from "crypto";
import * as http from "http";
import { AddressInfo } from "net";
import * as sdk from "@aws-sdk/client-ec2";
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
  healthy: boolean;
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
    fetch?: typeof fetch;
    env?: Record<string, string | undefined>;
    now?: () => number;
    log?: (line: string) => void;
  }): (event: any) => Promise<Response>;
  handler(event: any): Promise<Response>;
  STARTS_TAG: string;
}
const wake: WakeModule = require("../../lambda/wake-on-visit");
const { cancelSpotRequest } = require("../../scripts/spot-cancel.js") as {
  cancelSpotRequest(client: { send(c: any): Promise<any> }, id: string, sdk: unknown): Promise<string>;
};

const NOW = 1_800_000_000;
const TOKEN = "5f0c2b8e9a7d4c1e8b3a6f9d2c5e8b1a";
const TOKEN_SHA256 = crypto.createHash("sha256").update(TOKEN).digest("hex");
const ID = "i-0123456789abcdef0";
const NEKO = "https://203.0.113.20/";
const base: DecideInput = {
  tokenOk: true,
  state: "stopped",
  healthy: false,
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
  test("starting (pending), or running but neko not healthy yet: wait", () => {
    expect(wake.decide({ ...base, state: "pending" })).toMatchObject({ action: "wait", status: 200, refresh: true });
    const d = wake.decide({ ...base, state: "running", healthy: false });
    expect(d).toMatchObject({ action: "wait", status: 200, refresh: true });
    expect(d.message).toMatch(/neko is starting/);
  });
  test("running and healthy: redirect to neko", () => {
    expect(wake.decide({ ...base, state: "running", healthy: true })).toMatchObject({ action: "redirect", status: 302, location: NEKO });
  });
  test("stopping: wait, and say it will be started once stopped", () => {
    const d = wake.decide({ ...base, state: "stopping" });
    expect(d).toMatchObject({ action: "wait", refresh: true });
    expect(d.starts).toBeUndefined();
    expect(d.message).toMatch(/stopping; it will be started again when it has stopped/);
  });
  test("wrong or missing token: deny, whatever the instance does", () => {
    for (const state of ["stopped", "running", "missing"]) {
      expect(wake.decide({ ...base, tokenOk: false, state, healthy: true })).toMatchObject({ action: "deny", status: 403, refresh: false });
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
    const r = wake.render(wake.decide({ ...base, state: "running", healthy: true }));
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

/** neko's /health stand-in: `mode` decides the answer; records the paths asked for. */
async function startHealth() {
  const h = { mode: "ok" as "ok" | "503" | "404" | "hang", paths: [] as string[], url: "", close: async () => undefined as void };
  const server = http.createServer((req, res) => {
    h.paths.push(req.url ?? "");
    if (h.mode === "hang") return; // never answers: the handler's 3 s timeout must end the wait
    if (h.mode !== "ok") return void res.writeHead(Number(h.mode)).end("not neko");
    res.writeHead(200, { "Content-Type": "text/plain" }).end("true");
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  h.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  h.close = () => new Promise<void>((resolve) => (server.closeAllConnections(), server.close(() => resolve())));
  return h;
}

describe("handler (real SDK against a fake EC2 endpoint; real fetch against a /health server)", () => {
  let ec2: FakeEc2;
  let health: Awaited<ReturnType<typeof startHealth>>;
  let logs: string[];
  const visit = (t: string | undefined, env: Record<string, string> = {}) => {
    const h = wake.createHandler({
      ec2: ec2.client(),
      env: { INSTANCE_ID: ID, NEKO_URL: health.url, TOKEN_SHA256, MAX_STARTS: "3", ...env },
      now: () => NOW,
      log: (l) => logs.push(l),
    });
    return h({ rawQueryString: t === undefined ? "" : `t=${t}`, queryStringParameters: t === undefined ? undefined : { t } });
  };
  const actions = () => ec2.calls.map((c) => c.action);
  const describe1 = { action: "DescribeInstances", params: { "InstanceId.1": ID } };

  beforeEach(async () => {
    ec2 = await startFakeEc2({ instances: { [ID]: { state: "stopped" } }, allow: ["DescribeInstances", "StartInstances", "CreateTags"] });
    health = await startHealth();
    logs = [];
  });
  afterEach(async () => {
    expect(ec2.violations).toEqual([]);
    for (const l of logs) expect(l).not.toContain(TOKEN);
    await ec2.close();
    await health.close();
  });

  test("wrong or missing token: 403 without any AWS call", async () => {
    for (const t of [undefined, "", "guess", TOKEN_SHA256]) {
      const r = await visit(t);
      expect(r.statusCode).toBe(403);
    }
    expect(ec2.calls).toEqual([]);
    expect(health.paths).toEqual([]);
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

  test("starting: pending, then running with neko not answering yet, then healthy -> 302 to NEKO_URL", async () => {
    ec2.instances[ID].state = "pending";
    expect((await visit(TOKEN)).body).toContain("The host is booting");
    expect(health.paths).toEqual([]); // no health check while the instance boots
    ec2.instances[ID].state = "running";
    health.mode = "503"; // a front answering for a neko that is not up yet
    expect((await visit(TOKEN)).body).toContain("neko is starting");
    health.mode = "404"; // something else on that address
    expect((await visit(TOKEN)).body).toContain("neko is starting");
    health.mode = "ok";
    const r = await visit(TOKEN);
    expect(r.statusCode).toBe(302);
    expect(r.headers.Location).toBe(health.url);
    expect(r.headers["Referrer-Policy"]).toBe("no-referrer");
    expect(health.paths).toEqual(["/health", "/health", "/health"]);
    expect(actions()).toEqual(Array(4).fill("DescribeInstances"));
  });

  test("health is checked under NEKO_URL's path; nothing listening or a hang (3 s) means not healthy", async () => {
    ec2.instances[ID].state = "running";
    expect((await visit(TOKEN, { NEKO_URL: `${health.url}neko/` })).statusCode).toBe(302);
    expect(health.paths).toEqual(["/neko/health"]);
    expect((await visit(TOKEN, { NEKO_URL: "http://127.0.0.1:9/" })).body).toContain("neko is starting");
    health.mode = "hang";
    const started = Date.now();
    const r = await visit(TOKEN);
    expect(r.statusCode).toBe(200);
    expect(r.body).toContain("neko is starting");
    expect(Date.now() - started).toBeGreaterThanOrEqual(2900);
    expect(Date.now() - started).toBeLessThan(6000);
  }, 15_000);

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

describe("scripts/spot-cancel.js against the fake EC2 endpoint", () => {
  let ec2: FakeEc2;
  beforeEach(async () => {
    ec2 = await startFakeEc2({ spotRequests: { "sir-1234abcd": "active" }, allow: ["CancelSpotInstanceRequests"] });
  });
  afterEach(async () => {
    expect(ec2.violations).toEqual([]);
    await ec2.close();
  });

  test("cancels the request by id", async () => {
    expect(await cancelSpotRequest(ec2.client(), "sir-1234abcd", sdk)).toBe("spot request sir-1234abcd: cancelled");
    expect(ec2.calls).toEqual([{ action: "CancelSpotInstanceRequests", params: { "SpotInstanceRequestId.1": "sir-1234abcd" } }]);
    expect(ec2.spotRequests["sir-1234abcd"]).toBe("cancelled");
  });
  test("a request EC2 does not know is fine; no id means no call", async () => {
    expect(await cancelSpotRequest(ec2.client(), "sir-0000gone", sdk)).toBe("spot request sir-0000gone is already gone");
    expect(await cancelSpotRequest(ec2.client(), "", sdk)).toBe("no spot request: nothing to cancel");
    expect(ec2.calls.length).toBe(1);
  });
  test("any other error fails the delete", async () => {
    ec2.failNext("CancelSpotInstanceRequests", "UnauthorizedOperation", "You are not authorized to perform this operation.");
    await expect(cancelSpotRequest(ec2.client(), "sir-1234abcd", sdk)).rejects.toMatchObject({ name: "UnauthorizedOperation" });
    expect(ec2.spotRequests["sir-1234abcd"]).toBe("active");
  });
});
