import { profileZoneProblem } from "../../lib/zones";

describe("profileZoneProblem: the host must fit the zone its browser profile's volume is in", () => {
  const base = { volumeZone: "eu-central-1a", instanceType: "g5.xlarge", offered: ["eu-central-1a", "eu-central-1b"] };

  test("fits: nothing to say", () => {
    expect(profileZoneProblem(base)).toBeUndefined();
    expect(profileZoneProblem({ ...base, subnetId: "subnet-0a", subnetZone: "eu-central-1a" })).toBeUndefined();
  });

  test("a type not offered in the volume's zone names the key, where it is offered, and both fixes", () => {
    expect(profileZoneProblem({ ...base, instanceType: "g6e.xlarge", offered: ["eu-central-1c", "eu-central-1b"] })).toBe(
      "neko-infra:host.instanceType: g6e.xlarge is not offered in eu-central-1a, where the browser profile's volume is " +
        "(it is offered in eu-central-1b, eu-central-1c); choose a type offered in eu-central-1a, or move the profile: replace its " +
        "volume (`pulumi up --replace <URN of host-browser-profile, from pulumi stack --show-urns>`; its final snapshot keeps the old profile)",
    );
    expect(profileZoneProblem({ ...base, offered: [] })).toMatch(/\(it is offered in no zone of this region\)/);
  });

  test("a subnet in another zone names the subnet and the volume's zone", () => {
    expect(profileZoneProblem({ ...base, subnetId: "subnet-0b", subnetZone: "eu-central-1b" })).toMatch(
      /^neko-infra:host\.subnetId: subnet-0b is in eu-central-1b, but the browser profile's volume is in eu-central-1a and attaches only there; choose a subnet in eu-central-1a, or move the profile/,
    );
  });
});
