// A webhook receiver as a LiveKit application writes one: livekit-server-sdk's WebhookReceiver
// checks every request (signature, sha256 of the body) before the event is believed.
// Used by tests/webhooks.rs. Environment: WH_KEY, WH_SECRET (the signing key), WH_OUT (a file:
// one JSON line per request), WH_FAIL_FIRST (answer 500 to that many requests first; default 0).
// Prints "PORT <n>" once listening on 127.0.0.1.
import { appendFileSync } from 'node:fs';
import { createServer } from 'node:http';

const sdk = await import(new URL('../browser/node_modules/livekit-server-sdk/dist/index.js', import.meta.url));
const receiver = new sdk.WebhookReceiver(process.env.WH_KEY, process.env.WH_SECRET);
const out = process.env.WH_OUT;
let failFirst = Number(process.env.WH_FAIL_FIRST || '0');

const record = (line) => appendFileSync(out, JSON.stringify(line) + '\n');

const server = createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', async () => {
    const at = Date.now();
    if (failFirst > 0) {
      failFirst -= 1;
      record({ status: 500, at });
      res.writeHead(500).end('failing on purpose');
      return;
    }
    const body = Buffer.concat(chunks).toString('utf8');
    try {
      const e = await receiver.receive(body, req.headers.authorization);
      record({
        status: 200,
        at,
        contentType: req.headers['content-type'],
        event: e.event,
        id: e.id,
        room: e.room?.name ?? '',
        roomSid: e.room?.sid ?? '',
        participant: e.participant?.identity ?? '',
        track: e.track?.sid ?? '',
        numDropped: e.numDropped ?? 0,
        createdAt: Number(e.createdAt),
      });
      res.writeHead(200).end('ok');
    } catch (err) {
      record({ status: 401, at, error: String(err) });
      res.writeHead(401).end('invalid webhook');
    }
  });
});
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`PORT ${server.address().port}\n`);
});
