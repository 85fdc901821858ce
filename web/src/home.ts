// Home: your name (remembered), a room name or "New room", and the recent rooms of this browser.

import { roomStatus } from './api';
import { h, show, toast } from './dom';
import { e2eeSupported, newPassphrase } from './e2ee';
import { noHttps } from './errors';
import type { Nav } from './main';
import { ROOM_PATTERN, randomRoom, roomProblem } from './names';
import { clearRecent, getName, getRecent, removeRecent, setName } from './store';
import { ago } from './time';

export function renderHome(nav: Nav, opts: { notice?: string }): void {
  const aborter = new AbortController();
  nav.setCleanup(() => aborter.abort());

  const nameInput = h('input', {
    id: 'name',
    name: 'name',
    autocomplete: 'name',
    maxlength: '64',
    required: true,
    'aria-describedby': 'name-error',
  });
  nameInput.value = getName();
  const roomInput = h('input', {
    id: 'room',
    name: 'room',
    autocomplete: 'off',
    autocapitalize: 'none',
    spellcheck: 'false',
    maxlength: '64',
    pattern: ROOM_PATTERN,
    placeholder: 'e.g. standup',
    'aria-describedby': 'room-help room-error',
  });
  const e2eeInput = h('input', { id: 'e2ee', type: 'checkbox', 'aria-describedby': 'e2ee-help', disabled: !e2eeSupported() });
  /** A fresh passphrase when "End-to-end encrypted" is ticked (the room's link carries it). */
  const newKey = () => (e2eeInput.checked ? { key: newPassphrase() } : {});
  const nameError = h('p', { id: 'name-error', class: 'field-error' });
  const roomError = h('p', { id: 'room-error', class: 'field-error' });

  const fail = (input: HTMLInputElement, out: HTMLElement, message: string) => {
    input.setAttribute('aria-invalid', 'true');
    out.textContent = message;
    input.focus();
  };
  const clear = (input: HTMLInputElement, out: HTMLElement) => {
    input.removeAttribute('aria-invalid');
    out.textContent = '';
  };
  nameInput.addEventListener('input', () => clear(nameInput, nameError));
  roomInput.addEventListener('input', () => clear(roomInput, roomError));

  /** Checks the name, remembers it; false (and says why) when it is missing. */
  const takeName = (): boolean => {
    const name = nameInput.value.trim();
    if (!name) {
      fail(nameInput, nameError, 'Enter your name so the others know who you are.');
      return false;
    }
    setName(name);
    return true;
  };

  const form = h(
    'form',
    {
      class: 'stack',
      novalidate: true,
      onsubmit: (e: Event) => {
        e.preventDefault();
        const room = roomInput.value.trim();
        const problem = roomProblem(room);
        if (!takeName()) return;
        if (problem) {
          fail(roomInput, roomError, problem);
          return;
        }
        nav.prejoin(room, newKey());
      },
    },
    h('div', { class: 'field' }, h('label', { for: 'name', text: 'Your name' }), nameInput, nameError),
    h(
      'div',
      { class: 'field' },
      h('label', { for: 'room', text: 'Room' }),
      roomInput,
      h('p', {
        id: 'room-help',
        class: 'hint',
        text: "Letters, digits, '-', '_' and '.'. Everyone who enters the same room name meets there.",
      }),
      roomError,
    ),
    h(
      'div',
      { class: 'field' },
      h('label', { class: 'check' }, e2eeInput, 'End-to-end encrypted'),
      h('p', {
        id: 'e2ee-help',
        class: 'hint',
        text: e2eeSupported()
          ? 'A new secret key goes into the room’s link, after #. Only people with the full link see and hear the meeting; the server cannot, and it cannot be recorded.'
          : 'This browser cannot hold end-to-end encrypted meetings.',
      }),
    ),
    h(
      'div',
      { class: 'row' },
      h('button', { type: 'submit', class: 'primary', text: 'Join room' }),
      h('button', {
        type: 'button',
        text: 'New room',
        onclick: () => {
          if (takeName()) nav.prejoin(randomRoom(), newKey());
        },
      }),
    ),
  );

  const secure = window.isSecureContext && !!navigator.mediaDevices;
  const recentList = h('ul', { class: 'recent', 'aria-labelledby': 'recent-h' });
  const recentEmpty = h('p', {
    class: 'hint',
    text: 'Rooms you join appear here. They are kept in this browser only.',
  });
  const recentSection = h(
    'section',
    { class: 'panel', 'aria-labelledby': 'recent-h' },
    h('h2', { id: 'recent-h', text: 'Recent rooms' }),
    recentList,
    recentEmpty,
  );

  const fillRecent = () => {
    const recent = getRecent();
    recentEmpty.hidden = recent.length > 0;
    recentList.hidden = recent.length === 0;
    recentList.replaceChildren(
      ...recent.map((r) => {
        const status = h('span', { class: 'room-status' });
        const item = h(
          'li',
          { 'data-room': r.room },
          h(
            'div',
            { class: 'recent-text' },
            h('span', { class: 'room-name', text: r.room }),
            h('span', { class: 'meta' }, h('span', { text: ago(r.at) }), status),
          ),
          h('button', {
            type: 'button',
            class: 'small',
            text: 'Rejoin',
            'aria-label': `Rejoin ${r.room}`,
            onclick: () => {
              if (takeName()) nav.prejoin(r.room);
            },
          }),
          h('button', {
            type: 'button',
            class: 'small quiet',
            text: 'Remove',
            'aria-label': `Remove ${r.room} from history`,
            onclick: () => {
              removeRecent(r.room);
              fillRecent();
              (recentList.querySelector('button') ?? roomInput).focus();
            },
          }),
        );
        void roomStatus(r.room, aborter.signal).then((s) => {
          if (!s) return;
          if (!s.active) {
            status.textContent = 'Room ended';
            item.classList.add('ended');
          } else if (s.participants > 0) {
            status.textContent = s.participants === 1 ? '1 person there now' : `${s.participants} people there now`;
            item.classList.add('live');
          }
        });
        return item;
      }),
    );
  };
  fillRecent();

  show(
    'confab',
    h(
      'div',
      { class: 'home' },
      h('header', { class: 'brand' }, h('img', { src: '/icon.svg', alt: '', width: '40', height: '40' }), h('span', { text: 'confab' })),
      h(
        'section',
        { class: 'panel' },
        h('h1', { text: 'Start or join a meeting' }),
        opts.notice ? h('p', { class: 'notice', role: 'status', text: opts.notice }) : null,
        secure ? null : h('p', { class: 'error', role: 'alert', text: noHttps() }),
        form,
      ),
      recentSection,
      h(
        'details',
        { class: 'panel settings' },
        h('summary', { text: 'Settings' }),
        h(
          'div',
          { class: 'stack' },
          h(
            'div',
            { class: 'row' },
            h('button', {
              type: 'button',
              text: 'Clear history',
              onclick: () => {
                clearRecent();
                fillRecent();
                toast('Recent rooms cleared.');
              },
            }),
          ),
          h(
            'p',
            { class: 'hint' },
            'Your browser warns about this server until it trusts the server’s own certificate authority. ',
            h('a', { href: '/ca.crt', download: 'confab-ca.crt', text: 'Download the certificate' }),
            ' and import it as a trusted authority (Settings → Privacy and security → Certificates, or open the file on a phone).',
          ),
        ),
      ),
    ),
  );
  // Straight to the field that needs typing.
  if (!nameInput.value) nameInput.focus();
  else if (!opts.notice) roomInput.focus();
}
