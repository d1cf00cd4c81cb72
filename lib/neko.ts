/**
 * neko's side of the host: ports, environment and the container, all derived from one NekoSettings
 * so the security group, the published ports and neko's own configuration cannot disagree.
 */
import { NekoSettings } from "./settings";

export type Protocol = "tcp" | "udp";

/** A port range neko listens on; `from === to` for a single port. */
export interface PortSpec {
  from: number;
  to: number;
  protocol: Protocol;
  purpose: string;
}

/** Inside the container neko always listens on this port; it is published 1:1 as httpPort. */
export function nekoPorts(n: NekoSettings): PortSpec[] {
  const ports: PortSpec[] = [{ from: n.httpPort, to: n.httpPort, protocol: "tcp", purpose: "neko HTTP and WebSocket" }];
  if (n.webrtc.mode === "epr") {
    ports.push({ from: n.portRange.low, to: n.portRange.high, protocol: "udp", purpose: "WebRTC media (EPR)" });
  } else {
    ports.push({ from: n.webrtc.udpMux, to: n.webrtc.udpMux, protocol: "udp", purpose: "WebRTC media (UDP mux)" });
    if (n.webrtc.tcpMux !== undefined) {
      ports.push({ from: n.webrtc.tcpMux, to: n.webrtc.tcpMux, protocol: "tcp", purpose: "WebRTC media (TCP mux)" });
    }
  }
  return ports;
}

/** Every published port, one entry per port and protocol, same number inside and outside (ICE needs it). */
export function publishedPorts(specs: PortSpec[]): { internal: number; external: number; protocol: Protocol }[] {
  return specs.flatMap((s) =>
    Array.from({ length: s.to - s.from + 1 }, (_, i) => ({ internal: s.from + i, external: s.from + i, protocol: s.protocol })),
  );
}

export interface NekoRuntime {
  /** The address clients reach the host at: NEKO_WEBRTC_NAT1TO1. */
  publicAddress: string;
  gpu: boolean;
}

/** neko v3 environment, passwords excepted (they are secrets and added by the caller). */
export function nekoEnv(n: NekoSettings, rt: NekoRuntime): Record<string, string> {
  const env: Record<string, string> = {
    NEKO_SERVER_BIND: `:${n.httpPort}`,
    NEKO_WEBRTC_NAT1TO1: rt.publicAddress,
    NEKO_WEBRTC_ICELITE: n.iceLite ? "1" : "0",
    NEKO_DESKTOP_SCREEN: n.screen,
    NEKO_CAPTURE_VIDEO_CODEC: n.videoCodec,
  };
  if (n.webrtc.mode === "epr") {
    env.NEKO_WEBRTC_EPR = `${n.portRange.low}-${n.portRange.high}`;
  } else {
    env.NEKO_WEBRTC_UDPMUX = String(n.webrtc.udpMux);
    if (n.webrtc.tcpMux !== undefined) env.NEKO_WEBRTC_TCPMUX = String(n.webrtc.tcpMux);
  }
  if (rt.gpu) {
    env.NVIDIA_VISIBLE_DEVICES = "all";
    env.NVIDIA_DRIVER_CAPABILITIES = "all";
    if (n.videoCodec === "h264") env.NEKO_CAPTURE_VIDEO_PIPELINE = nvencPipeline(n.nvencElement);
  }
  return { ...env, ...n.env };
}

/** Hardware H.264 through NVENC; `nvautogpuh264enc` is the element on drivers 590 and later. */
export function nvencPipeline(element: NekoSettings["nvencElement"]): string {
  const encoder =
    element === "nvh264enc"
      ? "nvh264enc name=encoder preset=2 gop-size=25 spatial-aq=true temporal-aq=true bitrate=4096 vbv-buffer-size=4096 rc-mode=6"
      : "nvautogpuh264enc name=encoder bitrate=4096";
  return (
    "ximagesrc display-name={display} show-pointer=true use-damage=false ! video/x-raw,framerate=25/1 " +
    "! videoconvert ! queue ! video/x-raw,format=NV12 ! cudaupload ! cudaconvert ! " +
    `${encoder} ! h264parse config-interval=-1 ! video/x-h264,stream-format=byte-stream,profile=high ! appsink name=appsink`
  );
}

export const CONTAINER_NAME = "neko";
/** neko's image runs its own check with these numbers; `pulumi up` waits the same budget. */
export const HEALTHCHECK = { intervalSeconds: 10, timeoutSeconds: 5, retries: 8, startPeriodSeconds: 30 };

export interface ContainerSpec {
  name: string;
  image: string;
  platform: "linux/amd64";
  ports: { internal: number; external: number; protocol: Protocol }[];
  env: Record<string, string>;
  shmSizeMb: number;
  gpus?: "all";
  restart: "unless-stopped";
  healthcheck: string[];
}

/** The neko container, as the NekoHost runs it through @pulumi/docker (passwords not included). */
export function containerSpec(n: NekoSettings, rt: NekoRuntime, image: string): ContainerSpec {
  return {
    name: CONTAINER_NAME,
    image,
    platform: "linux/amd64",
    ports: publishedPorts(nekoPorts(n)),
    env: nekoEnv(n, rt),
    shmSizeMb: 2048, // browsers crash on docker's 64 MB default
    gpus: rt.gpu ? "all" : undefined,
    restart: "unless-stopped",
    healthcheck: ["CMD-SHELL", `wget -q -O - http://127.0.0.1:${n.httpPort}/health || exit 1`],
  };
}

/** Seconds `pulumi up` waits for the container to turn healthy: neko's own check budget. */
export function healthBudgetSeconds(): number {
  const h = HEALTHCHECK;
  return h.startPeriodSeconds + h.retries * (h.intervalSeconds + h.timeoutSeconds);
}

/**
 * The same container as a `docker run` argument list: for people debugging a host, and for tests.
 * `bindAddress` publishes on one address only (e.g. 127.0.0.1); the ports stay 1:1.
 */
export function dockerRunArgs(spec: ContainerSpec, opts: { extraEnv?: Record<string, string>; bindAddress?: string } = {}): string[] {
  const args = ["run", "--detach", "--name", spec.name, "--platform", spec.platform, "--restart", spec.restart];
  args.push("--shm-size", `${spec.shmSizeMb}m`);
  if (spec.gpus) args.push("--gpus", spec.gpus);
  const bind = opts.bindAddress ? `${opts.bindAddress}:` : "";
  for (const p of spec.ports) args.push("--publish", `${bind}${p.external}:${p.internal}/${p.protocol}`);
  for (const [k, v] of Object.entries({ ...spec.env, ...opts.extraEnv })) args.push("--env", `${k}=${v}`);
  const [kind, test] = spec.healthcheck;
  if (kind !== "CMD-SHELL") throw new Error(`dockerRunArgs: unsupported healthcheck ${kind}`);
  const h = HEALTHCHECK;
  args.push("--health-cmd", test, "--health-interval", `${h.intervalSeconds}s`, "--health-timeout", `${h.timeoutSeconds}s`);
  args.push("--health-retries", String(h.retries), "--health-start-period", `${h.startPeriodSeconds}s`);
  args.push(spec.image);
  return args;
}
