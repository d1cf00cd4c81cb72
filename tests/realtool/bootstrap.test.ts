/**
 * The files a fresh machine boots with, and every script in scripts/, checked by the real tools:
 * `cloud-init schema` for the rendered user-data, shellcheck for the scripts.
 */
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { parse, stringify } from "yaml";
import { ScriptName } from "../../lib/shell";
import { machineUserData } from "../../lib/userdata";
import { ok, requireTools, run, SCRIPTS, show } from "./support";

jest.setTimeout(60_000);

let dir: string;
let hostKey: { privateKey: string; publicKey: string };

beforeAll(async () => {
  requireTools(["cloud-init", "shellcheck", "ssh-keygen", "bash", "python3"], false);
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "nrt-boot-"));
  const key = path.join(dir, "ssh_host_ed25519_key");
  ok(await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "neko-host", "-f", key]), "ssh-keygen");
  hostKey = { privateKey: fs.readFileSync(key, "utf8"), publicKey: fs.readFileSync(`${key}.pub`, "utf8").trim() };
});

afterAll(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

// One document for every machine: only the pinned host key (the setup steps do the rest over SSH).
const documents: [string, () => string][] = [["builder and host", () => machineUserData(hostKey)]];

function writeDoc(name: string, text: string): string {
  const file = path.join(dir, `${name.replace(/\W+/g, "-")}.yaml`);
  fs.writeFileSync(file, text);
  return file;
}

const schema = (file: string) => run("cloud-init", ["schema", "--config-file", file], { timeoutMs: 60_000 });

describe("cloud-init user-data", () => {
  test.each(documents)("%s: cloud-init schema accepts it", async (name, render) => {
    const text = render();
    expect(text.startsWith("#cloud-config\n")).toBe(true);
    const r = await schema(writeDoc(name, text));
    expect(show(r)).toMatch(/^exit 0 /);
    expect(r.stdout).toContain("Valid cloud-config");
  });

  test("the check can fail: the same document with a wrongly typed key is rejected", async () => {
    const doc = parse(machineUserData(hostKey));
    doc.ssh_genkeytypes = "ed25519";
    const r = await schema(writeDoc("invalid-types", `#cloud-config\n${stringify(doc)}`));
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("ssh_genkeytypes: 'ed25519' is not of type 'array'");
  });

  // cloud-init reads YAML 1.1 with PyYAML; the `yaml` package writes YAML 1.2. Where the two
  // disagree ("0755", yes/no, on/off) the machine would get something else than we rendered.
  test.each(documents)("%s: cloud-init's YAML parser reads exactly what was rendered", async (name, render) => {
    const text = render();
    const file = writeDoc(`pyyaml-${name}`, text);
    const py = "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))";
    const r = await run("/usr/bin/python3", ["-c", py, file]);
    expect(JSON.parse(ok(r, "PyYAML safe_load"))).toEqual(parse(text));
  });
});

describe("shellcheck", () => {
  const scripts = fs
    .readdirSync(SCRIPTS)
    .filter((f) => f.endsWith(".sh"))
    .sort();

  test("scripts/ holds every script a Command runs", () => {
    const commands: ScriptName[] = ["ship-flake.sh", "nix-build.sh", "push-image.sh", "docker-load.sh"];
    expect(scripts).toEqual(expect.arrayContaining([...commands, "builder-bootstrap.sh", "host-bootstrap.sh"]));
  });

  test.each(scripts)("%s passes shellcheck and runs with set -euo pipefail", async (script) => {
    const text = fs.readFileSync(path.join(SCRIPTS, script), "utf8");
    expect(text.startsWith("#!/usr/bin/env bash\n")).toBe(true);
    expect(text).toMatch(/^set -euo pipefail$/m);
    const r = await run("shellcheck", [path.join(SCRIPTS, script)]);
    expect(show(r)).toMatch(/^exit 0 /);
  });

  test("the check can fail: shellcheck flags an unquoted expansion", async () => {
    const bad = path.join(dir, "bad.sh");
    fs.writeFileSync(bad, "#!/usr/bin/env bash\nset -euo pipefail\nrm -rf $1/tmp\n");
    const r = await run("shellcheck", [bad]);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain("SC2086");
  });
});
