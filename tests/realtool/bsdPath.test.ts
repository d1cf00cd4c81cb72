/**
 * tests/harness/bsd-path.sh: a PATH shaped like a Mac's for the scripts that run on an operator's
 * machine (bash 3.2.48, no GNU-only tools, bsdtar as tar, perl's shasum). What it cannot imitate
 * (GNU options of tools macOS also has) is in tests/harness/README.md.
 */
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { HARNESS, ok, run } from "./support";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "nrt-bsd-"));
let bin: string;

/** A command line under that PATH alone, through its bash (3.2.48). */
const under = (cmd: string) => run("bash", ["-c", cmd], { env: { PATH: bin }, timeoutMs: 30_000 });

beforeAll(async () => {
  bin = ok(await run(path.join(HARNESS, "bsd-path.sh"), [dir], { timeoutMs: 30_000 }), "tests/harness/bsd-path.sh").trim();
});

afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

test("it prints DIR/bin, whose bash is 3.2.48", async () => {
  expect(bin).toBe(path.join(dir, "bin"));
  expect(ok(await under("bash --version"), "bash --version")).toMatch(/^GNU bash, version 3\.2\.48\(/);
  expect(ok(await under('echo "$BASH_VERSION"'), "BASH_VERSION").trim()).toMatch(/^3\.2\.48/);
});

test("timeout, flock and sha256sum are not on it", async () => {
  const r = await under("command -v timeout flock sha256sum sha1sum md5sum setsid nproc stdbuf tac");
  expect(r.stdout).toBe("");
  expect(r.code).not.toBe(0);
});

test("tar is bsdtar, and shasum -a 256 works", async () => {
  expect(ok(await under("tar --version"), "tar --version")).toMatch(/^bsdtar /);
  const sum = ok(await under("printf abc | shasum -a 256"), "shasum -a 256");
  expect(sum.trim()).toBe("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  -");
});
