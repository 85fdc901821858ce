// The admin page's settings in Chromium (run.mjs --scenario admin), against a confab with its own
// device key and a real update agent (fake bootloader, a signed release at update.url):
//
// - Updates: the panel shows the running version and slot and an earlier rollback (seeded by
//   webapp.rs); "Check now" finds the release
//   ("Update available v…" with its notes link); "Update now" installs it with progress;
//   "Remind me later" hides the notice, and it stays hidden after a reload (kept by the server).
// - API key: the secret shows only after "Show"; "Rotate" makes a new key; tokens signed with the
//   old secret are refused by /rtc/validate and the Twirp RoomService, the new ones accepted.
// - Backup: "Download backup" saves the archive under the server's name, manifest first.
// - Who can join: guest access off; a guest is told so on an open room; a room with a passcode
//   refuses no passcode and a wrong one in words and takes the right one; an invite link lets a
//   guest in (her "Copy invite link" and "Rejoin" keep the token); once revoked it is refused in
//   words. A 64-character room name stays inside the
//   admin's rooms panel.

export async function adminScenario(t) {
  const { base, open, step, shot, waitUntil, prejoinToMeeting, expectPreview, Failure, log, sdk, stepTimeoutMs, setupCode } = t;
  const admin = await open('Admin', { width: 1280, height: 1100 });
  admin.page.on('dialog', (d) => void d.accept());
  const text = (sel) => admin.page.locator(sel).first().innerText();
  const password = `admin-pw-${Math.random().toString(36).slice(2, 10)}`;

  await step('Admin: set up, overview with the update panel wired to the agent', async () => {
    await admin.page.goto(`${base}/admin`, { timeout: stepTimeoutMs });
    await admin.page.getByLabel('New admin password').fill(password);
    await admin.page.getByLabel('Type it again').fill(password);
    await admin.page.getByLabel('Setup code').fill(setupCode);
    await admin.page.getByRole('button', { name: 'Set password' }).click();
    await admin.page.getByRole('heading', { level: 1, name: 'Overview' }).waitFor({ timeout: stepTimeoutMs });
    await waitUntil({
      what: 'the update panel shows version and slot',
      expected: 'Running v…, Slot A (fake), the rollback of v0.9.9, Not checked yet',
      probe: async () => ({ running: await text('#update-running').catch(() => ''), slot: await text('#update-slot').catch(() => ''), body: await text('#update') }),
      check: (s) =>
        /^v\d+\.\d+\.\d+/.test(s.running) &&
        s.slot === 'A (fake)' &&
        /Rolled back: v0\.9\.9 was installed into slot b but did not pass its health check/.test(s.body) &&
        /Not checked yet/.test(s.body),
    });
    await shot(admin, 'admin-update-rollback');
  });

  await step('Updates: Check now finds the signed release (version, notes link)', async () => {
    await admin.page.getByRole('button', { name: 'Check now' }).click();
    await waitUntil({
      what: 'the update notice',
      expected: '"Update available v99.1.0" with a notes link',
      probe: () => text('#update'),
      check: (s) => /Update available v99\.1\.0/.test(s) && /what’s new/.test(s),
    });
    const href = await admin.page.getByRole('link', { name: 'what’s new' }).getAttribute('href');
    if (href !== 'https://example.org/notes') throw new Failure(`notes link ${href}`);
    await shot(admin, 'admin-update-available');
  });

  await step('Updates: Remind me later hides the notice, also after a reload', async () => {
    await admin.page.getByRole('button', { name: 'Remind me later' }).click();
    await waitUntil({
      what: 'the notice is postponed',
      expected: '"reminder postponed until"',
      probe: () => text('#update'),
      check: (s) => /reminder postponed until/.test(s) && !/Update available/.test(s),
    });
    await admin.page.reload();
    await admin.page.getByRole('heading', { level: 1, name: 'Overview' }).waitFor({ timeout: stepTimeoutMs });
    await waitUntil({
      what: 'still postponed after a reload',
      expected: '"reminder postponed until", no notice',
      probe: () => text('#update'),
      check: (s) => /v99\.1\.0 is available; reminder postponed until/.test(s) && !/Update available/.test(s),
    });
    await shot(admin, 'admin-update-snoozed');
  });

  await step('Updates: Update now installs it through the agent, with progress', async () => {
    await admin.page.locator('#update').getByRole('button', { name: 'Update now' }).click();
    await waitUntil({
      what: 'the install finishes',
      expected: '"Update v99.1.0 installed: rebooting into the new slot"',
      probe: () => text('#update'),
      check: (s) => {
        if (/The update failed/.test(s)) throw new Failure(s);
        return /Update v99\.1\.0 installed: rebooting into the new slot/.test(s) && !/Update now/.test(s);
      },
      timeoutMs: stepTimeoutMs * 3,
    });
    await shot(admin, 'admin-update-installed');
  });

  await step('API key: Show reveals the secret; Rotate refuses the old key at once, the new one works', async () => {
    const keys = admin.page.locator('section[aria-labelledby="keys-h"]');
    await keys.scrollIntoViewIfNeeded();
    const oldKey = await text('#api-key');
    if (!/^API/.test(oldKey)) throw new Failure(`API key shown: ${oldKey}`);
    if ((await text('#api-secret')).length > 10) throw new Failure('the secret shows before "Show"');
    await keys.getByRole('button', { name: 'Show', exact: true }).click();
    const oldSecret = await waitUntil({
      what: '"Show" reveals the secret',
      expected: 'a secret of at least 32 characters',
      probe: () => text('#api-secret'),
      check: (t) => t.length >= 32 && !t.includes('•'),
    });
    const note = await text('#keys-note');
    if (!/no grace period/.test(note)) throw new Failure(`rotation note: ${note}`);
    const mint = async (key, secret) => {
      const at = new sdk.AccessToken(key, secret, { identity: 'rotation-check', ttl: 600 });
      at.addGrant({ roomJoin: true, room: 'rotation' });
      return at.toJwt();
    };
    const validate = async (token) => (await fetch(`${base}/rtc/validate?access_token=${token}`)).status;
    const oldToken = await mint(oldKey, oldSecret);
    if ((await validate(oldToken)) !== 200) throw new Failure('the current key is refused before rotation');
    await keys.getByRole('button', { name: 'Rotate' }).click();
    const newKey = await waitUntil({
      what: 'a new key is shown',
      expected: `not ${oldKey}`,
      probe: () => text('#api-key'),
      check: (k) => /^API/.test(k) && k !== oldKey,
    });
    const newSecret = await waitUntil({
      what: 'the new secret is shown',
      expected: 'another secret of at least 32 characters',
      probe: () => text('#api-secret'),
      check: (t) => t.length >= 32 && t !== oldSecret,
    });
    const oldAfter = await validate(oldToken);
    const newAfter = await validate(await mint(newKey, newSecret));
    if (oldAfter !== 401 || newAfter !== 200) throw new Failure(`after rotation: old key ${oldAfter}, new key ${newAfter}`);
    const listWith = (key, secret) =>
      new sdk.RoomServiceClient(base, key, secret).listRooms().then(
        () => 'ok',
        (e) => `refused (${e.message})`,
      );
    const [oldTwirp, newTwirp] = [await listWith(oldKey, oldSecret), await listWith(newKey, newSecret)];
    if (!oldTwirp.startsWith('refused') || newTwirp !== 'ok') throw new Failure(`Twirp: old key ${oldTwirp}, new key ${newTwirp}`);
    log(`  old key ${oldKey}: validate ${oldAfter}, Twirp ${oldTwirp}; new key ${newKey}: ${newAfter}, Twirp ${newTwirp}`);
    await keys.getByRole('button', { name: 'Hide', exact: true }).click();
    await shot(admin, 'admin-key-rotated');
  });

  await step('Backup: "Download backup" saves a tar archive with the manifest first', async () => {
    const panel = admin.page.locator('section[aria-labelledby="backup-h"]');
    await panel.scrollIntoViewIfNeeded();
    const [download] = await Promise.all([
      admin.page.waitForEvent('download', { timeout: stepTimeoutMs }),
      panel.getByRole('link', { name: 'Download backup' }).click(),
    ]);
    const name = download.suggestedFilename();
    if (!/^confab-backup-[0-9a-f]+-\d{8}T\d{6}Z\.tar$/.test(name)) throw new Failure(`download named ${name}`);
    const { readFile } = await import('node:fs/promises');
    const bytes = await readFile(await download.path());
    const first = bytes.subarray(0, 100).toString('latin1').replace(/\0.*$/s, '');
    const magic = bytes.subarray(257, 262).toString('latin1');
    if (first !== 'confab-backup.json' || magic !== 'ustar') throw new Failure(`archive starts with ${first} (${magic})`);
    log(`  ${name}: ${bytes.length} bytes`);
  });

  const openRoom = 'hallway';
  const longRoom = 'quarterly-planning-for-infrastructure-operations-and-support-207';
  if (longRoom.length !== 64) throw new Failure(`test room name is ${longRoom.length} characters`);
  const invited = 'invited-room';
  const passcode = 'blue-lantern-42';
  let inviteLink = '';

  await step('Who can join: guest access off, a room passcode, an invite link', async () => {
    const panel = admin.page.locator('section.access');
    await panel.scrollIntoViewIfNeeded();
    await admin.page.getByLabel('Guest access').uncheck();
    await waitUntil({
      what: 'guest access off',
      expected: '"Off: people need…"',
      probe: () => text('#guest-state'),
      check: (s) => /^Off:/.test(s),
    });
    await admin.page.locator('#passcode-room').fill(longRoom);
    await admin.page.locator('#passcode-value').fill(passcode);
    await admin.page.getByRole('button', { name: 'Set passcode' }).click();
    await panel.locator(`li[data-room="${longRoom}"]`).waitFor({ timeout: stepTimeoutMs });
    await admin.page.locator('#invite-room').fill(invited);
    await admin.page.getByRole('button', { name: 'Create invite link' }).click();
    inviteLink = await waitUntil({
      what: 'the new invite link',
      expected: `${base}/r/${invited}?invite=…`,
      probe: () => text('.invite-link').catch(() => ''),
      check: (l) => l.startsWith(`${base}/r/${invited}?invite=`),
    });
    await shot(admin, 'admin-access');
  });

  const guest = await open('Guest', { width: 390, height: 844 });
  const joinError = () => guest.page.locator('.prejoin form .error').innerText();
  const tryJoin = async (expected, what) => {
    await guest.page.getByRole('button', { name: 'Join now' }).click();
    await waitUntil({
      what,
      expected: String(expected),
      probe: async () => ({ text: await joinError().catch(() => ''), busy: await guest.page.getByRole('button', { name: /Join/ }).isDisabled() }),
      check: (s) => !s.busy && expected.test(s.text),
    });
  };

  await step('Guest: an open room says guest access is off', async () => {
    await guest.page.goto(`${base}/r/${openRoom}`, { timeout: stepTimeoutMs });
    await expectPreview(guest);
    await guest.page.getByLabel('Your name').fill('Gwen');
    await guest.page.getByText('Guest access is off on this confab').first().waitFor({ timeout: stepTimeoutMs });
    await tryJoin(/Guest access is off.*invite link/, 'Gwen is refused on an open room');
    await shot(guest, 'prejoin-guest-access-off-phone');
  });

  await step('Guest: the passcode room asks for it; a wrong one is refused; the right one lets her in', async () => {
    await guest.page.goto(`${base}/r/${longRoom}`, { timeout: stepTimeoutMs });
    await expectPreview(guest);
    await guest.page.getByLabel('Room passcode').waitFor({ timeout: stepTimeoutMs });
    await tryJoin(/This room needs a passcode/, 'no passcode');
    await guest.page.getByLabel('Room passcode').fill('red-lantern-42');
    await tryJoin(/Wrong passcode/, 'a wrong passcode');
    await shot(guest, 'prejoin-wrong-passcode-phone');
    await guest.page.getByLabel('Room passcode').fill(passcode);
    await prejoinToMeeting(guest, longRoom);
    await shot(guest, 'meeting-long-name-phone');
  });

  await step('Admin: the long room name stays inside the rooms panel', async () => {
    const layout = await waitUntil({
      what: 'the room is listed',
      expected: `${longRoom} in the rooms panel, not wider than it`,
      probe: () =>
        admin.page.evaluate((name) => {
          const li = document.querySelector(`.admin-room[data-room="${name}"]`);
          const panel = li?.closest('.panel');
          if (!li || !panel) return null;
          const a = li.getBoundingClientRect();
          const p = panel.getBoundingClientRect();
          const button = li.querySelector('button.danger')?.getBoundingClientRect();
          const chip = li.querySelector('.room-chip');
          return {
            inside: a.right <= p.right + 0.5 && (!button || button.right <= p.right + 0.5),
            overflow: document.documentElement.scrollWidth > window.innerWidth,
            // Ellipsized on a line of its own (most of the card's width), the full name as title.
            nameShare: chip ? chip.getBoundingClientRect().width / a.width : 0,
            title: chip?.getAttribute('title'),
          };
        }, longRoom),
      check: (s) => s !== null,
    });
    if (!layout.inside || layout.overflow || layout.nameShare < 0.8 || layout.title !== longRoom) {
      throw new Failure(`the long room name breaks the layout: ${JSON.stringify(layout)}`);
    }
    await admin.page.locator(`.admin-room[data-room="${longRoom}"]`).scrollIntoViewIfNeeded();
    await shot(admin, 'admin-room-long-name');
  });

  await step('Guest: the invite link lets her in; once revoked it is refused in words', async () => {
    await guest.page.getByRole('button', { name: 'Leave' }).click();
    await guest.page.waitForURL(`${base}/`, { timeout: stepTimeoutMs });
    await guest.page.goto(inviteLink, { timeout: stepTimeoutMs });
    await expectPreview(guest);
    await prejoinToMeeting(guest, invited);
    // The link she shares is the one she came with (without the token it would not work).
    await guest.page.getByRole('button', { name: 'Copy invite link' }).click();
    const copied = await guest.page.evaluate(() => navigator.clipboard.readText());
    if (copied !== inviteLink) throw new Failure(`copied ${copied}, expected the invite link`);
    await guest.page.getByRole('button', { name: 'Leave' }).click();
    await guest.page.waitForURL(`${base}/`, { timeout: stepTimeoutMs });
    // "Rejoin" from the recent rooms still carries the invite (kept for this tab).
    await guest.page.getByRole('button', { name: `Rejoin ${invited}` }).click();
    await expectPreview(guest);
    await prejoinToMeeting(guest, invited);
    await guest.page.getByRole('button', { name: 'Leave' }).click();
    await guest.page.waitForURL(`${base}/`, { timeout: stepTimeoutMs });
    await admin.page.getByRole('button', { name: `Revoke the invite link to ${invited}` }).click();
    await admin.page.locator(`li[data-invite]`).first().waitFor({ state: 'detached', timeout: stepTimeoutMs });
    await guest.page.goto(inviteLink, { timeout: stepTimeoutMs });
    await expectPreview(guest);
    await tryJoin(/invite link is not valid any more/, 'a revoked invite');
    await shot(guest, 'prejoin-invite-revoked-phone');
  });
}
