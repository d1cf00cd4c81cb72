/** Reads the stack's config from the Pulumi runtime into validated settings (see settings.ts). */
import * as fs from "fs";
import * as pulumi from "@pulumi/pulumi";
import { parseSettings, Settings, SettingsError } from "./settings";

// Not in the SDK's published typings, but how the SDK itself tells which config keys are secrets.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { isConfigSecret } = require("@pulumi/pulumi/runtime/config") as { isConfigSecret: (key: string) => boolean };

/** Validated settings, or a RunError listing every problem: then no resource is registered at all. */
export function loadSettings(projectDir = process.cwd()): Settings {
  const config = pulumi.runtime.allConfig();
  try {
    return parseSettings({
      config,
      secretKeys: Object.keys(config).filter((k) => isConfigSecret(k)),
      projectDir,
      fileExists: fs.existsSync,
    });
  } catch (err) {
    if (err instanceof SettingsError) throw new pulumi.RunError(err.message);
    throw err;
  }
}
