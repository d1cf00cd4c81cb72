/**
 * The order in which a persistent spot request and its instance go, under the real Pulumi engine:
 * components/ec2Machine.ts's spotRequestGuard depends on the instance, so the engine deletes it first,
 * and its delete cancels the request (scripts/spot-cancel.js, run by `node -e` as the guard runs it,
 * with the real @aws-sdk/client-ec2) before the instance is deleted; on replacement the old request
 * is cancelled before the old instance goes. Stand-ins: a Command for aws.ec2.Instance (AWS
 * resources cannot be registered here) and tests/support/fakeEc2.ts for EC2's API on 127.0.0.1.
 */
import * as fs from "fs";
import * as path from "path";
import { FakeEc2, startFakeEc2 } from "../support/fakeEc2";
import { must, Project, ROOT } from "./support";

jest.setTimeout(300_000);

const p = new Project("order");
let ec2: FakeEc2;
const log = path.join(p.work, "events.log");

/** What happened, in order: "cancel sir-N" (from the fake EC2) and "instance sir-N deleted". */
function events(): string[] {
  return fs.existsSync(log) ? fs.readFileSync(log, "utf8").trim().split("\n").filter(Boolean) : [];
}

beforeAll(async () => {
  // the test program replaces the project's index.ts and Pulumi.yaml
  for (const f of ["index.ts", "Pulumi.yaml"]) fs.copyFileSync(path.join(ROOT, "tests/engine/fixtures/spot-guard", f), path.join(p.dir, f));
  ec2 = await startFakeEc2({ spotRequests: { "sir-1": "open", "sir-2": "open" }, allow: ["CancelSpotInstanceRequests"] });
  const record = ec2.calls.push.bind(ec2.calls);
  ec2.calls.push = (...calls) => {
    for (const c of calls) fs.appendFileSync(log, `cancel ${c.params["SpotInstanceRequestId.1"]}\n`);
    return record(...calls);
  };
  Object.assign(p.env, {
    AWS_ENDPOINT_URL_EC2: ec2.endpoint,
    AWS_ACCESS_KEY_ID: "AKIDFAKEEC2",
    AWS_SECRET_ACCESS_KEY: "fake-secret",
    AWS_EC2_METADATA_DISABLED: "true",
    AWS_MAX_ATTEMPTS: "1",
  });
  must(p.pulumi(["stack", "init"]), "stack init");
  p.configure({ "spot-guard-order:log": log, "spot-guard-order:generation": "1" });
});

afterAll(async () => {
  await ec2?.close();
  p.remove();
});

// pulumiAsync: the fake EC2 answers from this process while pulumi runs.
test("creating the guard cancels nothing", async () => {
  must(await p.pulumiAsync(["up", "--yes", "--skip-preview"]), "up");
  expect(events()).toEqual([]);
  expect(ec2.violations).toEqual([]);
});

test("a replaced instance: the old request is cancelled before the old instance is deleted", async () => {
  p.configure({ "spot-guard-order:log": log, "spot-guard-order:generation": "2" });
  must(await p.pulumiAsync(["up", "--yes", "--skip-preview"]), "up with a new instance");
  expect(events()).toEqual(["cancel sir-1", "instance sir-1 deleted"]);
  expect(ec2.spotRequests).toEqual({ "sir-1": "cancelled", "sir-2": "open" });
});

test("destroy: the request is cancelled first, then the instance goes; nothing is left open", async () => {
  must(await p.pulumiAsync(["destroy", "--yes", "--skip-preview"]), "destroy");
  expect(events()).toEqual(["cancel sir-1", "instance sir-1 deleted", "cancel sir-2", "instance sir-2 deleted"]);
  expect(ec2.spotRequests).toEqual({ "sir-1": "cancelled", "sir-2": "cancelled" });
  expect(ec2.violations).toEqual([]);
});
