// LiveKit's own server SDK (livekit-server-sdk's EgressClient) against confab, for
// tests/record.rs. One call per run; prints the result as JSON (an error: {"error": message}).
//
//   node egress.mjs participant ROOM IDENTITY FILEPATH
//   node egress.mjs track ROOM TRACK_SID FILEPATH
//   node egress.mjs composite ROOM          (refused: needs a renderer)
//   node egress.mjs list ROOM [active]
//   node egress.mjs stop EGRESS_ID
//
// LIVEKIT_URL (https://…), LIVEKIT_API_KEY, LIVEKIT_API_SECRET; NODE_EXTRA_CA_CERTS for the CA.
import {
  DirectFileOutput,
  EgressClient,
  EncodedFileOutput,
} from 'livekit-server-sdk';

const [cmd, ...args] = process.argv.slice(2);
const client = new EgressClient(
  process.env.LIVEKIT_URL,
  process.env.LIVEKIT_API_KEY,
  process.env.LIVEKIT_API_SECRET,
);

async function run() {
  switch (cmd) {
    case 'participant': {
      const [room, identity, filepath] = args;
      const file = new EncodedFileOutput({ filepath });
      return client.startParticipantEgress(room, identity, { file });
    }
    case 'track': {
      const [room, track, filepath] = args;
      return client.startTrackEgress(room, new DirectFileOutput({ filepath }), track);
    }
    case 'composite': {
      const file = new EncodedFileOutput({ filepath: 'x.mp4' });
      return client.startRoomCompositeEgress(args[0], { file });
    }
    case 'list':
      return client.listEgress({ roomName: args[0], active: args[1] === 'active' });
    case 'stop':
      return client.stopEgress(args[0]);
    default:
      throw new Error(`unknown command ${cmd}`);
  }
}

try {
  const r = await run();
  const json = (x) => (typeof x?.toJson === 'function' ? x.toJson() : x);
  console.log(JSON.stringify(Array.isArray(r) ? r.map(json) : json(r)));
} catch (e) {
  console.log(JSON.stringify({ error: String(e?.message ?? e), status: e?.status, code: e?.code }));
}
