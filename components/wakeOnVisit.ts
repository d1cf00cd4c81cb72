import * as crypto from "crypto";
import * as path from "path";
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";
import { wakePolicy } from "../lib/wake";

export interface WakeOnVisitArgs {
  instance: aws.ec2.Instance;
  /** Where the browser goes once neko answers (`https://<address>/`); its /health is checked. */
  nekoUrl: pulumi.Input<string>;
  /** Starts allowed per rolling hour. */
  maxStarts?: number;
  tags?: Record<string, string>;
}

/**
 * A link that wakes a sleeping neko host: an AWS Lambda function URL that, opened with its token,
 * starts the instance, shows a page while it boots, and sends the browser on to neko once neko's
 * /health answers. The function may describe instances and start and tag this one only; the token
 * is compared by its SHA-256, so the function's configuration never holds it; starts are
 * rate-limited through a tag on the instance. Code: lambda/wake-on-visit.js.
 */
export class WakeOnVisit extends pulumi.ComponentResource {
  /** The link to open, token included. Secret. */
  readonly link: pulumi.Output<string>;

  constructor(name: string, args: WakeOnVisitArgs, opts?: pulumi.ComponentResourceOptions) {
    super("neko-infra:host:WakeOnVisit", name, {}, opts);
    const token = new random.RandomPassword(`${name}-token`, { length: 32, special: false }, { parent: this });
    const role = new aws.iam.Role(
      `${name}-role`,
      {
        assumeRolePolicy: JSON.stringify({
          Version: "2012-10-17",
          Statement: [{ Effect: "Allow", Principal: { Service: "lambda.amazonaws.com" }, Action: "sts:AssumeRole" }],
        }),
        tags: args.tags,
      },
      { parent: this },
    );
    new aws.iam.RolePolicyAttachment(
      `${name}-logs`,
      { role: role.name, policyArn: "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole" },
      { parent: this },
    );
    new aws.iam.RolePolicy(`${name}-start`, { role: role.id, policy: args.instance.arn.apply(wakePolicy) }, { parent: this });
    const fn = new aws.lambda.Function(
      `${name}-fn`,
      {
        runtime: "nodejs22.x",
        // Bounds what a flood of requests to a public URL can cost or start; a person waits a second.
        reservedConcurrentExecutions: 2,
        handler: "index.handler",
        role: role.arn,
        timeout: 10,
        memorySize: 128,
        code: new pulumi.asset.AssetArchive({
          "index.js": new pulumi.asset.FileAsset(path.join(__dirname, "..", "lambda", "wake-on-visit.js")),
        }),
        environment: {
          variables: {
            INSTANCE_ID: args.instance.id,
            NEKO_URL: args.nekoUrl,
            TOKEN_SHA256: token.result.apply((t) => crypto.createHash("sha256").update(t).digest("hex")),
            MAX_STARTS: String(args.maxStarts ?? 6),
          },
        },
        tags: args.tags,
      },
      { parent: this },
    );
    // Its logs expire: an unmanaged log group Lambda makes itself keeps them for ever.
    new aws.cloudwatch.LogGroup(
      `${name}-log-group`,
      { name: pulumi.interpolate`/aws/lambda/${fn.name}`, retentionInDays: 14, tags: args.tags },
      { parent: this },
    );
    // NONE: the page is for people following a link; the token in it is the credential.
    const url = new aws.lambda.FunctionUrl(`${name}-url`, { functionName: fn.name, authorizationType: "NONE" }, { parent: this });
    // Since October 2025 a public function URL needs lambda:InvokeFunction besides the
    // lambda:InvokeFunctionUrl the URL resource grants itself; without it the link answers 403.
    new aws.lambda.Permission(
      `${name}-invoke`,
      { function: fn.name, action: "lambda:InvokeFunction", principal: "*", invokedViaFunctionUrl: true },
      { parent: this },
    );
    this.link = pulumi.secret(pulumi.interpolate`${url.functionUrl}?t=${token.result}`);
    this.registerOutputs({ link: this.link });
  }
}
