#!/usr/bin/env node
// Browser test of confab's own web app (web/, served by the daemon at / and /r/<room>): two
// people meet through the UI alone in headless Chromium (playwright-core, fake camera and
// microphone), and every page is saved as a screenshot.
//
//   node run.mjs --base https://localhost:7880 --out DIR [--api-key KEY] [--chromium PATH]
//                [--step-timeout 20] [--deadline 240] [--verbose]
//
// LIVEKIT_API_SECRET (environment) with --api-key lets the run delete the room through the
// RoomService to check "Room ended" in the recent rooms. CONFAB_SETUP_CODE (environment) is the
// server's one-time setup code (<state dir>/setup-code), typed into the first-run setup form. Node must trust the server's CA
// (NODE_EXTRA_CA_CERTS); Chromium ignores certificate errors. playwright-core and
// livekit-server-sdk come from tests/browser/node_modules (`npm ci` there).
//
// Scenario: Alice (desktop) opens home, sees a wrong room name refused in words, joins a new room
// through the pre-join page; Bob (phone-sized) opens the invite link, joins; each decodes the
// other's video and the connection-quality bars; a chat message goes each way over the data
// channel; Alice mutes and Bob sees it;
// Alice shares her screen and Bob decodes it in the spotlight; Bob leaves and his home lists the
// room ("1 person there now"); Alice leaves; the room is deleted and Bob's list says "Room ended".
// Then the admin page: first-run setup at /admin (a missing code is refused in words; the setup
// code is required from every address, localhost included), the overview
// (version, checks, CPU, memory, API key behind "Show", update status); log out; a wrong password
// is refused in words; login; Alice joins another room and the overview lists her there; "End
// room" removes it from the overview and ends her meeting; five wrong passwords → "wait five
// minutes".
// --scenario e2ee (e2ee.mjs): an end-to-end encrypted meeting, its key only in the link's
// fragment; video, audio, chat and a simulcast layer switch on encrypted media; someone without
// the key, then with a wrong one, told so in words.
// --scenario record (record.mjs): the admin records a two-person meeting from its Record button
// (both see "● Recording", then it goes), then finds, downloads and deletes the files in the
// admin's Recordings panel.
// Exit status 0 pass, 1 fail, 2 usage. The last line is `webapp: PASS …` or `webapp: FAIL …`.

import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

import {
  CHROMIUM_ARGS as SHARED_CHROMIUM_ARGS,
  Failure,
  log,
  sleep,
  waitUntil as sharedWaitUntil,
  withTimeout,
} from '../browser/lib.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const USAGE = `usage: node run.mjs --base https://HOST:PORT --out DIR [--api-key KEY] [--chromium PATH]
                   [--max-participants N] [--step-timeout S] [--deadline S] [--verbose]
  --max-participants  the server's room cap (CONFAB_MAX_PARTICIPANTS); 2 adds the "room full" check
  --scenario          meeting (default: the meeting and the admin basics), admin (updates, key
                      rotation, guest access: admin.mjs; needs a device key and an update agent)
                      e2ee (end-to-end encrypted meetings: e2ee.mjs) or record (the Record
                      button and the admin's Recordings panel: record.mjs)`;

let args;
try {
  args = parseArgs({
    options: {
      base: { type: 'string' },
      out: { type: 'string' },
      'api-key': { type: 'string' },
      chromium: { type: 'string' },
      'max-participants': { type: 'string' },
      scenario: { type: 'string', default: 'meeting' },
      'step-timeout': { type: 'string', default: '20' },
      deadline: { type: 'string', default: '240' },
      verbose: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  }).values;
} catch (e) {
  console.error(`run.mjs: ${e.message}\n${USAGE}`);
  process.exit(2);
}
if (args.help) {
  console.log(USAGE);
  process.exit(0);
}
if (!args.base || !/^https:\/\//.test(args.base) || !args.out) {
  console.error(`run.mjs: give --base https://… and --out DIR\n${USAGE}`);
  process.exit(2);
}
const base = args.base.replace(/\/$/, '');
const outDir = path.resolve(args.out);
const chromiumPath = args.chromium ?? process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const stepTimeoutMs = Number(args['step-timeout']) * 1000;
const deadlineMs = Number(args.deadline) * 1000;
const apiKey = args['api-key'] ?? process.env.LIVEKIT_API_KEY;
const apiSecret = process.env.LIVEKIT_API_SECRET;
const setupCode = process.env.CONFAB_SETUP_CODE;
if (!setupCode) {
  console.error('run.mjs: set CONFAB_SETUP_CODE to the server\'s setup code (<state dir>/setup-code)');
  process.exit(2);
}
const roomCap = args['max-participants'] ? Number(args['max-participants']) : undefined;

const requireFromBrowserTests = createRequire(path.join(here, '..', 'browser', 'package.json'));
let chromium;
let RoomServiceClient;
let AccessToken;
try {
  ({ chromium } = requireFromBrowserTests('playwright-core'));
  ({ RoomServiceClient, AccessToken } = await import(pathToFileURL(requireFromBrowserTests.resolve('livekit-server-sdk')).href));
} catch (e) {
  console.error(`run.mjs: cannot load playwright-core / livekit-server-sdk (run \`npm ci\` in tests/browser): ${e.message}`);
  process.exit(2);
}
if (!fs.existsSync(chromiumPath)) {
  console.error(`run.mjs: no Chromium at ${chromiumPath} (apt-get install chromium, or set CHROMIUM_PATH)`);
  process.exit(2);
}
fs.mkdirSync(outDir, { recursive: true });

// ---------------------------------------------------------------------------------------------
// Logging, waiting, steps

// Shared with the browser test (tests/browser/lib.mjs); waits default to the step timeout here.
const waitUntil = (opts) => sharedWaitUntil({ timeoutMs: stepTimeoutMs, ...opts });

let stepNo = 0;
async function step(title, fn) {
  stepNo += 1;
  log(`step ${stepNo}: ${title}`);
  const t0 = Date.now();
  await withTimeout(Promise.resolve().then(fn), Math.max(stepTimeoutMs * 4, 60000), `step ${stepNo} (${title})`);
  log(`step ${stepNo}: ok (${Date.now() - t0} ms)`);
}

const screenshots = [];
async function shot(person, name) {
  const file = path.join(outDir, `${String(screenshots.length + 1).padStart(2, '0')}-${name}.png`);
  // Let transitions and the toast settle; hide the caret so shots are stable.
  await sleep(400);
  await person.page.screenshot({ path: file, caret: 'hide' });
  screenshots.push(file);
  log(`  screenshot ${file}`);
}

// ---------------------------------------------------------------------------------------------
// Chromium and the two people

const CHROMIUM_ARGS = [
  ...SHARED_CHROMIUM_ARGS,
  // getDisplayMedia picks the (fake) screen without a picker.
  '--auto-select-desktop-capture-source=Entire screen',
];

let browser;
const people = [];

class Person {
  constructor(name, context, page) {
    this.name = name;
    this.context = context;
    this.page = page;
    this.console = [];
    page.on('console', (msg) => {
      const line = `${msg.type()}: ${msg.text().replace(/(access_token|join_request)=[^&'"\s]+/g, '$1=…').slice(0, 600)}`;
      this.console.push(line);
      if (this.console.length > 300) this.console.shift();
      if (args.verbose || msg.type() === 'error') log(`  [${name}] console.${line}`);
    });
    page.on('pageerror', (e) => {
      this.console.push(`pageerror: ${e.message}`);
      log(`  [${name}] page error: ${e.message}`);
    });
  }

  /** What the page shows, for failure reports. */
  async report() {
    const lines = [`--- ${this.name} (${this.page.url()}) ---`];
    try {
      const text = await withTimeout(this.page.evaluate(() => document.body.innerText), 5000, 'page text');
      lines.push('page text:', ...text.split('\n').filter(Boolean).slice(0, 60).map((l) => `  ${l}`));
      lines.push(`remote video: ${JSON.stringify(await withTimeout(videoState(this, 'camera'), 5000, 'video state'))}`);
    } catch (e) {
      lines.push(`(page unavailable: ${e.message})`);
    }
    lines.push('last console lines:', ...this.console.slice(-25).map((c) => `  ${c}`));
    return lines.join('\n');
  }
}

async function open(name, viewport, { initScript } = {}) {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport, deviceScaleFactor: 1 });
  if (initScript) await context.addInitScript(initScript);
  await context.grantPermissions(['camera', 'microphone', 'clipboard-read', 'clipboard-write'], { origin: base });
  const page = await context.newPage();
  const p = new Person(name, context, page);
  people.push(p);
  return p;
}

/** Remote tiles of `source` in the page: identity, name, and how their video decodes. */
function videoState(p, source) {
  return p.page.evaluate((src) => {
    return [...document.querySelectorAll(`.tile.${src}:not(.local)`)].map((t) => {
      const v = t.querySelector('video');
      return {
        name: t.querySelector('.name')?.textContent,
        hasVideo: t.classList.contains('has-video'),
        width: v?.videoWidth ?? 0,
        frames: v?.getVideoPlaybackQuality?.().totalVideoFrames ?? 0,
        micOff: !t.querySelector('.mic-off')?.hidden,
      };
    });
  }, source);
}

/** Waits until `p` decodes a remote `source` video named `name` (frames rising). */
async function expectVideo(p, name, source = 'camera') {
  const first = await waitUntil({
    what: `${p.name} sees ${name}'s ${source} video`,
    expected: `a ${source} tile "${name}" with videoWidth > 0`,
    probe: () => videoState(p, source),
    check: (tiles) => tiles.some((t) => t.name === name && t.width > 0 && t.frames > 0),
  });
  const before = first.find((t) => t.name === name).frames;
  await waitUntil({
    what: `${p.name} keeps decoding ${name}'s ${source} video`,
    expected: `more than ${before} frames`,
    probe: () => videoState(p, source),
    check: (tiles) => tiles.some((t) => t.name === name && t.frames > before + 5),
  });
}

/** Home → room form → pre-join (camera preview running). */
async function homeToPrejoin(p, { name, room }) {
  const page = p.page;
  await page.getByLabel('Your name').fill(name);
  await page.getByLabel('Room', { exact: true }).fill(room);
  await page.getByRole('button', { name: 'Join room' }).click();
  await page.waitForURL(`${base}/r/${room}`, { timeout: stepTimeoutMs });
  await expectPreview(p);
}

async function expectPreview(p) {
  await page(p)
    .getByRole('heading', { level: 1, name: /^Join / })
    .waitFor({ timeout: stepTimeoutMs });
  await waitUntil({
    what: `${p.name}'s camera preview`,
    expected: 'the preview video playing (videoWidth > 0)',
    probe: () => p.page.evaluate(() => document.querySelector('.preview video')?.videoWidth ?? 0),
    check: (w) => w > 0,
  });
}

const page = (p) => p.page;

async function prejoinToMeeting(p, room) {
  await p.page.getByRole('button', { name: 'Join now' }).click();
  await waitUntil({
    what: `${p.name} enters the meeting`,
    expected: `the meeting page of ${room} with the local camera tile showing video`,
    probe: () =>
      p.page.evaluate(() => ({
        title: document.querySelector('.room-title')?.textContent,
        local: document.querySelector('.tile.camera.local')?.classList.contains('has-video') ?? false,
        error: document.querySelector('.prejoin .error:not([hidden])')?.textContent,
      })),
    check: (s) => {
      if (s.error) throw new Failure(`${p.name} could not join: ${s.error}`);
      return s.title === `Meeting ${room}` && s.local;
    },
  });
}

/** The recent rooms the home page lists: name, time, status. */
function recentRooms(p) {
  return p.page.evaluate(() =>
    [...document.querySelectorAll('.recent li')].map((li) => ({
      room: li.querySelector('.room-name')?.textContent,
      meta: li.querySelector('.meta')?.textContent,
      status: li.querySelector('.room-status')?.textContent,
    })),
  );
}

// ---------------------------------------------------------------------------------------------
// Ending

let finished = false;
async function cleanup() {
  try {
    if (browser) await withTimeout(browser.close(), 15000, 'closing Chromium');
  } catch (e) {
    log(`(closing Chromium: ${e.message})`);
  }
}
async function fail(message) {
  if (finished) return;
  finished = true;
  log(`FAILED: ${message}`);
  for (const p of people) {
    try {
      await shot(p, `failure-${p.name.toLowerCase()}`);
    } catch {
      // the page may be gone
    }
    console.log(await p.report());
  }
  await cleanup();
  console.log(`webapp: FAIL ${message.split('\n')[0]}`);
  process.exit(1);
}
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => void fail(`interrupted by ${sig}`));
setTimeout(() => void fail(`the whole run took longer than --deadline ${deadlineMs / 1000} s`), deadlineMs).unref();

// ---------------------------------------------------------------------------------------------
// The scenario

const room = `webtest-${Math.random().toString(36).slice(2, 8)}`;

if (args.scenario === 'admin') {
  try {
    browser = await chromium.launch({ executablePath: chromiumPath, headless: true, timeout: 30000, args: CHROMIUM_ARGS });
    const { adminScenario } = await import('./admin.mjs');
    await adminScenario({
      base, open, step, shot, waitUntil, prejoinToMeeting, expectPreview, Failure, log, stepTimeoutMs, setupCode,
      sdk: { AccessToken, RoomServiceClient },
    });
    finished = true;
    await cleanup();
    console.log(`webapp: PASS scenario=admin screenshots=${screenshots.length} dir=${outDir}`);
    process.exit(0);
  } catch (e) {
    await fail(e instanceof Failure ? e.message : (e.stack ?? String(e)));
  }
} else if (args.scenario === 'e2ee') {
  try {
    browser = await chromium.launch({ executablePath: chromiumPath, headless: true, timeout: 30000, args: CHROMIUM_ARGS });
    const { e2eeScenario } = await import('./e2ee.mjs');
    await e2eeScenario({
      base, open, step, shot, waitUntil, prejoinToMeeting, expectPreview, expectVideo, videoState, Failure, log, stepTimeoutMs,
    });
    finished = true;
    await cleanup();
    console.log(`webapp: PASS scenario=e2ee screenshots=${screenshots.length} dir=${outDir}`);
    process.exit(0);
  } catch (e) {
    await fail(e instanceof Failure ? e.message : (e.stack ?? String(e)));
  }
} else if (args.scenario === 'record') {
  try {
    browser = await chromium.launch({ executablePath: chromiumPath, headless: true, timeout: 30000, args: CHROMIUM_ARGS });
    const { recordScenario } = await import('./record.mjs');
    await recordScenario({
      base, open, step, shot, waitUntil, prejoinToMeeting, expectPreview, expectVideo, Failure, log, stepTimeoutMs, setupCode,
    });
    finished = true;
    await cleanup();
    console.log(`webapp: PASS scenario=record screenshots=${screenshots.length} dir=${outDir}`);
    process.exit(0);
  } catch (e) {
    await fail(e instanceof Failure ? e.message : (e.stack ?? String(e)));
  }
} else if (args.scenario !== 'meeting') {
  console.error(`run.mjs: unknown --scenario ${args.scenario}\n${USAGE}`);
  process.exit(2);
}

try {
  browser = await chromium.launch({ executablePath: chromiumPath, headless: true, timeout: 30000, args: CHROMIUM_ARGS });
  const alice = await open('Alice', { width: 1280, height: 800 });
  // A phone-sized screen.
  const bob = await open('Bob', { width: 390, height: 844 });

  await step('Alice opens home; a wrong room name is refused in words', async () => {
    await alice.page.goto(`${base}/`, { timeout: stepTimeoutMs });
    await alice.page.getByRole('heading', { level: 1, name: 'Start or join a meeting' }).waitFor({ timeout: stepTimeoutMs });
    const meta = await alice.page.evaluate(() => ({
      app: document.querySelector('meta[name="confab-app"]') !== null,
      secure: window.isSecureContext,
      manifest: document.querySelector('link[rel="manifest"]')?.getAttribute('href'),
    }));
    if (!meta.app) throw new Failure('the server did not serve the web app at / (no <meta name="confab-app">)');
    if (!meta.secure) throw new Failure('the page is not a secure context: getUserMedia would be refused');
    const manifest = await alice.page.evaluate(async (href) => (await fetch(href)).json(), meta.manifest);
    if (manifest.name !== 'confab' || !manifest.icons?.length) throw new Failure(`bad manifest: ${JSON.stringify(manifest)}`);
    await shot(alice, 'home-empty');
    await alice.page.getByLabel('Your name').fill('Alice');
    await alice.page.getByLabel('Room', { exact: true }).fill('not a room!');
    await alice.page.getByRole('button', { name: 'Join room' }).click();
    const error = await alice.page.locator('#room-error').textContent();
    if (!/letters, digits/.test(error ?? '')) throw new Failure(`expected a room name error, saw ${JSON.stringify(error)}`);
    const focused = await alice.page.evaluate(() => document.activeElement?.id);
    if (focused !== 'room') throw new Failure(`the wrong field should have focus, ${focused} has`);
    await shot(alice, 'home-error');
  });

  await step('Alice: home → pre-join (camera preview, device pickers)', async () => {
    await homeToPrejoin(alice, { name: 'Alice', room });
    // The pickers fill once both camera and microphone have started (the preview may be first).
    await waitUntil({
      what: 'device pickers',
      expected: 'at least one camera and one microphone listed',
      probe: () =>
        alice.page.evaluate(() =>
          ['Camera', 'Microphone'].map((label) => {
            const l = [...document.querySelectorAll('label')].find((x) => x.textContent === label);
            const el = l && document.getElementById(l.htmlFor);
            return { label, options: el?.tagName === 'SELECT' ? el.options.length : 0 };
          }),
        ),
      check: (pickers) => pickers.every((p) => p.options >= 1),
    });
    await shot(alice, 'prejoin');
  });

  await step('Alice joins the meeting', async () => {
    await prejoinToMeeting(alice, room);
    await shot(alice, 'meeting-alone');
  });

  await step('Bob opens the invite link (phone-sized), enters his name, joins', async () => {
    await bob.page.goto(`${base}/r/${room}`, { timeout: stepTimeoutMs });
    await expectPreview(bob);
    await bob.page.getByLabel('Your name').fill('Bob');
    await shot(bob, 'prejoin-phone');
    await prejoinToMeeting(bob, room);
  });

  await step('Alice and Bob see each other’s video', async () => {
    await expectVideo(alice, 'Bob');
    await expectVideo(bob, 'Alice');
    await waitUntil({
      what: 'participant count',
      expected: '"2 people" on Alice’s page',
      probe: () => alice.page.locator('.count').textContent(),
      check: (t) => t === '2 people',
    });
    // The server's ConnectionQualityUpdate (src/sfu/quality.rs) lights the bars on each tile.
    for (const [p, other] of [[alice, 'Bob'], [bob, 'Alice']]) {
      await waitUntil({
        what: `${p.name} sees connection quality`,
        expected: `${other}'s tile and the own tile rated excellent or good`,
        probe: () =>
          p.page.evaluate(() =>
            [...document.querySelectorAll('.tile.camera')].map((t) => ({
              local: t.classList.contains('local'),
              q: t.querySelector('.quality')?.getAttribute('data-q'),
              label: t.querySelector('.quality')?.getAttribute('aria-label'),
            })),
          ),
        check: (tiles) => tiles.length === 2 && tiles.every((t) => /^(excellent|good)$/.test(t.q ?? '') && t.label === `Connection ${t.q}`),
      });
    }
    await shot(alice, 'meeting-two');
    await shot(bob, 'meeting-phone');
  });

  if (roomCap === 2) {
    await step('Carol: camera and microphone blocked, then the room is full — both said in words', async () => {
      const carol = await open('Carol', { width: 1024, height: 700 }, {
        // What a browser does when the person (or a policy) said no to camera and microphone.
        initScript: () => {
          navigator.mediaDevices.getUserMedia = () =>
            Promise.reject(new DOMException('Permission denied', 'NotAllowedError'));
        },
      });
      await carol.page.goto(`${base}/r/${room}`, { timeout: stepTimeoutMs });
      await waitUntil({
        what: 'Carol is told the camera and microphone are blocked',
        expected: 'two "blocked" messages and a Try again button',
        probe: () => carol.page.locator('.preview-col .error').innerText(),
        check: (t) => /blocked the camera/.test(t) && /blocked the microphone/.test(t) && /Try again/.test(t),
      });
      await carol.page.getByLabel('Your name').fill('Carol');
      await carol.page.getByRole('button', { name: 'Join now' }).click();
      await waitUntil({
        what: 'Carol is told the room is full',
        expected: '"This room is full" on the pre-join page',
        probe: () => carol.page.locator('.prejoin form .error').innerText(),
        check: (t) => /room is full/i.test(t),
      });
      await shot(carol, 'prejoin-blocked-and-full');
      await carol.context.close();
      people.splice(people.indexOf(carol), 1);
    });
  }

  await step('Chat: a message each way over the data channel', async () => {
    await alice.page.getByRole('button', { name: 'Chat' }).click();
    const input = alice.page.getByLabel('Message', { exact: true });
    await input.fill('Hello from Alice');
    await input.press('Enter');
    await waitUntil({
      what: 'Bob is told about unread chat',
      expected: 'the Chat button saying 1 unread',
      probe: () => bob.page.locator('.controls [aria-controls="chat"]').getAttribute('aria-label'),
      check: (l) => l === 'Chat, 1 unread',
    });
    await bob.page.getByRole('button', { name: /^Chat/ }).click();
    await waitUntil({
      what: 'Bob reads Alice’s message',
      expected: 'a message "Hello from Alice" from Alice',
      probe: () => bob.page.locator('.messages li').allInnerTexts(),
      check: (items) => items.some((t) => t.includes('Alice') && t.includes('Hello from Alice')),
    });
    const bobInput = bob.page.getByLabel('Message', { exact: true });
    await bobInput.fill('Hi Alice, Bob here');
    await bob.page.getByRole('button', { name: 'Send' }).click();
    await waitUntil({
      what: 'Alice reads Bob’s reply',
      expected: 'a message "Hi Alice, Bob here" from Bob',
      probe: () => alice.page.locator('.messages li').allInnerTexts(),
      check: (items) => items.some((t) => t.includes('Bob') && t.includes('Hi Alice, Bob here')),
    });
    await shot(alice, 'meeting-chat');
    await shot(bob, 'meeting-chat-phone');
    await bob.page.getByRole('button', { name: 'Close chat' }).click();
    await alice.page.keyboard.press('Escape');
  });

  await step('Alice mutes her microphone; Bob sees it', async () => {
    await alice.page.getByRole('button', { name: 'Microphone' }).click();
    await waitUntil({
      what: 'Bob sees Alice muted',
      expected: 'the microphone-off mark on Alice’s tile',
      probe: () => videoState(bob, 'camera'),
      check: (tiles) => tiles.some((t) => t.name === 'Alice' && t.micOff),
    });
    const pressed = await alice.page.getByRole('button', { name: 'Microphone' }).getAttribute('aria-pressed');
    if (pressed !== 'false') throw new Failure(`Alice's microphone button should say aria-pressed=false, says ${pressed}`);
  });

  await step('Alice shares her screen; it appears on Bob’s side', async () => {
    await alice.page.getByRole('button', { name: 'Share screen' }).click();
    await waitUntil({
      what: 'Alice is sharing',
      expected: 'the Share screen button pressed',
      probe: () => alice.page.getByRole('button', { name: 'Share screen' }).getAttribute('aria-pressed'),
      check: (v) => v === 'true',
    });
    await expectVideo(bob, 'Alice’s screen', 'screen');
    await shot(bob, 'meeting-screen-share-phone');
    await shot(alice, 'meeting-screen-share');
    await alice.page.getByRole('button', { name: 'Share screen' }).click();
    await waitUntil({
      what: 'the share ends on Bob’s side',
      expected: 'no screen tile',
      probe: () => videoState(bob, 'screen'),
      check: (tiles) => tiles.length === 0,
    });
  });

  await step('Bob leaves; his home lists the room with Alice still in it', async () => {
    await bob.page.getByRole('button', { name: 'Leave' }).click();
    await bob.page.waitForURL(`${base}/`, { timeout: stepTimeoutMs });
    await bob.page.getByText(`You left ${room}.`).waitFor({ timeout: stepTimeoutMs });
    await waitUntil({
      what: 'Bob’s recent rooms',
      expected: `${room} first, "1 person there now"`,
      probe: () => recentRooms(bob),
      check: (list) => list[0]?.room === room && /Just now/.test(list[0].meta) && list[0].status === '1 person there now',
    });
    await bob.page.getByRole('button', { name: `Rejoin ${room}` }).waitFor({ timeout: stepTimeoutMs });
    await shot(bob, 'home-recent-phone');
    await waitUntil({
      what: 'Alice sees Bob go',
      expected: '"Only you"',
      probe: () => alice.page.locator('.count').textContent(),
      check: (t) => t === 'Only you',
    });
  });

  await step('Alice leaves; the room is deleted; Bob’s list says "Room ended"', async () => {
    await alice.page.getByRole('button', { name: 'Leave' }).click();
    await alice.page.waitForURL(`${base}/`, { timeout: stepTimeoutMs });
    const list = await waitUntil({
      what: 'Alice’s recent rooms',
      expected: `${room} listed`,
      probe: () => recentRooms(alice),
      check: (l) => l.some((r) => r.room === room),
    });
    if (apiKey && apiSecret) {
      const svc = new RoomServiceClient(base, apiKey, apiSecret);
      await svc.deleteRoom(room).catch((e) => log(`  (DeleteRoom: ${e.message}; the room may be gone already)`));
    } else {
      log('  no --api-key / LIVEKIT_API_SECRET: waiting for the room to end by itself');
    }
    await waitUntil({
      what: 'Bob’s recent rooms after the room ended',
      expected: `${room}: "Room ended"`,
      probe: async () => {
        await bob.page.reload();
        await bob.page.locator('.recent li .room-status').first().waitFor({ timeout: 5000 }).catch(() => {});
        await sleep(300);
        return recentRooms(bob);
      },
      check: (l) => l.find((r) => r.room === room)?.status === 'Room ended',
      timeoutMs: stepTimeoutMs * 2,
    });
    await shot(bob, 'home-room-ended-phone');
    // Remove from history (keyboard-reachable button with its own label).
    await bob.page.getByRole('button', { name: `Remove ${room} from history` }).click();
    const after = await recentRooms(bob);
    if (after.some((r) => r.room === room)) throw new Failure(`${room} still listed after Remove: ${JSON.stringify(after)}`);
    log(`  Alice's list: ${JSON.stringify(list)}`);
  });

  // ---- the admin page -----------------------------------------------------------------------
  const admin = await open('Admin', { width: 1280, height: 1000 });
  admin.page.on('dialog', (d) => void d.accept());
  const password = `admin-pw-${Math.random().toString(36).slice(2, 10)}`;
  const adminText = (sel) => admin.page.locator(sel).first().innerText();
  /** The rooms the admin overview lists: name and participant names. */
  const adminRooms = () =>
    admin.page.evaluate(() =>
      [...document.querySelectorAll('.admin-room')].map((li) => ({
        room: li.getAttribute('data-room'),
        count: li.querySelector('.participant-count')?.textContent,
        people: [...li.querySelectorAll('.people li')].map((p) => ({
          identity: p.getAttribute('data-identity'),
          name: p.querySelector('.person-name')?.textContent,
        })),
      })),
    );
  const serverOverview = () =>
    admin.page.evaluate(async () => (await fetch('/api/admin/overview', { cache: 'no-store' })).json());

  await step('Admin: first-run setup at /admin (the code required from localhost too), then the overview', async () => {
    await admin.page.goto(`${base}/admin`, { timeout: stepTimeoutMs });
    await admin.page.getByRole('heading', { level: 1, name: 'Set the admin password' }).waitFor({ timeout: stepTimeoutMs });
    const help = await admin.page.locator('#code-help').innerText();
    if (!/journalctl -u confab/.test(help) || !/confab admin set-password/.test(help)) throw new Failure(`setup code help: ${help}`);
    await admin.page.getByLabel('New admin password').fill(password);
    await admin.page.getByLabel('Type it again').fill(`${password}x`);
    await admin.page.getByRole('button', { name: 'Set password' }).click();
    await waitUntil({
      what: 'mismatched passwords refused',
      expected: '"not the same"',
      probe: () => adminText('.error:not([hidden])'),
      check: (t) => /not the same/.test(t),
    });
    await admin.page.getByLabel('Type it again').fill(password);
    // No code: the page says so before asking the server.
    await admin.page.getByRole('button', { name: 'Set password' }).click();
    await waitUntil({
      what: 'a missing setup code refused',
      expected: '"Type the setup code"',
      probe: () => adminText('.error:not([hidden])'),
      check: (t) => /Type the setup code/.test(t),
    });
    // A wrong code: the server refuses it (from 127.0.0.1 too) and the page says so in words.
    await admin.page.getByLabel('Setup code').fill('0000-0000');
    await admin.page.getByRole('button', { name: 'Set password' }).click();
    await waitUntil({
      what: 'a wrong setup code refused by the server',
      expected: 'an error naming the setup code',
      probe: () => adminText('.error:not([hidden])'),
      check: (t) => /setup code/i.test(t) && !/Type the setup code/.test(t),
    });
    await admin.page.getByLabel('Setup code').fill(setupCode);
    await shot(admin, 'admin-setup');
    await admin.page.getByRole('button', { name: 'Set password' }).click();
    await admin.page.getByRole('heading', { level: 1, name: 'Overview' }).waitFor({ timeout: stepTimeoutMs });
    const o = await serverOverview();
    await waitUntil({
      what: 'the overview shows the version',
      expected: o.version,
      probe: () => adminText('#version'),
      check: (t) => t === o.version && /^\d+\.\d+/.test(t),
    });
    // This server has no A/B slots and no update source: the panel says so (it loads on its own).
    await waitUntil({
      what: 'the update panel',
      expected: `"not available in dev mode" (server: ${o.update})`,
      probe: () => adminText('#update'),
      check: (t) => /not available in dev mode/.test(t),
    });
    await waitUntil({
      what: 'CPU from two refreshes',
      expected: 'a percentage',
      probe: () => adminText('#cpu'),
      check: (t) => /^\d+(\.\d)? %$/.test(t),
      timeoutMs: 10000,
    });
    if (!/MB$/.test(await adminText('#memory'))) throw new Failure(`memory: ${await adminText('#memory')}`);
    const checks = await admin.page.locator('.checks li').count();
    if (checks !== o.checks.length || checks < 1) throw new Failure(`${checks} checks shown, server has ${o.checks.length}`);
    if (apiKey && (await adminText('#api-key')) !== apiKey) throw new Failure(`API key shown: ${await adminText('#api-key')}`);
    if (apiSecret && (await adminText('#api-secret')).includes(apiSecret)) throw new Failure('the API secret shows before "Show"');
    await admin.page.getByRole('button', { name: 'Show', exact: true }).click();
    if (apiSecret) {
      await waitUntil({
        what: '"Show" reveals the API secret',
        expected: 'the configured secret',
        probe: () => adminText('#api-secret'),
        check: (t) => t === apiSecret,
      });
    }
    await admin.page.getByRole('button', { name: 'Hide', exact: true }).click();
    await shot(admin, 'admin-overview');
  });

  await step('Admin: log out; a wrong password is refused in words; the right one logs in', async () => {
    await admin.page.getByRole('button', { name: 'Log out' }).click();
    await admin.page.getByRole('heading', { level: 1, name: 'Admin login' }).waitFor({ timeout: stepTimeoutMs });
    const session = await admin.page.evaluate(async () => (await fetch('/api/admin/session')).json());
    if (session.logged_in) throw new Failure('still logged in after Log out');
    await admin.page.getByLabel('Admin password').fill('not-the-password');
    await admin.page.getByRole('button', { name: 'Log in' }).click();
    await waitUntil({
      what: 'the wrong password is refused',
      expected: '"Wrong password"',
      probe: () => adminText('.error:not([hidden])'),
      check: (t) => /Wrong password/.test(t),
    });
    await shot(admin, 'admin-login-wrong');
    await admin.page.getByLabel('Admin password').fill(password);
    await admin.page.getByRole('button', { name: 'Log in' }).click();
    await admin.page.getByRole('heading', { level: 1, name: 'Overview' }).waitFor({ timeout: stepTimeoutMs });
  });

  const room2 = `${room}-2`;
  await step('Alice joins another room; the admin overview lists her there', async () => {
    await alice.page.goto(`${base}/`, { timeout: stepTimeoutMs });
    await homeToPrejoin(alice, { name: 'Alice', room: room2 });
    await prejoinToMeeting(alice, room2);
    const listed = await waitUntil({
      what: 'the admin overview lists the room',
      expected: `${room2} with 1 person, Alice`,
      probe: adminRooms,
      check: (l) => {
        const r = l.find((x) => x.room === room2);
        return r?.count === '1 person' && r.people.length === 1 && r.people[0].name === 'Alice';
      },
      timeoutMs: stepTimeoutMs,
    });
    const o = await serverOverview();
    const server = o.room_list.find((r) => r.name === room2);
    const shown = listed.find((x) => x.room === room2);
    if (!server || server.participants.length !== shown.people.length || server.participants[0].identity !== shown.people[0].identity) {
      throw new Failure(`overview shows ${JSON.stringify(shown)}, server has ${JSON.stringify(server)}`);
    }
    await shot(admin, 'admin-room-live');
  });

  await step('Admin ends the room; it leaves the overview and Alice is out', async () => {
    await admin.page.getByRole('button', { name: `End room ${room2}` }).click();
    await waitUntil({
      what: 'the room leaves the overview',
      expected: `no ${room2}`,
      probe: adminRooms,
      check: (l) => !l.some((x) => x.room === room2),
    });
    const o = await serverOverview();
    if (o.room_list.some((r) => r.name === room2)) throw new Failure(`the server still lists ${room2}`);
    await waitUntil({
      what: 'Alice leaves the meeting page',
      expected: 'no meeting title',
      probe: () => alice.page.evaluate(() => document.querySelector('.room-title')?.textContent ?? null),
      check: (t) => t === null,
    });
    await alice.page.getByText('The meeting was ended.').waitFor({ timeout: stepTimeoutMs });
    await shot(admin, 'admin-room-ended');
    await shot(alice, 'meeting-ended-by-admin');
  });

  await step('Admin: after five wrong passwords the login says to wait five minutes', async () => {
    await admin.page.getByRole('button', { name: 'Log out' }).click();
    await admin.page.getByRole('heading', { level: 1, name: 'Admin login' }).waitFor({ timeout: stepTimeoutMs });
    for (let i = 1; i <= 6; i++) {
      await admin.page.getByLabel('Admin password').fill(`wrong-${i}`);
      await admin.page.getByRole('button', { name: 'Log in' }).click();
      const want = i <= 5 ? /Wrong password/ : /wait five minutes/i;
      await waitUntil({
        what: `wrong password #${i}`,
        expected: String(want),
        probe: async () => ({
          text: await adminText('.error:not([hidden])'),
          busy: await admin.page.getByRole('button', { name: 'Log in' }).isDisabled(),
        }),
        check: (s) => !s.busy && want.test(s.text),
      });
      // Each answer replaces the text; clear it so the next one is seen afresh.
      if (i < 6) await admin.page.evaluate(() => {
        const e = document.querySelector('.admin .error');
        if (e) e.textContent = '';
      });
    }
    await shot(admin, 'admin-login-rate-limited');
  });

  finished = true;
  await cleanup();
  console.log(`webapp: PASS room=${room} screenshots=${screenshots.length} dir=${outDir}`);
  process.exit(0);
} catch (e) {
  await fail(e instanceof Failure ? e.message : (e.stack ?? String(e)));
}
