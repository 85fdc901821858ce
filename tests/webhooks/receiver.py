"""A webhook receiver as a LiveKit application writes one in Python: livekit-api's
WebhookReceiver(TokenVerifier(key, secret)) checks every request before the event is believed.
Used by tests/webhooks.rs; same environment and output as receiver.mjs (WH_KEY, WH_SECRET,
WH_OUT, WH_FAIL_FIRST). Prints "PORT <n>" once listening on 127.0.0.1."""

import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from livekit import api

receiver = api.WebhookReceiver(api.TokenVerifier(os.environ["WH_KEY"], os.environ["WH_SECRET"]))
out = os.environ["WH_OUT"]
lock = threading.Lock()
fail_first = [int(os.environ.get("WH_FAIL_FIRST", "0"))]


def record(line):
    with lock:
        with open(out, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, code, text):
        body = text.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length).decode("utf-8")
        at = int(time.time() * 1000)
        with lock:
            failing = fail_first[0] > 0
            if failing:
                fail_first[0] -= 1
        if failing:
            record({"status": 500, "at": at})
            self.answer(500, "failing on purpose")
            return
        try:
            e = receiver.receive(body, self.headers.get("Authorization", ""))
        except Exception as err:  # any refusal: the test reads the reason
            record({"status": 401, "at": at, "error": str(err)})
            self.answer(401, "invalid webhook")
            return
        record({
            "status": 200,
            "at": at,
            "contentType": self.headers.get("Content-Type", ""),
            "event": e.event,
            "id": e.id,
            "room": e.room.name,
            "roomSid": e.room.sid,
            "participant": e.participant.identity,
            "track": e.track.sid,
            "numDropped": e.num_dropped,
            "createdAt": e.created_at,
        })
        self.answer(200, "ok")

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
sys.stdout.write(f"PORT {server.server_address[1]}\n")
sys.stdout.flush()
server.serve_forever()
