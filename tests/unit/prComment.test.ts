/**
 * tools/pr-comment.js: the pull request comment, rendered from previews recorded with the real CLI
 * on the rehearsal's stack (tests/fixtures/preview/README.md): what is built, pushed, rolled out
 * where, which machines a deploy wakes, in one screen, and no secret.
 */
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { render } from "../../tools/pr-comment";

const DIR = path.join(__dirname, "..", "fixtures", "preview");
const TOOL = path.join(__dirname, "..", "..", "tools", "pr-comment.js");
const read = (f: string) => fs.readFileSync(path.join(DIR, f), "utf8");
const fixture = (name: string) => ({ preview: JSON.parse(read(`${name}.json`)), eventLog: read(`${name}.events.jsonl`) });
/** The comment without its collapsed details (the CLI's PATH warning from the recording). */
const screen = (comment: string) => comment.split("\n<details>")[0];

test("an image change: the flake and attr built, the repository pushed to, neko rolled out on the host with its setting old => new, builder and host woken", () => {
  const comment = render({ stack: "rehearsal", ...fixture("image-change") });
  expect(screen(comment).split("\n")).toEqual([
    "<!-- neko-infra:pr-comment stack=rehearsal -->",
    "### `pulumi preview` of rehearsal: 3 replace, 13 same, 3 update",
    "",
    "**Built:** ",
    expect.stringMatching(
      /^- `path:\/nix\/store\/[a-z0-9]{32}-source#image-slow` \(flake `\/tmp\/neko-infra-engine-\w+\/flake-\w+`, attr `image-slow`\) by `image-build` \(update\)$/,
    ),
    "**Pushed:** ",
    "- the image pushed to `10.233.144.1:5000/neko` by `registry-push` (update)",
    "**Rolled out:** ",
    "- neko (the image just pushed; its digest is known after the push) on the host (https://10.233.144.2/) by `host-neko` (update):",
    "  - NEKO_DESKTOP_SCREEN: `1920x1080@30` => `1280x720@30`",
    "**A deploy wakes:** ",
    "- builder, for `image-build`, `registry-push`",
    "- host, for `host-neko`",
    "**Other changes:** none",
    "",
  ]);
  expect(comment.split("\n").length).toBeLessThan(40); // one screen
});

test("without the event log: the digest alone still says what runs where; a rollout whose command is unknown lists no setting", () => {
  const { preview } = fixture("image-change");
  const comment = render({ stack: "rehearsal", preview });
  expect(comment).toContain(
    "- neko (the image just pushed; its digest is known after the push) on the host (https://10.233.144.2/) by `host-neko` (update)\n",
  );
  expect(comment).not.toContain("NEKO_DESKTOP_SCREEN");
  // a screen change alone: the old and new command lines are known, their spec lines compared
  const only = render({ stack: "rehearsal", preview: fixture("screen-change").preview });
  expect(screen(only)).toContain(
    [
      "**Built:** nothing (the flake and attr are unchanged)",
      "**Pushed:** nothing",
      "**Rolled out:** ",
      "- neko (the same image) on the host (https://10.233.144.2/) by `host-neko` (update):",
      "  - NEKO_DESKTOP_SCREEN: `1920x1080@30` => `1280x720@30`",
      "**A deploy wakes:** ",
      "- host, for `host-neko`",
      "**Other changes:** none",
    ].join("\n"),
  );
});

test("the fixtures hold no secret: keys, passwords, tokens and the wake steps' environment are [secret] as the CLI wrote them", () => {
  for (const name of ["image-change", "screen-change"]) {
    const text = read(`${name}.json`) + read(`${name}.events.jsonl`);
    expect(text).not.toMatch(/PRIVATE KEY|rehearsal-(user|admin|api-token|turn)-|NEKO_MEMBER_MULTIUSER_\w+_PASSWORD=|user=neko:/);
    const { preview } = fixture(name);
    for (const key of ["neko-infra:builder", "neko-infra:neko", "neko-infra:registry", "neko-infra:host"]) {
      const section = JSON.parse(preview.config[key]);
      for (const secret of ["privateKey", "password", "userPassword", "adminPassword", "apiToken", "turnPassword"])
        if (secret in section) expect({ key, secret, value: section[secret] }).toEqual({ key, secret, value: "[secret]" });
    }
    for (const step of preview.steps.filter((s: any) => /Command::/.test(s.urn))) {
      const inputs = step.newState.inputs;
      if (inputs.connection !== undefined) expect(inputs.connection).toBe("[secret]");
      if (step.urn.endsWith("-wake")) expect(inputs.environment).toBe("[secret]");
    }
    const comment = render({ stack: "rehearsal", ...fixture(name) });
    expect(comment).not.toContain("[secret]");
  }
});

test("a failed preview: the exit status, policy violations from the event log and error diagnostics, every line capped", () => {
  const { preview, eventLog } = fixture("screen-change");
  const violation = {
    sequence: 9,
    timestamp: 1,
    policyEvent: {
      resourceUrn: "urn:pulumi:dev::neko-infra::neko-infra:host:NekoHost$aws:ec2/securityGroup:SecurityGroup::host-sg",
      message: "SSH is open to the world (0.0.0.0/0)\nset allowSshFromAnywhere in policy/config/dev.json, or narrow sshCidrs",
      color: "never",
      policyName: "no-world-ssh",
      policyPackName: "neko-infra",
      policyPackVersion: "0.2.0",
      policyPackVersionTag: "0.2.0",
      enforcementLevel: "mandatory",
    },
  };
  const failed = {
    ...preview,
    diagnostics: [
      {
        urn: "urn:pulumi:dev::neko-infra::pulumi:pulumi:Stack::neko-infra-dev",
        message: `error: preview failed: ${"x".repeat(100_000)}\n`,
        severity: "error",
      },
      { message: "an info line", severity: "info" },
    ],
  };
  const comment = render({
    stack: "dev",
    preview: failed,
    eventLog: `${eventLog}${JSON.stringify(violation)}\n${JSON.stringify(violation)}\n`,
    status: 255,
  });
  expect(comment.split("\n")[1]).toBe("### `pulumi preview` of dev: **failed** (exit 255)");
  // once, though logged twice; its first line
  expect(comment).toContain(
    "**Policies:** \n- [mandatory] no-world-ssh (aws:ec2/securityGroup:SecurityGroup: host-sg): SSH is open to the world (0.0.0.0/0)\n",
  );
  expect(comment).toMatch(/^error: neko-infra-dev: preview failed: x+…$/m);
  expect(comment).not.toContain("an info line");
  for (const line of comment.split("\n")) expect(line.length).toBeLessThanOrEqual(220);
});

test("the command line: renders a file pair; a preview that left no JSON still gets a comment; usage", () => {
  const ok = spawnSync(
    process.execPath,
    [TOOL, "rehearsal", path.join(DIR, "image-change.json"), path.join(DIR, "image-change.events.jsonl")],
    {
      encoding: "utf8",
    },
  );
  expect(ok.status).toBe(0);
  expect(ok.stdout).toBe(render({ stack: "rehearsal", ...fixture("image-change") }));
  const empty = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "pr-comment-")), "preview.json");
  fs.writeFileSync(empty, "");
  const none = spawnSync(process.execPath, [TOOL, "dev", empty, "--status", "1"], { encoding: "utf8" });
  expect(none.status).toBe(0);
  expect(none.stdout.split("\n").slice(0, 2)).toEqual([
    "<!-- neko-infra:pr-comment stack=dev -->",
    "### `pulumi preview` of dev: **failed** (exit 1)",
  ]);
  fs.writeFileSync(empty, "{ not json");
  const bad = spawnSync(process.execPath, [TOOL, "dev", empty], { encoding: "utf8" });
  expect(bad.stderr).toMatch(/is not the JSON of `pulumi preview --json`/);
  expect(spawnSync(process.execPath, [TOOL], { encoding: "utf8" }).status).toBe(2);
});
