// Recording from the web app in Chromium (run.mjs --scenario record):
//
// - The admin sets the password at /admin, then joins a room from the web app in the same browser
//   context (so /api/join sees the session and answers canRecord: true); Bob joins from another
//   context without the session. Both publish Chromium's fake camera and microphone.
// - Bob has no Record button; the admin has one. The admin presses Record: both pages show
//   "● Recording" (livekit-client's room.isRecording, from the server's RoomUpdate). About six
//   seconds later the admin presses Stop: both badges go.
// - The admin's Recordings panel lists two recordings of the room (one per person), "Done"
//   (EGRESS_COMPLETE; the reason, "recording stopped", may follow) with a duration and a size;
//   one Download link fetched in the page gives a Matroska/WebM file (EBML magic 1A 45 DF A3) of
//   exactly the listed size; the panel's Delete removes one row (and its file answers 404).

const EBML = [0x1a, 0x45, 0xdf, 0xa3];

export async function recordScenario(t) {
  const { base, open, step, shot, waitUntil, prejoinToMeeting, expectPreview, expectVideo, Failure, log, stepTimeoutMs, setupCode } = t;
  const room = `rec-${Math.random().toString(36).slice(2, 8)}`;
  const password = `admin-pw-${Math.random().toString(36).slice(2, 10)}`;
  const admin = await open('Admin', { width: 1280, height: 900 });
  // The panel's Delete asks with window.confirm.
  admin.page.on('dialog', (d) => void d.accept());
  const bob = await open('Bob', { width: 1024, height: 700 });

  /** The Record control: present (not hidden), its visible word, aria-pressed. */
  const recordControl = (p) =>
    p.page.evaluate(() => {
      const b = [...document.querySelectorAll('button.control')].find((x) => x.getAttribute('aria-label') === 'Record');
      return b ? { hidden: b.hidden || b.offsetParent === null, text: b.textContent.trim(), pressed: b.getAttribute('aria-pressed') } : null;
    });
  /** The badge's words while it is in the page and visible; null when it is not there. */
  const badge = (p) =>
    p.page.evaluate(() => {
      const b = document.querySelector('.rec-live .rec-badge');
      if (!b) return null;
      return b.checkVisibility() ? b.textContent : `(in the page but not visible) ${b.textContent}`;
    });

  await step('Record: the admin sets the password, then joins the room in the same browser', async () => {
    await admin.page.goto(`${base}/admin`, { timeout: stepTimeoutMs });
    await admin.page.getByLabel('New admin password').fill(password);
    await admin.page.getByLabel('Type it again').fill(password);
    await admin.page.getByLabel('Setup code').fill(setupCode);
    await admin.page.getByRole('button', { name: 'Set password' }).click();
    await admin.page.getByRole('heading', { level: 1, name: 'Overview' }).waitFor({ timeout: stepTimeoutMs });
    await admin.page.goto(`${base}/r/${room}`, { timeout: stepTimeoutMs });
    await expectPreview(admin);
    await admin.page.getByLabel('Your name').fill('Ada');
    await prejoinToMeeting(admin, room);
  });

  await step('Record: Bob (no admin session) joins; each decodes the other', async () => {
    await bob.page.goto(`${base}/r/${room}`, { timeout: stepTimeoutMs });
    await expectPreview(bob);
    await bob.page.getByLabel('Your name').fill('Bob');
    await prejoinToMeeting(bob, room);
    await expectVideo(admin, 'Bob');
    await expectVideo(bob, 'Ada');
  });

  await step('Record: Bob has no Record button, the admin has one', async () => {
    const bobs = await recordControl(bob);
    if (bobs && !bobs.hidden) throw new Failure(`Bob (no admin session) is offered Record: ${JSON.stringify(bobs)}`);
    const ada = await waitUntil({
      what: 'the admin’s Record button',
      expected: 'a visible "Record" control, not pressed',
      probe: () => recordControl(admin),
      check: (c) => !!c && !c.hidden && c.text === 'Record' && c.pressed === 'false',
    });
    log(`  admin's control: ${JSON.stringify(ada)}; Bob's: ${JSON.stringify(bobs)}`);
    if ((await badge(admin)) !== null || (await badge(bob)) !== null) throw new Failure('a recording badge shows before anyone recorded');
    await shot(admin, 'record-admin-before');
  });

  let started = 0;
  await step('Record: the admin presses Record; both pages show "● Recording"', async () => {
    await admin.page.getByRole('button', { name: 'Record', exact: true }).click();
    started = Date.now();
    for (const p of [admin, bob]) {
      await waitUntil({
        what: `${p.name} sees the recording badge`,
        expected: '"● Recording" in the meeting header',
        probe: () => badge(p),
        check: (b) => b === '● Recording',
        timeoutMs: 10000,
      });
    }
    await waitUntil({
      what: 'the admin’s control turns into Stop',
      expected: '"Stop", aria-pressed true',
      probe: () => recordControl(admin),
      check: (c) => !!c && c.text === 'Stop' && c.pressed === 'true',
      timeoutMs: 10000,
    });
    log(`  both badges after ${Date.now() - started} ms`);
    await shot(admin, 'record-admin-recording');
    await shot(bob, 'record-bob-recording');
  });

  await step('Record: after about six seconds the admin presses Stop; both badges go', async () => {
    const left = 6000 - (Date.now() - started);
    if (left > 0) await admin.page.waitForTimeout(left);
    await admin.page.getByRole('button', { name: 'Record', exact: true }).click();
    const stopped = Date.now();
    for (const p of [admin, bob]) {
      await waitUntil({
        what: `${p.name}'s recording badge goes`,
        expected: 'no "● Recording"',
        probe: () => badge(p),
        check: (b) => b === null,
        timeoutMs: 10000,
      });
    }
    await waitUntil({
      what: 'the admin’s control is Record again',
      expected: '"Record", aria-pressed false',
      probe: () => recordControl(admin),
      check: (c) => !!c && c.text === 'Record' && c.pressed === 'false',
      timeoutMs: 10000,
    });
    log(`  both badges gone after ${Date.now() - stopped} ms`);
    await shot(bob, 'record-bob-stopped');
  });

  /** The panel's rows of this room, as shown. */
  const rows = () =>
    admin.page.evaluate((name) => {
      const table = document.querySelector('table.recordings');
      return [...document.querySelectorAll('table.recordings tbody tr')]
        .map((tr) => {
          const td = [...tr.querySelectorAll('td')].map((c) => c.textContent.trim());
          return {
            id: tr.getAttribute('data-egress'),
            room: td[0],
            participant: td[1],
            duration: td[3],
            size: td[4],
            status: td[5],
            download: tr.querySelector('a[download]')?.getAttribute('href') ?? null,
            visible: !!table && !table.hidden,
          };
        })
        .filter((r) => r.room === name);
    }, room);

  let listed = [];
  await step('Record: the Recordings panel lists two finished recordings of the room', async () => {
    await admin.page.goto(`${base}/admin`, { timeout: stepTimeoutMs });
    await admin.page.getByRole('heading', { level: 1, name: 'Overview' }).waitFor({ timeout: stepTimeoutMs });
    const panel = admin.page.locator('section.recordings-panel');
    await panel.scrollIntoViewIfNeeded();
    listed = await waitUntil({
      what: 'two finished recordings in the panel',
      expected: `two rows for ${room}, one per person, "Done" (the reason may follow), with a duration and a size, each with Download`,
      probe: async () => {
        await panel.getByRole('button', { name: 'Refresh' }).click();
        await admin.page.waitForTimeout(300);
        return rows();
      },
      check: (rs) =>
        rs.length === 2 &&
        rs.every((r) => r.visible && /^Done( — |$)/.test(r.status) && /^\d+:\d\d$/.test(r.duration) && r.duration !== '0:00' && r.size !== '—' && r.download) &&
        // One each: the identities /api/join gave Ada and Bob (name-xxxxxx).
        rs.map((r) => r.participant.replace(/-[0-9a-z]+$/, '')).sort().join() === 'ada,bob',
      timeoutMs: stepTimeoutMs * 2,
    });
    log(`  ${listed.map((r) => `${r.participant}: ${r.duration}, ${r.size}, ${r.status}`).join('; ')}`);
    // The API behind it says the same: COMPLETE, bytes and milliseconds.
    const api = await admin.page.evaluate(() => fetch('/api/admin/recordings', { cache: 'no-store' }).then((r) => r.json()));
    const mine = (api.recordings ?? []).filter((r) => r.room === room);
    if (mine.length !== 2 || !mine.every((r) => r.status === 'EGRESS_COMPLETE' && r.size > 0 && r.durationMs > 0)) {
      throw new Failure(`GET /api/admin/recordings for ${room}: ${JSON.stringify(mine)}`);
    }
    await panel.scrollIntoViewIfNeeded();
    await shot(admin, 'record-admin-recordings');
    listed = listed.map((r) => ({ ...r, bytes: mine.find((m) => m.egressId === r.id)?.size }));
  });

  await step('Record: a Download link gives a Matroska/WebM file of the listed size', async () => {
    const r = listed[0];
    const got = await admin.page.evaluate(async (url) => {
      const res = await fetch(url);
      const buf = new Uint8Array(await res.arrayBuffer());
      return { status: res.status, type: res.headers.get('content-type'), length: buf.length, head: [...buf.subarray(0, 4)] };
    }, r.download);
    const hex = got.head.map((b) => b.toString(16).padStart(2, '0')).join(' ');
    if (got.status !== 200 || got.head.join() !== EBML.join() || got.length !== r.bytes) {
      throw new Failure(
        `download ${r.download} of ${r.participant}: status ${got.status}, ${got.length} bytes (listed ${r.bytes}), starts ${hex} (expected 1a 45 df a3), ${got.type}`,
      );
    }
    log(`  ${r.download}: ${got.length} bytes, ${got.type}, starts ${hex}`);
    // Chromium plays the file: a <video> on the download decodes frames of the right size and
    // its clock moves.
    const played = await admin.page.evaluate(async (url) => {
      const v = document.createElement('video');
      v.muted = true;
      v.src = url;
      document.body.appendChild(v);
      try {
        await v.play();
        const t0 = v.currentTime;
        await new Promise((ok) => setTimeout(ok, 1500));
        const q = v.getVideoPlaybackQuality();
        return { width: v.videoWidth, advanced: v.currentTime - t0, frames: q.totalVideoFrames, error: v.error?.message ?? null };
      } catch (e) {
        return { error: String(e), width: v.videoWidth, advanced: 0, frames: 0 };
      } finally {
        v.remove();
      }
    }, r.download);
    if (played.error || played.width <= 0 || played.advanced < 0.5 || played.frames < 10) {
      throw new Failure(`Chromium does not play ${r.download}: ${JSON.stringify(played)}`);
    }
    log(`  Chromium plays it: ${played.width} px wide, ${played.frames} frames in 1.5 s`);
  });

  await step('Record: Delete in the panel removes one recording', async () => {
    const r = listed[1];
    await admin.page.getByRole('button', { name: `Delete the recording of ${r.participant} in ${room}` }).click();
    const after = await waitUntil({
      what: 'the deleted recording leaves the list',
      expected: `one row for ${room} left (${listed[0].participant})`,
      probe: rows,
      check: (rs) => rs.length === 1 && rs[0].id === listed[0].id,
    });
    const gone = await admin.page.evaluate((id) => fetch(`/api/admin/recordings/${id}/file`).then((x) => x.status), r.id);
    if (gone !== 404) throw new Failure(`the deleted recording's file still answers ${gone}`);
    log(`  left: ${JSON.stringify(after.map((x) => x.participant))}; the deleted file answers ${gone}`);
    await shot(admin, 'record-admin-deleted');
  });
}
