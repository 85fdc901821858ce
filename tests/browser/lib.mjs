// What run.mjs (the browser test) and load.mjs (the load measurement) share: the common command
// line and its checks, the CA re-exec, logging and waiting, the static page server, Chromium,
// access tokens, and the session that holds the browser and its participants' pages.
//
// Importing it has no effect beyond noting the start time; each script calls parseCommandLine()
// first (it names the script in usage errors).

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

export const here = path.dirname(fileURLToPath(import.meta.url));
const started = Date.now();

// ---------------------------------------------------------------------------------------------
// Command line

let script = { name: 'lib.mjs', usage: '' };

/** Says `<script>: message` and the usage on stderr; exits with status 2. */
export function usage(message) {
  if (message) console.error(`${script.name}: ${message}`);
  console.error(script.usage);
  process.exit(2);
}

/** The options both scripts take; --step-timeout and --deadline have each script's defaults. */
const COMMON_OPTIONS = {
  url: { type: 'string' },
  'api-key': { type: 'string' },
  'api-secret': { type: 'string' },
  ca: { type: 'string' },
  insecure: { type: 'boolean', default: false },
  mode: { type: 'string', default: 'v1' },
  chromium: { type: 'string' },
  verbose: { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h', default: false },
};

/** Parses the command line (the common options and `options`); --help prints `usageText`, exits 0. */
export function parseCommandLine(name, usageText, options) {
  script = { name, usage: usageText };
  let args;
  try {
    args = parseArgs({ options: { ...COMMON_OPTIONS, ...options }, strict: true }).values;
  } catch (e) {
    usage(e.message);
  }
  if (args.help) {
    console.log(usageText);
    process.exit(0);
  }
  return args;
}

/** The signalling mode, server, credentials, CA and Chromium, from the options or the environment. */
export function serverOptions(args) {
  const mode = args.mode;
  if (mode !== 'v1' && mode !== 'v0') usage(`--mode must be v1 or v0, got ${JSON.stringify(mode)}`);
  const wsUrl = args.url ?? process.env.LIVEKIT_URL;
  const apiKey = args['api-key'] ?? process.env.LIVEKIT_API_KEY;
  const apiSecret = args['api-secret'] ?? process.env.LIVEKIT_API_SECRET;
  const caPath = args.ca ?? process.env.CONFAB_CA;
  const chromiumPath = args.chromium ?? process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
  if (!wsUrl) usage('give --url (or LIVEKIT_URL)');
  if (!/^wss?:\/\//.test(wsUrl)) usage(`--url must start with wss:// or ws://, got ${wsUrl}`);
  if (!apiKey || !apiSecret) usage('give --api-key and --api-secret (or LIVEKIT_API_KEY / LIVEKIT_API_SECRET)');
  return { mode, wsUrl, httpUrl: wsUrl.replace(/^ws/, 'http'), apiKey, apiSecret, caPath, chromiumPath };
}

/**
 * Makes Node trust `caPath` (unless `insecure`, which turns verification off). Node reads
 * NODE_EXTRA_CA_CERTS only at start-up, so this runs the script (`scriptUrl`, its
 * import.meta.url) again with it set, passes signals on and exits with the child's status:
 * in that case it never returns.
 */
export async function trustCa(scriptUrl, caPath, insecure) {
  if (caPath && !insecure) {
    const ca = path.resolve(caPath);
    try {
      fs.accessSync(ca, fs.constants.R_OK);
    } catch {
      usage(`cannot read the CA file ${ca}`);
    }
    if (process.env.NODE_EXTRA_CA_CERTS !== ca) {
      if (process.env.CONFAB_BROWSER_REEXEC) {
        console.error(`${script.name}: NODE_EXTRA_CA_CERTS did not survive the re-exec`);
        process.exit(2);
      }
      const child = spawn(process.execPath, [fileURLToPath(scriptUrl), ...process.argv.slice(2)], {
        stdio: 'inherit',
        env: { ...process.env, NODE_EXTRA_CA_CERTS: ca, CONFAB_BROWSER_REEXEC: '1' },
      });
      for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => child.kill(sig));
      child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
      // Keep this process alive until the child exits (the handlers above end it).
      await new Promise(() => {});
    }
  }
  if (insecure) process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';
}

// ---------------------------------------------------------------------------------------------
// Logging, failures, timeouts

export function stamp() {
  return `[${((Date.now() - started) / 1000).toFixed(1).padStart(6)}s]`;
}
export function log(msg) {
  console.log(`${stamp()} ${msg}`);
}
export function show(v) {
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 1500 ? `${s.slice(0, 1500)}…` : s;
}
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A failed expectation. `fatal` ones (a 4xx from the API) end a wait at once instead of retrying. */
export class Failure extends Error {
  constructor(message, { fatal = false } = {}) {
    super(message);
    this.fatal = fatal;
  }
}

export function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Failure(`${what}: no answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Polls `probe` until `check(seen)` holds; otherwise fails saying what was expected and seen. */
export async function waitUntil({ what, expected, probe, check, timeoutMs, intervalMs = 250 }) {
  const t0 = Date.now();
  let seen;
  let probeError;
  for (;;) {
    try {
      seen = await probe();
      probeError = undefined;
      if (check(seen)) return seen;
    } catch (e) {
      if (e instanceof Failure && e.fatal) throw new Failure(`${what}: ${e.message}`);
      probeError = e;
    }
    if (Date.now() - t0 > timeoutMs) {
      const detail = probeError ? `probe failed: ${probeError.message}` : `saw ${show(seen)}`;
      throw new Failure(`${what}: expected ${expected} within ${timeoutMs} ms; ${detail}`);
    }
    await sleep(intervalMs);
  }
}

// ---------------------------------------------------------------------------------------------
// Tools: Chromium, playwright-core, livekit-client, livekit-server-sdk

const lkDist = path.join(here, 'node_modules', 'livekit-client', 'dist');

/** Checks Chromium and the npm packages (usage error, status 2, if one is missing); loads them. */
export async function loadModules(chromiumPath) {
  try {
    fs.accessSync(chromiumPath, fs.constants.X_OK);
  } catch {
    usage(`no Chromium at ${chromiumPath} (apt-get install chromium, or set CHROMIUM_PATH / --chromium)`);
  }
  if (!fs.existsSync(path.join(lkDist, 'livekit-client.esm.mjs'))) {
    usage(`livekit-client is not installed: run \`npm ci\` in ${here}`);
  }
  try {
    const { chromium } = await import('playwright-core');
    const sdk = await import('livekit-server-sdk');
    return { chromium, AccessToken: sdk.AccessToken, RoomServiceClient: sdk.RoomServiceClient };
  } catch (e) {
    usage(`cannot load playwright-core / livekit-server-sdk (run \`npm ci\` in ${here}): ${e.message}`);
  }
}

/** An access token maker for `room`: join, publish, subscribe and send data, valid for `ttl`. */
export function tokenMinter(AccessToken, { apiKey, apiSecret, room, ttl }) {
  return async (identity) => {
    const at = new AccessToken(apiKey, apiSecret, { identity, name: identity, ttl });
    at.addGrant({ roomJoin: true, room, canPublish: true, canSubscribe: true, canPublishData: true });
    return at.toJwt();
  };
}

// ---------------------------------------------------------------------------------------------
// Static server for the test page (http://127.0.0.1 is a secure context: getUserMedia works).

const routes = {
  '/': [path.join(here, 'page', 'index.html'), 'text/html; charset=utf-8'],
  '/index.html': [path.join(here, 'page', 'index.html'), 'text/html; charset=utf-8'],
  '/harness.mjs': [path.join(here, 'page', 'harness.mjs'), 'text/javascript; charset=utf-8'],
  '/livekit-client.esm.mjs': [path.join(lkDist, 'livekit-client.esm.mjs'), 'text/javascript; charset=utf-8'],
  '/livekit-client.esm.mjs.map': [path.join(lkDist, 'livekit-client.esm.mjs.map'), 'application/json'],
};

function startPageServer() {
  const server = http.createServer((req, res) => {
    const pathname = new URL(req.url ?? '/', 'http://127.0.0.1').pathname;
    const route = routes[pathname];
    if (!route) {
      res.writeHead(pathname === '/favicon.ico' ? 204 : 404, { 'Cache-Control': 'no-store' });
      res.end();
      return;
    }
    fs.readFile(route[0], (err, body) => {
      if (err) {
        res.writeHead(500, { 'Content-Type': 'text/plain' });
        res.end(String(err));
        return;
      }
      res.writeHead(200, { 'Content-Type': route[1], 'Cache-Control': 'no-store' });
      res.end(body);
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

/** Headless Chromium with fake camera and microphone on a closed network (see the recipe). */
export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--use-fake-ui-for-media-stream',
  '--use-fake-device-for-media-stream',
  '--autoplay-policy=no-user-gesture-required',
  // confab's certificate comes from its own CA, which Chromium's store does not hold.
  '--ignore-certificate-errors',
  // The test server listens on 127.0.0.1: let WebRTC use the loopback interface.
  '--allow-loopback-in-peer-connection',
];

// ---------------------------------------------------------------------------------------------
// The session: page server, Chromium, participants, and how a run ends

/**
 * One run's browser and pages. `cfg`: wsUrl, mode, stepTimeoutMs, verbose (every console line),
 * consoleMax (longest console line kept), closeTimeoutMs (closing Chromium, a page's report),
 * deadlineMs and unrefDeadline, failHeader(message) and failLine(message) (what fail() prints
 * first and last). It fails the run on SIGINT, SIGTERM and at the deadline.
 */
export class Session {
  participants = [];
  browser = null;
  pageServer = null;
  base = null; // the page server's URL
  finished = false;

  constructor(cfg) {
    this.cfg = cfg;
    for (const sig of ['SIGINT', 'SIGTERM']) {
      process.on(sig, () => {
        this.fail(`interrupted by ${sig}`).finally(() => process.exit(1));
      });
    }
    const deadline = setTimeout(() => {
      this.fail(`the whole run took longer than --deadline ${cfg.deadlineMs / 1000} s`);
    }, cfg.deadlineMs);
    if (cfg.unrefDeadline) deadline.unref();
  }

  /** Starts the page server and Chromium (playwright-core's `chromium`). */
  async launch(chromium, chromiumPath) {
    this.pageServer = await startPageServer();
    this.base = `http://127.0.0.1:${this.pageServer.address().port}`;
    this.browser = await chromium.launch({
      executablePath: chromiumPath,
      headless: true,
      timeout: 30000,
      args: CHROMIUM_ARGS,
    });
  }

  /**
   * A new participant of class `Kind` (a PageParticipant) in its own BrowserContext, with the
   * test page loaded; `initScript` runs in the page before the page's own scripts.
   */
  async open(Kind, identity, { initScript } = {}) {
    const { stepTimeoutMs } = this.cfg;
    const context = await this.browser.newContext({ ignoreHTTPSErrors: true });
    await context.grantPermissions(['camera', 'microphone'], { origin: this.base });
    if (initScript) await context.addInitScript(initScript);
    const page = await context.newPage();
    const p = new Kind(this, identity, context, page);
    this.participants.push(p);
    await page.goto(`${this.base}/?identity=${encodeURIComponent(identity)}`, { timeout: stepTimeoutMs });
    await page
      .waitForFunction(() => window.confabReady === true, null, { timeout: stepTimeoutMs })
      .catch((e) => {
        throw new Failure(`${identity}: the test page did not load livekit-client: ${e.message.split('\n')[0]}; ` +
          `console: ${p.console.slice(-5).join(' | ')}`);
      });
    return p;
  }

  async cleanup() {
    try {
      if (this.browser) await withTimeout(this.browser.close(), this.cfg.closeTimeoutMs, 'closing Chromium');
    } catch (e) {
      console.log(`${stamp()} (closing Chromium: ${e.message})`);
    }
    this.pageServer?.close();
  }

  /** Ends the run (once): the message, every page's report, cleanup, the FAIL line; exit 1. */
  async fail(message) {
    if (this.finished) return;
    this.finished = true;
    console.log(`${stamp()} ${this.cfg.failHeader(message)}`);
    for (const p of this.participants) {
      console.log(
        await withTimeout(p.report(), this.cfg.closeTimeoutMs, 'report').catch((e) => `--- ${p.identity}: ${e.message}`),
      );
    }
    await this.cleanup();
    console.log(this.cfg.failLine(message));
    process.exit(1);
  }
}

/** Console lines carry whole signalling URLs: drop the token and the join request, cap the length. */
function redactText(text, max) {
  const s = text.replace(/(access_token|join_request)=[^&'"\s]+/g, '$1=…');
  return s.length > max ? `${s.slice(0, max)}…` : s;
}

/** One participant: its page running page/harness.mjs (window.confab). Subclasses add report(). */
export class PageParticipant {
  constructor(session, identity, context, page) {
    this.session = session;
    this.identity = identity;
    this.context = context;
    this.page = page;
    this.console = [];
    this.joinResult = null;
    const { verbose, consoleMax } = session.cfg;
    page.on('console', (msg) => {
      const line = `${msg.type()}: ${redactText(msg.text(), consoleMax)}`;
      this.console.push(line);
      if (this.console.length > 200) this.console.shift();
      if (verbose || msg.type() === 'error' || msg.type() === 'warning') {
        console.log(`${stamp()}   [${identity}] console.${line}`);
      }
    });
    page.on('pageerror', (err) => {
      this.console.push(`pageerror: ${err.message}`);
      console.log(`${stamp()}   [${identity}] page error: ${err.message}`);
    });
  }

  /** Runs window.confab[fn](...fnArgs) in the page. */
  call(fn, ...fnArgs) {
    return withTimeout(
      this.page.evaluate(([f, a]) => window.confab[f](...a), [fn, fnArgs]),
      this.session.cfg.stepTimeoutMs,
      `${this.identity}: ${fn}()`,
    );
  }

  /** window.confab.join in the page (v0: singlePeerConnection off); resolves to its result. */
  startJoin(token) {
    const { wsUrl, mode } = this.session.cfg;
    return this.page.evaluate(([u, t, o]) => window.confab.join(u, t, o), [
      wsUrl,
      token,
      {
        forceV0: mode === 'v0',
        websocketTimeout: 15000,
        peerConnectionTimeout: 15000,
        // room.connect's rtcConfig, when the scenario gives one (relay.mjs).
        rtcConfig: this.rtcConfig,
      },
    ]);
  }

  /** Why a join that answered `r` (not ok) failed, `t0` being when it started. */
  joinError(r, t0) {
    const e = r.error ?? {};
    return (
      `${this.identity} could not join ${this.session.cfg.wsUrl} after ${Date.now() - t0} ms: ` +
      `${e.name ?? 'Error'}${e.reason !== undefined ? ` (${e.reason})` : ''}` +
      `${e.status ? ` status ${e.status}` : ''}: ${e.message}` +
      `${e.context ? ` [${e.context}]` : ''}`
    );
  }

  /** The last `n` console lines for a report (none with --verbose: those were all printed). */
  consoleTail(n) {
    if (this.session.cfg.verbose) return [];
    return ['last console lines:', ...this.console.slice(-n).map((c) => `  ${c}`)];
  }
}
