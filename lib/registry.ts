/** ECR policies: what the builder may push and the host may pull, scoped to one repository. */

/** The ECR registry host of a repository URL: `<account>.dkr.ecr.<region>.amazonaws.com`. */
export function registryHost(repositoryUrl: string): string {
  return repositoryUrl.split("/")[0];
}

import { RegistrySettings } from "./settings";

/**
 * push-image.sh's environment: ECR logs in on the builder with its own role, an OCI registry with
 * the configured credentials (secret: hold the result as a Pulumi secret when it has a password).
 */
export function pushEnv(r: Exclude<RegistrySettings, { kind: "docker" }>): Record<string, string> {
  if (r.kind === "ecr") return { REGISTRY_AUTH: "ecr" };
  const env: Record<string, string> =
    r.username !== undefined
      ? { REGISTRY_AUTH: "basic", REGISTRY_USER: r.username, REGISTRY_PASSWORD: r.password! }
      : { REGISTRY_AUTH: "none" };
  if (r.insecure) env.REGISTRY_INSECURE = "1";
  return env;
}

/** `arn:aws:ecr:<region>:<account>:repository/<name>` -> `<account>.dkr.ecr.<region>.amazonaws.com`. */
export function ecrHostOfArn(arn: string): string {
  const [, , , region, account] = arn.split(":");
  return `${account}.dkr.ecr.${region}.amazonaws.com`;
}

/**
 * The tags an EC2 host gives the image it runs, after each successful rollout (scripts/ecr-keep.sh):
 * `running-<machine>`. The only tags that move (the repository's one exclusion from immutable tags),
 * and the ones the lifecycle rule never expires.
 */
export const RUNNING_TAG_PATTERN = "running-*";
export const runningTag = (machine: string) => `running-${machine}`;

/**
 * Keep the newest `keep` images; older ones expire, except the images hosts run. ECR evaluates
 * the rules in priority order, and "an image that matches the tagging requirements of a higher
 * priority rule cannot be expired by a rule with a lower priority": the first rule claims the
 * running-* images (and would expire one only beyond 100 of them), so the count rule cannot.
 */
export function lifecyclePolicy(keep: number): string {
  return JSON.stringify({
    rules: [
      {
        rulePriority: 1,
        description: "never expire the images hosts run (tagged running-* after each rollout)",
        selection: { tagStatus: "tagged", tagPatternList: [RUNNING_TAG_PATTERN], countType: "imageCountMoreThan", countNumber: 100 },
        action: { type: "expire" },
      },
      {
        rulePriority: 2,
        description: `keep the newest ${keep} images`,
        selection: { tagStatus: "any", countType: "imageCountMoreThan", countNumber: keep },
        action: { type: "expire" },
      },
    ],
  });
}

/** The host tags the image it runs (BatchGetImage, which pulling has, reads its manifest). */
export function keepPolicy(repositoryArn: string): string {
  return JSON.stringify({
    Version: "2012-10-17",
    Statement: [{ Sid: "TagWhatRuns", Effect: "Allow", Action: "ecr:PutImage", Resource: repositoryArn }],
  });
}

const PULL_ACTIONS = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"];
const PUSH_ACTIONS = [
  ...PULL_ACTIONS,
  "ecr:CompleteLayerUpload",
  "ecr:InitiateLayerUpload",
  "ecr:PutImage",
  "ecr:UploadLayerPart",
  "ecr:DescribeImages",
];

function policy(actions: string[], repositoryArn: string): string {
  return JSON.stringify({
    Version: "2012-10-17",
    Statement: [
      // GetAuthorizationToken acts on the registry, not a repository: AWS accepts only "*" here.
      { Sid: "Login", Effect: "Allow", Action: "ecr:GetAuthorizationToken", Resource: "*" },
      { Sid: "Repository", Effect: "Allow", Action: actions, Resource: repositoryArn },
    ],
  });
}

export const pushPolicy = (repositoryArn: string) => policy(PUSH_ACTIONS, repositoryArn);
export const pullPolicy = (repositoryArn: string) => policy(PULL_ACTIONS, repositoryArn);

export const EC2_ASSUME_ROLE = JSON.stringify({
  Version: "2012-10-17",
  Statement: [{ Effect: "Allow", Principal: { Service: "ec2.amazonaws.com" }, Action: "sts:AssumeRole" }],
});
