// The server's web app API: POST /api/join mints a token; GET /api/rooms/<room> says whether a
// room is still there. Errors come back as sentences a person understands.

export interface JoinGrant {
  token: string;
  url: string;
  room: string;
  identity: string;
}

export interface RoomStatus {
  room: string;
  active: boolean;
  participants: number;
}

/** A failure to show as is: `message` is for people. */
export class Problem extends Error {
  constructor(
    message: string,
    readonly kind: 'invalid' | 'full' | 'refused' | 'unreachable' | 'server' = 'server',
  ) {
    super(message);
  }
}

async function errorText(res: Response): Promise<string | undefined> {
  try {
    const body = (await res.json()) as { error?: unknown };
    return typeof body.error === 'string' ? body.error : undefined;
  } catch {
    return undefined;
  }
}

const UNREACHABLE =
  'Cannot reach the confab server. Check that this device is on the same network (or Tailscale) as the server, then try again.';

export async function requestJoin(room: string, name: string): Promise<JoinGrant> {
  let res: Response;
  try {
    res = await fetch('/api/join', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ room, name }),
      cache: 'no-store',
    });
  } catch {
    throw new Problem(UNREACHABLE, 'unreachable');
  }
  if (res.ok) {
    const grant = (await res.json()) as JoinGrant;
    if (!grant.token || !grant.url) throw new Problem('The server gave an incomplete answer. Try again.');
    return grant;
  }
  const text = await errorText(res);
  const sentence = text ? text.charAt(0).toUpperCase() + text.slice(1) : undefined;
  if (res.status === 400) throw new Problem(`${sentence ?? 'The room or name was not accepted'}.`, 'invalid');
  if (res.status === 503) {
    const full = /full/i.test(text ?? '');
    throw new Problem(
      full
        ? `${sentence ?? 'This room is full'}. Try again later, or ask someone to leave.`
        : `The server cannot take more people right now${text ? ` (${text})` : ''}. Try again later.`,
      'full',
    );
  }
  if (res.status === 401 || res.status === 403) {
    throw new Problem(`The server refused to let you join${text ? `: ${text}` : ''}.`, 'refused');
  }
  throw new Problem(`The server could not let you join (error ${res.status}${text ? `: ${text}` : ''}). Try again.`);
}

export async function roomStatus(room: string, signal?: AbortSignal): Promise<RoomStatus | null> {
  try {
    const res = await fetch(`/api/rooms/${encodeURIComponent(room)}`, { cache: 'no-store', signal });
    if (!res.ok) return null;
    return (await res.json()) as RoomStatus;
  } catch {
    return null;
  }
}
