import { parseSettings, TurnSettings } from "../../lib/settings";
import { readScript } from "../../lib/shell";
import { configOf } from "../support/settings";
import {
  DENIED_PEER_RANGES,
  iceServers,
  TURN_CERT_DIR,
  TURN_PROC_GROUP,
  TURN_PROC_USER,
  TURN_TLS_DIR,
  turnRelayEnv,
  turnserverConf,
  turnTlsFiles,
} from "../../lib/turn";

function turn(t: unknown = true): TurnSettings {
  return parseSettings({
    config: configOf({
      image: { flake: "./x" },
      builder: { kind: "local" },
      registry: { kind: "oci", url: "r.example.com/neko" },
      host: {
        kind: "ssh",
        host: "203.0.113.10",
        privateKey: "-----BEGIN OPENSSH PRIVATE KEY-----\nx",
        hostKey: "ssh-ed25519 AAAA",
      },
      neko: { turn: t },
    }),
    secretKeys: ["neko-infra:host"],
    projectDir: "/p",
    fileExists: () => true,
  }).neko.turn;
}

const LE = "https://acme-v02.api.letsencrypt.org/directory";
const password = "p4ssw0rd-p4ssw0rd";

describe("coturn configuration", () => {
  test("with TURN over TLS: the whole file", () => {
    expect(
      turnserverConf({ turn: turn(), publicAddress: "203.0.113.10", password, tls: { subject: "203.0.113.10", acmeServer: LE } }),
    ).toBe(
      [
        "listening-port=3478",
        "tls-listening-port=5349",
        "min-port=49160",
        "max-port=49200",
        "external-ip=203.0.113.10",
        "realm=neko",
        "fingerprint",
        "lt-cred-mech",
        "user=neko:p4ssw0rd-p4ssw0rd",
        "no-multicast-peers",
        "denied-peer-ip=0.0.0.0-0.255.255.255",
        "denied-peer-ip=10.0.0.0-10.255.255.255",
        "denied-peer-ip=100.64.0.0-100.127.255.255",
        "denied-peer-ip=127.0.0.0-127.255.255.255",
        "denied-peer-ip=169.254.0.0-169.254.255.255",
        "denied-peer-ip=172.16.0.0-172.31.255.255",
        "denied-peer-ip=192.0.0.0-192.0.0.255",
        "denied-peer-ip=192.168.0.0-192.168.255.255",
        "denied-peer-ip=198.18.0.0-198.19.255.255",
        "denied-peer-ip=240.0.0.0-255.255.255.255",
        "denied-peer-ip=::1",
        "denied-peer-ip=fc00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "denied-peer-ip=fe80::-febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "allowed-peer-ip=203.0.113.10",
        "no-tcp-relay",
        "no-rfc5780",
        "no-stun-backward-compatibility",
        "no-cli",
        "no-software-attribute",
        "proc-user=nobody",
        "proc-group=nogroup",
        "log-file=stdout",
        "simple-log",
        "cert=/run/neko-turn/cert.pem",
        "pkey=/run/neko-turn/key.pem",
        "no-tlsv1",
        "no-tlsv1_1",
        "no-dtls",
        "",
      ].join("\n"),
    );
  });

  test("without TLS: no TLS listener, no certificate", () => {
    const conf = turnserverConf({ turn: turn({ port: 3479, relayPorts: "50000-50010" }), publicAddress: "198.51.100.7", password });
    expect(conf).toMatch(/^listening-port=3479$/m);
    expect(conf).toMatch(/^min-port=50000\nmax-port=50010$/m);
    expect(conf).not.toMatch(/tls-listening-port|^cert=|^pkey=/m);
    expect(conf).toMatch(/^no-tls\nno-dtls\n$/m);
  });

  test("peer ranges use coturn's a-b syntax (CIDR is rejected and the rule silently dropped)", () => {
    const conf = turnserverConf({ turn: turn(), publicAddress: "203.0.113.10", password });
    const peers = conf.split("\n").filter((l) => /^(denied|allowed)-peer-ip=/.test(l));
    expect(peers.some((l) => l.includes("/"))).toBe(false);
    for (const r of DENIED_PEER_RANGES) expect(r).toMatch(/^[0-9a-f.:]+(-[0-9a-f.:]+)?$/);
    // allowed-peer-ip wins over the deny list for exactly the host's own address
    expect(peers[peers.length - 1]).toBe("allowed-peer-ip=203.0.113.10");
  });

  test("an IPv6 host address is written bare", () => {
    const conf = turnserverConf({ turn: turn(), publicAddress: "2001:db8::10", password });
    expect(conf).toMatch(/^external-ip=2001:db8::10$/m);
    expect(conf).toMatch(/^allowed-peer-ip=2001:db8::10$/m);
  });
});

describe("the relay script's environment", () => {
  test("TURN over TLS: the front's certificate and key, as the relay's container sees them", () => {
    const tls = { subject: "neko.example.com", acmeServer: LE };
    expect(turnTlsFiles(tls)).toEqual({
      cert: `${TURN_TLS_DIR}/certificates/acme-v02.api.letsencrypt.org-directory/neko.example.com/neko.example.com.crt`,
      key: `${TURN_TLS_DIR}/certificates/acme-v02.api.letsencrypt.org-directory/neko.example.com/neko.example.com.key`,
    });
    const env = turnRelayEnv({ turn: turn(), publicAddress: "203.0.113.10", password, tls });
    expect(Object.keys(env).sort()).toEqual(["TURN_CONF", "TURN_TLS_CERT", "TURN_TLS_KEY"]);
    expect(env.TURN_TLS_CERT).toBe(turnTlsFiles(tls).cert);
    // turnserver reads the copies the entrypoint makes, not Caddy's root-only files
    expect(env.TURN_CONF).toContain(`cert=${TURN_CERT_DIR}/cert.pem\npkey=${TURN_CERT_DIR}/key.pem\n`);
  });

  test("without TLS: the configuration only", () => {
    expect(Object.keys(turnRelayEnv({ turn: turn(), publicAddress: "203.0.113.10", password }))).toEqual(["TURN_CONF"]);
  });
});

describe("ICE servers handed to browsers", () => {
  test("UDP and TCP on the address, TLS on the certificate's name", () => {
    expect(iceServers({ turn: turn(), address: "203.0.113.10", tlsName: "neko.example.com", username: "neko", credential: "c" })).toEqual([
      {
        urls: ["turn:203.0.113.10:3478?transport=udp", "turn:203.0.113.10:3478?transport=tcp", "turns:neko.example.com:5349?transport=tcp"],
        username: "neko",
        credential: "c",
      },
    ]);
  });

  test("IPv6 addresses in brackets; no turns: without TLS", () => {
    expect(iceServers({ turn: turn({ port: 3479 }), address: "2001:db8::10", username: "neko", credential: "c" })[0].urls).toEqual([
      "turn:[2001:db8::10]:3479?transport=udp",
      "turn:[2001:db8::10]:3479?transport=tcp",
    ]);
    expect(
      iceServers({ turn: turn(), address: "2001:db8::10", tlsName: "2001:db8::10", username: "neko", credential: "c" })[0].urls[2],
    ).toBe("turns:[2001:db8::10]:5349?transport=tcp");
  });
});

describe("scripts/turn-relay.sh agrees with lib/turn.ts", () => {
  const script = readScript("turn-relay.sh");
  test("the front's data is mounted where the certificate paths point", () => {
    expect(script).toContain(`tls_mount=${TURN_TLS_DIR}`);
  });
  test("the entrypoint copies the certificate where turnserver reads it, readable by the user it drops to", () => {
    expect(script).toContain(`certs=${TURN_CERT_DIR}\n`);
    expect(script).toContain(`chown ${TURN_PROC_USER}:${TURN_PROC_GROUP} `);
  });
});
