#!/usr/bin/env node
// Browser test for confab: the official livekit-client in real Chromium (playwright-core), plus the
// official livekit-server-sdk for tokens and the RoomService API.
//
//   node run.mjs --mode v1|v0|relay --url wss://localhost:7880 --api-key KEY [--api-secret SECRET]
//                [--ca /path/to/ca.crt | --insecure] [--chromium /usr/bin/chromium]
//                [--step-timeout 20] [--deadline 240] [--verbose]
//
// The key, secret, URL and CA may also come from LIVEKIT_API_KEY, LIVEKIT_API_SECRET, LIVEKIT_URL
// and CONFAB_CA; the Chromium binary from CHROMIUM_PATH. Exit status: 0 pass, 1 a step failed,
// 2 bad arguments or a missing tool. The last line is `browser: PASS mode=<m> ...` or
// `browser: FAIL mode=<m> ...`. What it shares with load.mjs is in lib.mjs.

import { randomBytes } from 'node:crypto';

import {
  Failure, PageParticipant, Session, loadModules, log, parseCommandLine, serverOptions, show,
  sleep, tokenMinter, trustCa, usage, waitUntil as poll, withTimeout,
} from './lib.mjs';
import { relayScenario } from './relay.mjs';

const USAGE = `usage: node run.mjs --mode v1|v0|relay --url wss://HOST:PORT --api-key KEY [--api-secret SECRET]
                   [--ca CA.crt | --insecure] [--chromium PATH] [--step-timeout S] [--deadline S] [--verbose]
  --mode          v1: livekit-client's default (/rtc/v1, one PeerConnection);
                  v0: forced with RoomOptions.singlePeerConnection = false (/rtc, two PeerConnections);
                  relay: a two-party call over /rtc/v1 with ICE limited to the server's TURN relay
                  (iceTransportPolicy 'relay'; relay.mjs)
  --url           the server's WebSocket URL (env LIVEKIT_URL)
  --api-key       API key (env LIVEKIT_API_KEY); --api-secret or env LIVEKIT_API_SECRET
  --ca            CA certificate the server's TLS chains to (env CONFAB_CA); Node trusts it through
                  NODE_EXTRA_CA_CERTS (the runner re-executes itself to set it). Chromium ignores
                  certificate errors either way (--ignore-certificate-errors).
  --insecure      do not verify the server certificate in Node (NODE_TLS_REJECT_UNAUTHORIZED=0)
  --chromium      Chromium binary (env CHROMIUM_PATH, default /usr/bin/chromium)
  --step-timeout  seconds each waiting step may take (default 20)
  --deadline      seconds the whole run may take (default 240)
  --verbose       print every browser console line (default: warnings and errors only)`;

const args = parseCommandLine('run.mjs', USAGE, {
  'step-timeout': { type: 'string', default: '20' },
  deadline: { type: 'string', default: '240' },
});
// The scenario; --mode relay signals as v1 does (lib.mjs knows only the signalling modes).
const scenario = args.mode;
const { mode, wsUrl, httpUrl, apiKey, apiSecret, caPath, chromiumPath } = serverOptions(
  scenario === 'relay' ? { ...args, mode: 'v1' } : args,
);
const stepTimeoutMs = Number(args['step-timeout']) * 1000;
const deadlineMs = Number(args.deadline) * 1000;
if (!(stepTimeoutMs > 0) || !(deadlineMs > 0)) usage('--step-timeout and --deadline take positive seconds');
await trustCa(import.meta.url, caPath, args.insecure);

// ---------------------------------------------------------------------------------------------
// Waits and steps

/** Polls `probe` until `check(seen)` holds, for --step-timeout by default (see lib.mjs). */
const waitUntil = (w) => poll({ timeoutMs: stepTimeoutMs, ...w });

let stepNo = 0;
let currentStep = 'start-up';
// Each wait inside a step has its own timeout and message; this only catches a step that hangs.
async function step(title, fn, timeoutMs = Math.max(stepTimeoutMs * 5, 60000)) {
  stepNo += 1;
  currentStep = `step ${stepNo} (${title})`;
  log(`step ${stepNo}: ${title}`);
  const t0 = Date.now();
  const result = await withTimeout(Promise.resolve().then(fn), timeoutMs, currentStep);
  log(`step ${stepNo}: ok (${Date.now() - t0} ms)`);
  return result;
}

// ---------------------------------------------------------------------------------------------
// One browser participant (its own BrowserContext and page).

/** What the page's console and network log say about a failed join that the error itself hides. */
function hints(lines, net) {
  const out = [];
  if (net.some((n) => /\/rtc\/validate\?\S* -> 404/.test(n))) {
    out.push(
      'hint: /rtc/validate answered 404. livekit-client 2.23 reads any 404 from a validate URL (unless the ' +
        'body says "requested room does not exist") as "v1 path not found" and retries /rtc again and again; ' +
        'only /rtc/v1/validate may answer 404 (to send the client to /rtc).',
    );
  }
  if (lines.some((l) => l.includes('blocked by CORS policy'))) {
    out.push(
      'hint: the browser blocked a cross-origin request to the server (see the console lines). ' +
        'Apps are served from another origin than the SFU (here http://127.0.0.1:<port>), so ' +
        '/rtc/validate and /rtc/v1/validate (and /twirp for browser-side admin) must answer with ' +
        'Access-Control-Allow-Origin; without it livekit-client cannot read the validate answer and ' +
        'reports ServerUnreachable (and cannot fall back from /rtc/v1 to /rtc).',
    );
  }
  return out;
}

function redact(url) {
  try {
    const u = new URL(url);
    for (const k of ['access_token', 'join_request']) {
      if (u.searchParams.has(k)) u.searchParams.set(k, 'redacted');
    }
    return u.toString();
  } catch {
    return url;
  }
}

class Participant extends PageParticipant {
  constructor(session, identity, context, page) {
    super(session, identity, context, page);
    this.net = []; // WebSocket and /rtc, /twirp HTTP activity the page saw
    page.on('websocket', (ws) => {
      const url = redact(ws.url());
      this.net.push(`websocket open ${url}`);
      ws.on('socketerror', (e) => this.net.push(`websocket error ${url}: ${e}`));
      ws.on('close', () => this.net.push(`websocket closed ${url}`));
    });
    page.on('response', (resp) => {
      const url = resp.url();
      if (url.startsWith(httpUrl) || url.startsWith(wsUrl)) {
        this.net.push(`${resp.request().method()} ${redact(url)} -> ${resp.status()}`);
      }
    });
    page.on('requestfailed', (req) => {
      const url = req.url();
      if (url.startsWith(httpUrl) || url.startsWith(wsUrl)) {
        this.net.push(`${req.method()} ${redact(url)} failed: ${req.failure()?.errorText}`);
      }
    });
  }

  async join(token) {
    const t0 = Date.now();
    const seen = () =>
      `\n    what the page saw on the network:\n      ${this.net.length ? this.net.join('\n      ') : '(nothing)'}` +
      hints(this.console, this.net).map((h) => `\n    ${h}`).join('');
    const joining = this.startJoin(token);
    // livekit-client retries some failures without end (see hints()): notice instead of waiting.
    let watch;
    const retrying = new Promise((_, reject) => {
      watch = setInterval(() => {
        const opens = this.net.filter((n) => n.startsWith('websocket open')).length;
        if (opens >= 5) {
          reject(new Failure(`livekit-client opened ${opens} signalling WebSockets without joining (a retry loop)`));
        }
      }, 250);
    });
    retrying.catch(() => {});
    let r;
    try {
      r = await withTimeout(Promise.race([joining, retrying]), 40000, 'join()');
    } catch (e) {
      throw new Failure(`${this.identity} could not join ${wsUrl} after ${Date.now() - t0} ms: ${e.message}${seen()}`);
    } finally {
      clearInterval(watch);
    }
    this.joinResult = r;
    if (!r.ok) throw new Failure(`${this.joinError(r, t0)}${seen()}`);
    if (r.signalPath !== mode) {
      throw new Failure(
        `${this.identity} joined over signalling ${r.signalPath}, expected ${mode}` +
          (mode === 'v1' && r.signalPath === 'v0'
            ? ' (livekit-client fell back to /rtc after /rtc/v1 failed)'
            : '') +
          `\n    network: ${this.net.join(' | ')}`,
      );
    }
    log(`  ${this.identity}: joined in ${r.connectMs} ms over ${r.signalPath}, sid ${r.participantSid}` +
      (r.serverInfo ? `, server ${show(r.serverInfo)}` : ''));
    return r;
  }

  async report() {
    const lines = [`--- ${this.identity} ---`];
    try {
      const [info, remotes, tracks, video, audio, events] = await Promise.all([
        this.call('info'),
        this.call('remoteParticipants'),
        this.call('remoteTracks'),
        this.call('videoStats'),
        this.call('audioStats'),
        this.call('events'),
      ]);
      lines.push(`info: ${show(info)}`);
      lines.push(`remote participants: ${show(remotes)}`);
      lines.push(`remote tracks: ${show(tracks)}`);
      lines.push(`video: ${show(video)}`);
      lines.push(`audio: ${show(audio)}`);
      lines.push('last events:');
      for (const ev of events.slice(-40)) lines.push(`  ${show(ev)}`);
    } catch (e) {
      lines.push(`(page state unavailable: ${e.message})`);
    }
    lines.push('network:');
    for (const n of this.net.slice(-30)) lines.push(`  ${n}`);
    lines.push(...this.consoleTail(25));
    return lines.join('\n');
  }
}

// ---------------------------------------------------------------------------------------------
// Checks used by the scenario

async function expectRemotes(p, expected) {
  const want = [...expected].sort();
  await waitUntil({
    what: `${p.identity} sees remote participants`,
    expected: show(want),
    probe: () => p.call('remoteParticipants'),
    check: (seen) => show(seen) === show(want),
  });
}

/** `viewer` decodes `publisher`'s camera: videoWidth > 0 and totalVideoFrames rising. */
async function expectVideo(viewer, publisher) {
  const pick = (stats) => stats.find((s) => s.identity === publisher && s.source === 'camera');
  const first = await waitUntil({
    what: `${viewer.identity} decodes ${publisher}'s camera`,
    expected: 'a <video> with videoWidth > 0 and totalVideoFrames > 0',
    probe: async () => pick(await viewer.call('videoStats')) ?? (await viewer.call('remoteTracks')),
    check: (s) => s && !Array.isArray(s) && s.videoWidth > 0 && s.totalVideoFrames > 0,
  });
  await sleep(500);
  const second = await waitUntil({
    what: `${viewer.identity} keeps decoding ${publisher}'s camera`,
    expected: `totalVideoFrames above the first sample (${first.totalVideoFrames})`,
    probe: async () => pick(await viewer.call('videoStats')),
    check: (s) => s && s.totalVideoFrames > first.totalVideoFrames && s.videoWidth > 0,
  });
  log(
    `  ${viewer.identity} <- ${publisher} video ${second.videoWidth}x${second.videoHeight}, ` +
      `frames ${first.totalVideoFrames} -> ${second.totalVideoFrames}, first frame ${second.firstFrameMs} ms after join()`,
  );
}

/** `listener` receives `publisher`'s microphone: inbound-rtp bytesReceived > 0 and rising. */
async function expectAudio(listener, publisher) {
  const pick = (stats) => stats.find((s) => s.identity === publisher && s.source === 'microphone');
  const first = await waitUntil({
    what: `${listener.identity} receives ${publisher}'s microphone`,
    expected: 'inbound-rtp bytesReceived > 0',
    probe: async () => pick(await listener.call('audioStats')) ?? (await listener.call('remoteTracks')),
    check: (s) => s && !Array.isArray(s) && s.bytesReceived > 0,
  });
  await sleep(500);
  const second = await waitUntil({
    what: `${listener.identity} keeps receiving ${publisher}'s microphone`,
    expected: `bytesReceived above the first sample (${first.bytesReceived})`,
    probe: async () => pick(await listener.call('audioStats')),
    check: (s) => s && s.bytesReceived > first.bytesReceived,
  });
  log(`  ${listener.identity} <- ${publisher} audio bytes ${first.bytesReceived} -> ${second.bytesReceived}`);
}

async function expectMicMuted(viewer, publisher, muted) {
  await waitUntil({
    what: `${viewer.identity} sees ${publisher}'s microphone ${muted ? 'muted' : 'unmuted'}`,
    expected: `a microphone track of ${publisher} with muted=${muted}`,
    probe: () => viewer.call('remoteTracks'),
    check: (tracks) => tracks.some((t) => t.identity === publisher && t.source === 'microphone' && t.muted === muted),
  });
}

async function expectDisconnected(p, reason) {
  const info = await waitUntil({
    what: `${p.identity}'s Room is disconnected`,
    expected: `a Disconnected event${reason ? ` with reason ${reason}` : ''}`,
    probe: () => p.call('info'),
    check: (i) => i.disconnected !== null && i.connectionState === 'disconnected',
  });
  if (reason && info.disconnected.reason !== reason) {
    throw new Failure(`${p.identity} was disconnected with reason ${info.disconnected.reason}, expected ${reason}`);
  }
  log(`  ${p.identity}: disconnected (${info.disconnected.reason})`);
}

function twirpError(e) {
  if (e && e.status !== undefined) {
    return `HTTP ${e.status} (${e.name}${e.code ? `, code ${e.code}` : ''}): ${e.message}`;
  }
  const cause = e?.cause ? ` (${e.cause.code ?? ''} ${e.cause.message ?? e.cause})` : '';
  return `${e?.message ?? e}${cause}`;
}

async function api(what, fn) {
  try {
    return await withTimeout(fn(), stepTimeoutMs, `RoomService ${what}`);
  } catch (e) {
    if (e instanceof Failure) throw e;
    const clientError = e?.status >= 400 && e?.status < 500;
    throw new Failure(`RoomService ${what} failed: ${twirpError(e)}`, { fatal: clientError });
  }
}

// ---------------------------------------------------------------------------------------------
// Main

const session = new Session({
  wsUrl,
  mode,
  stepTimeoutMs,
  verbose: args.verbose,
  consoleMax: 600,
  closeTimeoutMs: 10000,
  deadlineMs,
  failHeader: (message) => `FAILED in ${currentStep}:\n    ${message}`,
  failLine: (message) => `browser: FAIL mode=${scenario} ${currentStep}: ${message.split('\n')[0]}`,
});
process.on('exit', (code) => {
  if (!session.finished && code === 0) {
    console.log(`browser: FAIL mode=${scenario} ${currentStep}: the runner stopped before finishing`);
    process.exitCode = 1;
  }
});

async function main() {
  const { chromium, AccessToken, RoomServiceClient } = await loadModules(chromiumPath);
  const room = `browser-${scenario}-${randomBytes(4).toString('hex')}`;
  log(`mode ${scenario}: server ${wsUrl}, room ${room}, chromium ${chromiumPath}`);

  const mint = tokenMinter(AccessToken, { apiKey, apiSecret, room, ttl: '10m' });

  await step('start the page server and Chromium', async () => {
    await session.launch(chromium, chromiumPath);
    log(`  Chromium ${session.browser.version()}, page server ${session.base}`);
  });
  const open = (identity, opts) => session.open(Participant, identity, opts);
  const pass = async (firstFrame) => {
    session.finished = true;
    await session.cleanup();
    console.log(`browser: PASS mode=${scenario} join_to_first_frame_ms=${firstFrame}`);
    process.exit(0);
  };
  if (scenario === 'relay') {
    await pass(await relayScenario({ step, open, mint, waitUntil, expectRemotes, expectVideo, expectAudio, log }));
  }

  const alice = await step('alice opens the page (livekit-client loads)', async () => {
    const p = await open('alice');
    log(`  livekit-client ${await p.page.evaluate(() => window.confab.version)}`);
    return p;
  });

  await step('alice joins and publishes camera + microphone', async () => {
    await alice.join(await mint('alice'));
    const pubs = await alice.call('publish', { camera: true, mic: true });
    const sources = pubs.map((p) => p.source).sort();
    if (show(sources) !== show(['camera', 'microphone']) || pubs.some((p) => !p.trackSid)) {
      throw new Failure(`alice: expected camera and microphone publications with track sids, got ${show(pubs)}`);
    }
    log(`  alice published ${pubs.map((p) => `${p.source}=${p.trackSid}`).join(', ')}`);
  });

  const bob = await step('bob joins and publishes camera + microphone', async () => {
    const p = await open('bob');
    await p.join(await mint('bob'));
    const pubs = await p.call('publish', { camera: true, mic: true });
    log(`  bob published ${pubs.map((x) => `${x.source}=${x.trackSid}`).join(', ')}`);
    return p;
  });

  await step('alice and bob see each other', async () => {
    await expectRemotes(alice, ['bob']);
    await expectRemotes(bob, ['alice']);
  });

  await step('each decodes the other\'s video', async () => {
    await expectVideo(bob, 'alice');
    await expectVideo(alice, 'bob');
  });

  await step('each receives the other\'s audio', async () => {
    await expectAudio(bob, 'alice');
    await expectAudio(alice, 'bob');
  });

  await step('a reliable data message from alice arrives at bob', async () => {
    const text = `hello bob, from alice ${randomBytes(4).toString('hex')}`;
    const bytes = [0, 1, 2, 127, 128, 254, 255];
    await alice.call('sendData', { reliable: true, text, topic: 'confab-test' });
    await alice.call('sendData', { reliable: true, bytes, topic: 'confab-bytes' });
    const msgs = await waitUntil({
      what: 'bob receives alice\'s reliable messages',
      expected: `${show(text)} (topic confab-test) and bytes ${show(bytes)} (topic confab-bytes)`,
      probe: () => bob.call('dataMessages'),
      check: (m) => m.some((x) => x.text === text) && m.some((x) => show(x.bytes) === show(bytes)),
    });
    const got = msgs.find((x) => x.text === text);
    if (got.from !== 'alice' || got.kind !== 'reliable' || got.topic !== 'confab-test') {
      throw new Failure(
        `bob got the text but with from=${got.from} (identity=${got.identity}), kind=${got.kind}, topic=${got.topic}; ` +
          'expected from=alice (the server must set DataPacket.participant_identity), kind=reliable, topic=confab-test',
      );
    }
    const gotBytes = msgs.find((x) => show(x.bytes) === show(bytes));
    if (gotBytes.topic !== 'confab-bytes' || gotBytes.from !== 'alice') {
      throw new Failure(`bob got the bytes with from=${gotBytes.from}, topic=${gotBytes.topic}`);
    }
  });

  await step('alice mutes her microphone: bob sees it muted; unmutes: bob sees it live', async () => {
    const muted = await alice.call('setMicEnabled', false);
    if (muted.muted !== true) throw new Failure(`alice: setMicEnabled(false) left the track ${show(muted)}`);
    await expectMicMuted(bob, 'alice', true);
    await alice.call('setMicEnabled', true);
    await expectMicMuted(bob, 'alice', false);
  });

  await step('alice\'s signal connection drops: she resumes as the same participant, media flows on', async () => {
    const before = (await alice.call('info')).participantSid ?? null;
    const seenBefore = (await bob.call('events')).filter((e) => e.ev === 'participantDisconnected').length;
    await alice.call('simulateSignalReconnect');
    await waitUntil({
      what: 'alice resumes',
      expected: 'a Reconnected event after the drop',
      probe: async () => (await alice.call('events')).filter((e) => e.ev === 'reconnected' || e.ev === 'signalReconnecting'),
      check: (evs) => evs.some((e) => e.ev === 'reconnected'),
    });
    const info = await alice.call('info');
    if (info.connectionState !== 'connected') throw new Failure(`alice is ${info.connectionState} after resuming`);
    if (before && info.participantSid && info.participantSid !== before) {
      throw new Failure(`alice came back as ${info.participantSid}, not ${before}: a rejoin, not a resume`);
    }
    const seenAfter = (await bob.call('events')).filter((e) => e.ev === 'participantDisconnected').length;
    if (seenAfter !== seenBefore) throw new Failure('bob saw alice leave during her resume');
    await expectRemotes(bob, ['alice']);
    await expectVideo(bob, 'alice');
    await expectVideo(alice, 'bob');
  });

  const carol = await step('carol joins: she sees alice and bob, they see her', async () => {
    const p = await open('carol');
    await p.join(await mint('carol'));
    await expectRemotes(p, ['alice', 'bob']);
    await expectRemotes(alice, ['bob', 'carol']);
    await expectRemotes(bob, ['alice', 'carol']);
    return p;
  });

  await step('carol (joined late) decodes alice\'s and bob\'s video', async () => {
    await expectVideo(carol, 'alice');
    await expectVideo(carol, 'bob');
  });

  await step('bob leaves: alice and carol see him gone', async () => {
    await bob.call('leave');
    await expectRemotes(alice, ['carol']);
    await expectRemotes(carol, ['alice']);
  });

  const svc = new RoomServiceClient(httpUrl, apiKey, apiSecret, { requestTimeout: Math.ceil(stepTimeoutMs / 1000) });

  await step('RoomService ListRooms and ListParticipants', async () => {
    await waitUntil({
      what: 'ListRooms',
      expected: `a room named ${room}`,
      probe: () => api('ListRooms', () => svc.listRooms()).then((rs) => rs.map((r) => `${r.name} (${r.numParticipants})`)),
      check: (names) => names.some((n) => n.startsWith(`${room} `)),
    });
    await waitUntil({
      what: `ListParticipants(${room})`,
      expected: show(['alice', 'carol']),
      probe: () => api('ListParticipants', () => svc.listParticipants(room)).then((ps) => ps.map((x) => x.identity).sort()),
      check: (ids) => show(ids) === show(['alice', 'carol']),
    });
  });

  await step('RoomService RemoveParticipant(carol): her Room disconnects, alice sees her gone', async () => {
    await api('RemoveParticipant', () => svc.removeParticipant(room, 'carol'));
    await expectDisconnected(carol, 'PARTICIPANT_REMOVED');
    await expectRemotes(alice, []);
  });

  await step('RoomService DeleteRoom: alice disconnects, the room is gone', async () => {
    await api('DeleteRoom', () => svc.deleteRoom(room));
    await expectDisconnected(alice, 'ROOM_DELETED');
    await waitUntil({
      what: 'ListRooms after DeleteRoom',
      expected: `no room named ${room}`,
      probe: () => api('ListRooms', () => svc.listRooms()).then((rs) => rs.map((r) => r.name)),
      check: (names) => !names.includes(room),
    });
  });

  const infos = {};
  for (const p of [alice, bob, carol]) infos[p.identity] = await p.call('info');
  const firstFrame = infos.bob.joinToFirstFrameMs;
  log(
    `figures: bob (joined while alice published) join() -> first remote frame ${firstFrame} ms ` +
      `(connect ${bob.joinResult.connectMs} ms); carol (late joiner) ${infos.carol.joinToFirstFrameMs} ms; ` +
      `alice (waited for bob) ${infos.alice.joinToFirstFrameMs} ms`,
  );
  await pass(firstFrame);
}

main().catch((e) => session.fail(e instanceof Failure ? e.message : (e?.stack ?? String(e))));
