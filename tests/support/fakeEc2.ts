/**
 * A fake EC2 API on 127.0.0.1 that the real @aws-sdk/client-ec2 talks to (EC2's query protocol:
 * form-encoded POST, XML answers shaped like the real API's).
 *
 *   const ec2 = await startFakeEc2({ instances: { "i-0abc": { state: "stopped" } } });
 *   const client = ec2.client();  // an EC2Client: endpoint = the fake, static fake credentials, 1 attempt
 *   ec2.calls                     // [{ action, params }] in order (params as sent, e.g. "InstanceId.1")
 *   ec2.violations                // what the real API would refuse or the test did not allow: assert []
 *   ec2.instances["i-0abc"]       // live state: StartInstances and CreateTags change it, tests may too
 *   ec2.failNext("StartInstances", "InsufficientInstanceCapacity", "...")  // the next call gets this error
 *   await ec2.close()
 *
 * Actions: DescribeInstances (InstanceId.N, or Filter.N.Name / Filter.N.Value.M with `tag:KEY`,
 * `instance-state-name` and `instance-id`; answers launchTime and reason, the stateTransitionReason),
 * StartInstances (InstanceId.N; sets launchTime), CreateTags (ResourceId.N, Tag.N.Key, Tag.N.Value);
 * for security groups
 * (`groups: { "sg-1": { tags, rules } }`, live in `ec2.groups`): DescribeSecurityGroups (Filter.N.Name
 * `tag:<key>`, Filter.N.Value.M), DescribeSecurityGroupRules (Filter.N.Name `group-id`,
 * Filter.N.Value.M), AuthorizeSecurityGroupIngress (GroupId, IpPermissions.N.{IpProtocol, FromPort,
 * ToPort, IpRanges.M.CidrIp, IpRanges.M.Description, Ipv6Ranges.M.CidrIpv6, Ipv6Ranges.M.Description}:
 * a rule with the same protocol, ports and range is InvalidPermission.Duplicate, as in EC2) and
 * RevokeSecurityGroupIngress (GroupId, SecurityGroupRuleId.N). Unknown ids get the real error codes
 * (InvalidInstanceID.NotFound, InvalidGroup.NotFound,
 * InvalidSecurityGroupRuleId.NotFound): behaviour, not a violation. An action not in `allow`
 * (default: all), another action, a parameter the action does not take, a missing
 * Version=2016-11-15 or an unsigned request: HTTP 400 with an error XML, and a violation recorded.
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
  /** EC2's stateTransitionReason, e.g. "User initiated (2026-12-03 10:00:00 GMT)". */
  reason?: string;
}
export interface FakeRule {
  protocol: string;
  fromPort: number;
  toPort: number;
  /** An IPv4 or IPv6 CIDR. */
  cidr: string;
  description?: string;
}
export interface FakeGroup {
  tags?: Record<string, string>;
  /** Ingress rules by rule id (sgr-...). */
  rules?: Record<string, FakeRule>;
}
export interface FakeEc2 {
  endpoint: string;
  calls: { action: string; params: Record<string, string> }[];
  violations: string[];
  instances: Record<string, FakeInstance>;
  groups: Record<string, FakeGroup>;
  client(): EC2Client;
  failNext(action: string, code: string, message: string): void;
  close(): Promise<void>;
}
type Action =
  | "DescribeInstances"
  | "StartInstances"
  | "CreateTags"
  | "DescribeSecurityGroups"
  | "DescribeSecurityGroupRules"
  | "AuthorizeSecurityGroupIngress"
  | "RevokeSecurityGroupIngress";

const FAKE_CREDENTIALS = { accessKeyId: "AKIDFAKEEC2", secretAccessKey: "fake-secret" };
const NS = "http://ec2.amazonaws.com/doc/2016-11-15/";
const PARAMS: Record<Action, RegExp> = {
  DescribeInstances: /^(InstanceId\.\d+|Filter\.\d+\.(Name|Value\.\d+))$/,
  StartInstances: /^InstanceId\.\d+$/,
  CreateTags: /^(ResourceId\.\d+|Tag\.\d+\.(Key|Value))$/,
  DescribeSecurityGroups: /^Filter\.\d+\.(Name|Value\.\d+)$/,
  DescribeSecurityGroupRules: /^Filter\.\d+\.(Name|Value\.\d+)$/,
  AuthorizeSecurityGroupIngress:
    /^(GroupId|IpPermissions\.\d+\.(IpProtocol|FromPort|ToPort|IpRanges\.\d+\.(CidrIp|Description)|Ipv6Ranges\.\d+\.(CidrIpv6|Description)))$/,
  RevokeSecurityGroupIngress: /^(GroupId|SecurityGroupRuleId\.\d+)$/,
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
  o: {
    instances?: Record<string, FakeInstance>;
    groups?: Record<string, FakeGroup>;
    allow?: Action[];
  } = {},
): Promise<FakeEc2> {
  const calls: FakeEc2["calls"] = [];
  const violations: string[] = [];
  const instances = o.instances ?? {};
  const groups = o.groups ?? {};
  let ruleSerial = 0;
  const group = (id: string) => groups[id] ?? fail("InvalidGroup.NotFound", `The security group '${id}' does not exist`);
  /** Filter.N.Name -> its values (Filter.N.Value.M). */
  const filters = (p: Record<string, string>) => {
    const out: Record<string, string[]> = {};
    for (let n = 1; p[`Filter.${n}.Name`] !== undefined; n++) out[p[`Filter.${n}.Name`]] = list(p, `Filter\\.${n}\\.Value`);
    return out;
  };
  const ruleXml = (groupId: string, id: string, r: FakeRule) =>
    `<item><securityGroupRuleId>${id}</securityGroupRuleId><groupId>${groupId}</groupId><groupOwnerId>123456789012</groupOwnerId><isEgress>false</isEgress><ipProtocol>${esc(r.protocol)}</ipProtocol><fromPort>${r.fromPort}</fromPort><toPort>${r.toPort}</toPort>${r.cidr.includes(":") ? `<cidrIpv6>${esc(r.cidr)}</cidrIpv6>` : `<cidrIpv4>${esc(r.cidr)}</cidrIpv4>`}${r.description === undefined ? "" : `<description>${esc(r.description)}</description>`}</item>`;
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
      const filters: [string, string[]][] = [];
      for (let n = 1; p[`Filter.${n}.Name`] !== undefined; n++) filters.push([p[`Filter.${n}.Name`], list(p, `Filter.${n}.Value`)]);
      const matches = (id: string, i: FakeInstance) =>
        filters.every(([name, values]) => {
          if (name === "instance-id") return values.includes(id);
          if (name === "instance-state-name") return values.includes(i.state);
          if (name.startsWith("tag:")) return values.includes(i.tags?.[name.slice(4)] ?? "\u0000");
          return fail("InvalidParameterValue", `The filter '${name}' is invalid`);
        });
      const items = (ids.length ? ids : Object.keys(instances))
        .filter((id) => matches(id, instances[id]))
        .map((id) => {
          const i = instances[id];
          const times = `${i.launchTime ? `<launchTime>${esc(i.launchTime)}</launchTime>` : ""}<reason>${esc(i.reason ?? "")}</reason>`;
          const tags = Object.entries(i.tags ?? {}).map(([k, v]) => `<item><key>${esc(k)}</key><value>${esc(v)}</value></item>`);
          return `<item><reservationId>r-0${id.slice(2)}</reservationId><ownerId>123456789012</ownerId><groupSet/><instancesSet><item><instanceId>${id}</instanceId><instanceState>${state(i.state)}</instanceState><instanceType>${i.type ?? "g5.xlarge"}</instanceType>${times}<tagSet>${tags.join("")}</tagSet></item></instancesSet></item>`;
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
    if (action === "DescribeSecurityGroups") {
      const f = filters(p);
      for (const name of Object.keys(f)) if (!name.startsWith("tag:")) fail("InvalidParameterValue", `The filter '${name}' is invalid`);
      const items = Object.entries(groups)
        .filter(([, g]) => Object.entries(f).every(([name, values]) => values.includes(g.tags?.[name.slice(4)] ?? "\u0000")))
        .map(([id, g]) => {
          const tags = Object.entries(g.tags ?? {}).map(([k, v]) => `<item><key>${esc(k)}</key><value>${esc(v)}</value></item>`);
          return `<item><ownerId>123456789012</ownerId><groupId>${id}</groupId><groupName>${id}-name</groupName><groupDescription>fake</groupDescription><vpcId>vpc-0fake</vpcId><ipPermissions/><ipPermissionsEgress/><tagSet>${tags.join("")}</tagSet></item>`;
        });
      return `<securityGroupInfo>${items.join("")}</securityGroupInfo>`;
    }
    if (action === "DescribeSecurityGroupRules") {
      const f = filters(p);
      for (const name of Object.keys(f)) if (name !== "group-id") fail("InvalidParameterValue", `The filter '${name}' is invalid`);
      const ids = f["group-id"] ?? Object.keys(groups);
      const items = ids.flatMap((gid) => Object.entries(groups[gid]?.rules ?? {}).map(([id, r]) => ruleXml(gid, id, r)));
      return `<securityGroupRuleSet>${items.join("")}</securityGroupRuleSet>`;
    }
    if (action === "AuthorizeSecurityGroupIngress") {
      const g = group(p.GroupId ?? fail("MissingParameter", "The request must contain the parameter groupId"));
      const added: string[] = [];
      for (let n = 1; p[`IpPermissions.${n}.IpProtocol`] !== undefined; n++) {
        const base = {
          protocol: p[`IpPermissions.${n}.IpProtocol`],
          fromPort: Number(p[`IpPermissions.${n}.FromPort`]),
          toPort: Number(p[`IpPermissions.${n}.ToPort`]),
        };
        const ranges: FakeRule[] = [];
        for (let m = 1; p[`IpPermissions.${n}.IpRanges.${m}.CidrIp`] !== undefined; m++)
          ranges.push({
            ...base,
            cidr: p[`IpPermissions.${n}.IpRanges.${m}.CidrIp`],
            description: p[`IpPermissions.${n}.IpRanges.${m}.Description`],
          });
        for (let m = 1; p[`IpPermissions.${n}.Ipv6Ranges.${m}.CidrIpv6`] !== undefined; m++)
          ranges.push({
            ...base,
            cidr: p[`IpPermissions.${n}.Ipv6Ranges.${m}.CidrIpv6`],
            description: p[`IpPermissions.${n}.Ipv6Ranges.${m}.Description`],
          });
        for (const r of ranges) {
          const same = Object.values(g.rules ?? {}).some(
            (x) => x.protocol === r.protocol && x.fromPort === r.fromPort && x.toPort === r.toPort && x.cidr === r.cidr,
          );
          if (same)
            fail(
              "InvalidPermission.Duplicate",
              `the specified rule "peer: ${r.cidr}, TCP, from port: ${r.fromPort}, to port: ${r.toPort}, ALLOW" already exists`,
            );
          const id = `sgr-0${(++ruleSerial).toString(16).padStart(16, "0")}`;
          g.rules = { ...g.rules, [id]: r };
          added.push(ruleXml(p.GroupId, id, r));
        }
      }
      return `<return>true</return><securityGroupRuleSet>${added.join("")}</securityGroupRuleSet>`;
    }
    // RevokeSecurityGroupIngress
    const g = group(p.GroupId ?? fail("MissingParameter", "The request must contain the parameter groupId"));
    const ids = list(p, "SecurityGroupRuleId");
    for (const id of ids)
      if (!g.rules?.[id]) fail("InvalidSecurityGroupRuleId.NotFound", `The security group rule ID '${id}' does not exist`);
    for (const id of ids) delete g.rules![id];
    return `<return>true</return>`;
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
    groups,
    client: () => new EC2Client({ endpoint, region: "eu-central-1", maxAttempts: 1, credentials: FAKE_CREDENTIALS }),
    failNext: (action, code, message) => failures.push({ action, code, message }),
    close: () => new Promise<void>((resolve, reject) => server.close((e) => (e ? reject(e) : resolve()))),
  };
}
