// confab's web app: one page, four views. `/` is home; `/r/<room>` is the pre-join page of that
// room (invite links); the meeting replaces the pre-join page at the same address; `/admin` is
// the admin page (setup, login, overview).

import './styles.css';

import { setLogLevel } from 'livekit-client';

import { renderAdmin } from './admin';
import { keyHash } from './e2ee';
import { renderHome } from './home';
import { roomFromPath, roomPath } from './names';
import { renderPrejoin } from './prejoin';
import { keyFor, rememberKey } from './store';

export type Cleanup = () => void;

export interface Nav {
  /** Home page; `notice` is shown at the top (e.g. "You left standup."). */
  home(opts?: { notice?: string; push?: boolean }): void;
  /**
   * Pre-join page of `room` (its invite address). `key`: a new end-to-end encrypted room's
   * passphrase, which goes into the address's fragment (kept for the tab, never sent).
   */
  prejoin(room: string, opts?: { push?: boolean; key?: string }): void;
  /** Views call this to say what to undo when the page changes (stop the camera, leave). */
  setCleanup(fn: Cleanup): void;
}

let cleanup: Cleanup | null = null;

function leaveView(): void {
  const fn = cleanup;
  cleanup = null;
  try {
    fn?.();
  } catch (e) {
    console.warn('cleanup failed', e);
  }
}

const nav: Nav = {
  home(opts = {}) {
    leaveView();
    if (opts.push !== false && location.pathname !== '/') history.pushState(null, '', '/');
    renderHome(nav, { notice: opts.notice });
  },
  prejoin(room, opts = {}) {
    leaveView();
    if (opts.key) rememberKey(room, opts.key);
    const key = keyFor(room);
    const target = roomPath(room);
    if (opts.push !== false && location.pathname !== target) {
      history.pushState(null, '', key ? `${target}${keyHash(key)}` : target);
    }
    renderPrejoin(nav, room);
  },
  setCleanup(fn) {
    cleanup = fn;
  },
};

function route(): void {
  const path = location.pathname;
  if (path === '/admin' || path === '/admin/') {
    leaveView();
    renderAdmin(nav);
    return;
  }
  if (path.startsWith('/r/')) {
    const room = roomFromPath(path);
    if (room) {
      nav.prejoin(room, { push: false });
      return;
    }
    history.replaceState(null, '', '/');
    nav.home({ push: false, notice: 'That invite link does not name a valid room. Enter the room name below.' });
    return;
  }
  nav.home({ push: false });
}

setLogLevel('warn');
window.addEventListener('popstate', route);
// A link that differs only after # (another key for the room on screen) opens afresh.
window.addEventListener('hashchange', route);
route();

// The static shell works offline and the app can be installed (the service worker never
// touches the API or signalling). Browsers refuse it on an untrusted certificate: no harm.
if ('serviceWorker' in navigator && window.isSecureContext) {
  window.addEventListener('load', () => {
    navigator.serviceWorker.register('/sw.js', { scope: '/' }).catch((e: unknown) => {
      console.info('service worker not registered:', e instanceof Error ? e.message : e);
    });
  });
}
