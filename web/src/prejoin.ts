// Pre-join: camera preview, device pickers, mute toggles, your name, then Join. The preview's
// tracks go on into the meeting (no second camera prompt, the same devices).

import {
  ConnectionState,
  LocalAudioTrack,
  LocalVideoTrack,
  Room,
  createAudioAnalyser,
  createLocalAudioTrack,
  createLocalVideoTrack,
} from 'livekit-client';

import { Problem, requestJoin, roomStatus } from './api';
import { UNSUPPORTED, e2eeSupported, encryptionFor, keyFromHash, keyHash } from './e2ee';
import { devicePicker } from './devices';
import { copyText, h, icon, show } from './dom';
import { connectProblem, mediaProblem, noHttps } from './errors';
import type { Nav } from './main';
import { inviteLink } from './names';
import { captureDefaults, newRoom, renderMeeting } from './meeting';
import {
  forgetInvite,
  forgetKey,
  getDevices,
  getName,
  inviteFor,
  keyFor,
  rememberInvite,
  rememberKey,
  setDevices,
  setName,
  touchRecent,
} from './store';

/**
 * The end-to-end encryption passphrase for `roomName`: from the address's #key=… (then kept for
 * the tab), else the one this tab already had (put back into the address, so copying it from
 * the address bar gives the full link). `problem`: a fragment key that cannot be one.
 */
function roomKey(roomName: string): { key?: string; problem?: string } {
  const fromLink = keyFromHash(location.hash);
  if (fromLink?.valid) {
    rememberKey(roomName, fromLink.key);
    return { key: fromLink.key };
  }
  if (fromLink) {
    forgetKey(roomName);
    return { problem: 'The key in this link (after #key=) is incomplete or damaged. Ask for the full link, including the part after #.' };
  }
  const kept = keyFor(roomName);
  if (kept) history.replaceState(history.state, '', `${location.pathname}${location.search}${keyHash(kept)}`);
  return { key: kept };
}

export function renderPrejoin(nav: Nav, roomName: string): void {
  const { key, problem: keyProblem } = roomKey(roomName);
  const canDecrypt = !key || e2eeSupported();
  const choice = getDevices();
  let camOn = choice.cameraOn !== false;
  let micOn = choice.micOn !== false;
  let video: LocalVideoTrack | undefined;
  let audio: LocalAudioTrack | undefined;
  let meter: { cleanup: () => Promise<void> | void; calculateVolume: () => number } | undefined;
  let meterFrame = 0;
  let handedOver = false;
  let joining: Room | undefined;
  let alive = true;

  const stopAll = () => {
    alive = false;
    cancelAnimationFrame(meterFrame);
    void meter?.cleanup();
    meter = undefined;
    if (!handedOver) {
      video?.stop();
      audio?.stop();
      void joining?.disconnect();
    }
    navigator.mediaDevices?.removeEventListener?.('devicechange', refreshDevices);
  };
  nav.setCleanup(stopAll);

  // ---- preview and toggles -------------------------------------------------------------------
  const preview = h('video', { class: 'mirror', muted: true, playsInline: true, autoplay: true });
  preview.muted = true;
  const previewOff = h('div', { class: 'preview-off', text: 'Camera is off' });
  const level = h('div', { class: 'level-bar' });
  const levelBox = h('div', { class: 'level', 'aria-hidden': 'true', title: 'Microphone level' }, level);
  const mediaError = h('div', { class: 'error', role: 'alert', hidden: true });

  const micButton = h('button', { type: 'button', class: 'toggle', 'aria-pressed': 'true' });
  const camButton = h('button', { type: 'button', class: 'toggle', 'aria-pressed': 'true' });
  const paint = () => {
    micButton.setAttribute('aria-pressed', String(micOn));
    micButton.innerHTML = `${micOn ? icon.mic : icon.micOff}<span>Microphone</span>`;
    micButton.title = micOn ? 'Microphone is on: press to mute' : 'Microphone is off: press to unmute';
    camButton.setAttribute('aria-pressed', String(camOn));
    camButton.innerHTML = `${camOn ? icon.cam : icon.camOff}<span>Camera</span>`;
    camButton.title = camOn ? 'Camera is on: press to turn it off' : 'Camera is off: press to turn it on';
    previewOff.hidden = camOn && !!video;
    previewOff.textContent = camOn ? 'Starting camera…' : 'Camera is off';
    levelBox.hidden = !micOn || !audio;
  };

  const problems = new Map<string, string>();
  const showProblems = () => {
    mediaError.hidden = problems.size === 0;
    mediaError.replaceChildren(...[...problems.values()].map((p) => h('p', { text: p })));
    if (problems.size) {
      mediaError.append(h('button', { type: 'button', class: 'small', text: 'Try again', onclick: () => void retry() }));
    }
  };

  const startCamera = async () => {
    problems.delete('camera');
    try {
      const t = await createLocalVideoTrack(captureDefaults(getDevices()).video);
      if (!alive || !camOn) {
        t.stop();
        return;
      }
      video = t;
      t.attach(preview);
    } catch (e) {
      camOn = false;
      problems.set('camera', mediaProblem(e, 'camera'));
    }
    paint();
    showProblems();
  };
  const stopCamera = () => {
    video?.detach(preview);
    video?.stop();
    video = undefined;
    paint();
  };
  const startMic = async () => {
    problems.delete('microphone');
    try {
      const t = await createLocalAudioTrack(captureDefaults(getDevices()).audio);
      if (!alive || !micOn) {
        t.stop();
        return;
      }
      audio = t;
      startMeter();
    } catch (e) {
      micOn = false;
      problems.set('microphone', mediaProblem(e, 'microphone'));
    }
    paint();
    showProblems();
  };
  const stopMic = () => {
    cancelAnimationFrame(meterFrame);
    void meter?.cleanup();
    meter = undefined;
    audio?.stop();
    audio = undefined;
    paint();
  };
  const startMeter = () => {
    if (!audio) return;
    try {
      meter = createAudioAnalyser(audio, { cloneTrack: true });
    } catch {
      return;
    }
    const tick = () => {
      if (!meter) return;
      const v = Math.min(1, meter.calculateVolume() * 3);
      level.style.transform = `scaleX(${v.toFixed(3)})`;
      meterFrame = requestAnimationFrame(tick);
    };
    tick();
  };

  micButton.addEventListener('click', () => {
    micOn = !micOn;
    setDevices({ micOn });
    if (micOn) void startMic();
    else stopMic();
    paint();
  });
  camButton.addEventListener('click', () => {
    camOn = !camOn;
    setDevices({ cameraOn: camOn });
    if (camOn) void startCamera();
    else stopCamera();
    paint();
  });
  const retry = async () => {
    camOn = camOn || problems.has('camera');
    micOn = micOn || problems.has('microphone');
    if (camOn && !video) await startCamera();
    if (micOn && !audio) await startMic();
    await refreshDevices();
  };

  // ---- device pickers ------------------------------------------------------------------------
  const camPick = devicePicker('videoinput', 'pre', (id) => {
    setDevices({ videoinput: id });
    if (video) void video.setDeviceId(id).catch((e: unknown) => problems.set('camera', mediaProblem(e, 'camera')));
  });
  const micPick = devicePicker('audioinput', 'pre', (id) => {
    setDevices({ audioinput: id });
    if (audio) void audio.setDeviceId(id).catch((e: unknown) => problems.set('microphone', mediaProblem(e, 'microphone')));
  });
  const speakerPick = devicePicker('audiooutput', 'pre', (id) => setDevices({ audiooutput: id }));
  async function refreshDevices() {
    const d = getDevices();
    const camId = video ? await video.getDeviceId() : d.videoinput;
    const micId = audio ? await audio.getDeviceId() : d.audioinput;
    await Promise.all([camPick.fill(camId), micPick.fill(micId), speakerPick.fill(d.audiooutput)]);
  }
  navigator.mediaDevices?.addEventListener?.('devicechange', refreshDevices);

  // ---- name and join -------------------------------------------------------------------------
  const nameInput = h('input', {
    id: 'pre-name',
    autocomplete: 'name',
    maxlength: '64',
    required: true,
    'aria-describedby': 'pre-name-error',
  });
  nameInput.value = getName();
  const nameError = h('p', { id: 'pre-name-error', class: 'field-error' });
  nameInput.addEventListener('input', () => {
    nameInput.removeAttribute('aria-invalid');
    nameError.textContent = '';
  });
  // A room with a passcode asks for it; an invite link (/r/<room>?invite=…) brings its token.
  const fromLink = new URLSearchParams(location.search).get('invite') ?? undefined;
  if (fromLink) rememberInvite(roomName, fromLink);
  let invite = fromLink ?? inviteFor(roomName);
  const passcodeInput = h('input', {
    id: 'pre-passcode',
    autocomplete: 'off',
    spellcheck: 'false',
    maxlength: '64',
    'aria-describedby': 'pre-passcode-hint',
  });
  const passcodeField = h(
    'div',
    { class: 'field', hidden: true },
    h('label', { for: 'pre-passcode', text: 'Room passcode' }),
    passcodeInput,
    h('p', { id: 'pre-passcode-hint', class: 'hint', text: 'This room is protected: type the passcode you were given.' }),
  );
  passcodeInput.addEventListener('input', () => passcodeInput.removeAttribute('aria-invalid'));
  const accessNote = h('p', { class: 'notice', role: 'status', hidden: true });
  void roomStatus(roomName).then((st) => {
    if (!alive || !st) return;
    if (st.access === 'passcode') passcodeField.hidden = false;
    if (st.access === 'invite' && !invite) {
      accessNote.hidden = false;
      accessNote.textContent =
        'Guest access is off on this confab: you need an invite link (or this room’s passcode) from its admin to join.';
    }
  });
  const joinError = h('div', { class: 'error', role: 'alert', hidden: true });
  const joinButton = h('button', { type: 'submit', class: 'primary big', text: 'Join now', disabled: !canDecrypt });

  const join = async () => {
    const name = nameInput.value.trim();
    if (!name) {
      nameInput.setAttribute('aria-invalid', 'true');
      nameError.textContent = 'Enter your name so the others know who you are.';
      nameInput.focus();
      return;
    }
    setName(name);
    joinError.hidden = true;
    joinButton.disabled = true;
    joinButton.textContent = 'Joining…';
    let room: Room | undefined;
    let worker: Worker | undefined;
    try {
      // An encrypted room: key and worker first, encryption on before connecting, so nothing
      // leaves this browser in the clear. Only the room name and your name go to /api/join.
      const encryption = key ? await encryptionFor(key) : undefined;
      worker = encryption?.worker;
      room = newRoom(getDevices(), encryption);
      joining = room;
      if (encryption) await room.setE2EEEnabled(true);
      const grant = await requestJoin(roomName, name, { passcode: passcodeInput.value.trim(), invite });
      await room.connect(grant.url, grant.token);
      if (!alive) {
        void room.disconnect();
        return;
      }
      if (room.state !== ConnectionState.Connected) throw new Error('the connection closed while joining');
      touchRecent(roomName);
      handedOver = true;
      joining = undefined;
      stopAll();
      renderMeeting(nav, {
        room,
        roomName,
        video: camOn ? video : undefined,
        audio: micOn ? audio : undefined,
        e2ee: key && worker ? { key, worker } : undefined,
        token: grant.token,
        canRecord: grant.canRecord === true,
      });
    } catch (e) {
      void room?.disconnect().finally(() => worker?.terminate());
      if (!room) worker?.terminate();
      joining = undefined;
      if (!alive) return;
      joinError.hidden = false;
      joinError.textContent = e instanceof Problem ? e.message : connectProblem(e);
      joinButton.disabled = false;
      joinButton.textContent = 'Join now';
      if (e instanceof Problem && e.kind === 'invite' && invite) {
        // A refused token is not offered again (nor copied into invite links).
        forgetInvite(roomName);
        invite = undefined;
      }
      if (e instanceof Problem && e.kind === 'passcode') {
        passcodeField.hidden = false;
        passcodeInput.setAttribute('aria-invalid', 'true');
        passcodeInput.select();
        passcodeInput.focus();
      } else {
        joinButton.focus();
      }
    }
  };

  const form = h(
    'form',
    {
      class: 'panel stack',
      novalidate: true,
      onsubmit: (e: Event) => {
        e.preventDefault();
        void join();
      },
    },
    h('div', { class: 'field' }, h('label', { for: 'pre-name', text: 'Your name' }), nameInput, nameError),
    key
      ? h(
          'p',
          { class: 'notice e2ee-note', role: 'status' },
          h('span', { html: icon.lock }),
          canDecrypt
            ? ' End-to-end encrypted: video, sound and chat are encrypted in each browser with the key in this link (after #), which the server never receives. Share the full link.'
            : ` ${UNSUPPORTED}`,
        )
      : null,
    keyProblem ? h('p', { class: 'error', role: 'alert', text: keyProblem }) : null,
    passcodeField,
    accessNote,
    camPick.field,
    micPick.field,
    speakerPick.field,
    joinError,
    h(
      'div',
      { class: 'row' },
      joinButton,
      h('button', { type: 'button', text: 'Back', onclick: () => nav.home() }),
    ),
    h(
      'button',
      {
        type: 'button',
        class: 'linkish',
        onclick: () => void copyText(inviteLink(roomName, invite, key), 'Invite link'),
      },
      h('span', { html: icon.link }),
      h('span', { text: 'Copy invite link' }),
    ),
  );

  const secure = window.isSecureContext && !!navigator.mediaDevices;
  show(
    `Join ${roomName} · confab`,
    h(
      'div',
      { class: 'prejoin' },
      h('h1', {}, 'Join ', h('span', { class: 'room-chip', text: roomName })),
      h(
        'div',
        { class: 'prejoin-grid' },
        h(
          'div',
          { class: 'preview-col' },
          h('div', { class: 'preview', role: 'img', 'aria-label': 'Your camera preview' }, preview, previewOff, levelBox),
          h('div', { class: 'row center', role: 'group', 'aria-label': 'Before you join' }, micButton, camButton),
          secure ? mediaError : h('p', { class: 'error', role: 'alert', text: noHttps() }),
        ),
        form,
      ),
    ),
  );
  paint();
  if (!secure) return;
  void (async () => {
    await Promise.all([camOn ? startCamera() : null, micOn ? startMic() : null]);
    if (!alive) return;
    await refreshDevices();
  })();
  if (!nameInput.value) nameInput.focus();
}
