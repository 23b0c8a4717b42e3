import { createHash, timingSafeEqual } from 'node:crypto';

/**
 * Whether a presented secret (bearer token, group secret) is the expected one, in time that does
 * not depend on where they differ or on their lengths (both are hashed first). Every port's check
 * (coordinator, dashboard, Peer) goes through here.
 */
export function sameSecret(presented: string | Uint8Array, expected: string | Uint8Array): boolean {
  const digest = (v: string | Uint8Array): Buffer => createHash('sha256').update(v).digest();
  return timingSafeEqual(digest(presented), digest(expected));
}
