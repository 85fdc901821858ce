// The meeting: a grid of participants (names, mute and camera state, active speaker, connection
// quality), screen shares in the spotlight, controls (mic, camera, screen, devices, chat, record,
// leave), the invite link, and the reconnecting state. Simulcast, dynacast and adaptive stream
// are on. An end-to-end encrypted meeting shows a lock (and who cannot be decrypted); a person
// without the key is told to ask for the full link. "● Recording" shows while the room records.

import {
  type AudioCaptureOptions,
  ConnectionQuality,
  type E2EEManagerOptions,
  ConnectionState,
  DisconnectReason,
  type LocalAudioTrack,
  type LocalVideoTrack,
  type Participant,
  type RemoteParticipant,
  type RemoteTrack,
  Room,
  RoomEvent,
  ScreenSharePresets,
  Track,
  type VideoCaptureOptions,
  VideoPresets,
} from 'livekit-client';

import { Problem, setRecording } from './api';
import { Chat } from './chat';
import { devicePicker } from './devices';
import { copyText, h, icon, show, toast } from './dom';
import { NO_KEY, WRONG_KEY } from './e2ee';
import { leftBecause, mediaProblem } from './errors';
import type { Nav } from './main';
import { initials, inviteLink } from './names';
import { type DeviceChoice, getDevices, inviteFor, setDevices, touchRecent } from './store';

/** Capture options for the chosen devices (`ideal`: a vanished device falls back to another). */
export function captureDefaults(d: DeviceChoice): { video: VideoCaptureOptions; audio: AudioCaptureOptions } {
  return {
    video: {
      deviceId: d.videoinput ? { ideal: d.videoinput } : undefined,
      resolution: VideoPresets.h720.resolution,
    },
    audio: {
      deviceId: d.audioinput ? { ideal: d.audioinput } : undefined,
      echoCancellation: true,
      noiseSuppression: true,
      autoGainControl: true,
    },
  };
}

/** A room for the chosen devices; `encryption`: end to end (media and data channel). */
export function newRoom(d: DeviceChoice, encryption?: E2EEManagerOptions): Room {
  const capture = captureDefaults(d);
  return new Room({
    encryption,
    adaptiveStream: true,
    dynacast: true,
    videoCaptureDefaults: capture.video,
    audioCaptureDefaults: capture.audio,
    audioOutput: d.audiooutput ? { deviceId: d.audiooutput } : undefined,
    publishDefaults: {
      simulcast: true,
      videoSimulcastLayers: [VideoPresets.h180, VideoPresets.h360],
      screenShareEncoding: ScreenSharePresets.h1080fps15.encoding,
      dtx: true,
      red: true,
    },
  });
}

interface Tile {
  el: HTMLElement;
  video: HTMLVideoElement;
  avatar: HTMLElement;
  name: HTMLElement;
  micOff: HTMLElement;
  quality: HTMLElement;
  /** Why this person's media is not (or cannot be) decrypted here; empty when all is well. */
  flag: HTMLElement;
  track?: Track;
}

const QUALITY_WORDS: Record<ConnectionQuality, string> = {
  [ConnectionQuality.Excellent]: 'excellent',
  [ConnectionQuality.Good]: 'good',
  [ConnectionQuality.Poor]: 'poor',
  [ConnectionQuality.Lost]: 'lost',
  [ConnectionQuality.Unknown]: 'unknown',
};

export interface MeetingOptions {
  room: Room;
  roomName: string;
  video?: LocalVideoTrack;
  audio?: LocalAudioTrack;
  /** An end-to-end encrypted meeting: its passphrase (for the invite link) and the worker. */
  e2ee?: { key: string; worker: Worker };
  /** The join token: POST /api/recording is authorised with it. */
  token: string;
  /** The token carries roomRecord: the Record button is offered. */
  canRecord: boolean;
}

/** A decryption failure of livekit-client's worker that means "a different key" (its reason first). */
const isWrongKey = (e: Error) => /^InvalidKey\b/.test(e.message);

export function renderMeeting(nav: Nav, opts: MeetingOptions): void {
  const { room, roomName, e2ee } = opts;
  const me = room.localParticipant;
  let leaving = false;
  const tiles = new Map<string, Tile>();
  /** Remote identities whose media this browser failed to decrypt (a different key). */
  const wrongKey = new Set<string>();

  // ---- layout --------------------------------------------------------------------------------
  const grid = h('section', { class: 'grid', 'aria-label': 'Participants' });
  const strip = h('div', { class: 'strip' });
  const audioBox = h('div', { hidden: true });
  const count = h('span', { class: 'count' });
  const banner = h('div', { class: 'banner', role: 'status', 'aria-live': 'assertive' });
  const startAudio = h('button', {
    type: 'button',
    class: 'primary small',
    hidden: true,
    text: 'Turn on sound',
    onclick: () => void room.startAudio().then(syncAudioButton),
  });

  const chat = new Chat(room, () => paintChatButton());

  // ---- controls ------------------------------------------------------------------------------
  const control = (label: string, onclick: () => void, extra: Record<string, unknown> = {}) =>
    h('button', { type: 'button', class: 'control', 'aria-label': label, onclick, ...extra });
  const micButton = control('Microphone', () => void toggle('mic'), { 'aria-pressed': 'false' });
  const camButton = control('Camera', () => void toggle('cam'), { 'aria-pressed': 'false' });
  const screenButton = control('Share screen', () => void toggle('screen'), { 'aria-pressed': 'false' });
  const devicesButton = control('Devices', () => openDevices(), { 'aria-haspopup': 'dialog' });
  const chatButton = control('Chat', () => chat.toggle(), { 'aria-pressed': 'false', 'aria-controls': 'chat' });
  const leaveButton = control('Leave', () => void leave(), { class: 'control danger' });
  const recordButton = control('Record', () => void toggleRecording(), { 'aria-pressed': 'false', hidden: !opts.canRecord });
  devicesButton.innerHTML = `${icon.gear}<span>Devices</span>`;
  leaveButton.innerHTML = `${icon.leave}<span>Leave</span>`;
  const canShare = !!navigator.mediaDevices && 'getDisplayMedia' in navigator.mediaDevices;
  screenButton.hidden = !canShare;

  // Visible words stay short and constant (they are part of each button's name); the state is in
  // aria-pressed, the icon, the colour and the tooltip.
  const paintControls = () => {
    const mic = me.isMicrophoneEnabled;
    const cam = me.isCameraEnabled;
    const screen = me.isScreenShareEnabled;
    micButton.setAttribute('aria-pressed', String(mic));
    micButton.innerHTML = `${mic ? icon.mic : icon.micOff}<span>Mic</span>`;
    micButton.title = mic ? 'Microphone on: press to mute' : 'Microphone muted: press to unmute';
    micButton.classList.toggle('off', !mic);
    camButton.setAttribute('aria-pressed', String(cam));
    camButton.innerHTML = `${cam ? icon.cam : icon.camOff}<span>Camera</span>`;
    camButton.title = cam ? 'Camera on: press to stop it' : 'Camera off: press to start it';
    camButton.classList.toggle('off', !cam);
    screenButton.setAttribute('aria-pressed', String(screen));
    screenButton.innerHTML = `${icon.screen}<span>Share</span>`;
    screenButton.title = screen ? 'Sharing your screen: press to stop' : 'Share your screen';
    screenButton.classList.toggle('on', screen);
  };
  // ---- recording -----------------------------------------------------------------------------
  // The badge lives in a polite live region that stays in the page, so "Recording" is announced
  // when it starts for everyone (the server sets Room.active_recording).
  const recLive = h('span', { class: 'rec-live', role: 'status', 'aria-live': 'polite' });
  const recBadge = h('span', { class: 'rec-badge', title: 'This meeting is being recorded: everyone’s camera and microphone, one file each.' }, '● Recording');
  let recBusy = false;
  function paintRecording() {
    const on = room.isRecording;
    if (on !== recLive.contains(recBadge)) recLive.replaceChildren(...(on ? [recBadge] : []));
    recordButton.setAttribute('aria-pressed', String(on));
    recordButton.classList.toggle('on', on);
    recordButton.innerHTML = `${icon.record}<span>${on ? 'Stop' : 'Record'}</span>`;
    // Not `disabled`: the reason stays readable (tooltip, focus) and a press says it again.
    recordButton.setAttribute('aria-disabled', String(!!e2ee || recBusy));
    recordButton.title = e2ee
      ? 'Recording is not possible: this meeting is end-to-end encrypted, so the server cannot see or hear it.'
      : on
        ? 'Recording everyone: press to stop'
        : 'Record everyone in this meeting (one file each, on the server)';
  }
  async function toggleRecording() {
    if (e2ee) {
      toast('Recording is not possible: this meeting is end-to-end encrypted, so the server cannot see or hear it.', 8000);
      return;
    }
    if (recBusy) return;
    recBusy = true;
    paintRecording();
    const record = !room.isRecording;
    try {
      const st = await setRecording(opts.token, roomName, record);
      toast(st.recording ? 'Recording started.' : 'Recording stopped.');
    } catch (e) {
      toast(e instanceof Problem ? e.message : `Recording did not ${record ? 'start' : 'stop'} (${String(e)}).`, 10000);
    } finally {
      recBusy = false;
      paintRecording();
    }
  }

  // ---- end-to-end encryption ---------------------------------------------------------------
  const e2eeTip =
    'End-to-end encrypted: video, sound and chat are encrypted in each browser with the key in the link (after #). ' +
    'The server forwards them without being able to see or hear them, and cannot record them.';
  const lockBadge = e2ee ? h('span', { class: 'e2ee-badge', tabindex: '0', role: 'img', title: e2eeTip }) : null;
  function paintE2ee() {
    if (!lockBadge) return;
    const on = room.isE2EEEnabled;
    lockBadge.dataset.state = on ? 'on' : 'starting';
    lockBadge.setAttribute('aria-label', on ? e2eeTip : 'Turning on end-to-end encryption…');
    lockBadge.innerHTML = `${icon.lock}<span>${on ? 'Encrypted' : 'Encrypting…'}</span>`;
  }
  /** Whether someone here publishes encrypted media (what a person without the key finds). */
  const othersEncrypt = () =>
    [...room.remoteParticipants.values()].some((p) => [...p.trackPublications.values()].some((pub) => pub.isEncrypted));
  const hasMedia = (p: Participant) => p.trackPublications.size > 0;

  /** Leaves and explains: no key (or the wrong one) for an encrypted meeting. */
  function lockedOut(why: string) {
    if (leaving || cleaned) return;
    leaving = true;
    void room.disconnect();
    cleanupRoom();
    show(
      `Encrypted meeting ${roomName} · confab`,
      h(
        'section',
        { class: 'panel ended-view' },
        h('h1', {}, h('span', { html: icon.lock }), ' ', h('span', { class: 'room-chip', text: roomName }), ' is end-to-end encrypted'),
        h('p', { role: 'alert', class: 'e2ee-problem', text: why }),
        h(
          'div',
          { class: 'row' },
          h('button', { type: 'button', class: 'primary', text: 'Home', onclick: () => nav.home() }),
        ),
      ),
    );
  }
  /** After any change: a person without the key leaves; with the key, who fails to decrypt. */
  function checkEncryption() {
    if (!e2ee) {
      if (othersEncrypt()) lockedOut(NO_KEY);
      return;
    }
    const others = [...room.remoteParticipants.values()].filter(hasMedia);
    // Everyone else fails: this browser is the one with the different key.
    if (others.length >= 2 && others.every((p) => wrongKey.has(p.identity))) lockedOut(WRONG_KEY);
  }

  function paintChatButton() {
    const unread = chat.unread;
    chatButton.setAttribute('aria-pressed', String(chat.open));
    chatButton.setAttribute('aria-label', unread ? `Chat, ${unread} unread` : 'Chat');
    chatButton.innerHTML = `${icon.chat}<span>Chat</span>${unread ? `<b class="badge" aria-hidden="true">${unread}</b>` : ''}`;
  }

  const busy = new Set<string>();
  const toggle = async (what: 'mic' | 'cam' | 'screen') => {
    if (busy.has(what)) return;
    busy.add(what);
    try {
      if (what === 'mic') {
        const on = !me.isMicrophoneEnabled;
        await me.setMicrophoneEnabled(on);
        setDevices({ micOn: on });
      } else if (what === 'cam') {
        const on = !me.isCameraEnabled;
        await me.setCameraEnabled(on);
        setDevices({ cameraOn: on });
      } else {
        await me.setScreenShareEnabled(!me.isScreenShareEnabled, { audio: false, selfBrowserSurface: 'exclude' });
      }
    } catch (e) {
      const name = e instanceof Error ? e.name : '';
      if (what === 'screen') {
        // Cancelling the browser's picker is not an error.
        if (name !== 'NotAllowedError' && name !== 'AbortError') {
          toast(`Screen sharing did not start${e instanceof Error ? ` (${e.message})` : ''}.`, 8000);
        }
      } else {
        toast(mediaProblem(e, what === 'mic' ? 'microphone' : 'camera'), 10000);
      }
    } finally {
      busy.delete(what);
      paintControls();
      scheduleSync();
    }
  };

  // ---- devices dialog ------------------------------------------------------------------------
  const pickers = (['videoinput', 'audioinput', 'audiooutput'] as const).map((kind) =>
    devicePicker(kind, 'meet', (id) => {
      setDevices({ [kind]: id });
      void room.switchActiveDevice(kind, id).catch((e: unknown) => {
        toast(mediaProblem(e, kind === 'videoinput' ? 'camera' : 'microphone'), 8000);
      });
    }),
  );
  const dialog = h(
    'dialog',
    { class: 'devices', 'aria-labelledby': 'devices-h' },
    h(
      'form',
      { method: 'dialog', class: 'stack' },
      h('h2', { id: 'devices-h', text: 'Devices' }),
      ...pickers.map((p) => p.field),
      h('div', { class: 'row' }, h('button', { class: 'primary', text: 'Done', value: 'done' })),
    ),
  );
  const openDevices = () => {
    const ids: (string | undefined)[] = [
      room.getActiveDevice('videoinput'),
      room.getActiveDevice('audioinput'),
      room.getActiveDevice('audiooutput') ?? getDevices().audiooutput,
    ];
    void Promise.all(pickers.map((p, i) => p.fill(ids[i]))).then(() => {
      if (!dialog.open) dialog.showModal();
    });
  };
  dialog.addEventListener('close', () => devicesButton.focus());

  // ---- tiles ---------------------------------------------------------------------------------
  const makeTile = (key: string, local: boolean, source: 'camera' | 'screen'): Tile => {
    const video = h('video', { playsInline: true, autoplay: true, muted: true });
    video.muted = true;
    const avatar = h('div', { class: 'avatar', 'aria-hidden': 'true' });
    const micOff = h('span', { class: 'mic-off', html: icon.micOff, title: 'Microphone off' });
    const name = h('span', { class: 'name' });
    const quality = h('span', { class: 'quality', role: 'img' }, h('i'), h('i'), h('i'));
    const flag = h('p', { class: 'tile-flag', hidden: true });
    const el = h(
      'figure',
      { class: `tile ${source}${local ? ' local' : ''}`, 'data-key': key, 'data-source': source },
      video,
      avatar,
      flag,
      h('figcaption', {}, micOff, name),
      source === 'camera' ? quality : null,
    );
    if (local && source === 'camera') video.classList.add('mirror');
    return { el, video, avatar, name, micOff, quality, flag };
  };

  const setTrack = (t: Tile, track: Track | undefined) => {
    if (t.track === track) return;
    t.track?.detach(t.video);
    t.track = track;
    if (track) track.attach(t.video);
    t.el.classList.toggle('has-video', !!track);
  };

  const participants = (): Participant[] => [me, ...room.remoteParticipants.values()];

  let syncing = 0;
  function scheduleSync() {
    if (syncing) return;
    syncing = requestAnimationFrame(() => {
      syncing = 0;
      sync();
    });
  }

  /** Makes the tiles match the room (cheap: runs on any room event). */
  function sync() {
    const wanted = new Set<string>();
    const featured: Tile[] = [];
    const cams: Tile[] = [];
    for (const p of participants()) {
      const local = p === me;
      const displayName = p.name || p.identity;
      // Camera tile (everyone has one, video or not).
      const camKey = `${p.identity}:camera`;
      wanted.add(camKey);
      let t = tiles.get(camKey);
      if (!t) {
        t = makeTile(camKey, local, 'camera');
        t.el.dataset.identity = p.identity;
        tiles.set(camKey, t);
      }
      const cam = p.getTrackPublication(Track.Source.Camera);
      setTrack(t, cam && !cam.isMuted && cam.track ? cam.track : undefined);
      const mic = p.getTrackPublication(Track.Source.Microphone);
      const micMuted = !mic || mic.isMuted;
      t.name.textContent = local ? `${displayName} (you)` : displayName;
      t.avatar.textContent = initials(displayName);
      t.micOff.hidden = !micMuted;
      t.el.classList.toggle('speaking', p.isSpeaking && !micMuted);
      const q = QUALITY_WORDS[p.connectionQuality] ?? 'unknown';
      t.quality.dataset.q = q;
      t.quality.setAttribute('aria-label', `Connection ${q}`);
      t.quality.title = `Connection ${q}`;
      // Encryption, per person: encrypted (data-encrypted), or why not, said on the tile.
      const encrypted = local ? room.isE2EEEnabled : p.isEncrypted;
      const flag = !e2ee || local || !hasMedia(p)
        ? ''
        : wrongKey.has(p.identity)
          ? `Cannot decrypt ${displayName}: a different key. One of you needs the full link again.`
          : !p.isEncrypted
            ? 'Not encrypted: joined without the key'
            : '';
      t.el.dataset.encrypted = String(encrypted);
      t.el.classList.toggle('undecryptable', wrongKey.has(p.identity));
      t.flag.textContent = flag;
      t.flag.hidden = !flag;
      t.el.setAttribute(
        'aria-label',
        `${local ? `${displayName} (you)` : displayName}: ` +
          `${t.track ? 'camera on' : 'camera off'}, ${micMuted ? 'microphone off' : 'microphone on'}` +
          `${p.isSpeaking ? ', speaking' : ''}, connection ${q}${flag ? `, ${flag}` : ''}`,
      );
      cams.push(t);

      // Screen share tile.
      const screen = p.getTrackPublication(Track.Source.ScreenShare);
      if (screen?.track && !screen.isMuted) {
        const key = `${p.identity}:screen`;
        wanted.add(key);
        let s = tiles.get(key);
        if (!s) {
          s = makeTile(key, local, 'screen');
          s.el.dataset.identity = p.identity;
          s.micOff.hidden = true;
          tiles.set(key, s);
        }
        setTrack(s, screen.track);
        s.name.textContent = local ? 'Your screen' : `${displayName}’s screen`;
        s.el.setAttribute('aria-label', s.name.textContent);
        featured.push(s);
      }
    }
    for (const [key, t] of tiles) {
      if (!wanted.has(key)) {
        setTrack(t, undefined);
        t.el.remove();
        tiles.delete(key);
      }
    }
    // Spotlight when someone shares: the screen large, people in a strip.
    const spotlight = featured.length > 0;
    stage.classList.toggle('spotlight', spotlight);
    if (spotlight) {
      placeChildren(grid, featured.map((t) => t.el));
      placeChildren(strip, cams.map((t) => t.el));
    } else {
      placeChildren(grid, cams.map((t) => t.el));
      placeChildren(strip, []);
    }
    const n = participants().length;
    count.textContent = n === 1 ? 'Only you' : `${n} people`;
    layout();
    paintControls();
    paintE2ee();
    paintRecording();
    checkEncryption();
  }

  /** Puts `els` into `parent` in order without re-inserting (a moved <video> would blink). */
  function placeChildren(parent: HTMLElement, els: HTMLElement[]) {
    els.forEach((el, i) => {
      if (parent.children[i] !== el) parent.insertBefore(el, parent.children[i] ?? null);
    });
    while (parent.children.length > els.length) parent.lastElementChild?.remove();
  }

  /** Picks the column count that gives the biggest 16:9 tiles in the grid's box. */
  function layout() {
    if (stage.classList.contains('spotlight')) return;
    const n = grid.children.length;
    const box = grid.getBoundingClientRect();
    if (n === 0 || box.width === 0 || box.height === 0) return;
    const gap = 8;
    let best = { cols: 1, w: 0 };
    for (let cols = 1; cols <= n; cols++) {
      const rows = Math.ceil(n / cols);
      const cellW = (box.width - gap * (cols - 1)) / cols;
      const cellH = (box.height - gap * (rows - 1)) / rows;
      const w = Math.min(cellW, (cellH * 16) / 9);
      if (w > best.w) best = { cols, w };
    }
    grid.style.setProperty('--cols', String(best.cols));
    grid.style.setProperty('--tile-w', `${Math.floor(best.w)}px`);
  }
  const resize = new ResizeObserver(() => layout());

  // ---- audio ---------------------------------------------------------------------------------
  const onSubscribed = (track: RemoteTrack) => {
    if (track.kind === Track.Kind.Audio) {
      const el = track.attach();
      audioBox.append(el);
    }
    scheduleSync();
  };
  const onUnsubscribed = (track: RemoteTrack) => {
    if (track.kind === Track.Kind.Audio) track.detach().forEach((el) => el.remove());
    scheduleSync();
  };
  function syncAudioButton() {
    startAudio.hidden = room.canPlaybackAudio;
  }

  // ---- connection state ----------------------------------------------------------------------
  const setBanner = (text: string | null) => {
    banner.textContent = text ?? '';
    banner.hidden = !text;
    root.classList.toggle('reconnecting', !!text);
  };

  const onDisconnected = (reason?: DisconnectReason) => {
    cleanupRoom();
    touchRecent(roomName);
    if (leaving) return;
    const why = leftBecause(reason) ?? 'You left the meeting.';
    showEnded(why);
  };

  const showEnded = (why: string) => {
    show(
      `Left ${roomName} · confab`,
      h(
        'section',
        { class: 'panel ended-view' },
        h('h1', {}, 'You are no longer in ', h('span', { class: 'room-chip', text: roomName })),
        h('p', { role: 'alert', text: why }),
        h(
          'div',
          { class: 'row' },
          h('button', { type: 'button', class: 'primary', text: 'Rejoin', onclick: () => nav.prejoin(roomName, { push: false }) }),
          h('button', { type: 'button', text: 'Home', onclick: () => nav.home() }),
        ),
      ),
    );
  };

  async function leave() {
    if (leaving) return;
    leaving = true;
    touchRecent(roomName);
    try {
      await room.disconnect();
    } finally {
      cleanupRoom();
      nav.home({ notice: `You left ${roomName}.` });
    }
  }

  let cleaned = false;
  function cleanupRoom() {
    if (cleaned) return;
    cleaned = true;
    resize.disconnect();
    window.removeEventListener('keydown', onKey);
    room.removeAllListeners();
    for (const t of tiles.values()) setTrack(t, undefined);
    for (const el of audioBox.querySelectorAll('audio')) el.remove();
    opts.video?.stop();
    opts.audio?.stop();
    // The E2EE worker is this meeting's own (livekit-client does not end it).
    if (e2ee) window.setTimeout(() => e2ee.worker.terminate(), 1000);
  }

  // The router calls this when the page changes under us (back button): leave the room.
  nav.setCleanup(() => {
    if (!cleaned) {
      leaving = true;
      touchRecent(roomName);
      void room.disconnect();
      cleanupRoom();
    }
  });

  const onKey = (e: KeyboardEvent) => {
    if (e.key === 'Escape' && chat.open && !dialog.open) chat.toggle(false);
  };
  window.addEventListener('keydown', onKey);

  room
    .on(RoomEvent.ParticipantConnected, (p: RemoteParticipant) => {
      toast(`${p.name || p.identity} joined`);
      scheduleSync();
    })
    .on(RoomEvent.ParticipantDisconnected, (p: RemoteParticipant) => {
      toast(`${p.name || p.identity} left`);
      wrongKey.delete(p.identity);
      scheduleSync();
    })
    .on(RoomEvent.RecordingStatusChanged, paintRecording)
    .on(RoomEvent.ParticipantEncryptionStatusChanged, scheduleSync)
    .on(RoomEvent.EncryptionError, (e: Error, p?: Participant) => {
      // Without the key: livekit-client says an encrypted track arrived. With it: the worker
      // could not decrypt someone (throttled, so this is cheap).
      if (!e2ee) {
        lockedOut(NO_KEY);
        return;
      }
      if (p && p !== me && isWrongKey(e) && !wrongKey.has(p.identity)) {
        wrongKey.add(p.identity);
        scheduleSync();
      }
    })
    .on(RoomEvent.TrackSubscribed, onSubscribed)
    .on(RoomEvent.TrackUnsubscribed, onUnsubscribed)
    .on(RoomEvent.TrackPublished, scheduleSync)
    .on(RoomEvent.TrackUnpublished, scheduleSync)
    .on(RoomEvent.TrackMuted, scheduleSync)
    .on(RoomEvent.TrackUnmuted, scheduleSync)
    .on(RoomEvent.LocalTrackPublished, scheduleSync)
    .on(RoomEvent.LocalTrackUnpublished, scheduleSync)
    .on(RoomEvent.ActiveSpeakersChanged, scheduleSync)
    .on(RoomEvent.ConnectionQualityChanged, scheduleSync)
    .on(RoomEvent.ParticipantNameChanged, scheduleSync)
    .on(RoomEvent.AudioPlaybackStatusChanged, syncAudioButton)
    .on(RoomEvent.MediaDevicesError, (e: Error) => toast(mediaProblem(e, 'camera or microphone'), 10000))
    .on(RoomEvent.Reconnecting, () => setBanner('Connection lost. Reconnecting…'))
    .on(RoomEvent.SignalReconnecting, () => setBanner('Connection to the server lost. Reconnecting…'))
    .on(RoomEvent.Reconnected, () => {
      setBanner(null);
      toast('Reconnected');
    })
    .on(RoomEvent.Disconnected, onDisconnected);

  // ---- page ----------------------------------------------------------------------------------
  const stage = h('div', { class: 'stage' }, h('div', { class: 'main-area' }, grid, strip), chat.panel);
  const root = h(
    'div',
    { class: 'meeting' },
    h(
      'header',
      { class: 'topbar' },
      h('h1', { class: 'room-title' }, h('span', { class: 'visually-hidden', text: 'Meeting ' }), roomName),
      lockBadge,
      recLive,
      count,
      banner,
      startAudio,
      h(
        'button',
        {
          type: 'button',
          class: 'small',
          'aria-label': 'Copy invite link',
          onclick: () => void copyText(inviteLink(roomName, inviteFor(roomName), e2ee?.key), 'Invite link'),
        },
        h('span', { html: icon.link }),
        h('span', { text: 'Copy invite link' }),
      ),
    ),
    stage,
    h(
      'nav',
      { class: 'controls', 'aria-label': 'Meeting controls' },
      micButton,
      camButton,
      screenButton,
      devicesButton,
      chatButton,
      recordButton,
      leaveButton,
    ),
    dialog,
    audioBox,
  );
  setBanner(null);
  show(`${roomName} · confab`, root);
  resize.observe(grid);

  // Remote audio that arrived before the page existed.
  for (const p of room.remoteParticipants.values()) {
    for (const pub of p.audioTrackPublications.values()) {
      if (pub.track) audioBox.append(pub.track.attach());
    }
  }
  syncAudioButton();
  paintChatButton();
  sync();

  // Publish what the pre-join page prepared (same devices, no second prompt).
  void (async () => {
    // Not into a meeting that is over already (no key for an encrypted one, for example).
    if (cleaned) return;
    try {
      if (opts.video) await me.publishTrack(opts.video, { source: Track.Source.Camera });
    } catch (e) {
      if (!cleaned) toast(mediaProblem(e, 'camera'), 10000);
    }
    try {
      if (opts.audio && !cleaned) await me.publishTrack(opts.audio, { source: Track.Source.Microphone });
    } catch (e) {
      if (!cleaned) toast(mediaProblem(e, 'microphone'), 10000);
    }
    scheduleSync();
  })();
  if (room.state !== ConnectionState.Connected) setBanner('Connecting…');
}
