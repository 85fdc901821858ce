// Service worker: keeps the static shell (page, app, icons) so the app opens fast and can be
// installed. It never touches the API, signalling or anything else: those go to the network.

declare const SHELL_FILES: string[];
declare const SHELL_VERSION: string;

const worker = self as unknown as ServiceWorkerGlobalScope;
const CACHE = `confab-shell-${SHELL_VERSION}`;
const SHELL = new Set(SHELL_FILES);

worker.addEventListener('install', (event) => {
  event.waitUntil(
    caches
      .open(CACHE)
      .then((c) => c.addAll(SHELL_FILES))
      .then(() => worker.skipWaiting()),
  );
});

worker.addEventListener('activate', (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k.startsWith('confab-shell-') && k !== CACHE).map((k) => caches.delete(k))))
      .then(() => worker.clients.claim()),
  );
});

/** The app's page addresses: home and invite links. */
function isPage(path: string): boolean {
  return path === '/' || /^\/r\/[^/]+\/?$/.test(path);
}

worker.addEventListener('fetch', (event) => {
  const req = event.request;
  if (req.method !== 'GET') return;
  const url = new URL(req.url);
  if (url.origin !== worker.location.origin) return;
  if (req.mode === 'navigate' && isPage(url.pathname)) {
    // The network first (a new version shows at once); the cached page when it is unreachable.
    event.respondWith(
      fetch(req).catch(async () => (await caches.match('/', { cacheName: CACHE })) ?? Response.error()),
    );
    return;
  }
  if (SHELL.has(url.pathname) && url.pathname !== '/') {
    event.respondWith(caches.match(req, { cacheName: CACHE }).then((hit) => hit ?? fetch(req)));
  }
  // Everything else (API, /rtc, /ca.crt, /admin …) is left to the browser.
});

export {};
