/**
 * What an EC2 instance type can run, judged from its name. AWS names Graviton (arm64) families with
 * a `g` right after the generation digit (t4g, m7g, c6gn, x2gd, g5g), and a1.
 */

/** GPU families the Deep Learning Base OSS NVIDIA driver AMI (AL2023) supports. */
export const NVIDIA_GPU_FAMILIES = ["g4dn", "g5", "g6", "g6e", "gr6"] as const;

export function instanceFamily(type: string): string {
  return type.split(".")[0];
}

export function isArmInstanceType(type: string): boolean {
  const family = instanceFamily(type);
  return family === "a1" || /^[a-z]+\d+g[a-z]*$/.test(family);
}

/** Why `type` cannot run the NVIDIA GPU AMI, or undefined when it can. */
export function gpuInstanceProblem(type: string): string | undefined {
  const family = instanceFamily(type);
  if ((NVIDIA_GPU_FAMILIES as readonly string[]).includes(family)) return undefined;
  if (family === "g4ad") return `${type} has an AMD GPU; the NVIDIA driver AMI needs one of ${NVIDIA_GPU_FAMILIES.join(", ")}`;
  if (family === "g5g") return `${type} is arm64 (Graviton with NVIDIA T4G); neko images are linux/amd64 only`;
  return `${type} has no NVIDIA GPU the Deep Learning GPU AMI supports; use one of the ${NVIDIA_GPU_FAMILIES.join(", ")} families`;
}
