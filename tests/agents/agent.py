"""A LiveKit agent as its users write one (livekit-agents 1.x), run against confab by tests/agents.rs
with `python agent.py start` and LIVEKIT_URL / LIVEKIT_API_KEY / LIVEKIT_API_SECRET.

Each job joins its room, publishes a 440 Hz tone as its microphone, and answers the RPC method
`whoami` with what the job told it (room, agent name, dispatch, metadata), so a participant can
check that the right job reached the right room. AGENT_NAME picks explicit dispatch (empty:
automatic).
"""

import json
import math
import os

from livekit import rtc
from livekit.agents import JobContext, WorkerOptions, cli

RATE = 48000
FRAME = 480  # 10 ms


async def entrypoint(ctx: JobContext) -> None:
    await ctx.connect()
    lp = ctx.room.local_participant
    info = {
        "job_id": ctx.job.id,
        "dispatch_id": ctx.job.dispatch_id,
        "room": ctx.room.name,
        "agent_name": ctx.job.agent_name,
        "metadata": ctx.job.metadata,
        "identity": lp.identity,
    }

    @lp.register_rpc_method("whoami")
    async def whoami(data: rtc.RpcInvocationData) -> str:
        return json.dumps({**info, "caller": data.caller_identity})

    source = rtc.AudioSource(RATE, 1)
    track = rtc.LocalAudioTrack.create_audio_track("agent-voice", source)
    options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    await lp.publish_track(track, options)
    n = 0
    while ctx.room.isconnected():
        frame = rtc.AudioFrame.create(RATE, 1, FRAME)
        samples = frame.data  # int16, one channel
        for i in range(FRAME):
            samples[i] = int(8000 * math.sin(2 * math.pi * 440 * (n + i) / RATE))
        n += FRAME
        await source.capture_frame(frame)


def load(_server: object) -> float:
    # The default load is the machine's CPU use, which on a busy two-core CI machine would mark
    # the worker full; this test agent takes every job it is offered.
    return 0.0


if __name__ == "__main__":
    cli.run_app(
        WorkerOptions(
            entrypoint_fnc=entrypoint,
            agent_name=os.environ.get("AGENT_NAME", ""),
            load_fnc=load,
            num_idle_processes=1,
            # The worker's health endpoint; two test workers on one machine need two ports.
            port=int(os.environ.get("AGENT_HTTP_PORT", "8081")),
        )
    )
