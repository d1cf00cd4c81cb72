/**
 * neko's side of the host: its environment and how scripts/neko-rollout.sh runs it, all derived
 * from one NekoSettings and the host's port list, so the security group, the published ports and
 * neko's own configuration cannot disagree.
 */
import { capturePipeline, nvencPipeline } from "./pipelines";
import { hostPorts, publishArgs } from "./ports";
import { NekoSettings } from "./settings";

export const CONTAINER_NAME = "neko";
/** Where a host keeps what the idle check and the TLS front need (the API token, neko's URL). */
export const HOST_STATE_DIR = "/var/lib/neko-infra/host";
/**
 * What `pulumi destroy` runs on ssh and local hosts, which outlive the stack: neko and any
 * leftover of a rollout go, and so do the specs the rollouts recorded (their environment files
 * hold neko's passwords), in the directory neko-rollout.sh chose for them (its choose_spec_dir:
 * NEKO_STATE_DIR, else HOST_STATE_DIR where writable, else the user's state directory), and the
 * candidate's screenshots of the desktop. The profile stays.
 */
export function removeCommand(stack: string): string {
  if (!/^[A-Za-z0-9_.-]+$/.test(stack)) throw new Error(`removeCommand: not a stack name: ${stack}`);
  return [
    `docker rm -f ${CONTAINER_NAME} ${CONTAINER_NAME}-candidate ${CONTAINER_NAME}-previous >/dev/null 2>&1 || true`,
    `d=\${NEKO_STATE_DIR:-}`,
    `[ -n "$d" ] || { d=${HOST_STATE_DIR}; [ -d "$d" ] && [ -w "$d" ] || d="\${XDG_STATE_HOME:-$HOME/.local/state}/neko-infra"; }`,
    // (The API token and neko's URL are kept only where NEKO_STATE_DIR is set: EC2 hosts.)
    `rm -rf "$d/${CONTAINER_NAME}-specs" "$d/neko-rollout-${CONTAINER_NAME}.lock" ~/.cache/neko-infra/screenshots/${stack}`,
  ].join("; ");
}
/**
 * What `pulumi destroy` runs on ssh and local hosts for a step that keeps a container of IMAGE and
 * a directory under HOST_STATE_DIR (the TLS front, the TURN relay): the container goes, then the
 * directory, through a root container of the same image (what it holds is not the login user's);
 * a directory that stays fails the destroy, naming it and what it holds.
 */
export function stateRemoveCommand(o: { container: string; subdir: string; image: string; holds: string }): string {
  const dir = `${HOST_STATE_DIR}/${o.subdir}`;
  return (
    `docker rm -f ${o.container} >/dev/null 2>&1 || true; [ ! -e ${dir} ] || ` +
    `docker run --rm --network none --user 0:0 --entrypoint rm -v ${HOST_STATE_DIR}:/state ${o.image} -rf /state/${o.subdir} >/dev/null 2>&1 || ` +
    `{ echo "cannot remove ${dir} (${o.holds}): remove it as root" >&2; exit 1; }`
  );
}
/** The profile directory on EC2 and ssh hosts (on EC2 an EBS volume is mounted there). */
export const HOST_PROFILE_DIR = "/var/lib/neko-infra/profile";
/** Seconds each health wait of a rollout may take: neko's own check budget (8 tries, 10 s apart, 30 s start). */
export const HEALTH_SECONDS = 150;

export interface NekoRuntime {
  /** The address clients reach the host at: NEKO_WEBRTC_NAT1TO1. */
  publicAddress: string;
  gpu: boolean;
  /** neko sits behind the TLS front: it trusts X-Forwarded-* headers. */
  tls: boolean;
}

/** neko v3 environment without secrets (passwords, API token and TURN credentials come apart). */
export function nekoEnv(n: NekoSettings, rt: NekoRuntime): Record<string, string> {
  const env: Record<string, string> = {
    NEKO_SERVER_BIND: `:${n.httpPort}`,
    NEKO_WEBRTC_NAT1TO1: rt.publicAddress,
    NEKO_WEBRTC_ICELITE: n.iceLite ? "1" : "0",
    NEKO_DESKTOP_SCREEN: n.screen,
    NEKO_CAPTURE_VIDEO_CODEC: n.videoCodec,
  };
  // Without a pipeline neko streams VP8 whatever the codec says.
  const pipeline = capturePipeline(n.videoCodec, rt.gpu);
  if (pipeline) env.NEKO_CAPTURE_VIDEO_PIPELINE = pipeline;
  if (rt.tls) env.NEKO_SERVER_PROXY = "true";
  if (n.webrtc.mode === "epr") {
    env.NEKO_WEBRTC_EPR = `${n.portRange.low}-${n.portRange.high}`;
  } else {
    env.NEKO_WEBRTC_UDPMUX = String(n.webrtc.udpMux);
    if (n.webrtc.tcpMux !== undefined) env.NEKO_WEBRTC_TCPMUX = String(n.webrtc.tcpMux);
  }
  if (rt.gpu) {
    env.NVIDIA_VISIBLE_DEVICES = "all";
    env.NVIDIA_DRIVER_CAPABILITIES = "all";
    // The NVIDIA toolkit puts the driver's libraries (libcuda, libnvidia-encode) in /usr/lib64 (or
    // the Debian path); a Nix-built GStreamer does not look there on its own.
    env.LD_LIBRARY_PATH = "/usr/lib64:/usr/lib/x86_64-linux-gnu";
  }
  return { ...env, ...n.env };
}

export interface NekoSecrets {
  userPassword: string;
  adminPassword: string;
  /** neko's static admin API token: the idle check asks neko who is connected. */
  apiToken: string;
  /** ICE servers (a TURN relay with its credentials), as neko's JSON lists take them. */
  iceServers?: IceServer[];
}

export interface IceServer {
  urls: string[];
  username: string;
  credential: string;
}

export function nekoSecretEnv(s: NekoSecrets): Record<string, string> {
  const env: Record<string, string> = {
    NEKO_MEMBER_MULTIUSER_USER_PASSWORD: s.userPassword,
    NEKO_MEMBER_MULTIUSER_ADMIN_PASSWORD: s.adminPassword,
    NEKO_SESSION_API_TOKEN: s.apiToken,
  };
  if (s.iceServers?.length) {
    env.NEKO_WEBRTC_ICESERVERS_FRONTEND = JSON.stringify(s.iceServers);
    env.NEKO_WEBRTC_ICESERVERS_BACKEND = JSON.stringify(s.iceServers);
  }
  return env;
}

/** The NVENC pipelines live with the others (lib/pipelines.ts). */
export { nvencPipeline };

export interface RolloutSpec {
  /** Publish neko's client ports on this address only (a local host), or everywhere (""). */
  bindAddress: string;
  /** A docker volume name or an absolute host directory; undefined: no persistent profile. */
  profile?: string;
  /** `<project>/<stack>`, as a label on the container. */
  stackTag: string;
  /** Record the API token for the host's idle check. */
  stateDir?: string;
  /** The HTTPS front's URL (`https://<domain or address>/`): /health is checked through it too. */
  frontUrl?: string;
}

/**
 * scripts/neko-rollout.sh's environment (without NEKO_ENV's secrets, which the caller adds):
 * what to publish, how to run the container, where the profile lives, which encoder to prove.
 */
export function rolloutEnv(n: NekoSettings, rt: NekoRuntime, spec: RolloutSpec): Record<string, string> {
  const runArgs = [
    "--shm-size=2g", // browsers crash on docker's 64 MB default
    "--hostname=neko", // Chromium ties its profile lock to the host name
    // Never started twice: an image may not survive it (the Nix-built one exits 9 on a second
    // start). Rollbacks, boots and Docker restarts create neko afresh from its recorded spec.
    "--restart=no",
    `--label=neko-infra.stack=${spec.stackTag}`,
  ];
  if (rt.gpu) runArgs.push("--gpus=all");
  const env: Record<string, string> = {
    NEKO_NAME: CONTAINER_NAME,
    NEKO_PUBLISH: publishArgs(hostPorts(n, { tls: rt.tls }), spec.bindAddress).join("\n"),
    NEKO_RUN_ARGS: runArgs.join("\n"),
    NEKO_HTTP_PORT: String(n.httpPort),
    NEKO_HEALTH_SECONDS: String(HEALTH_SECONDS),
  };
  if (spec.profile !== undefined && n.persistProfile) Object.assign(env, { NEKO_PROFILE: spec.profile, NEKO_PROFILE_DIR: n.profileDir });
  if (spec.stateDir) env.NEKO_STATE_DIR = spec.stateDir;
  if (spec.frontUrl) env.NEKO_FRONT_URL = spec.frontUrl;
  // Where the candidate's screenshot is kept: the host's state directory, or (a local host, which
  // has none) the operator's cache; the script expands `~/`.
  env.NEKO_SCREENSHOT = spec.stateDir
    ? `${spec.stateDir}/screenshot.jpg`
    : `~/.cache/neko-infra/screenshots/${spec.stackTag.split("/").pop()}/last.jpg`;
  if (rt.gpu && n.videoCodec === "h264") {
    Object.assign(env, {
      NEKO_NVENC: n.nvencElement,
      NEKO_PIPELINE_NVH264ENC: nvencPipeline("nvh264enc"),
      NEKO_PIPELINE_NVAUTOGPUH264ENC: nvencPipeline("nvautogpuh264enc"),
    });
  }
  return env;
}

/** `NAME=value` lines for `docker run --env-file` (one line each: values must not hold newlines). */
export function envFile(env: Record<string, string>): string {
  return Object.entries(env)
    .map(([k, v]) => {
      if (/[\r\n]/.test(v)) throw new Error(`envFile: ${k} holds a line break, which an env file cannot carry`);
      return `${k}=${v}\n`;
    })
    .join("");
}
