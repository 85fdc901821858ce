// Room names: what the server accepts, and new random pronounceable ones ("bavo-tikel-mura").

export const ROOM_PATTERN = '[A-Za-z0-9._\\-]{1,64}';
const ROOM_RE = /^[A-Za-z0-9._-]{1,64}$/;

export function validRoom(name: string): boolean {
  return ROOM_RE.test(name);
}

/** Why `name` is not a room name, in words, or null when it is one. */
export function roomProblem(name: string): string | null {
  if (name.length === 0) return 'Enter a room name.';
  if (name.length > 64) return 'A room name has at most 64 characters.';
  if (!ROOM_RE.test(name)) {
    return "A room name may use letters, digits, '-', '_' and '.' (no spaces).";
  }
  return null;
}

const CONSONANTS = 'bdfgklmnprstvz';
const VOWELS = 'aeiou';

function random(n: number): number {
  const a = new Uint32Array(1);
  crypto.getRandomValues(a);
  return a[0] % n;
}

function syllable(): string {
  return CONSONANTS[random(CONSONANTS.length)] + VOWELS[random(VOWELS.length)];
}

/** Three pronounceable words of 2–3 syllables, e.g. "bavo-tikel-mura" (about 45 bits). */
export function randomRoom(): string {
  const words: string[] = [];
  for (let w = 0; w < 3; w++) {
    let word = '';
    const syllables = 2 + random(2);
    for (let s = 0; s < syllables; s++) word += syllable();
    if (random(2) === 1) word += CONSONANTS[random(CONSONANTS.length)];
    words.push(word);
  }
  return words.join('-');
}

/** The room named by an invite path `/r/<room>`, or null. */
export function roomFromPath(pathname: string): string | null {
  const m = /^\/r\/([^/]+)\/?$/.exec(pathname);
  if (!m) return null;
  let room: string;
  try {
    room = decodeURIComponent(m[1]);
  } catch {
    return null;
  }
  return validRoom(room) ? room : null;
}

export function roomPath(room: string): string {
  return `/r/${encodeURIComponent(room)}`;
}

/**
 * The link to share: with the invite token this tab joined with, if any (guest access off), and
 * the key of an end-to-end encrypted room in the fragment (never sent to the server).
 */
export function inviteLink(room: string, invite?: string, key?: string): string {
  const query = invite ? `?invite=${encodeURIComponent(invite)}` : '';
  const fragment = key ? `#key=${key}` : '';
  return `${location.origin}${roomPath(room)}${query}${fragment}`;
}

/** Initials for a tile without video: "Ada Lovelace" → "AL". */
export function initials(name: string): string {
  const parts = name.trim().split(/\s+/).filter(Boolean);
  const letters = parts.length > 1 ? [parts[0], parts[parts.length - 1]] : parts;
  return letters.map((p) => Array.from(p)[0]?.toUpperCase() ?? '').join('') || '?';
}
