// `node run.mjs --mode relay`: a call through confab's embedded TURN server alone. Alice and bob
// join over /rtc/v1 (livekit-client's default, one PeerConnection), publish camera +
// microphone, and must decode each other's video and hear each other's audio with ICE limited
// to relay candidates; each side's selected candidate pair must then have a local candidate of
// type 'relay' (getStats()), which also names the TURN transport (udp or tls) it went through.
//
// The pages join as an app forces this: room.connect(url, token, { rtcConfig: {
// iceTransportPolicy: 'relay' } }). livekit-client copies that rtcConfig into every
// RTCConfiguration it builds and, since the app gives no iceServers, adds the join response's
// ice_servers (confab's TURN URLs and credentials); the checks below require both on every
// PeerConnection.

import { Failure, show } from './lib.mjs';

/**
 * Runs in every page before harness.mjs: each RTCPeerConnection is kept in
 * window.__confabRelayPcs for getStats(). Nothing else changes.
 */
export function keepPeerConnections() {
  const Native = window.RTCPeerConnection;
  const pcs = [];
  window.__confabRelayPcs = pcs;
  class Kept extends Native {
    constructor(...args) {
      super(...args);
      pcs.push(this);
    }
  }
  window.RTCPeerConnection = Kept;
}

/**
 * Runs in the page: each PeerConnection's state, policy, ICE server URLs, gathered local
 * candidates, per transport the selected candidate pair with both its candidates, and every
 * pair that carried data or was nominated.
 */
async function pageIceState() {
  const out = [];
  for (const pc of window.__confabRelayPcs ?? []) {
    const cfg = pc.getConfiguration();
    const entry = {
      connectionState: pc.connectionState,
      iceConnectionState: pc.iceConnectionState,
      iceTransportPolicy: cfg.iceTransportPolicy,
      iceServers: (cfg.iceServers ?? []).flatMap((s) => [].concat(s.urls ?? [])),
      localCandidates: [],
      selected: [],
      pairs: [],
    };
    out.push(entry);
    if (pc.connectionState === 'closed') continue;
    const report = await pc.getStats();
    const candidate = (c) =>
      c && {
        candidateType: c.candidateType,
        protocol: c.protocol,
        relayProtocol: c.relayProtocol ?? null,
        address: c.address ?? c.ip ?? null,
        port: c.port,
        url: c.url ?? null,
      };
    report.forEach((s) => {
      if (s.type === 'local-candidate') {
        const c = candidate(s);
        entry.localCandidates.push(
          `${c.candidateType} ${c.protocol}${c.relayProtocol ? ` via ${c.relayProtocol}` : ''} ${c.address}:${c.port}`,
        );
      }
    });
    const pairOf = (pair) => ({
      id: pair.id,
      state: pair.state,
      nominated: pair.nominated ?? false,
      bytesSent: pair.bytesSent ?? 0,
      bytesReceived: pair.bytesReceived ?? 0,
      local: candidate(report.get(pair.localCandidateId)),
      remote: candidate(report.get(pair.remoteCandidateId)),
    });
    report.forEach((s) => {
      if (s.type === 'candidate-pair' && (s.nominated || s.bytesSent || s.bytesReceived)) entry.pairs.push(pairOf(s));
    });
    report.forEach((s) => {
      if (s.type !== 'transport') return;
      const pair = s.selectedCandidatePairId ? report.get(s.selectedCandidatePairId) : undefined;
      entry.selected.push({
        transport: s.id,
        iceState: s.iceState ?? null,
        dtlsState: s.dtlsState ?? null,
        pair: pair ? pairOf(pair) : null,
      });
    });
  }
  return out;
}

/** What is wrong with a page's ICE state for a relay-only call; null when nothing is. */
function relayProblem(pcs) {
  if (!pcs.length) return 'livekit-client made no RTCPeerConnection';
  for (const [i, pc] of pcs.entries()) {
    const which = `PeerConnection ${i + 1} of ${pcs.length}`;
    if (pc.iceTransportPolicy !== 'relay') return `${which} has iceTransportPolicy ${pc.iceTransportPolicy}`;
    if (!pc.iceServers.some((u) => /^turns?:/.test(u))) {
      return `${which} has no TURN server among its iceServers (the join response's ice_servers)`;
    }
    if (pc.connectionState !== 'connected') return `${which} is ${pc.connectionState}`;
    const pairs = pc.selected.map((t) => t.pair);
    if (!pairs.length || pairs.some((p) => !p)) return `${which} has a transport without a selected candidate pair`;
    const notRelay = pairs.find((p) => p.local?.candidateType !== 'relay');
    if (notRelay) return `${which}'s selected pair has a ${notRelay.local?.candidateType} local candidate`;
  }
  return null;
}

/** `p`'s every PeerConnection is connected over a candidate pair whose local side is a relay. */
async function expectRelayed(p, { waitUntil, log }) {
  const pcs = await waitUntil({
    what: `${p.identity}'s ICE goes through the TURN relay`,
    expected:
      "every PeerConnection connected, with iceTransportPolicy 'relay', a turn: URL among its iceServers, " +
      "and a selected candidate pair whose local candidate has candidateType 'relay'",
    probe: async () => {
      const seen = await p.page.evaluate(pageIceState);
      return { problem: relayProblem(seen), pcs: seen };
    },
    check: (s) => s.problem === null,
  }).then((s) => s.pcs);
  const describe = (pair) => {
    const l = pair.local;
    const r = pair.remote;
    return (
      `local ${l.candidateType} ${l.protocol} ${l.address}:${l.port} (allocated over ${l.relayProtocol} at ${l.url}) ` +
      `-> remote ${r.candidateType} ${r.protocol} ${r.address}:${r.port}; bytes sent ${pair.bytesSent}, ` +
      `received ${pair.bytesReceived}`
    );
  };
  for (const pc of pcs) {
    for (const { pair } of pc.selected) {
      log(`  ${p.identity}: selected pair ${describe(pair)}`);
      // Chromium sends on the selected pair; the server may answer on another (still a relay).
      for (const other of pc.pairs.filter((x) => x.id !== pair.id)) {
        log(`  ${p.identity}:   other pair (${other.state}${other.nominated ? ', nominated' : ''}) ${describe(other)}`);
      }
    }
  }
  return pcs;
}

/**
 * Runs `fn`; a Failure from it also tells what each page in `pages` saw of ICE (what is wrong
 * for a relay-only call, candidates, pairs): a relay that does not work shows up first as a
 * join that times out or video that never arrives.
 */
async function explainingIce(pages, fn) {
  try {
    return await fn();
  } catch (e) {
    if (!(e instanceof Failure)) throw e;
    const seen = [];
    for (const p of pages) {
      const pcs = await p.page.evaluate(pageIceState).catch((x) => x);
      seen.push(
        pcs instanceof Error
          ? `${p.identity}'s ICE state: unavailable (${pcs.message.split('\n')[0]})`
          : `${p.identity}'s ICE state: ${relayProblem(pcs) ?? 'relayed'}; ${show(pcs)}`,
      );
    }
    throw new Failure(`${e.message}\n    ${seen.join('\n    ')}`, { fatal: e.fatal });
  }
}

/**
 * The scenario; `t` holds run.mjs's helpers (step, open, mint, waitUntil, expectRemotes,
 * expectVideo, expectAudio, log). Returns the figure: bob's join() -> first remote frame, in ms.
 */
export async function relayScenario(t) {
  const { step, open, mint, waitUntil, expectRemotes, expectVideo, expectAudio, log } = t;
  const pages = [];
  const joinAndPublish = async (identity) => {
    const p = await open(identity, { initScript: keepPeerConnections });
    p.rtcConfig = { iceTransportPolicy: 'relay' };
    pages.push(p);
    await explainingIce(pages, async () => p.join(await mint(identity)));
    const pubs = await p.call('publish', { camera: true, mic: true });
    log(`  ${identity} published ${pubs.map((x) => `${x.source}=${x.trackSid}`).join(', ')}`);
    return p;
  };

  const alice = await step('alice joins relay-only and publishes camera + microphone', () =>
    joinAndPublish('alice'),
  );
  const bob = await step('bob joins relay-only and publishes camera + microphone', () => joinAndPublish('bob'));

  await step('alice and bob see each other', async () => {
    await expectRemotes(alice, ['bob']);
    await expectRemotes(bob, ['alice']);
  });

  await step('each decodes the other\'s video and hears the other\'s audio through the relay', () =>
    explainingIce(pages, async () => {
      await expectVideo(bob, 'alice');
      await expectVideo(alice, 'bob');
      await expectAudio(bob, 'alice');
      await expectAudio(alice, 'bob');
    }),
  );

  await step('each side\'s selected ICE candidate pair is a relay candidate of confab\'s TURN server', async () => {
    await expectRelayed(alice, t);
    await expectRelayed(bob, t);
  });

  const infos = { alice: await alice.call('info'), bob: await bob.call('info') };
  await step('alice and bob leave', async () => {
    await alice.call('leave');
    await bob.call('leave');
  });
  const firstFrame = infos.bob.joinToFirstFrameMs;
  log(
    `figures: bob (joined while alice published) join() -> first remote frame through the relay ${firstFrame} ms ` +
      `(connect ${bob.joinResult.connectMs} ms); alice (waited for bob) ${infos.alice.joinToFirstFrameMs} ms`,
  );
  return firstFrame;
}
