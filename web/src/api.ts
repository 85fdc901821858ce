// The server's web app API: POST /api/join mints a token; GET /api/rooms/<room> says whether a
// room is still there; POST /api/recording starts or stops recording a room (with the join
// token, which carries roomRecord for the admin). Errors come back as sentences a person
// understands.

export interface JoinGrant {
  token: string;
  url: string;
  room: string;
  identity: string;
  /** The person has the admin session: the token carries roomRecord, Record is offered. */
  canRecord?: boolean;
}

/** POST /api/recording's answer. */
export interface RecordingState {
  recording: boolean;
  egresses?: unknown[];
}

export interface RoomStatus {
  room: string;
  active: boolean;
  participants: number;
  /** How the room is joined: by anyone, with its passcode, or with an invite link. */
  access?: 'open' | 'passcode' | 'invite';
}

/** What a person brings to a room that is not open to everyone. */
export interface Credentials {
  passcode?: string;
  invite?: string;
}

/** A failure to show as is: `message` is for people. */
export class Problem extends Error {
  constructor(
    message: string,
    readonly kind: 'invalid' | 'full' | 'refused' | 'unreachable' | 'server' | 'passcode' | 'invite' = 'server',
  ) {
    super(message);
  }
}

async function errorBody(res: Response): Promise<{ text?: string; code?: string }> {
  try {
    const body = (await res.json()) as { error?: unknown; code?: unknown };
    return {
      text: typeof body.error === 'string' ? body.error : undefined,
      code: typeof body.code === 'string' ? body.code : undefined,
    };
  } catch {
    return {};
  }
}

/** Refusals of guest access, passcodes and invite links (src/api/access.rs), in words. */
function accessProblem(code: string | undefined, sentence: string | undefined): Problem | null {
  switch (code) {
    case 'passcode_required':
      return new Problem('This room needs a passcode. Enter it above, then join.', 'passcode');
    case 'passcode_wrong':
      return new Problem('Wrong passcode. Check it (ask whoever gave it to you) and try again.', 'passcode');
    case 'invite_expired':
      return new Problem('This invite link has expired. Ask the person who sent it for a new one.', 'invite');
    case 'invite_invalid':
      return new Problem('This invite link is not valid any more (it may have been revoked). Ask for a new one.', 'invite');
    case 'invite_other_room':
      return new Problem(`${sentence ?? 'This invite link is for another room'}.`, 'invite');
    case 'invite_required':
      return new Problem(
        'Guest access is off on this confab: joining needs an invite link (or the room’s passcode) from its admin.',
        'invite',
      );
    case 'too_many_attempts':
      return new Problem('Too many wrong passcodes or invite links from this device. Wait five minutes, then try again.', 'refused');
    default:
      return null;
  }
}

const UNREACHABLE =
  'Cannot reach the confab server. Check that this device is on the same network (or Tailscale) as the server, then try again.';

export async function requestJoin(room: string, name: string, creds: Credentials = {}): Promise<JoinGrant> {
  let res: Response;
  try {
    res = await fetch('/api/join', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ room, name, passcode: creds.passcode || undefined, invite: creds.invite || undefined }),
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
  const { text, code } = await errorBody(res);
  const sentence = text ? text.charAt(0).toUpperCase() + text.slice(1) : undefined;
  const access = accessProblem(code, sentence);
  if (access) throw access;
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

/** Starts (`record`) or stops recording `room`; `token` is the join token (roomRecord grant). */
export async function setRecording(token: string, room: string, record: boolean): Promise<RecordingState> {
  let res: Response;
  try {
    res = await fetch('/api/recording', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
      body: JSON.stringify({ room, record }),
      cache: 'no-store',
    });
  } catch {
    throw new Problem(UNREACHABLE, 'unreachable');
  }
  if (res.ok) {
    const body = (await res.json().catch(() => null)) as RecordingState | null;
    if (typeof body?.recording !== 'boolean') throw new Problem('The server gave an incomplete answer. Try again.');
    return body;
  }
  const { text } = await errorBody(res);
  const sentence = text ? text.charAt(0).toUpperCase() + text.slice(1) : undefined;
  const what = record ? 'start' : 'stop';
  switch (res.status) {
    case 401:
    case 403:
      throw new Problem(`You may not record this meeting${text ? ` (${text})` : ''}. Recording needs the admin's session.`, 'refused');
    case 409:
      throw new Problem(`${sentence ?? 'Recording is not possible now'}.`, 'refused');
    case 507:
      throw new Problem(`Recording cannot ${what}: ${text ?? 'the server does not have enough free disk space'}. Free some space (delete old recordings on the admin page).`);
    default:
      throw new Problem(`Recording could not ${what} (error ${res.status}${text ? `: ${text}` : ''}). Try again.`);
  }
}
