"""The call of tests/turn.rs: LiveKit's native Python SDK (livekit.rtc: libwebrtc) joins a room
twice — Alice publishes a camera (a moving test pattern) and a microphone, Bob subscribes —
both with ICE restricted to relay candidates (RtcConfiguration TRANSPORT_RELAY, the SDK's
"iceTransportPolicy: relay"), and no ICE servers of their own: they use the ones confab hands
out in the join response. Prints one JSON line: the frames Bob decoded, the audio frames he
received, the candidate types each side gathered, and the seconds to the first frame.

  call.py ROOM [--frames N] [--timeout S]

LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET name the server; SSL_CERT_FILE its CA.
"""

import argparse
import asyncio
import json
import os
import time

from livekit import api, rtc
from livekit.rtc._proto import stats_pb2

W, H, FPS = 320, 240, 30


def token(identity: str, room: str) -> str:
    return (
        api.AccessToken()
        .with_identity(identity)
        .with_grants(api.VideoGrants(room_join=True, room=room))
        .to_jwt()
    )


def relay_only() -> rtc.RoomOptions:
    cfg = rtc.RtcConfiguration(ice_transport_type=rtc.IceTransportType.TRANSPORT_RELAY)
    return rtc.RoomOptions(rtc_config=cfg)


async def candidate_types(room: rtc.Room) -> list[str]:
    stats = await room.get_rtc_stats()
    kinds = set()
    for s in list(stats.publisher_stats) + list(stats.subscriber_stats):
        if s.WhichOneof("stats") == "local_candidate":
            kinds.add(stats_pb2.IceCandidateType.Name(s.local_candidate.candidate.candidate_type))
    return sorted(kinds)


async def publish(room: rtc.Room, until: float) -> None:
    source = rtc.VideoSource(W, H)
    track = rtc.LocalVideoTrack.create_video_track("camera", source)
    opts = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA, simulcast=False)
    await room.local_participant.publish_track(track, opts)
    asource = rtc.AudioSource(48000, 1)
    atrack = rtc.LocalAudioTrack.create_audio_track("mic", asource)
    await room.local_participant.publish_track(
        atrack, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    )
    n = 0
    start = time.monotonic()
    while time.monotonic() < until:
        shade = (n * 8) % 256
        pic = bytearray([shade, 255 - shade, 128, 255]) * (W * H)
        source.capture_frame(rtc.VideoFrame(W, H, rtc.VideoBufferType.RGBA, pic))
        await asource.capture_frame(rtc.AudioFrame.create(48000, 1, 480))
        n += 1
        await asyncio.sleep(max(0.0, start + n / FPS - time.monotonic()))


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("room")
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--timeout", type=float, default=45)
    a = ap.parse_args()
    url = os.environ["LIVEKIT_URL"]
    start = time.monotonic()
    until = start + a.timeout
    got = {"frames": 0, "audio_frames": 0, "first_frame_s": None}
    done = asyncio.Event()

    bob = rtc.Room()

    async def watch_video(track: rtc.Track) -> None:
        async for _ in rtc.VideoStream(track):
            got["frames"] += 1
            if got["first_frame_s"] is None:
                got["first_frame_s"] = round(time.monotonic() - start, 2)
            if got["frames"] >= a.frames:
                done.set()
                return

    async def watch_audio(track: rtc.Track) -> None:
        async for _ in rtc.AudioStream(track):
            got["audio_frames"] += 1

    tasks = []

    @bob.on("track_subscribed")
    def on_track(track, _pub, _participant):
        watch = watch_video if track.kind == rtc.TrackKind.KIND_VIDEO else watch_audio
        tasks.append(asyncio.ensure_future(watch(track)))

    await bob.connect(url, token("bob", a.room), options=relay_only())
    alice = rtc.Room()
    await alice.connect(url, token("alice", a.room), options=relay_only())
    pub = asyncio.ensure_future(publish(alice, until))
    try:
        await asyncio.wait_for(done.wait(), timeout=max(1.0, until - time.monotonic()))
    except asyncio.TimeoutError:
        pass
    got["alice_candidates"] = await candidate_types(alice)
    got["bob_candidates"] = await candidate_types(bob)
    print(json.dumps(got), flush=True)
    pub.cancel()
    for t in tasks:
        t.cancel()
    await alice.disconnect()
    await bob.disconnect()
    # livekit.rtc's teardown sometimes aborts after everything is done (see tests/agents).
    os._exit(0)


if __name__ == "__main__":
    asyncio.run(main())
