// The in-page half of the browser test: one LiveKit participant driven by run.mjs through
// `page.evaluate`. Everything here uses livekit-client's public API, except `signalPath`, which
// reads one internal field so the runner can tell a real v1 join from a silent fallback to v0.
//
// window.confab = {
//   version,                               livekit-client version string
//   join(url, token, {forceV0, websocketTimeout, peerConnectionTimeout, rtcConfig})
//                                          -> {ok, connectMs, signalPath, ...} | {ok: false, error}
//   publish({camera, mic})                 fake camera and/or microphone -> local publications
//   sendData({reliable, text | bytes, topic})
//   setMicEnabled(bool)                    mute (false) / unmute (true) the microphone
//   leave()                                room.disconnect()
//   info()                                 identity, connection state, signal path, timings, disconnect
//   remoteParticipants()                   sorted identities
//   remoteTracks()                         [{identity, trackSid, kind, source, muted, subscribed}]
//   videoStats()                           [{identity, trackSid, videoWidth, totalVideoFrames, ...}]
//   audioStats()                           [{identity, trackSid, bytesReceived, packetsReceived}]
//   dataMessages()                         [{from, identity, kind, topic, text, bytes}]
//   events()                               the page's event log (for failure reports)
// }

import * as LK from '/livekit-client.esm.mjs';

const { Room, RoomEvent, Track, DataPacket_Kind, DisconnectReason, ConnectionErrorReason } = LK;

LK.setLogLevel('info');

const media = document.getElementById('media');
const decoder = new TextDecoder();

let room = null;
const st = {
  signalPath: null,
  joinStartedAt: null,
  connectedAt: null,
  firstRemoteFrameAt: null,
  disconnected: null,
  messages: [],
  events: [],
  // trackSid -> {el, identity, source, firstFrameAt}
  videos: new Map(),
  audios: new Map(),
};

const now = () => Math.round(performance.now());

function logEvent(ev, detail = {}) {
  st.events.push({ t: now(), ev, ...detail });
  if (st.events.length > 500) st.events.shift();
}

function describeError(e) {
  if (e === null || e === undefined) return { message: String(e) };
  const reasonName =
    e.reasonName ?? (typeof e.reason === 'number' ? ConnectionErrorReason[e.reason] : undefined);
  return {
    name: e.name,
    message: e.message ?? String(e),
    reason: reasonName ?? e.reason,
    status: e.status,
    context: typeof e.context === 'string' ? e.context : undefined,
  };
}

function disconnectReasonName(reason) {
  if (reason === undefined || reason === null) return 'undefined';
  return DisconnectReason[reason] ?? String(reason);
}

function signalPath() {
  // Internal: SignalClient.useV0SignalPath tells which URL the successful join used.
  const flag = room?.engine?.client?.useV0SignalPath;
  if (flag === true) return 'v0';
  if (flag === false) return 'v1';
  return 'unknown';
}

function watchFrames(entry) {
  const el = entry.el;
  if (typeof el.requestVideoFrameCallback !== 'function') return;
  const onFrame = () => {
    if (entry.firstFrameAt === null) {
      entry.firstFrameAt = now();
      if (st.firstRemoteFrameAt === null) st.firstRemoteFrameAt = entry.firstFrameAt;
      logEvent('firstFrame', { identity: entry.identity, trackSid: entry.trackSid });
    }
  };
  el.requestVideoFrameCallback(onFrame);
}

function onTrackSubscribed(track, pub, participant) {
  logEvent('trackSubscribed', {
    identity: participant.identity,
    trackSid: pub.trackSid,
    kind: track.kind,
    source: pub.source,
  });
  if (track.kind === Track.Kind.Video) {
    const el = document.createElement('video');
    el.muted = true;
    el.autoplay = true;
    el.playsInline = true;
    el.dataset.identity = participant.identity;
    media.appendChild(el);
    track.attach(el);
    const entry = {
      el,
      identity: participant.identity,
      trackSid: pub.trackSid,
      source: pub.source,
      firstFrameAt: null,
    };
    st.videos.set(pub.trackSid, entry);
    watchFrames(entry);
  } else if (track.kind === Track.Kind.Audio) {
    const el = document.createElement('audio');
    el.autoplay = true;
    media.appendChild(el);
    track.attach(el);
    st.audios.set(pub.trackSid, { el, identity: participant.identity, trackSid: pub.trackSid });
  }
}

function onTrackUnsubscribed(track, pub, participant) {
  logEvent('trackUnsubscribed', { identity: participant.identity, trackSid: pub.trackSid });
  for (const map of [st.videos, st.audios]) {
    const entry = map.get(pub.trackSid);
    if (entry) {
      track.detach(entry.el);
      entry.el.remove();
      map.delete(pub.trackSid);
    }
  }
}

function wire(r) {
  r.on(RoomEvent.ConnectionStateChanged, (s) => logEvent('connectionState', { state: s }))
    .on(RoomEvent.SignalConnected, () => logEvent('signalConnected', { path: signalPath() }))
    .on(RoomEvent.Connected, () => logEvent('connected'))
    .on(RoomEvent.Reconnecting, () => logEvent('reconnecting'))
    .on(RoomEvent.SignalReconnecting, () => logEvent('signalReconnecting'))
    .on(RoomEvent.Reconnected, () => logEvent('reconnected'))
    .on(RoomEvent.Disconnected, (reason) => {
      st.disconnected = { at: now(), reason: disconnectReasonName(reason) };
      logEvent('disconnected', { reason: st.disconnected.reason });
    })
    .on(RoomEvent.ParticipantConnected, (p) => logEvent('participantConnected', { identity: p.identity }))
    .on(RoomEvent.ParticipantDisconnected, (p) =>
      logEvent('participantDisconnected', { identity: p.identity }),
    )
    .on(RoomEvent.TrackPublished, (pub, p) =>
      logEvent('trackPublished', { identity: p.identity, trackSid: pub.trackSid, source: pub.source }),
    )
    .on(RoomEvent.TrackSubscribed, onTrackSubscribed)
    .on(RoomEvent.TrackUnsubscribed, onTrackUnsubscribed)
    .on(RoomEvent.TrackSubscriptionFailed, (sid, p, err) =>
      logEvent('trackSubscriptionFailed', { identity: p?.identity, trackSid: sid, error: String(err) }),
    )
    .on(RoomEvent.TrackMuted, (pub, p) =>
      logEvent('trackMuted', { identity: p.identity, trackSid: pub.trackSid, source: pub.source }),
    )
    .on(RoomEvent.TrackUnmuted, (pub, p) =>
      logEvent('trackUnmuted', { identity: p.identity, trackSid: pub.trackSid, source: pub.source }),
    )
    .on(RoomEvent.LocalTrackPublished, (pub) =>
      logEvent('localTrackPublished', { trackSid: pub.trackSid, source: pub.source }),
    )
    .on(RoomEvent.MediaDevicesError, (e) => logEvent('mediaDevicesError', describeError(e)))
    .on(RoomEvent.DataReceived, (payload, participant, kind, topic, _encryption, identity) => {
      const msg = {
        at: now(),
        from: participant?.identity ?? null,
        identity: identity ?? null,
        kind: kind === DataPacket_Kind.RELIABLE ? 'reliable' : 'lossy',
        topic: topic ?? null,
        text: decoder.decode(payload),
        bytes: Array.from(payload),
      };
      st.messages.push(msg);
      logEvent('dataReceived', { from: msg.from, identity: msg.identity, kind: msg.kind, size: payload.length });
    });
}

function requireRoom() {
  if (!room) throw new Error('not joined: call join() first');
  return room;
}

function info() {
  return {
    identity: room?.localParticipant?.identity ?? null,
    participantSid: room?.localParticipant?.sid ?? null,
    room: room?.name ?? null,
    connectionState: room?.state ?? 'no room',
    // The path of the successful join (the internal flag is not meaningful after a failure).
    signalPath: st.signalPath ?? 'not connected',
    serverInfo: room?.serverInfo ?? null,
    joinStartedAt: st.joinStartedAt,
    connectedAt: st.connectedAt,
    firstRemoteFrameAt: st.firstRemoteFrameAt,
    joinToFirstFrameMs:
      st.firstRemoteFrameAt !== null && st.joinStartedAt !== null
        ? st.firstRemoteFrameAt - st.joinStartedAt
        : null,
    disconnected: st.disconnected,
  };
}

window.confab = {
  version: LK.version,

  async join(url, token, opts = {}) {
    if (room) throw new Error('join() was already called on this page');
    const forceV0 = Boolean(opts.forceV0);
    room = new Room({
      // false = two PeerConnections on /rtc (v0); true (the default) = /rtc/v1 with one PeerConnection.
      singlePeerConnection: !forceV0,
      adaptiveStream: false,
      dynacast: false,
    });
    wire(room);
    st.joinStartedAt = now();
    logEvent('join', { url, forceV0 });
    try {
      await room.connect(url, token, {
        autoSubscribe: true,
        websocketTimeout: opts.websocketTimeout ?? 15000,
        peerConnectionTimeout: opts.peerConnectionTimeout ?? 15000,
        // An app's RTCConfiguration (e.g. iceTransportPolicy 'relay'), as apps pass it.
        ...(opts.rtcConfig ? { rtcConfig: opts.rtcConfig } : {}),
      });
    } catch (e) {
      const error = describeError(e);
      logEvent('joinFailed', error);
      return { ok: false, error, ms: now() - st.joinStartedAt };
    }
    st.connectedAt = now();
    st.signalPath = signalPath();
    return {
      ok: true,
      connectMs: st.connectedAt - st.joinStartedAt,
      signalPath: st.signalPath,
      participantSid: room.localParticipant.sid,
      serverInfo: room.serverInfo ?? null,
    };
  },

  async publish(opts = { camera: true, mic: true }) {
    const r = requireRoom();
    if (opts.camera) await r.localParticipant.setCameraEnabled(true);
    if (opts.mic) await r.localParticipant.setMicrophoneEnabled(true);
    return [...r.localParticipant.trackPublications.values()].map((p) => ({
      trackSid: p.trackSid,
      kind: p.kind,
      source: p.source,
      muted: p.isMuted,
    }));
  },

  async sendData({ reliable = true, text, bytes, topic } = {}) {
    const r = requireRoom();
    const payload =
      text !== undefined && text !== null ? new TextEncoder().encode(text) : Uint8Array.from(bytes ?? []);
    await r.localParticipant.publishData(payload, { reliable, topic });
    return payload.length;
  },

  async setMicEnabled(enabled) {
    const r = requireRoom();
    const pub = await r.localParticipant.setMicrophoneEnabled(Boolean(enabled));
    return { trackSid: pub?.trackSid ?? null, muted: pub?.isMuted ?? null };
  },

  /** Drops the signal WebSocket as a network blip would (livekit-client's own test hook); the
   * client resumes with reconnect=1 and the participant sid. */
  async simulateSignalReconnect() {
    const r = requireRoom();
    await r.simulateScenario('signal-reconnect');
    return r.localParticipant.sid;
  },

  async leave() {
    if (room) await room.disconnect();
    return info();
  },

  info,

  remoteParticipants() {
    if (!room) return [];
    return [...room.remoteParticipants.values()].map((p) => p.identity).sort();
  },

  remoteTracks() {
    if (!room) return [];
    const out = [];
    for (const p of room.remoteParticipants.values()) {
      for (const pub of p.trackPublications.values()) {
        out.push({
          identity: p.identity,
          trackSid: pub.trackSid,
          kind: pub.kind,
          source: pub.source,
          muted: pub.isMuted,
          subscribed: pub.isSubscribed,
        });
      }
    }
    return out;
  },

  videoStats() {
    return [...st.videos.values()].map((v) => {
      const q = v.el.getVideoPlaybackQuality();
      return {
        identity: v.identity,
        trackSid: v.trackSid,
        source: v.source,
        videoWidth: v.el.videoWidth,
        videoHeight: v.el.videoHeight,
        totalVideoFrames: q.totalVideoFrames,
        droppedVideoFrames: q.droppedVideoFrames,
        paused: v.el.paused,
        firstFrameMs: v.firstFrameAt !== null && st.joinStartedAt !== null ? v.firstFrameAt - st.joinStartedAt : null,
      };
    });
  },

  async audioStats() {
    const out = [];
    if (!room) return out;
    for (const p of room.remoteParticipants.values()) {
      for (const pub of p.trackPublications.values()) {
        if (pub.kind !== Track.Kind.Audio || !pub.track) continue;
        let bytesReceived = null;
        let packetsReceived = null;
        const report = await pub.track.getRTCStatsReport();
        report?.forEach((s) => {
          if (s.type === 'inbound-rtp') {
            bytesReceived = (bytesReceived ?? 0) + (s.bytesReceived ?? 0);
            packetsReceived = (packetsReceived ?? 0) + (s.packetsReceived ?? 0);
          }
        });
        out.push({ identity: p.identity, trackSid: pub.trackSid, source: pub.source, bytesReceived, packetsReceived });
      }
    }
    return out;
  },

  dataMessages() {
    return st.messages.slice();
  },

  events() {
    return st.events.slice();
  },
};

window.confabReady = true;
