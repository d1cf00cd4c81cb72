/**
 * Shell command lines for the scripts in `scripts/`. Every Command resource runs a script the same
 * way, locally or over SSH: `VAR='value' bash -s -- 'arg' ...` with the script on standard input.
 * The real-tool tests build their command lines with these same functions.
 */
import * as fs from "fs";
import * as path from "path";

export const SCRIPTS_DIR = path.join(__dirname, "..", "scripts");

export type ScriptName =
  | "wait-for-nix.sh"
  | "ship-flake.sh"
  | "nix-build.sh"
  | "push-image.sh"
  | "wait-for-docker.sh"
  | "pull-image.sh"
  | "wait-healthy.sh"
  | "builder-idle-stop.sh";

export interface ScriptCommand {
  /** What the shell runs. Holds credentials when `env` does: keep it a Pulumi secret then. */
  command: string;
  /** The script itself, fed on standard input. */
  stdin: string;
}

/** Single-quote a word for POSIX shells. */
export function shellQuote(word: string): string {
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(word)) return word;
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

export function readScript(name: ScriptName): string {
  return fs.readFileSync(path.join(SCRIPTS_DIR, name), "utf8");
}

/** The command line that runs `script` with `args`, `env` given inline (sshd needs no AcceptEnv). */
export function scriptCommand(script: ScriptName, args: string[], env: Record<string, string> = {}): ScriptCommand {
  for (const name of Object.keys(env)) {
    if (!/^[A-Z_][A-Z0-9_]*$/.test(name)) throw new Error(`scriptCommand: bad environment name ${name}`);
  }
  const assignments = Object.entries(env).map(([k, v]) => `${k}=${shellQuote(v)}`);
  const command = [...assignments, "bash", "-s", "--", ...args.map(shellQuote)].join(" ");
  return { command, stdin: readScript(script) };
}
