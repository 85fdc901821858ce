// Panels of the admin overview that act on the server's settings: the API key (reveal, rotate),
// who may join (guest access, room passcodes, invite links) and updates (wired to the update
// agent through /api/admin/update*). Each returns its <section> and a refresh function.

import { copyText, h, toast } from './dom';
import { roomProblem } from './names';

export interface Answer<T> {
  ok: boolean;
  status: number;
  data: T | null;
  error?: string;
}

/** An /api/admin/ call: GET without a body, POST with one (or `method`, e.g. DELETE). */
export type Call = <T>(path: string, body?: unknown, method?: 'DELETE') => Promise<Answer<T>>;

export interface Panel {
  el: HTMLElement;
  refresh(): Promise<void>;
}

const sentence = (text: string): string => {
  const t = text.trim();
  const s = t.charAt(0).toUpperCase() + t.slice(1);
  return /[.!?]$/.test(s) ? s : `${s}.`;
};

const failed = (a: Answer<unknown>) => sentence(a.error ?? `error ${a.status}`);

const when = (unix: number) =>
  new Date(unix * 1000).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });

// ---- API key -------------------------------------------------------------------------------

interface Keys {
  api_key: string;
  rotatable: boolean;
  source: 'device' | 'config';
}

export function keysPanel(call: Call, lost: () => void): Panel {
  const keyOut = h('code', { id: 'api-key', text: '…' });
  const secretOut = h('code', { id: 'api-secret', text: '••••••••' });
  // The secret is fetched only when "Show" is pressed, and forgotten on "Hide".
  let secret = '';
  let shown = false;
  const paintSecret = () => {
    showSecret.setAttribute('aria-pressed', String(shown));
    showSecret.textContent = shown ? 'Hide' : 'Show';
    secretOut.textContent = shown ? secret : '••••••••';
  };
  const reveal = async (): Promise<boolean> => {
    const a = await call<{ api_secret: string }>('keys/reveal', {});
    if (a.status === 401) {
      lost();
      return false;
    }
    if (!a.ok || !a.data) {
      toast(`Could not show the secret: ${failed(a)}`);
      return false;
    }
    secret = a.data.api_secret;
    return true;
  };
  const showSecret = h('button', {
    type: 'button',
    class: 'small',
    'aria-pressed': 'false',
    'aria-controls': 'api-secret',
    text: 'Show',
    onclick: async () => {
      if (shown) {
        shown = false;
        secret = '';
      } else {
        shown = await reveal();
      }
      paintSecret();
    },
  });
  const note = h('p', { class: 'hint', id: 'keys-note' });
  const rotate = h('button', {
    type: 'button',
    class: 'small danger',
    text: 'Rotate',
    hidden: true,
    'aria-describedby': 'keys-note',
    onclick: async () => {
      if (
        !window.confirm(
          'Make a new API key and secret? The old ones stop working at once: every app and server that uses them must be given the new ones.',
        )
      )
        return;
      rotate.disabled = true;
      const a = await call<Keys>('keys/rotate', {});
      rotate.disabled = false;
      if (a.status === 401) return lost();
      if (!a.ok || !a.data) {
        toast(`Could not rotate the key: ${failed(a)}`, 8000);
        return;
      }
      if (shown) shown = await reveal();
      paint(a.data);
      toast(`New API key ${a.data.api_key}. The old key is refused from now on.`, 8000);
    },
  });
  const paint = (k: Keys) => {
    keyOut.textContent = k.api_key || '(none)';
    paintSecret();
    rotate.hidden = !k.rotatable;
    note.textContent = k.rotatable
      ? 'Rotate makes a new key and secret and refuses the old ones at once (no grace period): tokens signed with the old secret stop working; people already in a meeting stay in. Give the new secret to every app that uses it.'
      : 'This key comes from the configuration ([keys] in confab.toml, or LIVEKIT_API_KEY and LIVEKIT_API_SECRET), so it cannot be rotated here: change it there and restart confab.';
  };
  const el = h(
    'section',
    { class: 'panel', 'aria-labelledby': 'keys-h' },
    h('div', { class: 'row spread' }, h('h2', { id: 'keys-h', text: 'API key' }), rotate),
    h('p', { class: 'hint', text: 'For LiveKit SDKs and server tools talking to this confab.' }),
    h('dl', { class: 'facts' }, h('dt', { text: 'Key' }), h('dd', {}, keyOut), h('dt', { text: 'Secret' }), h('dd', {}, secretOut, ' ', showSecret)),
    note,
  );
  return {
    el,
    refresh: async () => {
      const a = await call<Keys>('keys');
      if (a.status === 401) return lost();
      if (a.ok && a.data) paint(a.data);
      else keyOut.textContent = 'unavailable';
    },
  };
}

// ---- who may join --------------------------------------------------------------------------

interface Access {
  guest_access: boolean;
  passcodes: { room: string; passcode: string }[];
  invites: { id: string; room: string; created_unix: number; expires_unix: number; expired: boolean }[];
}

export function accessPanel(call: Call, lost: () => void): Panel {
  const guest = h('input', { type: 'checkbox', id: 'guest-access' });
  const guestState = h('p', { class: 'hint', id: 'guest-state' });
  const passList = h('ul', { class: 'setting-list', 'aria-label': 'Room passcodes' });
  const inviteList = h('ul', { class: 'setting-list', 'aria-label': 'Invite links' });
  const newLink = h('div', { class: 'notice new-link', role: 'status', hidden: true });
  const err = h('p', { class: 'error', role: 'alert', hidden: true });
  const say = (m: string) => {
    err.textContent = m;
    err.hidden = !m;
  };

  const act = async (path: string, body: unknown, done?: string): Promise<Answer<unknown>> => {
    say('');
    const a = await call<unknown>(path, body);
    if (a.status === 401) {
      lost();
      return a;
    }
    if (!a.ok) say(failed(a));
    else if (done) toast(done);
    return a;
  };

  const paint = (s: Access) => {
    guest.checked = s.guest_access;
    guestState.textContent = s.guest_access
      ? 'On: anyone who can reach this confab may join a room that has no passcode.'
      : 'Off: people need the room’s passcode or an invite link. A logged-in admin can join any room.';
    passList.replaceChildren(
      ...(s.passcodes.length
        ? s.passcodes.map((p) =>
            h(
              'li',
              { 'data-room': p.room },
              h('span', { class: 'room-chip', text: p.room }),
              h('code', { class: 'passcode', text: p.passcode }),
              h('button', {
                type: 'button',
                class: 'small',
                'aria-label': `Remove the passcode of ${p.room}`,
                text: 'Remove',
                onclick: async () => {
                  await act('access/passcode', { room: p.room, passcode: '' }, `${p.room} has no passcode now.`);
                  await refresh();
                },
              }),
            ),
          )
        : [h('li', { class: 'hint', text: 'No room has a passcode.' })]),
    );
    inviteList.replaceChildren(
      ...(s.invites.length
        ? s.invites.map((i) =>
            h(
              'li',
              { 'data-invite': i.id, class: i.expired ? 'expired' : '' },
              h('span', { class: 'room-chip', text: i.room }),
              h('span', { class: 'hint', text: i.expired ? `expired ${when(i.expires_unix)}` : `until ${when(i.expires_unix)}` }),
              h('button', {
                type: 'button',
                class: 'small',
                'aria-label': `Revoke the invite link to ${i.room}`,
                text: i.expired ? 'Remove' : 'Revoke',
                onclick: async () => {
                  await act('access/invite/revoke', { id: i.id }, `Invite link to ${i.room} revoked.`);
                  await refresh();
                },
              }),
            ),
          )
        : [h('li', { class: 'hint', text: 'No invite links.' })]),
    );
  };

  guest.addEventListener('change', async () => {
    const on = guest.checked;
    const a = await act('access/guest', { enabled: on }, on ? 'Guest access is on.' : 'Guest access is off.');
    if (a.ok) paint(a.data as Access);
    else guest.checked = !on;
  });

  const roomField = (id: string) =>
    h('input', { id, autocomplete: 'off', spellcheck: 'false', maxlength: '64', required: true, placeholder: 'room name' });
  const passRoom = roomField('passcode-room');
  const passCode = h('input', { id: 'passcode-value', autocomplete: 'off', spellcheck: 'false', maxlength: '64', required: true });
  const inviteRoom = roomField('invite-room');
  const inviteHours = h(
    'select',
    { id: 'invite-hours' },
    h('option', { value: '1', text: '1 hour' }),
    h('option', { value: '24', text: '1 day', selected: true }),
    h('option', { value: '168', text: '7 days' }),
    h('option', { value: '720', text: '30 days' }),
  );

  const checkRoom = (input: HTMLInputElement): string | null => {
    const room = input.value.trim();
    const problem = roomProblem(room);
    if (problem) {
      say(problem);
      input.focus();
      return null;
    }
    return room;
  };

  const passForm = h(
    'form',
    {
      class: 'inline-form',
      novalidate: true,
      onsubmit: async (e: Event) => {
        e.preventDefault();
        const room = checkRoom(passRoom);
        if (!room) return;
        if (!passCode.value.trim()) {
          say('Enter the passcode people will type.');
          passCode.focus();
          return;
        }
        const a = await act('access/passcode', { room, passcode: passCode.value }, `${room} needs a passcode now.`);
        if (a.ok) {
          passRoom.value = '';
          passCode.value = '';
          paint(a.data as Access);
        }
      },
    },
    h('div', { class: 'field' }, h('label', { for: 'passcode-room', text: 'Room' }), passRoom),
    h('div', { class: 'field' }, h('label', { for: 'passcode-value', text: 'Passcode' }), passCode),
    h('button', { type: 'submit', class: 'small', text: 'Set passcode' }),
  );

  const inviteForm = h(
    'form',
    {
      class: 'inline-form',
      novalidate: true,
      onsubmit: async (e: Event) => {
        e.preventDefault();
        const room = checkRoom(inviteRoom);
        if (!room) return;
        const a = await act('access/invite', { room, hours: Number(inviteHours.value) });
        if (!a.ok) return;
        const made = a.data as { path: string; room: string; expires_unix: number; access: Access };
        const link = `${location.origin}${made.path}`;
        newLink.hidden = false;
        newLink.replaceChildren(
          h('p', {}, h('strong', { text: `Invite link to ${made.room}` }), ` (valid until ${when(made.expires_unix)}). Copy it now: it is shown only once.`),
          h('code', { class: 'invite-link', text: link }),
          h('button', { type: 'button', class: 'small', text: 'Copy link', onclick: () => void copyText(link, 'Invite link') }),
        );
        inviteRoom.value = '';
        paint(made.access);
      },
    },
    h('div', { class: 'field' }, h('label', { for: 'invite-room', text: 'Room' }), inviteRoom),
    h('div', { class: 'field' }, h('label', { for: 'invite-hours', text: 'Valid for' }), inviteHours),
    h('button', { type: 'submit', class: 'small', text: 'Create invite link' }),
  );

  const el = h(
    'section',
    { class: 'panel access', 'aria-labelledby': 'access-h' },
    h('h2', { id: 'access-h', text: 'Who can join' }),
    h('label', { class: 'check', for: 'guest-access' }, guest, h('span', { text: 'Guest access' })),
    guestState,
    err,
    h('h3', { text: 'Room passcodes' }),
    h('p', { class: 'hint', text: 'A room with a passcode always asks for it (guest access on or off).' }),
    passList,
    passForm,
    h('h3', { text: 'Invite links' }),
    h('p', { class: 'hint', text: 'A link lets its holders into one room until it expires or you revoke it.' }),
    newLink,
    inviteList,
    inviteForm,
  );

  const refresh = async () => {
    const a = await call<Access>('access');
    if (a.status === 401) return lost();
    if (a.ok && a.data) paint(a.data);
  };
  return { el, refresh };
}

// ---- updates -------------------------------------------------------------------------------

interface InstallProgress {
  running: boolean;
  progress: { step: number; steps: number; description: string; bytes: number; total: number } | null;
  result: string | null;
  error: string | null;
}

interface UpdateView {
  mode: 'agent' | 'container' | 'dev' | 'agent-missing' | 'agent-error';
  running: string;
  bootloader?: string;
  slot?: string | null;
  available: { version: string; notes_url: string | null } | null;
  snoozed_until: number | null;
  rollback: string | null;
  install: InstallProgress | null;
  can_check: boolean;
  can_apply: boolean;
  check_error: string | null;
  last_check?: { at_unix: number | null; error: string | null } | null;
  command?: string;
  message?: string;
}

export function updatePanel(call: Call, lost: () => void): Panel {
  const facts = h('dl', { class: 'facts' });
  const body = h('div', { id: 'update', class: 'stack update-body', 'aria-live': 'polite' });
  let polling = 0;
  let view: UpdateView | null = null;

  const checkButton = h('button', {
    type: 'button',
    class: 'small',
    text: 'Check now',
    onclick: async () => {
      checkButton.disabled = true;
      checkButton.textContent = 'Checking…';
      const a = await call<UpdateView>('update/check', {});
      checkButton.disabled = false;
      checkButton.textContent = 'Check now';
      if (a.status === 401) return lost();
      if (a.ok && a.data) paint(a.data);
      else toast(`Could not check: ${failed(a)}`, 8000);
    },
  });

  const progressView = (p: InstallProgress, version?: string) => {
    if (p.running) {
      const pr = p.progress;
      const pct = pr && pr.total ? Math.round((pr.bytes / pr.total) * 100) : null;
      return h(
        'div',
        { class: 'install' },
        h('p', {}, h('strong', { text: 'Installing… ' }), pr ? `step ${pr.step} of ${pr.steps}: ${pr.description}${pct !== null ? ` (${pct} %)` : ''}` : 'starting'),
        h('progress', { max: pr ? String(pr.steps) : '1', value: pr ? String(Math.max(0, pr.step - 1 + (pr.total ? pr.bytes / pr.total : 0))) : '0', 'aria-label': 'Install progress' }),
      );
    }
    if (p.error) return h('p', { class: 'error', text: `The update failed: ${sentence(p.error)}` });
    if (p.result) {
      return h('p', { class: 'notice', text: `Update${version ? ` v${version}` : ''} installed: ${p.result}. The device restarts into it and goes back by itself if it is not healthy.` });
    }
    return null;
  };

  const paint = (v: UpdateView) => {
    view = v;
    facts.replaceChildren(
      h('dt', { text: 'Running' }),
      h('dd', { id: 'update-running', text: `v${v.running}` }),
      ...(v.mode === 'agent'
        ? [h('dt', { text: 'Slot' }), h('dd', { id: 'update-slot', text: `${(v.slot ?? '?').toUpperCase()}${v.bootloader ? ` (${v.bootloader})` : ''}` })]
        : []),
    );
    const parts: (Node | null)[] = [];
    if (v.rollback) {
      const text = /[.!?]$/.test(v.rollback) ? v.rollback : `${v.rollback}.`;
      parts.push(h('p', { class: 'error rollback', role: 'alert' }, h('strong', { text: 'Rolled back: ' }), text));
    }
    if (v.mode === 'dev' || v.mode === 'agent-missing' || v.mode === 'agent-error') {
      parts.push(h('p', { class: v.mode === 'dev' ? 'hint' : 'error', text: v.message ?? 'Updates are not available.' }));
      if (v.command) parts.push(h('p', {}, h('code', { class: 'command', text: v.command })));
    } else {
      const installing = v.install?.running ?? false;
      // Installed and waiting for the restart: nothing more to offer until then.
      const installed = !installing && !!v.install?.result && !v.install.error;
      const updateNow = (label: string, cls: string) =>
        h('button', {
          type: 'button',
          class: cls,
          text: label,
          onclick: async () => {
            if (!window.confirm(`Install v${v.available?.version} now? Meetings stop while the device restarts (about a minute).`)) return;
            const a = await call<unknown>('update/apply', {});
            if (a.status === 401) return lost();
            if (!a.ok) {
              toast(`Could not start the update: ${failed(a)}`, 8000);
              return;
            }
            watchInstall();
          },
        });
      if (installed) {
        // progressView below says what was installed.
      } else if (v.available && (!v.snoozed_until || installing)) {
        const notice = h(
          'div',
          { class: 'notice update-available' },
          h('p', {}, h('strong', { text: `Update available v${v.available.version}` }), v.available.notes_url ? ' — ' : '', v.available.notes_url ? h('a', { href: v.available.notes_url, target: '_blank', rel: 'noopener noreferrer', text: 'what’s new' }) : ''),
        );
        if (v.mode === 'container' && v.command) {
          notice.append(
            h('p', {}, 'Update the container on its host: ', h('code', { class: 'command', text: v.command })),
            h('button', { type: 'button', class: 'small', text: 'Copy command', onclick: () => void copyText(v.command ?? '', 'Command') }),
          );
        }
        const buttons = h('div', { class: 'row' });
        if (v.can_apply && !installing) buttons.append(updateNow('Update now', 'primary small'));
        if (!installing) {
          buttons.append(
            h('button', {
              type: 'button',
              class: 'small',
              text: 'Remind me later',
              onclick: async () => {
                const a = await call<UpdateView>('update/remind-later', {});
                if (a.status === 401) return lost();
                if (a.ok && a.data) {
                  paint(a.data);
                  toast('You will be reminded in 24 hours.');
                } else toast(`Could not postpone: ${failed(a)}`);
              },
            }),
          );
        }
        if (buttons.childElementCount) notice.append(buttons);
        parts.push(notice);
      } else if (v.available && v.snoozed_until) {
        // Postponed: no notice, one quiet line (the admin may still update on purpose).
        parts.push(
          h(
            'div',
            { class: 'row snoozed' },
            h('p', { class: 'hint', text: `v${v.available.version} is available; reminder postponed until ${when(v.snoozed_until)}.` }),
            v.can_apply ? updateNow('Update now', 'small') : null,
          ),
        );
      } else if (v.last_check?.at_unix) {
        parts.push(h('p', { class: 'hint', text: v.last_check.error ? `The last check failed (${when(v.last_check.at_unix)}): ${sentence(v.last_check.error)}` : `Up to date (checked ${when(v.last_check.at_unix)}).` }));
      } else {
        parts.push(h('p', { class: 'hint', text: 'Not checked yet.' }));
      }
      if (v.check_error) parts.push(h('p', { class: 'error', role: 'alert', text: `The check failed: ${sentence(v.check_error)}` }));
      if (v.install) parts.push(progressView(v.install, v.available?.version));
      if (v.can_check && !installing) parts.push(h('div', { class: 'row' }, checkButton));
      if (installing) watchInstall();
    }
    body.replaceChildren(...parts.filter((p): p is Node => p !== null));
  };

  const watchInstall = () => {
    if (polling) return;
    polling = window.setInterval(async () => {
      const a = await call<InstallProgress>('update/progress');
      if (a.status === 401) {
        window.clearInterval(polling);
        polling = 0;
        return lost();
      }
      if (!a.ok || !a.data || !document.body.contains(body)) {
        window.clearInterval(polling);
        polling = 0;
        return;
      }
      if (view) paint({ ...view, install: a.data });
      if (!a.data.running) {
        window.clearInterval(polling);
        polling = 0;
        await refresh();
      }
    }, 1000);
  };

  const el = h(
    'section',
    { class: 'panel', 'aria-labelledby': 'update-h' },
    h('h2', { id: 'update-h', text: 'Updates' }),
    facts,
    body,
  );
  const refresh = async () => {
    const a = await call<UpdateView>('update');
    if (a.status === 401) return lost();
    if (a.ok && a.data) paint(a.data);
    else body.replaceChildren(h('p', { class: 'error', text: `Update status unavailable: ${failed(a)}` }));
  };
  return { el, refresh };
}
