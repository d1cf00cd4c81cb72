import { specComment } from "../../lib/spec";

describe("the readable specification under a command line", () => {
  test("sorted NAME=value comment lines, a line each for a value of several lines, secrets by name only", () => {
    expect(
      specComment({
        title: "neko",
        values: { NEKO_DESKTOP_SCREEN: "1920x1080@30", NEKO_PUBLISH: "127.0.0.1:8080:8080/tcp\n52000-52100:52000-52100/udp" },
        secretNames: ["NEKO_SESSION_API_TOKEN"],
      }),
    ).toBe(
      [
        "",
        "# neko (not secret; secrets travel on standard input):",
        "#   NEKO_DESKTOP_SCREEN=1920x1080@30",
        "#   NEKO_PUBLISH: 127.0.0.1:8080:8080/tcp",
        "#   NEKO_PUBLISH: 52000-52100:52000-52100/udp",
        "#   NEKO_SESSION_API_TOKEN (secret)",
      ].join("\n"),
    );
  });

  test("nothing to show: nothing appended; no value can end its comment and run something", () => {
    expect(specComment(undefined)).toBe("");
    const shown = specComment({ title: "x\nrm -rf /", values: { A: "b\r\nc" } });
    for (const l of shown.split("\n").slice(1)) expect(l.startsWith("#")).toBe(true);
  });
});
