// Three suites, one runner: `unit` (pure logic and Pulumi mocks, seconds), `realtool` (the scripts
// against real Nix, sshd, registry, skopeo and dockerd) and `engine` (the local stack through the
// real Pulumi CLI). Type checking is done once by `tsc --noEmit`, so ts-jest only transpiles.
const transform = { "^.+\\.ts$": ["ts-jest", { diagnostics: false }] };
const base = { testEnvironment: "node", transform, moduleFileExtensions: ["ts", "js", "json"] };

module.exports = {
  projects: [
    { ...base, displayName: "unit", testMatch: ["<rootDir>/tests/unit/**/*.test.ts", "<rootDir>/tests/mocks/**/*.test.ts"] },
    { ...base, displayName: "realtool", testMatch: ["<rootDir>/tests/realtool/**/*.test.ts"] },
    { ...base, displayName: "engine", testMatch: ["<rootDir>/tests/engine/**/*.test.ts"] },
  ],
};
