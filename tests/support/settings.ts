/**
 * Settings sections as Pulumi hands them to the program: `neko-infra:<section>` keys holding JSON
 * text. A section given as a string is passed as it is (for tests of text that is not JSON);
 * undefined ones are left out.
 */
export function configOf(sections: Record<string, unknown>): Record<string, string> {
  return Object.fromEntries(
    Object.entries(sections)
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => [`neko-infra:${k}`, typeof v === "string" ? v : JSON.stringify(v)]),
  );
}
