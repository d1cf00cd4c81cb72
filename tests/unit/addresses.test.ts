import { Lookup, LookedUp, publicIp } from "../../lib/addresses";

/** A resolver answering from a table, as dns.promises.lookup with {all: true} does (or failing with its code). */
function resolver(table: Record<string, LookedUp[] | string>): Lookup {
  return async (name) => {
    const a = table[name];
    if (typeof a === "string") throw Object.assign(new Error(`getaddrinfo ${a} ${name}`), { code: a });
    if (!a) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${name}`), { code: "ENOTFOUND" });
    return a;
  };
}

describe("publicIp: what NEKO_WEBRTC_NAT1TO1 gets (addresses only)", () => {
  test("an address is itself, unresolved", async () => {
    const none = resolver({});
    expect(await publicIp("203.0.113.7", "host.publicAddress", none)).toBe("203.0.113.7");
    expect(await publicIp("2001:db8::7", "host.publicAddress", none)).toBe("2001:db8::7");
  });

  test("a name resolves, IPv4 before IPv6", async () => {
    const dns = resolver({
      "neko.example.net": [
        { address: "2001:db8::9", family: 6 },
        { address: "198.51.100.9", family: 4 },
      ],
      "v6.example.net": [{ address: "2001:db8::a", family: 6 }],
    });
    expect(await publicIp("neko.example.net", "host.publicAddress", dns)).toBe("198.51.100.9");
    expect(await publicIp("v6.example.net", "host.publicAddress", dns)).toBe("2001:db8::a");
  });

  test("a name that does not resolve fails, naming the key, the cause and the command that sets an address", async () => {
    await expect(
      publicIp("gone.example.net", "host.host", resolver({ "gone.example.net": "ENOTFOUND" }), "host.publicAddress"),
    ).rejects.toThrow(
      "neko-infra:host.host: gone.example.net does not resolve on this machine (ENOTFOUND); WebRTC needs the IP address clients reach (NEKO_WEBRTC_NAT1TO1 takes addresses only): fix the name's DNS record, or give the address: pulumi config set --path 'host.publicAddress' <ip>",
    );
    await expect(publicIp("empty.example.net", "host.publicAddress", resolver({ "empty.example.net": [] }))).rejects.toThrow(
      "(no address)",
    );
  });
});
