/**
 * A content hash of a flake directory on the operator's machine: the trigger that ships (and so
 * rebuilds) a local flake only when its files changed. Build outputs, VCS data, node_modules and
 * macOS's .DS_Store files (Finder writes one into every folder it shows) are not part of it.
 */
import * as crypto from "crypto";
import * as fs from "fs";
import * as path from "path";

const SKIP = new Set([".git", ".direnv", "node_modules", ".DS_Store"]);

export function hashDirectory(dir: string): string {
  const hash = crypto.createHash("sha256");
  const walk = (rel: string) => {
    const entries = fs.readdirSync(path.join(dir, rel), { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1));
    for (const e of entries) {
      if (SKIP.has(e.name) || /^result(-.*)?$/.test(e.name)) continue;
      const relPath = path.posix.join(rel, e.name);
      const full = path.join(dir, relPath);
      if (e.isDirectory()) {
        walk(relPath);
      } else if (e.isSymbolicLink()) {
        hash.update(`link\0${relPath}\0${fs.readlinkSync(full)}\0`);
      } else if (e.isFile()) {
        const exec = fs.statSync(full).mode & 0o111 ? "x" : "-";
        hash.update(`file\0${relPath}\0${exec}\0`);
        hash.update(fs.readFileSync(full));
        hash.update("\0");
      }
    }
  };
  walk("");
  return hash.digest("hex");
}
