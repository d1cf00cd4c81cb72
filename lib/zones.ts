/**
 * The browser profile's EBS volume fixes the host's availability zone: a volume attaches only to an
 * instance in its own zone, and it outlives instances. Pure: what is wrong with a host's settings
 * for the zone the volume is in, found at preview instead of as a failed attachment mid-update.
 */
import { keyOf } from "./settingsMessages";

export interface ZoneFacts {
  /** Where the profile volume is. */
  volumeZone: string;
  instanceType: string;
  /** Zones of the region that offer instanceType. */
  offered: string[];
  subnetId?: string;
  /** The zone of subnetId, when one is set. */
  subnetZone?: string;
}

const MOVE =
  "or move the profile: replace its volume (`pulumi up --replace <URN of host-browser-profile, from pulumi stack --show-urns>`; its final snapshot keeps the old profile)";

export function profileZoneProblem(f: ZoneFacts): string | undefined {
  if (f.subnetZone !== undefined && f.subnetZone !== f.volumeZone) {
    return `${keyOf("host.subnetId")}: ${f.subnetId} is in ${f.subnetZone}, but the browser profile's volume is in ${f.volumeZone} and attaches only there; choose a subnet in ${f.volumeZone}, ${MOVE}`;
  }
  if (!f.offered.includes(f.volumeZone)) {
    const elsewhere = f.offered.length ? `it is offered in ${[...f.offered].sort().join(", ")}` : "it is offered in no zone of this region";
    return `${keyOf("host.instanceType")}: ${f.instanceType} is not offered in ${f.volumeZone}, where the browser profile's volume is (${elsewhere}); choose a type offered in ${f.volumeZone}, ${MOVE}`;
  }
  return undefined;
}
