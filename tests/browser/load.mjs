#!/usr/bin/env node
// Load measurement for confab: N livekit-client participants (headless Chromium, fake camera +
// microphone, the same page and Chromium flags as run.mjs: both use lib.mjs) in one room, all
// publishing and all subscribed to each other. Once every participant decodes every other's video
// and hears their audio, it samples for --seconds and reports:
//
//   - confab's CPU (utime+stime delta from /proc/<pid>/stat over the wall time, % of one core),
//     its busiest threads (/proc/<pid>/task/*/stat), and its RSS (VmRSS, VmHWM from /proc/<pid>/status);
//   - the machine's CPU (/proc/stat) and the Chromium process tree's CPU, for scale;
//   - per viewer <- publisher: frames/s decoded (inbound-rtp framesDecoded) and rendered
//     (<video> getVideoPlaybackQuality), resolution, freezes, losses, NACK/PLI, audio packets/s;
//   - per publisher: the simulcast layers Chromium sends and why they are limited;
//   - each participant's join() -> first remote frame time (the page's joinToFirstFrameMs).
//
//   node load.mjs --url wss://localhost:7880 --api-key KEY [--api-secret SECRET] [--ca CA.crt]
//                 [--pid CONFAB_PID] [--participants 4] [--seconds 30] [--warmup 10] [--mode v1|v0]
//
// It measures; it does not judge: no thresholds. Exit status: 0 the window was measured (look at
// the figures), 1 the room never reached the full mesh or the run broke, 2 bad arguments or a
// missing tool. The last line is
//   load: participants=N cpu_percent=X rss_mib=Y join_to_first_frame_ms_median=Z fps_min=… …
// or `load: FAIL …`.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import { randomBytes } from 'node:crypto';

import {
  Failure, PageParticipant, Session, loadModules, log, parseCommandLine, serverOptions, show,
  sleep, tokenMinter, trustCa, usage, waitUntil, withTimeout,
} from './lib.mjs';

const USAGE = `usage: node load.mjs --url wss://HOST:PORT --api-key KEY [--api-secret SECRET] [--ca CA.crt | --insecure]
                    [--pid CONFAB_PID] [--participants N] [--seconds S] [--warmup S] [--mode v1|v0]
                    [--chromium PATH] [--step-timeout S] [--deadline S] [--verbose]
  --url           the server's WebSocket URL (env LIVEKIT_URL)
  --api-key       API key (env LIVEKIT_API_KEY); --api-secret or env LIVEKIT_API_SECRET
  --ca            CA certificate the server's TLS chains to (env CONFAB_CA); Node trusts it through
                  NODE_EXTRA_CA_CERTS (re-executes itself to set it). Chromium ignores certificate errors.
  --insecure      do not verify the server certificate in Node (NODE_TLS_REJECT_UNAUTHORIZED=0)
  --pid           confab's process id (env CONFAB_PID): its CPU and memory are read from /proc/<pid>;
                  without it only the client-side figures are measured
  --participants  how many participants join the room (default 4), one after another, each
                  publishing camera + microphone; everyone subscribes to everyone
  --seconds       length of the measured window (default 30)
  --warmup        seconds to wait after the full mesh is up before measuring (default 10; lets
                  bandwidth estimation and simulcast layers settle)
  --mode          v1 (default: /rtc/v1, one PeerConnection) or v0 (/rtc, two PeerConnections)
  --chromium      Chromium binary (env CHROMIUM_PATH, default /usr/bin/chromium)
  --step-timeout  seconds a join or the wait for the full mesh may take (default 90)
  --deadline      seconds the whole run may take (default: computed from the above)
  --verbose       print every browser console line (default: warnings and errors only)`;

const args = parseCommandLine('load.mjs', USAGE, {
  pid: { type: 'string' },
  participants: { type: 'string', default: '4' },
  seconds: { type: 'string', default: '30' },
  warmup: { type: 'string', default: '10' },
  'step-timeout': { type: 'string', default: '90' },
  deadline: { type: 'string' },
});
const { mode, wsUrl, httpUrl, apiKey, apiSecret, caPath, chromiumPath } = serverOptions(args);
const pidArg = args.pid ?? process.env.CONFAB_PID;
const count = Number(args.participants);
const seconds = Number(args.seconds);
const warmup = Number(args.warmup);
const stepTimeoutMs = Number(args['step-timeout']) * 1000;
if (!Number.isInteger(count) || count < 2) usage('--participants takes an integer >= 2');
if (!(seconds > 0)) usage('--seconds takes a positive number');
if (!(warmup >= 0)) usage('--warmup takes a number >= 0');
if (!(stepTimeoutMs > 0)) usage('--step-timeout takes positive seconds');
const deadlineMs =
  (args.deadline !== undefined ? Number(args.deadline) : 120 + count * 60 + 2 * stepTimeoutMs / 1000 + warmup + seconds) *
  1000;
if (!(deadlineMs > 0)) usage('--deadline takes positive seconds');
let confabPid = null;
if (pidArg !== undefined) {
  confabPid = Number(pidArg);
  if (!Number.isInteger(confabPid) || confabPid <= 0) usage(`--pid takes a process id, got ${pidArg}`);
  if (!fs.existsSync(`/proc/${confabPid}/stat`)) usage(`no process ${confabPid} (/proc/${confabPid}/stat)`);
}
await trustCa(import.meta.url, caPath, args.insecure);

// ---------------------------------------------------------------------------------------------
// Figures

const median = (xs) => {
  const v = xs.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return null;
  const m = Math.floor(v.length / 2);
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
};
const fmt = (x, digits = 1) => (x === null || x === undefined || !Number.isFinite(x) ? '-' : x.toFixed(digits));

function table(header, rows) {
  const all = [header, ...rows].map((r) => r.map((c) => String(c)));
  const widths = header.map((_, i) => Math.max(...all.map((r) => r[i].length)));
  const line = (r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [line(all[0]), widths.map((w) => '-'.repeat(w)).join('  '), ...all.slice(1).map(line)].join('\n');
}

// ---------------------------------------------------------------------------------------------
// /proc sampling

let clockTicks = 100;
try {
  clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
} catch {
  // 100 on every Linux this runs on
}
const cores = os.cpus().length;

/** {comm, ppid, ticks (utime + stime)} of /proc/<pid>[/task/<tid>]/stat, or null if it is gone. */
function readStat(file) {
  let s;
  try {
    s = fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
  const close = s.lastIndexOf(')');
  const comm = s.slice(s.indexOf('(') + 1, close);
  const f = s.slice(close + 2).split(' '); // f[0] is field 3 (state)
  return { comm, ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) };
}

function readStatus(pid) {
  const out = {};
  try {
    for (const line of fs.readFileSync(`/proc/${pid}/status`, 'utf8').split('\n')) {
      const m = /^(VmRSS|VmHWM|Threads):\s+(\d+)/.exec(line);
      if (m) out[m[1]] = Number(m[2]);
    }
  } catch {
    return null;
  }
  return out;
}

function readMachine() {
  const first = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal (guest is already inside user)
  const total = first.slice(0, 8).reduce((a, b) => a + b, 0);
  return { total, idle: first[3] + first[4] };
}

/** Every descendant of `root` with its CPU ticks (the Chromium tree under this node process). */
function readTree(root) {
  const procs = new Map();
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const st = readStat(`/proc/${name}/stat`);
    if (st) procs.set(Number(name), st);
  }
  const children = new Map();
  for (const [pid, st] of procs) {
    if (!children.has(st.ppid)) children.set(st.ppid, []);
    children.get(st.ppid).push(pid);
  }
  const out = new Map();
  const stack = [...(children.get(root) ?? [])];
  while (stack.length) {
    const pid = stack.pop();
    out.set(pid, procs.get(pid));
    stack.push(...(children.get(pid) ?? []));
  }
  return out;
}

function readThreads(pid) {
  const out = new Map();
  let tids = [];
  try {
    tids = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    const st = readStat(`/proc/${pid}/task/${tid}/stat`);
    if (st) out.set(Number(tid), st);
  }
  return out;
}

function cpuSample() {
  return {
    at: performance.now(),
    confab: confabPid ? readStat(`/proc/${confabPid}/stat`) : null,
    threads: confabPid ? readThreads(confabPid) : new Map(),
    machine: readMachine(),
    tree: readTree(process.pid),
    self: readStat(`/proc/${process.pid}/stat`),
  };
}

/** % of one core between two samples. */
const pct = (ticks, ms) => (ticks / clockTicks) / (ms / 1000) * 100;

function treeTicks(a, b) {
  let t = 0;
  for (const [pid, st] of b.tree) {
    const before = a.tree.get(pid);
    if (before && before.comm === st.comm) t += st.ticks - before.ticks;
  }
  return t;
}

function cpuBetween(a, b) {
  const ms = b.at - a.at;
  const d = b.machine.total - a.machine.total;
  return {
    ms,
    confab: a.confab && b.confab ? pct(b.confab.ticks - a.confab.ticks, ms) : null,
    machineBusy: d > 0 ? ((d - (b.machine.idle - a.machine.idle)) / d) * 100 : null, // % of all cores
    chromium: pct(treeTicks(a, b), ms),
    node: a.self && b.self ? pct(b.self.ticks - a.self.ticks, ms) : null,
  };
}

// Runs in every page before harness.mjs: keeps the page's RTCPeerConnections so that their
// getStats() can be read (the harness keeps its Room private). Behaviour is unchanged.
function recordPeerConnections() {
  const Native = window.RTCPeerConnection;
  const pcs = [];
  window.__confabLoadPcs = pcs;
  class Recorded extends Native {
    constructor(...a) {
      super(...a);
      pcs.push(this);
    }
  }
  window.RTCPeerConnection = Recorded;
}

// Runs in the page: one snapshot of what it receives and sends.
async function pageSnapshot() {
  const identityOfTrack = new Map();
  for (const el of document.querySelectorAll('#media video')) {
    for (const t of el.srcObject?.getVideoTracks?.() ?? []) identityOfTrack.set(t.id, el.dataset.identity);
  }
  const inbound = [];
  const outbound = [];
  const pairs = [];
  // The named counters of a stats entry, 0 where Chromium leaves one out.
  const counters = (s, names) => Object.fromEntries(names.map((n) => [n, s[n] ?? 0]));
  for (const pc of window.__confabLoadPcs ?? []) {
    if (pc.connectionState === 'closed') continue;
    const report = await pc.getStats();
    const codecs = new Map();
    report.forEach((s) => {
      if (s.type === 'codec') codecs.set(s.id, s.mimeType);
    });
    report.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') {
        inbound.push({
          identity: identityOfTrack.get(s.trackIdentifier) ?? null,
          trackIdentifier: s.trackIdentifier,
          codec: codecs.get(s.codecId) ?? null,
          decoder: s.decoderImplementation ?? null,
          ...counters(s, [
            'framesDecoded', 'framesReceived', 'framesDropped', 'frameWidth', 'frameHeight', 'packetsReceived',
            'packetsLost', 'bytesReceived', 'nackCount', 'pliCount', 'firCount', 'freezeCount', 'totalFreezesDuration',
          ]),
        });
      } else if (s.type === 'outbound-rtp' && s.kind === 'video') {
        outbound.push({
          rid: s.rid ?? null,
          active: s.active,
          codec: codecs.get(s.codecId) ?? null,
          qualityLimitationReason: s.qualityLimitationReason ?? null,
          encoder: s.encoderImplementation ?? null,
          ...counters(s, ['framesEncoded', 'frameWidth', 'frameHeight', 'bytesSent', 'nackCount', 'pliCount']),
        });
      } else if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') {
        pairs.push({
          rttMs: s.currentRoundTripTime !== undefined ? s.currentRoundTripTime * 1000 : null,
          outKbps: s.availableOutgoingBitrate !== undefined ? s.availableOutgoingBitrate / 1000 : null,
        });
      }
    });
  }
  return {
    t: performance.now(),
    info: window.confab.info(),
    remotes: window.confab.remoteParticipants(),
    video: window.confab.videoStats(),
    audio: await window.confab.audioStats(),
    inbound,
    outbound,
    pairs,
    events: window.confab.events().filter((e) =>
      ['reconnecting', 'signalReconnecting', 'reconnected', 'disconnected', 'trackSubscriptionFailed',
        'trackUnsubscribed', 'participantDisconnected', 'mediaDevicesError'].includes(e.ev)),
  };
}

// ---------------------------------------------------------------------------------------------
// Participants

class Participant extends PageParticipant {
  snapshot() {
    return withTimeout(this.page.evaluate(pageSnapshot), stepTimeoutMs, `${this.identity}: snapshot`);
  }

  async join(token) {
    const t0 = Date.now();
    const r = await withTimeout(this.startJoin(token), Math.max(stepTimeoutMs, 40000), `${this.identity}: join()`);
    this.joinResult = r;
    if (!r.ok) throw new Failure(this.joinError(r, t0));
    if (r.signalPath !== mode) {
      throw new Failure(`${this.identity} joined over signalling ${r.signalPath}, expected ${mode}`);
    }
    return r;
  }

  async report() {
    const lines = [`--- ${this.identity} ---`];
    try {
      const s = await this.snapshot();
      lines.push(`info: ${show(s.info)}`);
      lines.push(`remote participants: ${show(s.remotes)}`);
      lines.push(`video: ${show(s.video)}`);
      lines.push(`audio: ${show(s.audio)}`);
      const events = await this.call('events');
      lines.push('last events:');
      for (const ev of events.slice(-30)) lines.push(`  ${show(ev)}`);
    } catch (e) {
      lines.push(`(page state unavailable: ${e.message})`);
    }
    lines.push(...this.consoleTail(15));
    return lines.join('\n');
  }
}

// ---------------------------------------------------------------------------------------------
// Main

const session = new Session({
  wsUrl,
  mode,
  stepTimeoutMs,
  verbose: args.verbose,
  consoleMax: 400,
  closeTimeoutMs: 15000,
  deadlineMs,
  unrefDeadline: true,
  failHeader: (message) => `FAILED: ${message}`,
  failLine: (message) => `load: FAIL participants=${count} ${message.split('\n')[0]}`,
});
const { participants } = session;

/** Does every page see every other participant, decode their camera and receive their audio? */
function meshState(snaps, ids) {
  const missing = [];
  snaps.forEach((s, i) => {
    const me = ids[i];
    for (const other of ids) {
      if (other === me) continue;
      const v = s.video.find((x) => x.identity === other && x.source === 'camera');
      const a = s.audio.find((x) => x.identity === other && x.source === 'microphone');
      if (!s.remotes.includes(other)) missing.push(`${me} does not see ${other}`);
      else if (!v || !(v.videoWidth > 0 && v.totalVideoFrames > 0)) missing.push(`${me} decodes no video of ${other}`);
      else if (!a || !(a.bytesReceived > 0)) missing.push(`${me} receives no audio of ${other}`);
    }
  });
  return missing;
}

async function main() {
  const { chromium, AccessToken, RoomServiceClient } = await loadModules(chromiumPath);
  const room = `load-${randomBytes(4).toString('hex')}`;
  const ids = Array.from({ length: count }, (_, i) => `p${String(i + 1).padStart(2, '0')}`);
  log(
    `load: ${count} participants, room ${room}, server ${wsUrl} (${mode}), confab pid ${confabPid ?? '(none)'}, ` +
      `${cores} cores, warm-up ${warmup} s, window ${seconds} s`,
  );
  if (confabPid) {
    const st = readStat(`/proc/${confabPid}/stat`);
    if (!/confab/.test(st?.comm ?? '')) log(`  note: process ${confabPid} is "${st?.comm}", not confab`);
  }

  const mint = tokenMinter(AccessToken, { apiKey, apiSecret, room, ttl: '1h' });

  await session.launch(chromium, chromiumPath);
  log(`Chromium ${session.browser.version()}, page server ${session.base}`);

  // One after another: each opens the page, joins, publishes camera + microphone. Everyone but
  // the first joins a room where others already publish; their join() -> first remote frame is
  // the figure (the first participant's includes waiting for the second to arrive).
  for (const identity of ids) {
    const p = await session.open(Participant, identity, { initScript: recordPeerConnections });
    const r = await p.join(await mint(identity));
    const pubs = await p.call('publish', { camera: true, mic: true });
    log(
      `  ${identity}: joined in ${r.connectMs} ms over ${r.signalPath}, published ` +
        `${pubs.map((x) => `${x.source}=${x.trackSid}`).join(', ')}`,
    );
  }

  const meshT0 = Date.now();
  await waitUntil({
    what: 'the full mesh',
    expected: `every participant decoding every other's camera and receiving their microphone`,
    probe: async () => meshState(await Promise.all(participants.map((p) => p.snapshot())), ids),
    check: (missing) => missing.length === 0,
    timeoutMs: stepTimeoutMs,
    intervalMs: 500,
  });
  log(`full mesh: every participant decodes all ${count - 1} others (${Date.now() - meshT0} ms after the last publish)`);

  const svc = new RoomServiceClient(httpUrl, apiKey, apiSecret);
  const serverView = async () => {
    try {
      const ps = await withTimeout(svc.listParticipants(room), 10000, 'ListParticipants');
      return ps
        .map((x) => `${x.identity}(${x.tracks.map((t) => (t.type === 1 ? 'video' : t.type === 0 ? 'audio' : t.type)).sort().join('+')})`)
        .sort()
        .join(' ');
    } catch (e) {
      return `ListParticipants failed: ${e.message ?? e}`;
    }
  };
  log(`confab's view (ListParticipants): ${await serverView()}`);

  if (warmup > 0) {
    log(`warm-up ${warmup} s`);
    await sleep(warmup * 1000);
  }

  // The window: CPU every second, the pages at start and end (and every 5 s for the lowest rate).
  const snapAll = () => Promise.all(participants.map((p) => p.snapshot()));
  log(`measuring for ${seconds} s`);
  const statusStart = confabPid ? readStatus(confabPid) : null;
  const pageSnaps = [await snapAll()];
  const cpu0 = cpuSample();
  const cpuSamples = [cpu0];
  const endAt = performance.now() + seconds * 1000;
  let nextPage = performance.now() + 5000;
  const perSecond = [];
  while (performance.now() < endAt) {
    await sleep(Math.min(1000, Math.max(0, endAt - performance.now())));
    const s = cpuSample();
    const c = cpuBetween(cpuSamples[cpuSamples.length - 1], s);
    cpuSamples.push(s);
    perSecond.push(c);
    if (performance.now() >= nextPage && performance.now() < endAt - 2000) {
      pageSnaps.push(await snapAll());
      nextPage += 5000;
    }
  }
  const cpuEnd = cpuSamples[cpuSamples.length - 1];
  pageSnaps.push(await snapAll());
  const statusEnd = confabPid ? readStatus(confabPid) : null;
  const whole = cpuBetween(cpu0, cpuEnd);
  log(`confab's view at the end (ListParticipants): ${await serverView()}`);

  // ------------------------------------------------------------------ CPU
  console.log('');
  console.log(`CPU, each second of the window (% of one core; machine = % of all ${cores} cores):`);
  console.log(
    table(
      ['second', 'confab', 'chromium tree', 'machine busy'],
      perSecond.map((c, i) => [String(i + 1), fmt(c.confab), fmt(c.chromium), fmt(c.machineBusy)]),
    ),
  );
  const confabSeries = perSecond.map((c) => c.confab).filter((x) => x !== null);
  console.log('');
  console.log(
    `CPU over the whole ${fmt(whole.ms / 1000)} s window: confab ${fmt(whole.confab)}% of one core ` +
      `(1-s min ${fmt(confabSeries.length ? Math.min(...confabSeries) : null)}, max ${fmt(confabSeries.length ? Math.max(...confabSeries) : null)}); ` +
      `Chromium tree ${fmt(whole.chromium)}%; this node process ${fmt(whole.node)}%; machine ${fmt(whole.machineBusy)}% busy of ${cores} cores ` +
      `(= ${fmt((whole.machineBusy * cores))}% of one core)`,
  );
  if (confabPid) {
    const threads = [];
    for (const [tid, st] of cpuEnd.threads) {
      const before = cpu0.threads.get(tid);
      if (before) threads.push({ tid, comm: st.comm, pct: pct(st.ticks - before.ticks, whole.ms) });
    }
    threads.sort((a, b) => b.pct - a.pct);
    console.log(
      `confab threads (busiest first, % of one core): ` +
        threads.slice(0, 6).map((t) => `${t.comm}[${t.tid}] ${fmt(t.pct)}`).join(', ') +
        ` (${threads.length} threads)`,
    );
    console.log(
      `confab memory: VmRSS ${fmt(statusStart?.VmRSS / 1024)} -> ${fmt(statusEnd?.VmRSS / 1024)} MiB over the window, ` +
        `VmHWM (peak since start) ${fmt(statusEnd?.VmHWM / 1024)} MiB`,
    );
  }

  // ------------------------------------------------------------------ receivers
  const first = pageSnaps[0];
  const last = pageSnaps[pageSnaps.length - 1];
  const rows = [];
  const decodedFps = [];
  const problems = [];
  participants.forEach((p, i) => {
    for (const other of ids) {
      if (other === p.identity) continue;
      const pick = (snap) => snap[i].inbound.find((x) => x.identity === other) ?? null;
      const pickV = (snap) => snap[i].video.find((x) => x.identity === other && x.source === 'camera') ?? null;
      const pickA = (snap) => snap[i].audio.find((x) => x.identity === other && x.source === 'microphone') ?? null;
      const a = pick(first);
      const b = pick(last);
      const secs = (last[i].t - first[i].t) / 1000;
      const rate = (f) => (a && b ? (f(b) - f(a)) / secs : null);
      const fps = rate((x) => x.framesDecoded);
      decodedFps.push(fps ?? 0);
      // Lowest decoded rate over the ~5 s steps between page samples.
      let low = null;
      for (let k = 1; k < pageSnaps.length; k++) {
        const x = pick(pageSnaps[k - 1]);
        const y = pick(pageSnaps[k]);
        if (!x || !y) continue;
        const r = (y.framesDecoded - x.framesDecoded) / ((pageSnaps[k][i].t - pageSnaps[k - 1][i].t) / 1000);
        low = low === null ? r : Math.min(low, r);
      }
      const va = pickV(first);
      const vb = pickV(last);
      const rendered = va && vb ? (vb.totalVideoFrames - vb.droppedVideoFrames - (va.totalVideoFrames - va.droppedVideoFrames)) / secs : null;
      const aa = pickA(first);
      const ab = pickA(last);
      const audioPps = aa && ab ? (ab.packetsReceived - aa.packetsReceived) / secs : null;
      // Every resolution decoded at a page sample (a change means a simulcast layer switch).
      const sizes = [];
      for (const snap of pageSnaps) {
        const x = pick(snap);
        const r = x ? `${x.frameWidth}x${x.frameHeight}` : '-';
        if (sizes[sizes.length - 1] !== r) sizes.push(r);
      }
      rows.push([
        `${p.identity} <- ${other}`,
        sizes.join('>'),
        fmt(fps),
        fmt(low),
        fmt(rendered),
        a && b ? String(b.framesDropped - a.framesDropped) : '-',
        a && b ? `${b.freezeCount - a.freezeCount}/${fmt(b.totalFreezesDuration - a.totalFreezesDuration)}s` : '-',
        a && b ? String(b.packetsLost - a.packetsLost) : '-',
        a && b ? String(b.nackCount - a.nackCount) : '-',
        a && b ? String(b.pliCount - a.pliCount + (b.firCount - a.firCount)) : '-',
        fmt(rate((x) => (x.bytesReceived * 8) / 1000), 0),
        fmt(audioPps),
      ]);
      if (!b) problems.push(`${p.identity} has no inbound video of ${other} at the end`);
    }
  });
  console.log('');
  console.log('Video and audio each participant receives, over the window (viewer <- publisher):');
  console.log(
    table(
      ['pair', 'res', 'dec fps', 'min 5s', 'render fps', 'dropped', 'freezes', 'lost', 'nack', 'pli+fir', 'kbit/s', 'audio pkt/s'],
      rows,
    ),
  );
  const codecs = new Set(last.flatMap((s) => s.inbound.filter((x) => x.codec).map((x) => `${x.codec} (${x.decoder})`)));
  console.log(`decoders: ${[...codecs].join(', ')}`);

  // ------------------------------------------------------------------ senders
  const sendRows = [];
  participants.forEach((p, i) => {
    for (const b of last[i].outbound) {
      const a = first[i].outbound.find((x) => x.rid === b.rid);
      const secs = (last[i].t - first[i].t) / 1000;
      sendRows.push([
        `${p.identity} ${b.rid ?? '(one layer)'}`,
        b.active === false ? 'inactive' : `${b.frameWidth}x${b.frameHeight}`,
        a ? fmt((b.framesEncoded - a.framesEncoded) / secs) : '-',
        a ? fmt(((b.bytesSent - a.bytesSent) * 8) / 1000 / secs, 0) : '-',
        b.qualityLimitationReason ?? '-',
        a ? String(b.pliCount - a.pliCount) : '-',
        a ? String(b.nackCount - a.nackCount) : '-',
      ]);
    }
  });
  console.log('');
  console.log('What each participant sends (simulcast layers, over the window):');
  console.log(table(['layer', 'res', 'enc fps', 'kbit/s', 'limited by', 'pli in', 'nack in'], sendRows));
  const rtts = last.flatMap((s) => s.pairs.map((x) => x.rttMs)).filter((x) => x !== null);
  const bwe = last.flatMap((s) => s.pairs.map((x) => x.outKbps)).filter((x) => x !== null);
  console.log(
    `ICE: RTT median ${fmt(median(rtts))} ms; available outgoing bitrate (sender BWE) ` +
      `${bwe.length ? `${fmt(Math.min(...bwe), 0)}..${fmt(Math.max(...bwe), 0)}` : '-'} kbit/s`,
  );

  // ------------------------------------------------------------------ joins, events
  console.log('');
  const joinRows = participants.map((p, i) => [
    p.identity,
    String(p.joinResult.connectMs),
    String(last[i].info.joinToFirstFrameMs ?? '-'),
    i === 0 ? 'first in the room: includes waiting for the second' : `${i} publishing before`,
  ]);
  console.log(table(['participant', 'connect ms', 'join->first frame ms', 'note'], joinRows));
  const joinFigures = participants.slice(1).map((_, k) => last[k + 1].info.joinToFirstFrameMs);
  const joinMedian = median(joinFigures);

  participants.forEach((p, i) => {
    const evs = last[i].events;
    if (evs.length) problems.push(`${p.identity} events: ${show(evs)}`);
    if (last[i].info.disconnected) problems.push(`${p.identity} disconnected: ${show(last[i].info.disconnected)}`);
    const missing = meshState(last, ids).filter((m) => m.startsWith(`${p.identity} `));
    problems.push(...missing.map((m) => `at the end: ${m}`));
  });
  console.log('');
  if (problems.length) {
    console.log('Observed (no thresholds applied):');
    for (const x of problems) console.log(`  ${x}`);
  } else {
    console.log('Observed: no reconnects, disconnects, unsubscriptions or missing tracks on any page.');
  }

  session.finished = true;
  // Leave properly (the server logs a leave, not a connection time-out), then close Chromium.
  log('leaving: room.disconnect() on every page, then closing Chromium');
  await Promise.all(participants.map((p) => p.call('leave').catch(() => {})));
  await session.cleanup();
  const fields = [
    `participants=${count}`,
    `seconds=${fmt(whole.ms / 1000)}`,
    `cpu_percent=${fmt(whole.confab)}`,
    `rss_mib=${fmt(statusEnd ? statusEnd.VmHWM / 1024 : null)}`,
    `join_to_first_frame_ms_median=${fmt(joinMedian, 0)}`,
    `fps_min=${fmt(Math.min(...decodedFps))}`,
    `fps_median=${fmt(median(decodedFps))}`,
    `fps_max=${fmt(Math.max(...decodedFps))}`,
    `chromium_cpu_percent=${fmt(whole.chromium)}`,
    `machine_busy_percent=${fmt(whole.machineBusy)}`,
    `cores=${cores}`,
  ];
  console.log(`load: ${fields.join(' ')}`);
  process.exit(0);
}

main().catch((e) => session.fail(e instanceof Failure ? e.message : (e?.stack ?? String(e))));
