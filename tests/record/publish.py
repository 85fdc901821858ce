"""The publisher of tests/record.rs: LiveKit's native Python SDK (livekit.rtc: libwebrtc's
encoders) joins a room and publishes a camera (a moving test pattern, simulcast, VP8 or H.264)
and a microphone (a 440 Hz tone, Opus), prints one JSON line with the track sids, and stays for
--seconds.

  publish.py ROOM IDENTITY [--seconds S] [--codec vp8|h264] [--no-audio]

LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET name the server; SSL_CERT_FILE its CA.
"""

import argparse
import asyncio
import json
import math
import os
import time

from livekit import api, rtc

W, H, FPS = 640, 360, 30


def frames() -> list[bytes]:
    """A bar moving across a gradient: 30 distinct RGBA frames, cycled."""
    out = []
    base = bytearray()
    for y in range(H):
        v = (y * 255) // H
        base += bytes([v, 255 - v, 128, 255]) * W
    for i in range(30):
        f = bytearray(base)
        x0 = (i * (W - 40)) // 30
        for row in range(H):
            start = (row * W + x0) * 4
            f[start : start + 160] = b"\xff" * 160
        out.append(bytes(f))
    return out


async def video(source: rtc.VideoSource, until: float) -> None:
    # The frames are made once and kept: capture_frame hands their buffers to libwebrtc.
    pics = [rtc.VideoFrame(W, H, rtc.VideoBufferType.RGBA, bytearray(p)) for p in frames()]
    n = 0
    start = time.monotonic()
    while time.monotonic() < until:
        source.capture_frame(pics[n % len(pics)])
        n += 1
        await asyncio.sleep(max(0.0, start + n / FPS - time.monotonic()))


async def audio(source: rtc.AudioSource, until: float) -> None:
    rate, per = 48000, 480
    n = 0
    while time.monotonic() < until:
        frame = rtc.AudioFrame.create(rate, 1, per)
        data = frame.data
        for i in range(per):
            data[i] = int(8000 * math.sin(2 * math.pi * 440 * (n * per + i) / rate))
        await source.capture_frame(frame)
        n += 1


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("room")
    ap.add_argument("identity")
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--codec", default="vp8")
    ap.add_argument("--no-audio", action="store_true")
    a = ap.parse_args()
    token = (
        api.AccessToken()
        .with_identity(a.identity)
        .with_grants(api.VideoGrants(room_join=True, room=a.room))
        .to_jwt()
    )
    room = rtc.Room()
    await room.connect(os.environ["LIVEKIT_URL"], token)
    vsource = rtc.VideoSource(W, H)
    vtrack = rtc.LocalVideoTrack.create_video_track("camera", vsource)
    codec = rtc.VideoCodec.H264 if a.codec == "h264" else rtc.VideoCodec.VP8
    vopts = rtc.TrackPublishOptions(
        source=rtc.TrackSource.SOURCE_CAMERA, simulcast=True, video_codec=codec
    )
    until = time.monotonic() + a.seconds
    tasks = [asyncio.create_task(video(vsource, until))]
    vpub = await room.local_participant.publish_track(vtrack, vopts)
    out = {"event": "published", "video": vpub.sid}
    if not a.no_audio:
        asource = rtc.AudioSource(48000, 1)
        atrack = rtc.LocalAudioTrack.create_audio_track("mic", asource)
        aopts = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        tasks.append(asyncio.create_task(audio(asource, until)))
        apub = await room.local_participant.publish_track(atrack, aopts)
        out["audio"] = apub.sid
    print(json.dumps(out), flush=True)
    await asyncio.gather(*tasks)
    await room.disconnect()
    print(json.dumps({"event": "left"}), flush=True)
    # livekit.rtc's teardown sometimes aborts after everything is done (see tests/agents).
    os._exit(0)


if __name__ == "__main__":
    asyncio.run(main())
