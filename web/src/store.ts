// What the browser remembers, in localStorage only (nothing is synced): the display name, the
// chosen devices and mute choices, and up to 10 recent rooms.

const KEY = {
  name: 'confab.name',
  recent: 'confab.recent',
  devices: 'confab.devices',
} as const;

export const MAX_RECENT = 10;

export interface RecentRoom {
  room: string;
  /** When this browser was last in the room (ms since the epoch). */
  at: number;
}

export interface DeviceChoice {
  videoinput?: string;
  audioinput?: string;
  audiooutput?: string;
  cameraOn?: boolean;
  micOn?: boolean;
}

function read<T>(key: string, fallback: T): T {
  try {
    const raw = localStorage.getItem(key);
    return raw === null ? fallback : (JSON.parse(raw) as T);
  } catch {
    return fallback;
  }
}

function write(key: string, value: unknown): void {
  try {
    localStorage.setItem(key, JSON.stringify(value));
  } catch {
    // Private mode or storage full: the app works, it just forgets.
  }
}

export function getName(): string {
  const n = read<unknown>(KEY.name, '');
  return typeof n === 'string' ? n : '';
}

export function setName(name: string): void {
  write(KEY.name, name);
}

export function getRecent(): RecentRoom[] {
  const list = read<unknown>(KEY.recent, []);
  if (!Array.isArray(list)) return [];
  return list
    .filter(
      (r): r is RecentRoom =>
        typeof r === 'object' && r !== null && typeof r.room === 'string' && typeof r.at === 'number',
    )
    .sort((a, b) => b.at - a.at)
    .slice(0, MAX_RECENT);
}

/** Puts `room` at the top of the recent rooms (now), keeping at most 10. */
export function touchRecent(room: string, at = Date.now()): void {
  const rest = getRecent().filter((r) => r.room !== room);
  write(KEY.recent, [{ room, at }, ...rest].slice(0, MAX_RECENT));
}

export function removeRecent(room: string): void {
  write(
    KEY.recent,
    getRecent().filter((r) => r.room !== room),
  );
}

export function clearRecent(): void {
  try {
    localStorage.removeItem(KEY.recent);
  } catch {
    // nothing to clear
  }
}

export function getDevices(): DeviceChoice {
  const d = read<unknown>(KEY.devices, {});
  return typeof d === 'object' && d !== null ? (d as DeviceChoice) : {};
}

export function setDevices(patch: DeviceChoice): void {
  write(KEY.devices, { ...getDevices(), ...patch });
}

// Invite tokens (/r/<room>?invite=…) are kept for this tab only (sessionStorage), so "Rejoin"
// and "Copy invite link" still carry the token after the address bar lost it.
const inviteKey = (room: string) => `confab.invite.${room}`;

export function rememberInvite(room: string, token: string): void {
  try {
    sessionStorage.setItem(inviteKey(room), token);
  } catch {
    // private mode or storage full: the link in the address bar still works
  }
}

export function inviteFor(room: string): string | undefined {
  try {
    return sessionStorage.getItem(inviteKey(room)) ?? undefined;
  } catch {
    return undefined;
  }
}

export function forgetInvite(room: string): void {
  try {
    sessionStorage.removeItem(inviteKey(room));
  } catch {
    // nothing kept
  }
}

// The passphrase of an end-to-end encrypted room (from its link's #key=…) is kept for this tab
// only, like invite tokens: "Rejoin" and "Copy invite link" keep working after Leave took the
// address bar home, and nothing of it stays on disk (not in localStorage, not in recent rooms).
const keyKey = (room: string) => `confab.key.${room}`;

export function rememberKey(room: string, key: string): void {
  try {
    sessionStorage.setItem(keyKey(room), key);
  } catch {
    // private mode or storage full: the link in the address bar still works
  }
}

export function keyFor(room: string): string | undefined {
  try {
    return sessionStorage.getItem(keyKey(room)) ?? undefined;
  } catch {
    return undefined;
  }
}

export function forgetKey(room: string): void {
  try {
    sessionStorage.removeItem(keyKey(room));
  } catch {
    // nothing kept
  }
}
