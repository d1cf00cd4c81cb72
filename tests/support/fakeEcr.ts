/**
 * A fake ECR API on 127.0.0.1 for the real AWS CLI (ECR's JSON 1.1 protocol: POST with
 * X-Amz-Target `AmazonEC2ContainerRegistry_V20150921.<Action>`, a SigV4 Authorization header).
 *
 *   const ecr = await startFakeEcr({ account: "123456789012", repository: "neko", images: [{ manifest, tags: ["abc"] }] });
 *   ecr.endpoint                 // for --endpoint-url
 *   ecr.images                   // live: [{ digest, manifest, mediaType, tags }]
 *   ecr.calls, ecr.violations    // what was asked; what the real API would refuse (assert [])
 *   ecr.deny("PutImage")         // that action answers AccessDeniedException from now on
 *
 * Actions: BatchGetImage (imageIds[].imageDigest) and PutImage (imageTag, imageManifest,
 * imageManifestMediaType, imageDigest). As ECR does: PutImage checks that the manifest's SHA-256
 * is imageDigest (ImageDigestDoesNotMatchException), answers ImageAlreadyExistsException when
 * the tag is on that image already, moves a tag matching `mutableTags` (the repository's
 * exclusion filter, a wildcard) and refuses to move any other (ImageTagAlreadyExistsException).
 */
import * as crypto from "crypto";
import * as http from "http";
import { AddressInfo } from "net";

export interface FakeImage {
  digest: string;
  manifest: string;
  mediaType: string;
  tags: string[];
}
export interface FakeEcr {
  endpoint: string;
  images: FakeImage[];
  calls: { action: string; body: Record<string, unknown> }[];
  violations: string[];
  deny(action: string): void;
  close(): Promise<void>;
}

const TARGET = "AmazonEC2ContainerRegistry_V20150921.";
export const sha256Digest = (text: string) => `sha256:${crypto.createHash("sha256").update(text).digest("hex")}`;

export async function startFakeEcr(o: {
  account: string;
  repository: string;
  images: { manifest: string; mediaType?: string; tags: string[] }[];
  mutableTags?: string;
}): Promise<FakeEcr> {
  const images: FakeImage[] = o.images.map((i) => ({
    digest: sha256Digest(i.manifest),
    manifest: i.manifest,
    mediaType: i.mediaType ?? "application/vnd.oci.image.manifest.v1+json",
    tags: [...i.tags],
  }));
  const mutable = new RegExp(`^${(o.mutableTags ?? "running-*").replace(/[.+?^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*")}$`);
  const calls: FakeEcr["calls"] = [];
  const violations: string[] = [];
  const denied = new Set<string>();

  const answer = (res: http.ServerResponse, status: number, body: unknown, type?: string) => {
    res.writeHead(status, { "Content-Type": "application/x-amz-json-1.1", ...(type ? { "x-amzn-ErrorType": type } : {}) });
    res.end(JSON.stringify(body));
  };
  const fail = (res: http.ServerResponse, type: string, message: string) => answer(res, 400, { __type: type, message }, type);

  const server = http.createServer((req, res) => {
    let raw = "";
    req.on("data", (d: Buffer) => (raw += d.toString()));
    req.on("end", () => {
      const target = String(req.headers["x-amz-target"] ?? "");
      const action = target.startsWith(TARGET) ? target.slice(TARGET.length) : "";
      let body: Record<string, unknown> = {};
      try {
        body = JSON.parse(raw || "{}") as Record<string, unknown>;
      } catch {
        violations.push(`${action || target}: a body that is not JSON`);
      }
      calls.push({ action, body });
      if (!/^AWS4-HMAC-SHA256 Credential=/.test(String(req.headers.authorization ?? ""))) {
        violations.push(`${action}: unsigned request`);
        return fail(res, "UnrecognizedClientException", "The security token included in the request is invalid.");
      }
      if (body.registryId !== o.account || body.repositoryName !== o.repository) {
        violations.push(`${action}: registry ${String(body.registryId)} / repository ${String(body.repositoryName)}`);
        return fail(res, "RepositoryNotFoundException", `The repository with name '${String(body.repositoryName)}' does not exist`);
      }
      if (denied.has(action)) return fail(res, "AccessDeniedException", `User is not authorized to perform: ecr:${action}`);
      if (action === "BatchGetImage") {
        const ids = (body.imageIds ?? []) as { imageDigest?: string }[];
        const found = images.filter((i) => ids.some((id) => id.imageDigest === i.digest));
        return answer(res, 200, {
          images: found.map((i) => ({
            registryId: o.account,
            repositoryName: o.repository,
            imageId: { imageDigest: i.digest, imageTag: i.tags[0] },
            imageManifest: i.manifest,
            imageManifestMediaType: i.mediaType,
          })),
          failures: ids
            .filter((id) => !found.some((i) => i.digest === id.imageDigest))
            .map((id) => ({ imageId: id, failureCode: "ImageNotFound", failureReason: "Requested image not found" })),
        });
      }
      if (action === "PutImage") {
        const manifest = String(body.imageManifest ?? "");
        const tag = String(body.imageTag ?? "");
        if (body.imageDigest !== undefined && body.imageDigest !== sha256Digest(manifest))
          return fail(res, "ImageDigestDoesNotMatchException", "The specified image digest does not match the digest that ECR calculated");
        const image = images.find((i) => i.digest === sha256Digest(manifest));
        if (!image) return fail(res, "ReferencedImagesNotFoundException", "Some of the layers of this manifest are not in the repository");
        if (image.tags.includes(tag))
          return fail(res, "ImageAlreadyExistsException", `Image with digest '${image.digest}' and tag '${tag}' already exists`);
        const holder = images.find((i) => i.tags.includes(tag));
        if (holder && !mutable.test(tag))
          return fail(res, "ImageTagAlreadyExistsException", `The image tag '${tag}' already exists and cannot be overwritten`);
        if (holder) holder.tags = holder.tags.filter((t) => t !== tag);
        image.tags.push(tag);
        return answer(res, 200, {
          image: { registryId: o.account, repositoryName: o.repository, imageId: { imageDigest: image.digest, imageTag: tag } },
        });
      }
      violations.push(`unexpected action ${target}`);
      return fail(res, "InvalidParameterException", `unknown action ${target}`);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    images,
    calls,
    violations,
    deny: (action) => denied.add(action),
    close: () => new Promise<void>((resolve) => (server.closeAllConnections(), server.close(() => resolve()))),
  };
}
