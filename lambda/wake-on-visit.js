// @ts-check
/**
 * wake-on-visit: the code of an AWS Lambda behind a function URL (Node.js 22 runtime, which ships
 * the AWS SDK v3). Opening its link wakes the neko host that stopped itself when idle
 * (scripts/host-idle-stop.sh): it starts the instance if it sleeps, shows a page that says what is
 * happening and when to expect neko, refreshes itself every 5 s, and sends the browser on to neko
 * once the host has said neko answers. The function cannot ask neko itself (its port 443 may admit
 * only the client networks, never Lambda's addresses): the host tags itself neko-infra:ready=<epoch>
 * after each boot once /health answers (scripts/host-ready.sh), and a tag newer than the instance's
 * last launch means ready. A host that has not said so READY_DEADLINE seconds after its launch gets
 * a page that stops refreshing and says so (with a link to try neko anyway): the page always ends.
 *
 * Handler: the export `handler` (components/wakeOnVisit.ts ships this file as index.js: `index.handler`). Env:
 *   INSTANCE_ID   the host (i-...)
 *   NEKO_URL      https://<address>/ : where the browser goes
 *   TOKEN_SHA256  hex sha256 of the link's token (?t=...); the token itself is not in this config
 *   MAX_STARTS    starts allowed per rolling hour (default 6), counted in the instance's tag
 *                 neko-infra:wake-starts (epoch seconds, comma-separated); no other storage
 *   AWS_REGION    set by Lambda
 *
 * Not an open "start my GPU" button: a wrong or missing token gets a 403 without any AWS call,
 * and starts are rate-limited. Pure logic (decide, render, pruneStarts) plus a thin handler whose
 * EC2 client can be injected (createHandler).
 */
"use strict";

const crypto = require("crypto");

const STARTS_TAG = "neko-infra:wake-starts";
const READY_TAG = "neko-infra:ready";
const HOUR = 3600;
const REFRESH_SECONDS = 5;
/** How long after a launch neko may take to answer before the page gives up (a first boot pulls the image). */
const READY_DEADLINE = 900;
/** How long neko usually takes after a start, for the page. */
const USUAL_MINUTES = 3;
/** A ready tag this much older than the launch still counts (the host's clock against AWS's). */
const CLOCK_SLACK = 60;

/**
 * @typedef {"deny" | "redirect" | "start" | "wait" | "limit" | "error"} Action
 * @typedef {{
 *   action: Action, status: number, title: string, message: string, refresh: boolean,
 *   location?: string, retryAfter?: number, starts?: number[]
 * }} Decision
 * `starts`: for "start", the tag's new value (the recent starts plus this one).
 * @typedef {{
 *   tokenOk: boolean, state: string, ready: boolean, starts: number[], now: number,
 *   maxStarts: number, launchedAt?: number, nekoUrl?: string, instanceId?: string
 * }} DecideInput
 * `state`: the EC2 instance state name, or "missing" when EC2 does not know the instance.
 * `ready`: the host's ready tag is newer than its last launch. `launchedAt`: that launch (epoch s).
 * @typedef {{ send: (command: any) => Promise<any> }} Ec2Like
 * @typedef {{ statusCode: number, headers: Record<string, string>, body: string }} Response
 */

/**
 * Start times from the tag's value that lie in the last hour (rolling), ascending. Junk and times
 * more than 5 minutes ahead (they would block starts for longer than an hour) are dropped.
 * @param {string | undefined} tag
 * @param {number} now epoch seconds
 * @returns {number[]}
 */
function pruneStarts(tag, now) {
  return (tag ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter((s) => /^\d{1,12}$/.test(s))
    .map(Number)
    .filter((t) => t > now - HOUR && t <= now + 300)
    .sort((a, b) => a - b);
}

/**
 * Whether sha256(token) equals the expected hex digest, in constant time.
 * @param {string | undefined} token
 * @param {string | undefined} expectedHex
 */
function tokenMatches(token, expectedHex) {
  if (!token || !expectedHex || !/^[0-9a-fA-F]{64}$/.test(expectedHex)) return false;
  const got = crypto.createHash("sha256").update(token, "utf8").digest();
  return crypto.timingSafeEqual(got, Buffer.from(expectedHex, "hex"));
}

/**
 * What to do for one visit, and what the page says.
 * @param {DecideInput} input
 * @returns {Decision}
 */
function decide({ tokenOk, state, ready, starts, now, maxStarts, launchedAt, nekoUrl = "", instanceId = "the neko host" }) {
  const page = /** @type {(action: Action, status: number, title: string, message: string, refresh: boolean) => Decision} */ (
    action,
    status,
    title,
    message,
    refresh,
  ) => ({ action, status, title, message, refresh });
  if (!tokenOk) return page("deny", 403, "Not allowed", "This link is not valid. Ask for the current neko link.", false);
  const since = launchedAt === undefined ? undefined : Math.max(0, now - launchedAt);
  const started = since === undefined ? "" : `The host started ${ago(since)}. `;
  const usually = `neko usually answers within ${USUAL_MINUTES} minutes of a start; this page opens it then.`;
  switch (state) {
    case "running":
      if (ready) return { ...page("redirect", 302, "neko is ready", "Opening neko.", false), location: nekoUrl };
      if (since !== undefined && since >= READY_DEADLINE)
        return {
          ...page(
            "error",
            503,
            "neko did not come up",
            `The host has been running for ${ago(since).replace(/ ago$/, "")} and neko has not answered. ` +
              "Ask whoever runs neko-infra to look (npm run status); the host stops itself when idle.",
            false,
          ),
          location: nekoUrl,
        };
      return page("wait", 200, "neko is starting", `${started}${usually}`, true);
    case "pending":
      return page("wait", 200, "neko is starting", `The host is booting. ${started}${usually}`, true);
    case "stopping":
      return page("wait", 200, "neko's host is stopping", "The host is stopping; it will be started again when it has stopped.", true);
    case "stopped": {
      const recent = pruneStarts(starts.join(","), now);
      if (recent.length >= maxStarts) {
        const retryAfter = Math.max(1, recent[recent.length - maxStarts] + HOUR - now);
        const minutes = Math.ceil(retryAfter / 60);
        return {
          ...page(
            "limit",
            429,
            "Too many starts",
            `The host was started ${recent.length} times in the last hour (the limit is ${maxStarts}). ` +
              `Try again in ${minutes} minute${minutes === 1 ? "" : "s"}.`,
            false,
          ),
          retryAfter,
        };
      }
      return {
        ...page("start", 200, "Starting neko", `The host was asleep and is starting now. ${usually}`, true),
        starts: [...recent, now],
      };
    }
    case "missing":
    case "terminated":
    case "shutting-down":
      return page(
        "error",
        500,
        "neko's host is gone",
        `The instance ${instanceId} is ${state === "missing" ? "not found" : state}. Ask whoever runs neko-infra to deploy it again.`,
        false,
      );
    default:
      return page("error", 500, "Unexpected state", `The instance ${instanceId} is in state ${JSON.stringify(state)}.`, false);
  }
}

/** "40 seconds ago", "3 minutes ago". @param {number} seconds */
function ago(seconds) {
  if (seconds < 90) return `${seconds} second${seconds === 1 ? "" : "s"} ago`;
  return `${Math.round(seconds / 60)} minutes ago`;
}

/** @param {string} s */
function escapeHtml(s) {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/**
 * The HTTP response for a decision: a small self-contained page (or a redirect), never cached,
 * never sending a Referer (the link's token must not reach neko or anyone else).
 * @param {Decision} d
 * @returns {Response}
 */
function render(d) {
  /** @type {Record<string, string>} */
  const headers = {
    "Content-Type": "text/html; charset=utf-8",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
  };
  if (d.location && d.action === "redirect") headers.Location = d.location;
  if (d.retryAfter) headers["Retry-After"] = String(d.retryAfter);
  const refresh = d.refresh ? `<meta http-equiv="refresh" content="${REFRESH_SECONDS}">\n` : "";
  const link = d.location
    ? `<p><a href="${escapeHtml(d.location)}">${d.action === "redirect" ? "Open neko" : "Try neko anyway"}</a></p>\n`
    : "";
  const body =
    `<!doctype html>\n<html lang="en"><head><meta charset="utf-8">\n<meta name="referrer" content="no-referrer">\n${refresh}` +
    `<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>${escapeHtml(d.title)}</title>\n` +
    `<style>body{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;color:#222}</style>\n` +
    `</head><body>\n<h1>${escapeHtml(d.title)}</h1>\n<p>${escapeHtml(d.message)}</p>\n${link}` +
    (d.refresh ? `<p><small>This page refreshes every ${REFRESH_SECONDS} seconds.</small></p>\n` : "") +
    `</body></html>\n`;
  return { statusCode: d.status, headers, body };
}

/**
 * @param {any} err
 * @returns {string}
 */
function errorName(err) {
  return String(err?.name ?? err?.Code ?? "Error");
}

/**
 * The handler, with its EC2 client, environment and clock injectable.
 * @param {{ ec2?: Ec2Like, env?: Record<string, string | undefined>,
 *           now?: () => number, log?: (line: string) => void, sdk?: any }} [deps]
 * @returns {(event: any) => Promise<Response>}
 */
function createHandler(deps = {}) {
  const env = deps.env ?? process.env;
  const clock = deps.now ?? (() => Math.floor(Date.now() / 1000));
  const log = deps.log ?? ((line) => console.log(line));
  /** @type {any} */
  let sdk = deps.sdk;
  /** @type {Ec2Like | undefined} */
  let ec2 = deps.ec2;
  const client = () => {
    sdk ??= require("@aws-sdk/client-ec2");
    ec2 ??= /** @type {Ec2Like} */ (new sdk.EC2Client({ region: env.AWS_REGION }));
    return { ec2, sdk };
  };

  /** @param {string} title @param {string} message */
  const failure = (title, message) => /** @type {Decision} */ ({ action: "error", status: 500, title, message, refresh: false });

  /** @param {any} event @returns {Promise<Decision>} */
  const visit = async (event) => {
    const instanceId = env.INSTANCE_ID ?? "";
    const nekoUrl = env.NEKO_URL ?? "";
    const maxStarts = Number(env.MAX_STARTS || "6");
    const token = event?.queryStringParameters?.t;
    if (!tokenMatches(token, env.TOKEN_SHA256)) return decide({ tokenOk: false, state: "", ready: false, starts: [], now: 0, maxStarts });
    if (
      !/^i-[0-9a-f]+$/.test(instanceId) ||
      !/^https?:\/\/[^/]+\/(.*\/)?$/.test(nekoUrl) ||
      !Number.isInteger(maxStarts) ||
      maxStarts < 1
    ) {
      return failure("Misconfigured", "INSTANCE_ID, NEKO_URL (ending in /) or MAX_STARTS of this wake link is not valid.");
    }
    const { ec2, sdk } = client();
    /** @type {any} */
    let instance;
    try {
      const out = await ec2.send(new sdk.DescribeInstancesCommand({ InstanceIds: [instanceId] }));
      instance = out.Reservations?.[0]?.Instances?.[0];
    } catch (err) {
      if (errorName(err) !== "InvalidInstanceID.NotFound")
        return failure("Cannot ask EC2", `Describing ${instanceId} failed: ${errorName(err)}.`);
    }
    const state = instance?.State?.Name ?? "missing";
    const tagValue = (/** @type {string} */ key) => (instance?.Tags ?? []).find((/** @type {any} */ t) => t.Key === key)?.Value;
    const launched = instance?.LaunchTime ? Math.floor(new Date(instance.LaunchTime).getTime() / 1000) : NaN;
    const launchedAt = Number.isFinite(launched) ? launched : undefined;
    const readyAt = /^\d{1,12}$/.test(tagValue(READY_TAG) ?? "") ? Number(tagValue(READY_TAG)) : undefined;
    const now = clock();
    const d = decide({
      tokenOk: true,
      state,
      ready: state === "running" && readyAt !== undefined && launchedAt !== undefined && readyAt >= launchedAt - CLOCK_SLACK,
      launchedAt,
      starts: pruneStarts(tagValue(STARTS_TAG), now),
      now,
      maxStarts,
      nekoUrl,
      instanceId,
    });
    if (d.action !== "start") return d;
    try {
      // Counted before the start: a start that fails still counts, so the limit bounds attempts.
      await ec2.send(
        new sdk.CreateTagsCommand({ Resources: [instanceId], Tags: [{ Key: STARTS_TAG, Value: (d.starts ?? []).join(",") }] }),
      );
      await ec2.send(new sdk.StartInstancesCommand({ InstanceIds: [instanceId] }));
    } catch (err) {
      const name = errorName(err);
      if (name === "IncorrectInstanceState") return decide({ tokenOk: true, state: "stopping", ready: false, starts: [], now, maxStarts });
      if (name === "InsufficientInstanceCapacity")
        return failure("No capacity", `AWS has no capacity for ${instanceId}'s instance type right now. Try again in a few minutes.`);
      return failure("Cannot start the host", `Starting ${instanceId} failed: ${name}.`);
    }
    return d;
  };

  return async (event) => {
    const d = await visit(event);
    log(`wake-on-visit: ${d.action} (${d.status}): ${d.message}`);
    return render(d);
  };
}

/** @type {((event: any) => Promise<Response>) | undefined} */
let defaultHandler;
/** @param {any} event */
async function handler(event) {
  defaultHandler ??= createHandler();
  return defaultHandler(event);
}

module.exports = { handler, createHandler, decide, render, pruneStarts, tokenMatches, STARTS_TAG, READY_TAG, READY_DEADLINE };
