import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import * as tls from "@pulumi/tls";
import { cachePolicy, nixSigningKeys, s3CacheUri, tlsOnlyPolicy } from "../lib/nixCache";
import { NixBuilder } from "./nixBuilder";

export interface BinaryCacheArgs {
  builder: NixBuilder;
  /** Days a cached path is kept without being written again. */
  expireDays?: number;
  tags?: Record<string, string>;
}

/**
 * A signed Nix binary cache in S3 for an ec2 builder. The builder substitutes from it and uploads
 * each build's output, so a builder torn down (`enabled: false`) and brought back fetches an
 * unchanged image instead of rebuilding it. The bucket and the signing key outlive the builder.
 */
export class BinaryCache extends pulumi.ComponentResource {
  /** `s3://bucket?region=...` */
  readonly uri: pulumi.Output<string>;
  /** `name:base64`: trusted by the builder. */
  readonly publicKey: pulumi.Output<string>;
  /** `name:base64`: signs uploads. Secret. */
  readonly secretKey: pulumi.Output<string>;

  constructor(name: string, args: BinaryCacheArgs, opts?: pulumi.ComponentResourceOptions) {
    super("neko-infra:build:BinaryCache", name, {}, opts);
    const bucket = new aws.s3.Bucket(`${name}-bucket`, { forceDestroy: true, tags: args.tags }, { parent: this });
    new aws.s3.BucketPublicAccessBlock(
      `${name}-private`,
      { bucket: bucket.id, blockPublicAcls: true, blockPublicPolicy: true, ignorePublicAcls: true, restrictPublicBuckets: true },
      { parent: this },
    );
    new aws.s3.BucketServerSideEncryptionConfiguration(
      `${name}-encryption`,
      { bucket: bucket.id, rules: [{ applyServerSideEncryptionByDefault: { sseAlgorithm: "AES256" } }] },
      { parent: this },
    );
    new aws.s3.BucketLifecycleConfiguration(
      `${name}-expiry`,
      {
        bucket: bucket.id,
        rules: [
          { id: "expire", status: "Enabled", filter: {}, expiration: { days: args.expireDays ?? 90 } },
          // An upload cut off half-way is billed until it is aborted.
          { id: "abort-incomplete-uploads", status: "Enabled", filter: {}, abortIncompleteMultipartUpload: { daysAfterInitiation: 1 } },
        ],
      },
      { parent: this },
    );
    new aws.s3.BucketPolicy(`${name}-tls-only`, { bucket: bucket.id, policy: bucket.arn.apply(tlsOnlyPolicy) }, { parent: this });
    const key = new tls.PrivateKey(`${name}-signing-key`, { algorithm: "ED25519" }, { parent: this });
    const keys = key.privateKeyPem.apply((pem) => nixSigningKeys(`neko-infra-${pulumi.getStack()}-1`, pem));
    this.publicKey = pulumi.unsecret(keys.publicKey);
    this.secretKey = pulumi.secret(keys.secretKey);
    this.uri = pulumi.all([bucket.bucket, bucket.region]).apply(([b, r]) => s3CacheUri(b, r));

    if (args.builder.role) {
      new aws.iam.RolePolicy(
        `${name}-builder-access`,
        { role: args.builder.role.id, policy: bucket.arn.apply(cachePolicy) },
        { parent: this },
      );
    }
    this.registerOutputs({ uri: this.uri, publicKey: this.publicKey });
  }
}
