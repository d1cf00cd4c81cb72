/**
 * The builder's binary cache: Nix signing keys from an ed25519 key Pulumi generates (kept across
 * builder teardown, like the bucket), and the store URI of an S3 bucket.
 *
 * Nix writes keys as `name:base64(...)`: the secret key is the 32-byte seed followed by the 32-byte
 * public key, the public key the 32 bytes alone.
 */
import * as crypto from "crypto";

export interface NixSigningKeys {
  /** `name:base64(seed || public)`: goes to the builder as a secret. */
  secretKey: string;
  /** `name:base64(public)`: the builder trusts paths signed with it. */
  publicKey: string;
}

export function nixSigningKeys(name: string, ed25519PrivateKeyPem: string): NixSigningKeys {
  if (!/^[A-Za-z0-9._-]+$/.test(name)) throw new Error(`nixSigningKeys: bad key name ${name}`);
  const key = crypto.createPrivateKey(ed25519PrivateKeyPem);
  if (key.asymmetricKeyType !== "ed25519") throw new Error(`nixSigningKeys: an ed25519 key is needed, not ${key.asymmetricKeyType}`);
  const jwk = key.export({ format: "jwk" }) as { d: string; x: string };
  const seed = Buffer.from(jwk.d, "base64url");
  const pub = Buffer.from(jwk.x, "base64url");
  return { secretKey: `${name}:${Buffer.concat([seed, pub]).toString("base64")}`, publicKey: `${name}:${pub.toString("base64")}` };
}

/** Nix store URI of an S3 bucket used as a binary cache. */
export function s3CacheUri(bucket: string, region: string): string {
  return `s3://${bucket}?region=${region}`;
}

/** Read and write this bucket only. */
export function cachePolicy(bucketArn: string): string {
  return JSON.stringify({
    Version: "2012-10-17",
    Statement: [
      { Sid: "List", Effect: "Allow", Action: ["s3:ListBucket", "s3:GetBucketLocation"], Resource: bucketArn },
      { Sid: "Objects", Effect: "Allow", Action: ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"], Resource: `${bucketArn}/*` },
    ],
  });
}

/** The cache bucket's policy: no request over plain HTTP, from anyone. */
export function tlsOnlyPolicy(bucketArn: string): string {
  return JSON.stringify({
    Version: "2012-10-17",
    Statement: [
      {
        Sid: "TlsOnly",
        Effect: "Deny",
        Principal: "*",
        Action: "s3:*",
        Resource: [bucketArn, `${bucketArn}/*`],
        Condition: { Bool: { "aws:SecureTransport": "false" } },
      },
    ],
  });
}
