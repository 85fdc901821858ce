// End-to-end encrypted meetings in Chromium (run.mjs --scenario e2ee):
//
// - Alice ticks "End-to-end encrypted" on the home page: the pre-join address carries a new key
//   in its fragment (/r/<room>#key=…, ≥ 128 bits of base64url); the page says it is encrypted.
// - Bob opens the full link. Each decodes the other's video (frames rising) and hears audio
//   (inbound bytes and audio energy rising); the lock badge says "Encrypted" (room.isE2EEEnabled)
//   and each remote tile is data-encrypted="true" (participant.isEncrypted: every publication's
//   TrackInfo.encryption, which the server copies from the publisher's add_track); a chat message
//   crosses the encrypted data channel.
// - Simulcast on encrypted payloads: Bob's window shrinks (adaptive stream asks for the low
//   layer: Alice's video ≤ 400 px wide), then grows (a wider layer must arrive); frames keep
//   rising after each switch, so the SFU's layer switch and keyframe requests work on encrypted
//   frames.
// - Carol opens the link without the key: she is told "This meeting is end-to-end encrypted. Ask
//   for the full link, including the part after #." and is out of the meeting. Then she opens it
//   with a wrong key: both others' media fail to decrypt, and she is told the key is wrong — which
//   also proves the media really is encrypted with the passphrase's key.
// - The key never reaches the server: no request URL, request body or WebSocket address of any
//   page holds it, nor does localStorage.

const NO_KEY = 'This meeting is end-to-end encrypted. Ask for the full link, including the part after #.';

/** Keeps every RTCPeerConnection of the page in window.__pcs (for getStats). */
const keepPeerConnections = () => {
  const Original = window.RTCPeerConnection;
  window.__pcs = [];
  window.RTCPeerConnection = class extends Original {
    constructor(...args) {
      super(...args);
      window.__pcs.push(this);
    }
  };
};

export async function e2eeScenario(t) {
  const { base, open, step, shot, waitUntil, prejoinToMeeting, expectPreview, expectVideo, videoState, Failure, log, stepTimeoutMs } = t;
  const room = `e2ee-${Math.random().toString(36).slice(2, 8)}`;
  const alice = await open('Alice', { width: 1280, height: 800 }, { initScript: keepPeerConnections });
  const bob = await open('Bob', { width: 1280, height: 800 }, { initScript: keepPeerConnections });
  let key;

  // Everything the pages send to the server, to check that the key is in none of it.
  const sent = [];
  for (const p of [alice, bob]) {
    p.context.on('request', (r) => sent.push({ who: p.name, what: `${r.method()} ${r.url()}`, body: r.postData() ?? '' }));
    p.page.on('websocket', (ws) => sent.push({ who: p.name, what: `WebSocket ${ws.url()}`, body: '' }));
  }

  const badge = (p) =>
    p.page.evaluate(() => {
      const b = document.querySelector('.e2ee-badge');
      return b ? { state: b.getAttribute('data-state'), text: b.textContent, tip: b.getAttribute('title') } : null;
    });
  const remoteEncrypted = (p) =>
    p.page.evaluate(() => [...document.querySelectorAll('.tile.camera:not(.local)')].map((t) => t.getAttribute('data-encrypted')));
  /** Inbound audio over all the page's peer connections: bytes and decoded energy. */
  const audioIn = (p) =>
    p.page.evaluate(async () => {
      let bytes = 0;
      let energy = 0;
      for (const pc of window.__pcs ?? []) {
        if (pc.connectionState === 'closed') continue;
        (await pc.getStats()).forEach((s) => {
          if (s.type === 'inbound-rtp' && s.kind === 'audio') {
            bytes += s.bytesReceived ?? 0;
            energy += s.totalAudioEnergy ?? 0;
          }
        });
      }
      return { bytes, energy };
    });
  const remoteVideo = async (p, name) => (await videoState(p, 'camera')).find((v) => v.name === name);

  await step('E2EE: Alice makes an encrypted room; its key is in the link’s fragment', async () => {
    await alice.page.goto(`${base}/`, { timeout: stepTimeoutMs });
    await alice.page.getByLabel('Your name').fill('Alice');
    await alice.page.getByLabel('Room', { exact: true }).fill(room);
    await alice.page.getByLabel('End-to-end encrypted').check();
    await alice.page.getByRole('button', { name: 'Join room' }).click();
    await alice.page.waitForURL((u) => u.pathname === `/r/${room}` && u.hash.startsWith('#key='), { timeout: stepTimeoutMs });
    key = new URLSearchParams(new URL(alice.page.url()).hash.slice(1)).get('key');
    // base64url, at least 128 bits (22 characters).
    if (!/^[A-Za-z0-9_-]{22,}$/.test(key ?? '')) throw new Failure(`the link's key is not ≥ 128 bits of base64url: ${key}`);
    await expectPreview(alice);
    const note = await alice.page.locator('.e2ee-note').innerText();
    if (!/End-to-end encrypted/.test(note)) throw new Failure(`the pre-join page does not say it is encrypted: ${note}`);
    await shot(alice, 'e2ee-prejoin');
    await prejoinToMeeting(alice, room);
    await waitUntil({
      what: 'Alice’s lock badge',
      expected: '"Encrypted" (room.isE2EEEnabled) with a tooltip',
      probe: () => badge(alice),
      check: (b) => b?.state === 'on' && /Encrypted/.test(b.text) && /server/.test(b.tip ?? ''),
    });
  });

  await step('E2EE: Bob opens the full link and joins', async () => {
    await bob.page.goto(`${base}/r/${room}#key=${key}`, { timeout: stepTimeoutMs });
    await expectPreview(bob);
    await bob.page.getByLabel('Your name').fill('Bob');
    await prejoinToMeeting(bob, room);
  });

  await step('E2EE: each decodes the other’s video and audio; both sides say encrypted', async () => {
    await expectVideo(alice, 'Bob');
    await expectVideo(bob, 'Alice');
    for (const p of [alice, bob]) {
      await waitUntil({
        what: `${p.name}: encryption on, the other's tracks encrypted`,
        expected: 'badge state on, the remote tile data-encrypted="true"',
        probe: async () => ({ badge: await badge(p), remote: await remoteEncrypted(p) }),
        check: (s) => s.badge?.state === 'on' && s.remote.length === 1 && s.remote[0] === 'true',
      });
      const first = await waitUntil({
        what: `${p.name} receives audio`,
        expected: 'inbound audio bytes',
        probe: () => audioIn(p),
        check: (a) => a.bytes > 0,
      });
      await waitUntil({
        what: `${p.name} decodes audio`,
        expected: `more bytes than ${first.bytes} and more audio energy than ${first.energy}`,
        probe: () => audioIn(p),
        check: (a) => a.bytes > first.bytes + 1000 && a.energy > first.energy,
      });
    }
    // The data channel is encrypted too (RoomOptions.encryption).
    await alice.page.getByRole('button', { name: 'Chat' }).click();
    const input = alice.page.getByLabel('Message', { exact: true });
    await input.fill('Encrypted hello');
    await input.press('Enter');
    await bob.page.getByRole('button', { name: /^Chat/ }).click();
    await waitUntil({
      what: 'Bob reads Alice’s encrypted chat message',
      expected: '"Encrypted hello" from Alice',
      probe: () => bob.page.locator('.messages li').allInnerTexts(),
      check: (items) => items.some((x) => x.includes('Alice') && x.includes('Encrypted hello')),
    });
    await bob.page.getByRole('button', { name: 'Close chat' }).click();
    await alice.page.keyboard.press('Escape');
    await shot(alice, 'e2ee-meeting');
  });

  await step('E2EE: simulcast layer switches on encrypted video (Bob’s window small, then large)', async () => {
    const rising = async (what, check) => {
      const first = await waitUntil({
        what: `${what}: Bob's view of Alice`,
        expected: 'a video that satisfies the layer check',
        probe: () => remoteVideo(bob, 'Alice'),
        check: (v) => !!v && v.frames > 0 && check(v),
        timeoutMs: stepTimeoutMs * 2,
      });
      await waitUntil({
        what: `${what}: Bob keeps decoding Alice`,
        expected: `more than ${first.frames + 10} frames at that layer`,
        probe: () => remoteVideo(bob, 'Alice'),
        check: (v) => !!v && check(v) && v.frames > first.frames + 10,
      });
      return first;
    };
    // Low first (the layer a small tile asks for), then high: the wider layer must arrive, and
    // decode, through the SFU's switch (a keyframe request to Alice, then her encrypted keyframe).
    await bob.page.setViewportSize({ width: 300, height: 420 });
    const small = await rising('small window (low layer)', (v) => v.width > 0 && v.width <= 400);
    await shot(bob, 'e2ee-low-layer');
    await bob.page.setViewportSize({ width: 1280, height: 800 });
    const large = await rising('large window (a wider layer)', (v) => v.width > small.width);
    await shot(bob, 'e2ee-high-layer');
    log(`  Alice's video on Bob: ${small.width} px wide in the small window, ${large.width} px in the large one`);
  });

  const carol = await open('Carol', { width: 1024, height: 700 });
  carol.context.on('request', (r) => sent.push({ who: 'Carol', what: `${r.method()} ${r.url()}`, body: r.postData() ?? '' }));

  await step('E2EE: Carol opens the link without the key and is told to ask for the full link', async () => {
    await carol.page.goto(`${base}/r/${room}`, { timeout: stepTimeoutMs });
    await expectPreview(carol);
    await carol.page.getByLabel('Your name').fill('Carol');
    await carol.page.getByRole('button', { name: 'Join now' }).click();
    await waitUntil({
      what: 'Carol is told the meeting is encrypted',
      expected: NO_KEY,
      probe: () =>
        carol.page.evaluate(() => ({
          problem: document.querySelector('.e2ee-problem')?.textContent ?? null,
          inMeeting: document.querySelector('.room-title') !== null,
        })),
      check: (s) => s.problem === NO_KEY && !s.inMeeting,
    });
    await shot(carol, 'e2ee-no-key');
    // She left: the others see two people again.
    await waitUntil({
      what: 'Carol is out of the meeting',
      expected: '"2 people" on Alice’s page',
      probe: () => alice.page.locator('.count').textContent(),
      check: (c) => c === '2 people',
    });
  });

  await step('E2EE: Carol opens it with a wrong key: nothing decrypts, and she is told so', async () => {
    const wrong = Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString('base64url');
    await carol.page.goto(`${base}/r/${room}#key=${wrong}`, { timeout: stepTimeoutMs });
    await expectPreview(carol);
    await carol.page.getByRole('button', { name: 'Join now' }).click();
    await waitUntil({
      what: 'Carol is told her key is wrong',
      expected: 'the wrong-key message, out of the meeting',
      probe: () =>
        carol.page.evaluate(() => ({
          problem: document.querySelector('.e2ee-problem')?.textContent ?? null,
          inMeeting: document.querySelector('.room-title') !== null,
        })),
      check: (s) => /key in your link does not open this meeting/.test(s.problem ?? '') && !s.inMeeting,
      timeoutMs: stepTimeoutMs * 2,
    });
    await shot(carol, 'e2ee-wrong-key');
    // Alice and Bob still decode each other.
    await expectVideo(bob, 'Alice');
  });

  await step('E2EE: the key never went to the server', async () => {
    const leaks = sent.filter((s) => s.what.includes(key) || s.body.includes(key));
    if (leaks.length) throw new Failure(`the key was sent to the server: ${JSON.stringify(leaks.slice(0, 3))}`);
    const joins = sent.filter((s) => s.what.startsWith('POST') && s.what.endsWith('/api/join'));
    if (joins.length < 3) throw new Failure(`expected the /api/join requests to be seen, saw ${JSON.stringify(sent.map((s) => s.what))}`);
    for (const p of [alice, bob]) {
      const stored = await p.page.evaluate(() => JSON.stringify({ ...localStorage }));
      if (stored.includes(key)) throw new Failure(`${p.name}'s localStorage holds the key`);
    }
    log(`  ${sent.length} requests checked, none carries the key`);
  });
}
