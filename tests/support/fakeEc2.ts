/**
 * A fake EC2 API on 127.0.0.1 that the real @aws-sdk/client-ec2 talks to (EC2's query protocol:
 * form-encoded POST, XML answers shaped like the real API's).
 *
 *   const ec2 = await startFakeEc2({ instances: { "i-0abc": { state: "stopped" } }, spotRequests: { "sir-1": "open" } });
 *   const client = ec2.client();  // an EC2Client: endpoint = the fake, static fake credentials, 1 attempt
 *   ec2.calls                     // [{ action, params }] in order (params as sent, e.g. "InstanceId.1")
 *   ec2.violations                // what the real API would refuse or the test did not allow: assert []
 *   ec2.instances["i-0abc"]       // live state: StartInstances and CreateTags change it, tests may too
 *   ec2.failNext("StartInstances", "InsufficientInstanceCapacity", "...")  // the next call gets this error
 *   await ec2.close()
 *
 * Actions: DescribeInstances (InstanceId.N), StartInstances (InstanceId.N), CreateTags (ResourceId.N,
 * Tag.N.Key, Tag.N.Value), CancelSpotInstanceRequests (SpotInstanceRequestId.N). Unknown ids get the
 * real error codes (InvalidInstanceID.NotFound, InvalidSpotInstanceRequestID.NotFound): behaviour,
 * not a violation. An action not in `allow` (default: all four), another action, a parameter the
 * action does not take, a missing Version=2016-11-15 or an unsigned request: HTTP 400 with an error
 * XML, and a violation recorded.
 */
import * as http from "http";
import { AddressInfo } from "net";
import { EC2Client } from "@aws-sdk/client-ec2";

export interface FakeInstance {
  state: "pending" | "running" | "stopping" | "stopped" | "shutting-down" | "terminated";
  type?: string;
  tags?: Record<string, string>;
  /** ISO time of the last launch (EC2: "the time that the instance was last launched"); StartInstances sets it. */
  launchTime?: string;
}
export interface FakeEc2 {
  endpoint: string;
  calls: { action: string; params: Record<string, string> }[];
  violations: string[];
  instances: Record<string, FakeInstance>;
  spotRequests: Record<string, string>;
  client(): EC2Client;
  failNext(action: string, code: string, message: string): void;
  close(): Promise<void>;
}
type Action = "DescribeInstances" | "StartInstances" | "CreateTags" | "CancelSpotInstanceRequests";

const FAKE_CREDENTIALS = { accessKeyId: "AKIDFAKEEC2", secretAccessKey: "fake-secret" };
const NS = "http://ec2.amazonaws.com/doc/2016-11-15/";
const PARAMS: Record<Action, RegExp> = {
  DescribeInstances: /^InstanceId\.\d+$/,
  StartInstances: /^InstanceId\.\d+$/,
  CreateTags: /^(ResourceId\.\d+|Tag\.\d+\.(Key|Value))$/,
  CancelSpotInstanceRequests: /^SpotInstanceRequestId\.\d+$/,
};
const CODES: Record<string, number> = { pending: 0, running: 16, "shutting-down": 32, terminated: 48, stopping: 64, stopped: 80 };
const esc = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const list = (p: Record<string, string>, prefix: string) =>
  Object.keys(p)
    .filter((k) => new RegExp(`^${prefix}\\.\\d+$`).test(k))
    .sort((a, b) => Number(a.split(".").pop()) - Number(b.split(".").pop()))
    .map((k) => p[k]);
const state = (name: string) => `<code>${CODES[name]}</code><name>${name}</name>`;
/** An EC2 error answer (HTTP 400), thrown inside `answer`. */
const fail = (code: string, message: string): never => {
  throw Object.assign(new Error(message), { ec2Code: code });
};
const SIGV4 = /^AWS4-HMAC-SHA256 Credential=\w+\/\d{8}\/[a-z0-9-]+\/ec2\/aws4_request, SignedHeaders=\S+, Signature=[0-9a-f]{64}$/;

export async function startFakeEc2(
  o: { instances?: Record<string, FakeInstance>; spotRequests?: Record<string, string>; allow?: Action[] } = {},
): Promise<FakeEc2> {
  const calls: FakeEc2["calls"] = [];
  const violations: string[] = [];
  const instances = o.instances ?? {};
  const spotRequests = o.spotRequests ?? {};
  const allow = new Set<string>(o.allow ?? Object.keys(PARAMS));
  const failures: { action: string; code: string; message: string }[] = [];
  const known = (id: string) => {
    return instances[id] ?? fail("InvalidInstanceID.NotFound", `The instance ID '${id}' does not exist`);
  };

  const answer = (action: Action, p: Record<string, string>): string => {
    const planned = failures.findIndex((f) => f.action === action);
    if (planned >= 0) fail(failures[planned].code, failures.splice(planned, 1)[0].message);
    if (action === "DescribeInstances") {
      const ids = list(p, "InstanceId");
      ids.forEach(known);
      const items = (ids.length ? ids : Object.keys(instances)).map((id) => {
        const i = instances[id];
        const tags = Object.entries(i.tags ?? {}).map(([k, v]) => `<item><key>${esc(k)}</key><value>${esc(v)}</value></item>`);
        return `<item><reservationId>r-0${id.slice(2)}</reservationId><ownerId>123456789012</ownerId><groupSet/><instancesSet><item><instanceId>${id}</instanceId><instanceState>${state(i.state)}</instanceState><instanceType>${i.type ?? "g5.xlarge"}</instanceType>${i.launchTime ? `<launchTime>${esc(i.launchTime)}</launchTime>` : ""}<tagSet>${tags.join("")}</tagSet></item></instancesSet></item>`;
      });
      return `<reservationSet>${items.join("")}</reservationSet>`;
    }
    if (action === "StartInstances") {
      const items = list(p, "InstanceId").map((id) => {
        const i = known(id);
        const before = i.state;
        if (before === "stopped") Object.assign(i, { state: "pending", launchTime: new Date().toISOString() });
        else if (before !== "pending" && before !== "running")
          fail("IncorrectInstanceState", `The instance '${id}' is not in a state from which it can be started.`);
        return `<item><instanceId>${id}</instanceId><currentState>${state(i.state)}</currentState><previousState>${state(before)}</previousState></item>`;
      });
      return `<instancesSet>${items.join("")}</instancesSet>`;
    }
    if (action === "CreateTags") {
      for (const id of list(p, "ResourceId")) {
        const i = known(id);
        for (let n = 1; p[`Tag.${n}.Key`] !== undefined; n++) i.tags = { ...i.tags, [p[`Tag.${n}.Key`]]: p[`Tag.${n}.Value`] ?? "" };
      }
      return `<return>true</return>`;
    }
    const items = list(p, "SpotInstanceRequestId").map((id) => {
      if (!spotRequests[id]) fail("InvalidSpotInstanceRequestID.NotFound", `The spot instance request ID '${id}' does not exist`);
      spotRequests[id] = "cancelled";
      return `<item><spotInstanceRequestId>${id}</spotInstanceRequestId><state>cancelled</state></item>`;
    });
    return `<spotInstanceRequestSet>${items.join("")}</spotInstanceRequestSet>`;
  };

  const server = http.createServer((req, res) => {
    let body = "";
    req.setEncoding("utf8").on("data", (d: string) => (body += d));
    req.on("end", () => {
      const params = Object.fromEntries(new URLSearchParams(body));
      const { Action: action = "", Version: version, ...rest } = params;
      calls.push({ action, params: rest });
      const reply = (status: number, xml: string) => {
        res.writeHead(status, { "Content-Type": "text/xml;charset=UTF-8" }).end(`<?xml version="1.0" encoding="UTF-8"?>\n${xml}`);
      };
      const error = (status: number, code: string, message: string) => {
        const err = `<Error><Code>${esc(code)}</Code><Message>${esc(message)}</Message></Error>`;
        reply(status, `<Response><Errors>${err}</Errors><RequestID>fake-0001</RequestID></Response>`);
      };
      const problems = [
        req.method !== "POST" || req.url !== "/" ? `${req.method} ${req.url} (EC2 takes POST /)` : "",
        !(action in PARAMS) || !allow.has(action) ? `unexpected action ${JSON.stringify(action)}` : "",
        version !== "2016-11-15" ? `Version ${version} (expected 2016-11-15)` : "",
        SIGV4.test(req.headers.authorization ?? "") ? "" : "request not signed with SigV4 for ec2",
        ...Object.keys(rest)
          .filter((k) => action in PARAMS && !PARAMS[action as Action].test(k))
          .map((k) => `${action} does not take parameter ${k}`),
      ].filter(Boolean);
      if (problems.length) {
        violations.push(...problems);
        return error(400, "InvalidAction", problems.join("; "));
      }
      try {
        const xml = answer(action as Action, rest);
        reply(200, `<${action}Response xmlns="${NS}"><requestId>fake-0001</requestId>${xml}</${action}Response>`);
      } catch (e) {
        if (!(e instanceof Error && "ec2Code" in e)) throw e;
        error(400, String(e.ec2Code), e.message);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    endpoint,
    calls,
    violations,
    instances,
    spotRequests,
    client: () => new EC2Client({ endpoint, region: "eu-central-1", maxAttempts: 1, credentials: FAKE_CREDENTIALS }),
    failNext: (action, code, message) => failures.push({ action, code, message }),
    close: () => new Promise<void>((resolve, reject) => server.close((e) => (e ? reject(e) : resolve()))),
  };
}
