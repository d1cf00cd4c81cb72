/**
 * Command lines for the scripts in `scripts/`. Every Command runs a script the same way, locally or
 * over SSH: `bash -s -- 'arg' ...` with the script on standard input, preceded by `export NAME=...`
 * lines for its environment. Secrets therefore live only on standard input, never in a command
 * line: a preview shows the command (what is built, where it goes) and hides only the input.
 *
 * Remote commands are wrapped in `timeout`: the command provider does not stop a remote command
 * when its own timeout passes, so the machine bounds it. The real-tool tests build their command
 * lines with these same functions.
 */
import * as fs from "fs";
import * as path from "path";

export const SCRIPTS_DIR = path.join(__dirname, "..", "scripts");

export type ScriptName =
  | "ship-flake.sh"
  | "nix-build.sh"
  | "push-image.sh"
  | "docker-load.sh"
  | "neko-rollout.sh"
  | "tls-front.sh"
  | "turn-relay.sh"
  | "builder-bootstrap.sh"
  | "host-bootstrap.sh"
  | "builder-idle-stop.sh"
  | "host-idle-stop.sh"
  | "neko-restore.sh"
  | "host-ready.sh"
  | "imds-guard.sh"
  | "ecr-keep.sh";

type Library = "setup-lib.sh" | "neko-check-lib.sh" | "neko-lib.sh";

/** Shared shell a script needs before it, on the same standard input (after the step preamble). */
const LIBRARIES: Partial<Record<ScriptName, Library[]>> = {
  "builder-bootstrap.sh": ["setup-lib.sh"],
  "host-bootstrap.sh": ["setup-lib.sh"],
  // What it shares with the restore (locks, masking, /health), and the candidate's checks beyond
  // /health: its capture pipeline, a screenshot of its desktop.
  "neko-rollout.sh": ["neko-lib.sh", "neko-check-lib.sh"],
};

export interface ScriptCommand {
  /** What the shell runs: no secret in it. */
  command: string;
  /** `export` lines for the environment (may hold secrets), then the script. */
  stdin: string;
}

export interface ScriptRun {
  script: ScriptName;
  /** Plain arguments, shown in previews. */
  args: string[];
  /** Environment, passed on standard input (secrets belong here). */
  env?: Record<string, string>;
  /** Seconds the machine lets the script run before it stops it (remote commands). */
  budgetSeconds?: number;
  /** Run as root: through `sudo -n` (a login user such as ec2-user with passwordless sudo). */
  asRoot?: boolean;
}

/** Single-quote a word for POSIX shells. */
export function shellQuote(word: string): string {
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(word)) return word;
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

export function readScript(name: ScriptName | Library | "step-preamble.sh" | "wake.js"): string {
  return fs.readFileSync(path.join(SCRIPTS_DIR, name), "utf8");
}

/** neko-restore.sh as the setup step installs it (one file systemd runs): its library in front. */
export function restoreScript(): string {
  return readScript("neko-lib.sh") + readScript("neko-restore.sh");
}

/** `export NAME='value'` lines; names are checked so nothing but an assignment can be written. */
export function envPreamble(env: Record<string, string>): string {
  return Object.entries(env)
    .map(([k, v]) => {
      if (!/^[A-Z_][A-Z0-9_]*$/.test(k)) throw new Error(`envPreamble: bad environment name ${k}`);
      return `export ${k}=${shellQuote(v)}\n`;
    })
    .join("");
}

/** The command line only (it holds no secret); `remote` adds the machine-side time bound. */
export function commandLine(run: Pick<ScriptRun, "args" | "budgetSeconds" | "asRoot">, remote: boolean): string {
  const bound = remote && run.budgetSeconds ? ["timeout", "-k", "15s", `${run.budgetSeconds}s`] : [];
  const root = run.asRoot ? ["sudo", "-n"] : [];
  return [...bound, ...root, "bash", "-s", "--", ...run.args.map(shellQuote)].join(" ");
}

/**
 * The standard input: the environment (the script's name and budget, for its messages, then its
 * own), the shared preamble (scripts/step-preamble.sh: every printed line capped, one SIGTERM
 * message), then the script.
 */
export function scriptInput(run: Pick<ScriptRun, "script" | "env" | "budgetSeconds">): string {
  const own: Record<string, string> = { STEP_SCRIPT: run.script.replace(/\.sh$/, "") };
  if (run.budgetSeconds) own.STEP_BUDGET = `${run.budgetSeconds}s`;
  const libraries = (LIBRARIES[run.script] ?? []).map((l) => readScript(l)).join("");
  return envPreamble({ ...own, ...run.env }) + readScript("step-preamble.sh") + libraries + readScript(run.script);
}

export function scriptCommand(run: ScriptRun, remote = false): ScriptCommand {
  return { command: commandLine(run, remote), stdin: scriptInput(run) };
}
