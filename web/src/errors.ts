// Errors from the browser and livekit-client, in words a person understands.

import { ConnectionError, ConnectionErrorReason, DisconnectReason } from 'livekit-client';

/** Why a camera or microphone could not be opened. `what` is "camera" or "microphone". */
export function mediaProblem(err: unknown, what: string): string {
  const name = err instanceof Error ? err.name : '';
  if (!window.isSecureContext || !navigator.mediaDevices) return noHttps();
  switch (name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return `Your browser blocked the ${what}. Allow it for this site (the icon left of the address bar), then press “Try again”. You can also join without it.`;
    case 'NotFoundError':
    case 'OverconstrainedError':
      return `No ${what} was found. Plug one in and press “Try again”, or join without it.`;
    case 'NotReadableError':
    case 'AbortError':
      return `The ${what} is busy or not working. Close other apps that use it (another call, another tab), then press “Try again”.`;
    default:
      return `The ${what} could not start${err instanceof Error && err.message ? ` (${err.message})` : ''}.`;
  }
}

export function noHttps(): string {
  return (
    'This page is not on a secure (HTTPS) connection that your browser trusts, so it may not use the camera or microphone. ' +
    'Open it as https://…, and install the server’s certificate (link below) so your browser trusts it.'
  );
}

/** Why room.connect failed. */
export function connectProblem(err: unknown): string {
  if (err instanceof ConnectionError) {
    const detail = err.message ? ` (${err.message})` : '';
    switch (err.reason) {
      case ConnectionErrorReason.NotAllowed:
        if (/full/i.test(err.message)) return 'This room is full. Try again later, or ask someone to leave.';
        return `The server refused your entry ticket (token)${detail}. Go back and join again.`;
      case ConnectionErrorReason.ServerUnreachable:
      case ConnectionErrorReason.WebSocket:
        return `Cannot reach the meeting server${detail}. Check your network and try again.`;
      case ConnectionErrorReason.Timeout:
        return 'Connecting took too long. The network may block the call (its media ports: UDP 7882 and up, or TCP 7881 and up); try again.';
      case ConnectionErrorReason.Cancelled:
        return 'Joining was cancelled.';
      case ConnectionErrorReason.LeaveRequest:
        return leftBecause(err.context as DisconnectReason) ?? `The server ended the connection${detail}.`;
      default:
        if (/full/i.test(err.message)) return 'This room is full. Try again later, or ask someone to leave.';
        return `Could not join the meeting${detail}. Try again.`;
    }
  }
  const message = err instanceof Error ? err.message : String(err);
  if (/full/i.test(message)) return 'This room is full. Try again later, or ask someone to leave.';
  return `Could not join the meeting (${message}). Try again.`;
}

/** What to say when the meeting ends for a reason other than pressing Leave (null: nothing). */
export function leftBecause(reason: DisconnectReason | undefined): string | null {
  switch (reason) {
    case undefined:
    case DisconnectReason.CLIENT_INITIATED:
      return null;
    case DisconnectReason.DUPLICATE_IDENTITY:
      return 'You joined this room from another tab or device, so this one left.';
    case DisconnectReason.SERVER_SHUTDOWN:
      return 'The confab server restarted or shut down. Rejoin in a moment.';
    case DisconnectReason.PARTICIPANT_REMOVED:
      return 'You were removed from the meeting.';
    case DisconnectReason.ROOM_DELETED:
    case DisconnectReason.ROOM_CLOSED:
      return 'The meeting was ended.';
    case DisconnectReason.JOIN_FAILURE:
      return 'Joining the meeting failed. Try again.';
    case DisconnectReason.SIGNAL_CLOSE:
    case DisconnectReason.STATE_MISMATCH:
    case DisconnectReason.MIGRATION:
      return 'The connection to the meeting was lost and could not be restored.';
    default:
      return 'The connection to the meeting was lost.';
  }
}
