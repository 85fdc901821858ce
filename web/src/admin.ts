// The admin page at /admin: first-run setup (the admin password), login, and the overview
// (version, uptime, health checks, memory and CPU, live rooms with "End room" and "Remove", the
// API key with "Rotate", who may join (guest access, passcodes, invite links), updates through the
// update agent, a backup download, the CA certificate; the key, access and update panels live
// in admin-panels.ts). Talks to /api/admin/* (src/api/admin.rs), which
// keeps the session in an HttpOnly cookie; every POST is JSON.

import { accessPanel, keysPanel, updatePanel } from './admin-panels';
import { recordingsPanel } from './admin-recordings';
import { h, show, toast } from './dom';
import type { Nav } from './main';

interface Session {
  setup_needed: boolean;
  logged_in: boolean;
}

interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

interface AdminRoom {
  name: string;
  participants: { identity: string; name: string; tracks: number }[];
}

interface Overview {
  version: string;
  commit: string;
  build_date?: string;
  uptime_seconds: number;
  update: string;
  ready: boolean;
  checks: Check[];
  process: { rss_bytes: number | null; cpu_seconds: number | null };
  room_list: AdminRoom[];
}

interface Answer<T> {
  ok: boolean;
  status: number;
  data: T | null;
  /** The server's `error` text, if any. */
  error?: string;
}

const REFRESH_MS = 3000;

async function call<T>(path: string, body?: unknown, method?: 'DELETE'): Promise<Answer<T>> {
  let res: Response;
  try {
    res = await fetch(`/api/admin/${path}`, {
      method: method ?? (body === undefined ? 'GET' : 'POST'),
      headers: body === undefined ? undefined : { 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      credentials: 'same-origin',
    });
  } catch {
    return { ok: false, status: 0, data: null, error: 'cannot reach the confab server' };
  }
  let data: unknown = null;
  try {
    data = await res.json();
  } catch {
    data = null;
  }
  const error =
    data && typeof (data as { error?: unknown }).error === 'string' ? (data as { error: string }).error : undefined;
  return { ok: res.ok, status: res.status, data: res.ok ? (data as T) : null, error };
}

const sentence = (text: string): string => {
  const t = text.trim();
  const s = t.charAt(0).toUpperCase() + t.slice(1);
  return /[.!?]$/.test(s) ? s : `${s}.`;
};

/** What a failed setup or login means, in words. */
function problemText(a: Answer<unknown>, what: 'login' | 'setup'): string {
  if (a.status === 0) return 'Cannot reach the confab server. Check the network, then try again.';
  if (a.status === 429) return 'Too many failed attempts from this device. Wait five minutes, then try again.';
  if (what === 'login' && a.status === 401) return 'Wrong password. Try again.';
  if (a.error) return sentence(a.error);
  return `The server refused (error ${a.status}). Try again.`;
}

export function renderAdmin(nav: Nav): void {
  let stopped = false;
  let timer: number | undefined;
  nav.setCleanup(() => {
    stopped = true;
    window.clearTimeout(timer);
  });

  const frame = (title: string, ...content: Node[]) =>
    show(
      `${title} · confab admin`,
      h(
        'div',
        { class: 'admin' },
        h(
          'header',
          { class: 'brand' },
          h('img', { src: '/icon.svg', alt: '', width: '40', height: '40' }),
          h('span', { text: 'confab admin' }),
          h('a', { href: '/', class: 'to-app', text: 'Meetings' }),
        ),
        ...content,
      ),
    );

  const passwordField = (id: string, label: string, autocomplete: string, help?: string) => {
    const input = h('input', {
      id,
      name: id,
      type: 'password',
      autocomplete,
      required: true,
      'aria-describedby': help ? `${id}-help` : undefined,
    });
    return {
      input,
      el: h(
        'div',
        { class: 'field' },
        h('label', { for: id, text: label }),
        input,
        help ? h('p', { id: `${id}-help`, class: 'hint', text: help }) : null,
      ),
    };
  };

  const formError = () => h('p', { class: 'error', role: 'alert', hidden: true });
  const say = (el: HTMLElement, message: string) => {
    el.textContent = message;
    el.hidden = !message;
  };

  // ---- first-run setup ------------------------------------------------------------------------

  const renderSetup = () => {
    const pw = passwordField('password', 'New admin password', 'new-password', 'At least 10 characters.');
    const confirm = passwordField('confirm', 'Type it again', 'new-password');
    const code = h('input', {
      id: 'code',
      name: 'code',
      autocomplete: 'off',
      autocapitalize: 'characters',
      spellcheck: 'false',
      placeholder: 'e.g. 1A2B-3C4D',
      required: true,
      'aria-describedby': 'code-help',
    });
    const err = formError();
    for (const input of [pw.input, confirm.input]) input.addEventListener('input', () => say(err, ''));
    const submit = h('button', { type: 'submit', class: 'primary', text: 'Set password' });
    frame(
      'Set up',
      h(
        'section',
        { class: 'panel stack' },
        h('h1', { text: 'Set the admin password' }),
        h('p', {
          class: 'hint',
          text: 'This confab has no admin password yet. Choose one now; you will need it to open this page again.',
        }),
        h(
          'form',
          {
            class: 'stack',
            novalidate: true,
            onsubmit: async (e: Event) => {
              e.preventDefault();
              const password = pw.input.value;
              if (password.length < 10) {
                say(err, 'Choose a password of at least 10 characters.');
                pw.input.focus();
                return;
              }
              if (password !== confirm.input.value) {
                say(err, 'The two passwords are not the same. Type them again.');
                confirm.input.focus();
                return;
              }
              const setupCode = code.value.trim();
              if (!setupCode) {
                say(err, 'Type the setup code: confab prints it when it starts (see below).');
                code.focus();
                return;
              }
              submit.disabled = true;
              const a = await call('setup', { password, code: setupCode });
              submit.disabled = false;
              if (a.ok) {
                toast('Admin password set. You are logged in.');
                renderOverview();
              } else if (a.status === 409) {
                renderLogin('The admin password is already set. Log in with it.');
              } else {
                say(err, problemText(a, 'setup'));
              }
            },
          },
          pw.el,
          confirm.el,
          h(
            'div',
            { class: 'field' },
            h('label', { for: 'code', text: 'Setup code' }),
            code,
            h(
              'p',
              { id: 'code-help', class: 'hint' },
              'confab prints a one-time setup code when it starts: run ',
              h('code', { text: 'journalctl -u confab' }),
              ' on the device. Or set the password there without this page: ',
              h('code', { text: 'confab admin set-password' }),
              '.',
            ),
          ),
          err,
          h('div', { class: 'row' }, submit),
        ),
      ),
    );
  };

  // ---- login ----------------------------------------------------------------------------------

  const renderLogin = (notice?: string) => {
    const pw = passwordField('password', 'Admin password', 'current-password');
    const err = formError();
    const submit = h('button', { type: 'submit', class: 'primary', text: 'Log in' });
    frame(
      'Log in',
      h(
        'section',
        { class: 'panel stack' },
        h('h1', { text: 'Admin login' }),
        notice ? h('p', { class: 'notice', role: 'status', text: notice }) : null,
        h(
          'form',
          {
            class: 'stack',
            novalidate: true,
            onsubmit: async (e: Event) => {
              e.preventDefault();
              if (!pw.input.value) {
                say(err, 'Enter the admin password.');
                pw.input.focus();
                return;
              }
              submit.disabled = true;
              const a = await call('login', { password: pw.input.value });
              submit.disabled = false;
              if (a.ok) {
                renderOverview();
                return;
              }
              say(err, problemText(a, 'login'));
              pw.input.select();
              pw.input.focus();
            },
          },
          pw.el,
          err,
          h('div', { class: 'row' }, submit),
        ),
      ),
    );
  };

  // ---- overview -------------------------------------------------------------------------------

  const renderOverview = () => {
    let last: { cpu: number; at: number } | null = null;
    let roomsKey = '';

    const version = h('dd', { id: 'version', text: '…' });
    const commit = h('dd', { text: '…' });
    const uptime = h('dd', { text: '…' });
    const memory = h('dd', { id: 'memory', text: '…' });
    const cpu = h('dd', { id: 'cpu', text: 'measuring…' });
    const ready = h('dd', { text: '…' });
    const checks = h('ul', { class: 'checks', 'aria-label': 'Health checks' });
    const rooms = h('div', { class: 'rooms', 'aria-live': 'polite' });
    const roomCount = h('span', { class: 'hint', id: 'room-count' });
    const stale = h('p', { class: 'error', role: 'alert', hidden: true });
    const lost = () => {
      window.clearTimeout(timer);
      renderLogin('Your session ended. Log in again.');
    };
    const keys = keysPanel(call, lost);
    const access = accessPanel(call, lost);
    const updates = updatePanel(call, lost);
    const recordings = recordingsPanel(call, lost);
    let rounds = 0;

    const logout = h('button', {
      type: 'button',
      text: 'Log out',
      onclick: async () => {
        await call('logout', {});
        window.clearTimeout(timer);
        renderLogin('You logged out.');
      },
    });

    const dl = (...pairs: [string, HTMLElement][]) =>
      h('dl', { class: 'facts' }, ...pairs.flatMap(([k, v]) => [h('dt', { text: k }), v]));

    frame(
      'Overview',
      h('div', { class: 'row spread' }, h('h1', { text: 'Overview' }), logout),
      stale,
      h(
        'div',
        { class: 'admin-grid' },
        h(
          'section',
          { class: 'panel', 'aria-labelledby': 'server-h' },
          h('h2', { id: 'server-h', text: 'Server' }),
          dl(['Version', version], ['Commit', commit], ['Uptime', uptime], ['Ready', ready], ['Memory', memory], ['CPU', cpu]),
          h('h3', { text: 'Health checks' }),
          checks,
        ),
        h(
          'section',
          { class: 'panel', 'aria-labelledby': 'rooms-h' },
          h('div', { class: 'row spread' }, h('h2', { id: 'rooms-h', text: 'Rooms' }), roomCount),
          rooms,
        ),
        recordings.el,
        updates.el,
        access.el,
        keys.el,
        h(
          'section',
          { class: 'panel', 'aria-labelledby': 'backup-h' },
          h('h2', { id: 'backup-h', text: 'Backup' }),
          h(
            'p',
            {},
            'One file with everything this confab needs to come back: settings, passcodes and invite links, the admin password, the API key and the certificate authority. ',
            'It holds secrets: keep it as safe as the device.',
          ),
          h('p', {}, h('a', { href: '/api/admin/backup', download: '', id: 'backup-download', text: 'Download backup' })),
          h(
            'p',
            { class: 'hint' },
            'To restore: stop confab, then run ',
            h('code', { text: 'confab restore <file>' }),
            ' on the device (the current state is kept aside).',
          ),
        ),
        h(
          'section',
          { class: 'panel', 'aria-labelledby': 'ca-h' },
          h('h2', { id: 'ca-h', text: 'Certificate' }),
          h(
            'p',
            {},
            'Browsers trust this confab once its certificate authority is installed: ',
            h('a', { href: '/ca.crt', download: 'confab-ca.crt', text: 'download ca.crt' }),
            '.',
          ),
          h(
            'ul',
            { class: 'trust' },
            h('li', {}, h('strong', { text: 'Windows: ' }), 'open the file → Install Certificate → Local Machine → "Trusted Root Certification Authorities".'),
            h('li', {}, h('strong', { text: 'macOS: ' }), 'open it in Keychain Access (System keychain), double-click it → Trust → "Always Trust".'),
            h('li', {}, h('strong', { text: 'iPhone/iPad: ' }), 'install the profile in Settings, then turn it on under General → About → Certificate Trust Settings.'),
            h('li', {}, h('strong', { text: 'Android: ' }), 'Settings → Security → Encryption & credentials → Install a certificate → CA certificate.'),
            h('li', {}, h('strong', { text: 'Linux: ' }), 'copy it to /usr/local/share/ca-certificates/ and run `sudo update-ca-certificates`; Firefox: Settings → Certificates → Import.'),
          ),
        ),
      ),
    );

    void keys.refresh();
    void access.refresh();
    void recordings.refresh();

    const roomAction = async (room: string, action: 'end' | 'remove', body: unknown, done: string) => {
      const a = await call(`rooms/${encodeURIComponent(room)}/${action}`, body);
      if (a.status === 401) return lost();
      toast(a.ok ? done : `Could not do that: ${a.error ?? `error ${a.status}`}.`);
      await refresh();
    };

    const drawRooms = (list: AdminRoom[]) => {
      const key = JSON.stringify(list.map((r) => [r.name, r.participants.map((p) => [p.identity, p.name])]));
      const people = list.reduce((n, r) => n + r.participants.length, 0);
      roomCount.textContent = `${list.length} ${list.length === 1 ? 'room' : 'rooms'}, ${people} ${people === 1 ? 'person' : 'people'}`;
      if (key === roomsKey) return;
      roomsKey = key;
      if (!list.length) {
        rooms.replaceChildren(h('p', { class: 'hint', text: 'No meetings right now.' }));
        return;
      }
      rooms.replaceChildren(
        h(
          'ul',
          { class: 'room-list' },
          ...list.map((r) =>
            h(
              'li',
              { class: 'admin-room', 'data-room': r.name },
              h(
                'div',
                { class: 'row spread' },
                h('h3', {}, h('span', { class: 'room-chip', title: r.name, text: r.name })),
                h('button', {
                  type: 'button',
                  class: 'small danger',
                  'aria-label': `End room ${r.name}`,
                  text: 'End room',
                  onclick: () => {
                    if (!window.confirm(`End ${r.name} for everyone in it?`)) return;
                    void roomAction(r.name, 'end', {}, `${r.name} ended.`);
                  },
                }),
              ),
              h('p', {
                class: 'hint participant-count',
                text: `${r.participants.length} ${r.participants.length === 1 ? 'person' : 'people'}`,
              }),
              h(
                'ul',
                { class: 'people' },
                ...r.participants.map((p) =>
                  h(
                    'li',
                    { 'data-identity': p.identity },
                    h('span', { class: 'person-name', text: p.name || p.identity }),
                    h('span', { class: 'hint identity', text: p.identity }),
                    h('button', {
                      type: 'button',
                      class: 'small',
                      'aria-label': `Remove ${p.name || p.identity} from ${r.name}`,
                      text: 'Remove',
                      onclick: () =>
                        void roomAction(r.name, 'remove', { identity: p.identity }, `${p.name || p.identity} removed.`),
                    }),
                  ),
                ),
              ),
            ),
          ),
        ),
      );
    };

    const refresh = async (): Promise<void> => {
      const a = await call<Overview>('overview');
      if (stopped) return;
      if (a.status === 401) return lost();
      if (!a.ok || !a.data) {
        say(stale, `Cannot refresh the overview (${a.error ?? `error ${a.status}`}); showing the last figures.`);
        return;
      }
      say(stale, '');
      const o = a.data;
      version.textContent = o.version;
      commit.textContent = o.commit || 'unknown';
      uptime.textContent = duration(o.uptime_seconds);
      ready.textContent = o.ready ? 'Yes' : 'No — see the checks below';
      ready.className = o.ready ? 'ok' : 'bad';
      memory.textContent = o.process.rss_bytes == null ? 'unknown' : `${(o.process.rss_bytes / 1048576).toFixed(1)} MB`;
      const now = performance.now();
      if (o.process.cpu_seconds != null) {
        if (last && now > last.at) {
          const pct = ((o.process.cpu_seconds - last.cpu) / ((now - last.at) / 1000)) * 100;
          cpu.textContent = `${Math.max(0, pct).toFixed(1)} %`;
        }
        last = { cpu: o.process.cpu_seconds, at: now };
      } else {
        cpu.textContent = 'unknown';
      }
      checks.replaceChildren(
        ...o.checks.map((c) =>
          h(
            'li',
            { class: c.ok ? 'ok' : 'bad' },
            h('span', { class: 'mark', 'aria-hidden': 'true', text: c.ok ? '✓' : '✗' }),
            h('span', { class: 'visually-hidden', text: c.ok ? 'OK: ' : 'Failing: ' }),
            h('strong', { text: c.name }),
            c.detail ? h('span', { class: 'hint', text: ` — ${c.detail}` }) : null,
          ),
        ),
      );
      drawRooms(o.room_list ?? []);
      // The update agent is asked less often than the overview refreshes (every 30 s).
      if (rounds++ % 10 === 0) await updates.refresh();
      // Durations of active recordings move on; every 15 s is enough.
      if (rounds % 5 === 0) await recordings.refresh();
    };

    const loop = async () => {
      await refresh();
      if (!stopped && document.getElementById('version') === version) {
        timer = window.setTimeout(() => void loop(), REFRESH_MS);
      }
    };
    void loop();
  };

  // ---- start ----------------------------------------------------------------------------------

  frame('Loading', h('p', { class: 'loading', text: 'Loading…' }));
  void call<Session>('session').then((a) => {
    if (stopped) return;
    if (!a.ok || !a.data) {
      frame(
        'Unavailable',
        h('h1', { text: 'Admin' }),
        h('p', { class: 'error', text: `The admin page is not available: ${a.error ?? `error ${a.status}`}.` }),
      );
    } else if (a.data.setup_needed) {
      renderSetup();
    } else if (a.data.logged_in) {
      renderOverview();
    } else {
      renderLogin();
    }
  });
}

function duration(s: number): string {
  const d = Math.floor(s / 86400);
  const hh = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d) return `${d} d ${hh} h ${m} min`;
  if (hh) return `${hh} h ${m} min`;
  if (m) return `${m} min ${Math.floor(s % 60)} s`;
  return `${Math.floor(s)} s`;
}
