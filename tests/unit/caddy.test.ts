import { acmeDirName, caddyfile, certificatePaths, storageSafe, TLS_DATA_DIR, TLS_ROOT_PATH } from "../../lib/caddy";
import { readScript } from "../../lib/shell";
import { LETS_ENCRYPT } from "../../lib/settings";

describe("Caddyfile of the TLS front", () => {
  test("an IP address: short-lived profile, the site's own ACME issuer, the address as default SNI, no trust store", () => {
    expect(caddyfile({ subject: "203.0.113.10", acmeServer: LETS_ENCRYPT, privateRoot: false, nekoPort: 8080 })).toBe(
      [
        "{",
        "\tstorage file_system /data",
        "\tadmin off",
        "\tpersist_config off",
        "\tskip_install_trust",
        "\tdefault_sni 203.0.113.10",
        "}",
        "203.0.113.10 {",
        "\ttls {",
        "\t\tissuer acme {",
        "\t\t\tdir https://acme-v02.api.letsencrypt.org/directory",
        "\t\t\tprofile shortlived",
        "\t\t}",
        "\t}",
        "\treverse_proxy 127.0.0.1:8080 {",
        "\t\theader_up X-Real-IP {remote_host}",
        "\t}",
        "}",
        "",
      ].join("\n"),
    );
  });

  test("a domain: the default profile (90 days), no default SNI, the contact address on the issuer", () => {
    expect(
      caddyfile({ subject: "neko.example.com", email: "ops@example.com", acmeServer: LETS_ENCRYPT, privateRoot: false, nekoPort: 8081 }),
    ).toBe(
      [
        "{",
        "\tstorage file_system /data",
        "\tadmin off",
        "\tpersist_config off",
        "\tskip_install_trust",
        "}",
        "neko.example.com {",
        "\ttls {",
        "\t\tissuer acme {",
        "\t\t\tdir https://acme-v02.api.letsencrypt.org/directory",
        "\t\t\temail ops@example.com",
        "\t\t}",
        "\t}",
        "\treverse_proxy 127.0.0.1:8081 {",
        "\t\theader_up X-Real-IP {remote_host}",
        "\t}",
        "}",
        "",
      ].join("\n"),
    );
  });

  test("a private ACME server: its root is trusted for the ACME connection, from the mounted file", () => {
    const text = caddyfile({ subject: "10.233.7.2", acmeServer: "https://10.233.7.1:14000/dir", privateRoot: true, nekoPort: 8080 });
    expect(text).toContain(
      [
        "\t\tissuer acme {",
        "\t\t\tdir https://10.233.7.1:14000/dir",
        `\t\t\ttrusted_roots ${TLS_ROOT_PATH}`,
        "\t\t\tprofile shortlived",
        "\t\t}",
      ].join("\n"),
    );
    expect(TLS_ROOT_PATH).toBe("/etc/caddy/acme-root.pem");
  });

  test("an IPv6 address is bracketed as a site address, bare as the default SNI", () => {
    const text = caddyfile({ subject: "2001:db8::10", acmeServer: LETS_ENCRYPT, privateRoot: false, nekoPort: 8080 });
    expect(text).toContain("\tdefault_sni 2001:db8::10\n");
    expect(text).toContain("\n[2001:db8::10] {\n");
    expect(text).toContain("\t\t\tprofile shortlived\n");
  });

  test("never a global issuer alone (Caddy would use its internal CA for private addresses), never admin or trust", () => {
    const text = caddyfile({ subject: "127.0.0.1", acmeServer: "https://127.0.0.1:14000/dir", privateRoot: true, nekoPort: 8080 });
    expect(text).not.toMatch(/acme_ca|cert_issuer|local_certs|tls internal/);
    expect(text).toMatch(/^\tadmin off$/m);
    expect(text).toMatch(/^\tskip_install_trust$/m);
  });
});

describe("where Caddy stores the certificate", () => {
  // Directory names as Caddy v2.11.9 wrote them in the experiment (notes/tls-turn-experiment.md):
  // data/certificates/127.0.0.1-14000-dir/127.0.0.1/127.0.0.1.crt, .../neko.test/neko.test.crt
  test("a Pebble URL: host, port and path joined by hyphens", () => {
    expect(acmeDirName("https://127.0.0.1:14000/dir")).toBe("127.0.0.1-14000-dir");
    expect(certificatePaths("https://127.0.0.1:14000/dir", "127.0.0.1")).toEqual({
      cert: "certificates/127.0.0.1-14000-dir/127.0.0.1/127.0.0.1.crt",
      key: "certificates/127.0.0.1-14000-dir/127.0.0.1/127.0.0.1.key",
    });
    expect(certificatePaths("https://127.0.0.1:14000/dir", "neko.test").cert).toBe(
      "certificates/127.0.0.1-14000-dir/neko.test/neko.test.crt",
    );
  });

  test("Let's Encrypt", () => {
    expect(acmeDirName(LETS_ENCRYPT)).toBe("acme-v02.api.letsencrypt.org-directory");
    expect(certificatePaths(LETS_ENCRYPT, "203.0.113.10")).toEqual({
      cert: "certificates/acme-v02.api.letsencrypt.org-directory/203.0.113.10/203.0.113.10.crt",
      key: "certificates/acme-v02.api.letsencrypt.org-directory/203.0.113.10/203.0.113.10.key",
    });
    expect(certificatePaths(LETS_ENCRYPT, "Neko.Example.com").key).toBe(
      "certificates/acme-v02.api.letsencrypt.org-directory/neko.example.com/neko.example.com.key",
    );
  });

  test("certmagic's rules: an explicit port is kept, a trailing slash dropped, colons become hyphens", () => {
    expect(acmeDirName("https://ca.example.com:443/acme/directory/")).toBe("ca.example.com-443-acme-directory");
    expect(acmeDirName("https://ca.example.com")).toBe("ca.example.com");
    expect(storageSafe("2001:db8::10")).toBe("2001-db8--10");
    expect(certificatePaths(LETS_ENCRYPT, "2001:db8::10").cert).toBe(
      "certificates/acme-v02.api.letsencrypt.org-directory/2001-db8--10/2001-db8--10.crt",
    );
  });
});

describe("scripts/tls-front.sh agrees with lib/caddy.ts", () => {
  const script = readScript("tls-front.sh");
  test("the config directory is mounted where the Caddyfile and the private root are read", () => {
    expect(TLS_ROOT_PATH).toBe("/etc/caddy/acme-root.pem");
    expect(script).toContain(`-v "$dir/config:/etc/caddy:ro"`);
    expect(script).toContain(`"$dir/config/acme-root.pem"`);
    expect(script).toContain("caddy run --config /etc/caddy/Caddyfile --adapter caddyfile");
  });
  test("the data directory is mounted where the Caddyfile stores certificates", () => {
    expect(TLS_DATA_DIR).toBe("/data");
    expect(script).toContain(`-v "$dir/data:${TLS_DATA_DIR}"`);
  });
});
