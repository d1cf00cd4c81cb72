/**
 * What credential-looking text is, for the policies that keep credentials off command lines and
 * out of plain-text configuration. Each finding describes what was found without quoting the
 * credential itself: policy messages are shown in previews and CI comments.
 *
 * Shapes (by shape, not by value: a credential in some other form is not recognized):
 * - a private key block: `-----BEGIN ... PRIVATE KEY-----` (PEM, PKCS#8, OpenSSH);
 * - an assignment `NAME=value` whose name ends in PASSWORD, PASSWD, PASSPHRASE, TOKEN or
 *   PRIVATE_KEY, or contains SECRET (any case; `-` and `_` ignored: `--password=x`,
 *   `static-auth-secret=x`, `privateKey=x`); an empty value, or one that only expands a variable
 *   or a command (`$X`, `${X:-}`, `"$X"`, `$(...)`), holds no credential and does not count;
 * - coturn's `user=NAME:PASSWORD` line;
 * - 40 characters of base64 alphabet with upper case, lower case and digits, standing alone: the
 *   shape of an AWS secret access key (a git revision, lower-case hex, is not).
 */

const PRIVATE_KEY_BLOCK = /-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY( BLOCK)?-----/g;
const ASSIGNMENT = /(?<![A-Za-z0-9_])([A-Za-z_][A-Za-z0-9_-]*)=([^=\s]\S*)?/g;
const TURN_USER = /^[ \t]*user=(?!["']?\$)[^:\s]+:\S+/m;
const AWS_SECRET_SHAPE = /(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])/g;

/** Is this a name credentials are given under? */
export function isCredentialName(name: string): boolean {
  const n = name.toLowerCase().replace(/[-_]/g, "");
  return /(password|passwd|passphrase|token|privatekey)$/.test(n) || n.includes("secret");
}

/**
 * A value that holds no literal: empty (`""`, `()`), or one that only expands a shell variable or
 * command (`$X`, `${X:-}`, `"$X"`, `$(aws ecr get-login-password)`).
 */
const holdsNoLiteral = (value: string) => {
  const core = value.replace(/^[("']+/, "");
  return core === "" || /^[)"'$;]/.test(core);
};

/** Descriptions of the credential-looking things in `text`, each once; none: nothing found. */
export function credentialsIn(text: string): string[] {
  const found = new Set<string>();
  for (const m of text.matchAll(PRIVATE_KEY_BLOCK)) found.add(`a private key block (BEGIN ${m[1]}PRIVATE KEY)`);
  for (const m of text.matchAll(ASSIGNMENT)) {
    const [, name, value] = m;
    if (value !== undefined && !holdsNoLiteral(value) && isCredentialName(name)) found.add(`a credential assignment (${name}=…)`);
  }
  if (TURN_USER.test(text)) found.add("a TURN user=NAME:PASSWORD line");
  for (const m of text.matchAll(AWS_SECRET_SHAPE)) {
    const s = m[0];
    if (/[A-Z]/.test(s) && /[a-z]/.test(s) && /[0-9]/.test(s)) found.add("a 40-character string shaped like an AWS secret access key");
  }
  return [...found];
}

/** Every string below `value`, with its path (`environment.SSH_PRIVATE_KEY`, `connection.proxy.password`) and its key. */
export function stringLeaves(value: unknown, path: string, key = path): { path: string; key: string; text: string }[] {
  if (typeof value === "string") return [{ path, key, text: value }];
  if (Array.isArray(value)) return value.flatMap((v, i) => stringLeaves(v, `${path}[${i}]`, key));
  if (value !== null && typeof value === "object") {
    return Object.entries(value).flatMap(([k, v]) => stringLeaves(v, `${path}.${k}`, k));
  }
  return [];
}

/**
 * The credential-looking things a string input holds: in its text, and (for a value under a key,
 * as in `environment` or `connection`) the value itself when its key is a credential name.
 */
export function credentialsAt(leaf: { path: string; key: string; text: string }, keyed: boolean): string[] {
  const found = credentialsIn(leaf.text);
  if (keyed && leaf.text !== "" && !holdsNoLiteral(leaf.text) && isCredentialName(leaf.key)) {
    found.unshift(`a credential under the name ${leaf.key}`);
  }
  return found;
}
