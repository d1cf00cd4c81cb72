import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { lifecyclePolicy, pushEnv, pushPolicy, RUNNING_TAG_PATTERN } from "../lib/registry";
import { RegistrySettings } from "../lib/settings";
import { NixBuilder } from "./nixBuilder";

export interface ImageRegistryArgs {
  settings: RegistrySettings;
  builder: NixBuilder;
  /** The docker-archive on the builder (NixImage.storePath). */
  storePath: pulumi.Input<string>;
  tags?: Record<string, string>;
}

/** The tag of images loaded into the local Docker engine (registry kind docker). */
export const LOCAL_IMAGE_NAME = "neko-infra/neko";

/**
 * An ECR repository (or a generic OCI registry) and the push of the image into it, done from the
 * builder itself so the image never crosses the operator's link. The push runs again only when the
 * store path changes; no registry token is ever an input, so tokens cannot cause a diff.
 */
export class ImageRegistry extends pulumi.ComponentResource {
  /** Repository URL without tag or digest. */
  readonly repositoryUrl: pulumi.Output<string>;
  /** ARN of the ECR repository (ecr only): hosts are granted pull on it alone. */
  readonly repositoryArn?: pulumi.Output<string>;
  /** `repository@sha256:...`: what hosts run. */
  readonly imageRef: pulumi.Output<string>;

  constructor(name: string, args: ImageRegistryArgs, opts?: pulumi.ComponentResourceOptions) {
    super("neko-infra:registry:ImageRegistry", name, {}, opts);
    const s = args.settings;
    const dependsOn: pulumi.Resource[] = [];
    let env: pulumi.Output<Record<string, string>>;

    if (s.kind === "ecr") {
      const repo = new aws.ecr.Repository(
        `${name}-repo`,
        {
          name: s.repository,
          // Immutable, but for the tag each host moves onto the image it runs (RUNNING_TAG_PATTERN).
          imageTagMutability: "IMMUTABLE_WITH_EXCLUSION",
          imageTagMutabilityExclusionFilters: [{ filter: RUNNING_TAG_PATTERN, filterType: "WILDCARD" }],
          imageScanningConfiguration: { scanOnPush: s.scanOnPush },
          encryptionConfigurations: [{ encryptionType: "AES256" }],
          forceDelete: s.forceDelete,
          tags: args.tags,
        },
        { parent: this },
      );
      dependsOn.push(
        new aws.ecr.LifecyclePolicy(
          `${name}-lifecycle`,
          { repository: repo.name, policy: lifecyclePolicy(s.keepImages) },
          { parent: this },
        ),
      );
      if (args.builder.role) {
        dependsOn.push(
          new aws.iam.RolePolicy(
            `${name}-builder-push`,
            { role: args.builder.role.id, policy: repo.arn.apply(pushPolicy) },
            { parent: this },
          ),
        );
      }
      this.repositoryUrl = repo.repositoryUrl;
      this.repositoryArn = repo.arn;
      env = pulumi.output(pushEnv(s));
    } else if (s.kind === "oci") {
      this.repositoryUrl = pulumi.output(s.url);
      env = s.password !== undefined ? pulumi.secret(pushEnv(s)) : pulumi.output(pushEnv(s));
    } else {
      // The local stack: `docker load` into this machine's engine; the reference is the image ID.
      this.repositoryUrl = pulumi.output(LOCAL_IMAGE_NAME);
      const load = args.builder.run(
        `${name}-load`,
        {
          script: "docker-load.sh",
          args: pulumi.output(args.storePath).apply((p) => [p, LOCAL_IMAGE_NAME]),
          purpose: "loading the image into this machine's Docker engine",
          budgetSeconds: 1800,
          needs: ["docker"],
        },
        { parent: this },
      );
      this.imageRef = load.stdout.apply((out) => out.trim());
      this.registerOutputs({ repositoryUrl: this.repositoryUrl, imageRef: this.imageRef });
      return;
    }

    const push = args.builder.run(
      `${name}-push`,
      {
        script: "push-image.sh",
        args: pulumi.all([args.storePath, this.repositoryUrl]).apply(([p, url]) => [p, url]),
        env,
        purpose: pulumi.interpolate`pushing the image to ${this.repositoryUrl}`,
        budgetSeconds: 3600,
        needs: ["skopeo"],
      },
      { parent: this, dependsOn },
    );
    // A digest is not a secret, though the engine marks it so when the push's input holds a password.
    this.imageRef = pulumi.unsecret(push.stdout.apply((out) => out.trim()));
    this.registerOutputs({ repositoryUrl: this.repositoryUrl, imageRef: this.imageRef });
  }
}
