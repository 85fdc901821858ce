// End-to-end encrypted meetings: the room's passphrase lives in the link's fragment
// (/r/<room>#key=<passphrase>), which browsers never send to a server (not in requests, not in
// Referer). livekit-client encrypts every camera, microphone and screen frame (and the data
// channel) in a worker with a key derived from it; the SFU forwards what it cannot read.

import { type E2EEManagerOptions, ExternalE2EEKeyProvider, isE2EESupported } from 'livekit-client';

/** The worker's address in web/dist (build.mjs bundles livekit-client/e2ee-worker there). */
declare const E2EE_WORKER_URL: string;

/** A passphrase: 32 random bytes (256 bits), base64url without padding (43 characters). */
export function newPassphrase(): string {
  const bytes = new Uint8Array(32);
  crypto.getRandomValues(bytes);
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

const KEY_RE = /^[A-Za-z0-9_-]{16,256}$/;

/**
 * The passphrase of a fragment (`#key=…`, other fragment parameters allowed), or null.
 * `valid: false` when a key is there but cannot be one (cut short when copied, for example).
 */
export function keyFromHash(hash: string): { key: string; valid: boolean } | null {
  const key = new URLSearchParams(hash.replace(/^#/, '')).get('key');
  if (key === null) return null;
  return { key, valid: KEY_RE.test(key) };
}

/** The fragment that carries `key`. */
export function keyHash(key: string): string {
  return `#key=${key}`;
}

/** Whether this browser can take part in an encrypted meeting (insertable streams or script transforms). */
export function e2eeSupported(): boolean {
  return typeof Worker !== 'undefined' && isE2EESupported();
}

export const NO_KEY = 'This meeting is end-to-end encrypted. Ask for the full link, including the part after #.';
export const WRONG_KEY =
  'The key in your link does not open this meeting: its video and sound cannot be decrypted. ' +
  'Ask for the full link again, including the part after #.';
export const UNSUPPORTED =
  'This meeting is end-to-end encrypted, and this browser cannot decrypt it. Use a recent Chrome, Edge, Firefox or Safari.';

/** Room options for `passphrase`: the key provider (key set) and a fresh worker (terminate it after). */
export async function encryptionFor(passphrase: string): Promise<E2EEManagerOptions> {
  const keyProvider = new ExternalE2EEKeyProvider();
  await keyProvider.setKey(passphrase);
  return { keyProvider, worker: new Worker(E2EE_WORKER_URL, { name: 'confab-e2ee' }) };
}
