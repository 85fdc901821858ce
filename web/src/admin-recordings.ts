// The admin overview's "Recordings" panel: every recording the server made or is making
// (GET /api/admin/recordings; one file per participant of a recorded room), with Download and
// Delete (DELETE /api/admin/recordings/<egressId>; refused with 409 while it is still active).

import type { Answer, Call, Panel } from './admin-panels';
import { h, toast } from './dom';

/** LiveKit's egress states, as the server reports them. */
export type EgressStatus =
  | 'EGRESS_STARTING'
  | 'EGRESS_ACTIVE'
  | 'EGRESS_ENDING'
  | 'EGRESS_COMPLETE'
  | 'EGRESS_FAILED'
  | 'EGRESS_ABORTED';

export interface Recording {
  egressId: string;
  room: string;
  participant: string;
  track: string;
  status: EgressStatus;
  /** Unix ms; 0: not yet. */
  startedAt: number;
  endedAt: number;
  durationMs: number;
  /** Bytes. */
  size: number;
  filename: string;
  error: string;
  /** URL path that GETs the file. */
  download: string;
}

export interface Recordings {
  recordings: Recording[];
}

const STATUS_WORDS: Record<EgressStatus, string> = {
  EGRESS_STARTING: 'Starting',
  EGRESS_ACTIVE: 'Recording',
  EGRESS_ENDING: 'Finishing',
  EGRESS_COMPLETE: 'Done',
  EGRESS_FAILED: 'Failed',
  EGRESS_ABORTED: 'Aborted',
};

const isActive = (r: Recording) => r.status === 'EGRESS_STARTING' || r.status === 'EGRESS_ACTIVE' || r.status === 'EGRESS_ENDING';

export function duration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  const hh = Math.floor(s / 3600);
  const mm = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return hh > 0 ? `${hh}:${String(mm).padStart(2, '0')}:${ss}` : `${mm}:${ss}`;
}

export function size(bytes: number): string {
  if (bytes <= 0) return '—';
  const units = ['bytes', 'KB', 'MB', 'GB', 'TB'];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return i === 0 ? `${v} bytes` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

const when = (ms: number) =>
  ms > 0 ? new Date(ms).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' }) : 'not yet';

export function recordingsPanel(call: Call, lost: () => void): Panel {
  const body = h('tbody');
  const table = h(
    'table',
    { class: 'recordings', 'aria-labelledby': 'recordings-h' },
    h(
      'thead',
      {},
      h(
        'tr',
        {},
        ...['Room', 'Participant', 'Started', 'Duration', 'Size', 'Status', 'File'].map((t) => h('th', { scope: 'col', text: t })),
      ),
    ),
    body,
  );
  const empty = h('p', {
    class: 'hint',
    text: 'No recordings yet. Start one with Record in a meeting (shown to whoever is logged in here, in the same browser).',
  });
  const problem = h('p', { class: 'error', role: 'alert', hidden: true });
  const refreshButton = h('button', { type: 'button', class: 'small', text: 'Refresh', onclick: () => void refresh() });

  const fail = (a: Answer<unknown>, what: string) => {
    if (a.status === 401) {
      lost();
      return;
    }
    toast(`${what}: ${a.error ?? `error ${a.status}`}.`, 8000);
  };

  const remove = async (r: Recording, button: HTMLButtonElement) => {
    const name = `${r.participant || r.track} in ${r.room}`;
    if (!window.confirm(`Delete the recording of ${name}? Its file is removed from the server.`)) return;
    button.disabled = true;
    const a = await call(`recordings/${encodeURIComponent(r.egressId)}`, undefined, 'DELETE');
    button.disabled = false;
    if (!a.ok) {
      fail(a, a.status === 409 ? 'Not deleted' : `Could not delete the recording of ${name}`);
      return;
    }
    toast(`Recording of ${name} deleted.`);
    await refresh();
  };

  const row = (r: Recording) => {
    const now = Date.now();
    const ms = r.durationMs > 0 ? r.durationMs : isActive(r) && r.startedAt > 0 ? now - r.startedAt : 0;
    const status = h(
      'td',
      { class: `rec-status ${r.status.toLowerCase()}` },
      STATUS_WORDS[r.status] ?? r.status,
      r.error ? h('span', { class: 'rec-error', text: ` — ${r.error}` }) : null,
    );
    const del = h('button', {
      type: 'button',
      class: 'small danger',
      text: 'Delete',
      'aria-label': `Delete the recording of ${r.participant || r.track} in ${r.room}`,
    });
    del.addEventListener('click', () => void remove(r, del));
    return h(
      'tr',
      { 'data-egress': r.egressId },
      h('td', {}, h('span', { class: 'room-chip', text: r.room })),
      h('td', { text: r.participant || '—' }),
      h('td', { text: when(r.startedAt) }),
      h('td', { text: ms > 0 ? duration(ms) : '—' }),
      h('td', { text: size(r.size) }),
      status,
      h(
        'td',
        { class: 'rec-actions' },
        r.status === 'EGRESS_COMPLETE' && r.download
          ? h('a', {
              href: r.download,
              download: r.filename || '',
              text: 'Download',
              'aria-label': `Download the recording of ${r.participant || r.track} in ${r.room}`,
            })
          : null,
        del,
      ),
    );
  };

  async function refresh(): Promise<void> {
    const a = await call<Recordings>('recordings');
    if (a.status === 401) return lost();
    if (!a.ok || !Array.isArray(a.data?.recordings)) {
      problem.hidden = false;
      // 404: a confab without recording (not an error to alarm anyone with).
      problem.className = a.status === 404 ? 'hint' : 'error';
      problem.textContent =
        a.status === 404 ? 'This confab does not record meetings.' : `Cannot list the recordings (${a.error ?? `error ${a.status}`}).`;
      return;
    }
    problem.hidden = true;
    const list = [...a.data.recordings].sort((x, y) => y.startedAt - x.startedAt);
    body.replaceChildren(...list.map(row));
    table.hidden = list.length === 0;
    empty.hidden = list.length > 0;
  }

  table.hidden = true;
  const el = h(
    'section',
    { class: 'panel recordings-panel', 'aria-labelledby': 'recordings-h' },
    h('div', { class: 'row spread' }, h('h2', { id: 'recordings-h', text: 'Recordings' }), refreshButton),
    h('p', {
      class: 'hint',
      text: 'One file per person of each recorded meeting, kept on this server until deleted. End-to-end encrypted meetings cannot be recorded.',
    }),
    problem,
    empty,
    h('div', { class: 'table-scroll' }, table),
  );
  return { el, refresh };
}
