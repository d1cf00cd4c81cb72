// @ts-check
/**
 * Cancels a persistent EC2 spot request before Pulumi deletes its instance (see spotRequestGuard in
 * components/ec2Machine.ts). Run on the operator's machine as `node -e "$SPOT_CANCEL_SCRIPT"`.
 *
 * Env: SPOT_REQUEST_ID (sir-...; empty: nothing to do), EC2_REGION (empty: the SDK's default).
 * A request that is already cancelled or gone is fine; any other error fails the delete, so Pulumi
 * keeps the instance (and the request) in its state and the next destroy tries again.
 */
"use strict";

/**
 * @param {{ send: (command: any) => Promise<any> }} client an EC2Client
 * @param {string} requestId
 * @param {any} sdk the @aws-sdk/client-ec2 module
 * @returns {Promise<string>} what happened, for the log
 */
async function cancelSpotRequest(client, requestId, sdk) {
  if (!requestId) return "no spot request: nothing to cancel";
  try {
    const out = await client.send(new sdk.CancelSpotInstanceRequestsCommand({ SpotInstanceRequestIds: [requestId] }));
    const state = out.CancelledSpotInstanceRequests?.[0]?.State ?? "cancelled";
    return `spot request ${requestId}: ${state}`;
  } catch (err) {
    const code = /** @type {any} */ (err)?.name ?? "";
    if (code === "InvalidSpotInstanceRequestID.NotFound") return `spot request ${requestId} is already gone`;
    throw err;
  }
}

async function main() {
  const sdk = require("@aws-sdk/client-ec2");
  const region = process.env.EC2_REGION || undefined;
  const message = await cancelSpotRequest(new sdk.EC2Client({ region }), process.env.SPOT_REQUEST_ID ?? "", sdk);
  console.log(message);
}

module.exports = { cancelSpotRequest };

if (module.id === "[eval]" || require.main === module) {
  main().catch((err) => {
    console.error(`spot-cancel: cancelling spot request ${process.env.SPOT_REQUEST_ID} failed: ${err?.name ?? ""} ${err?.message ?? err}`);
    console.error("  the instance is kept until the request is cancelled; check your AWS credentials and run the destroy again");
    process.exit(1);
  });
}
