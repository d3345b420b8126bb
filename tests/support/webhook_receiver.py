#!/usr/bin/env python3
"""The app's side of Entitle's webhooks, for the tests: an HTTP endpoint that verifies every
request with the official Standard Webhooks library (pip package `standardwebhooks`), the way a
real receiver would, and keeps what it received.

    webhook_receiver.py SECRET LOG_FILE [PORT]

Prints the port it listens on (PORT, or one the system picks), then serves:
  POST <any other path>   a webhook: 401 when the signature does not verify (recorded as rejected);
                          otherwise recorded, `entitlements.updated` applied when its version is
                          higher than the user's last one, and answered as the mode says
  POST /_control/mode     {"status": 200, "delay_ms": 0, "hang": false}: how to answer from now on
  GET  /_control/state    {"received": [...], "rejected": [...], "holdings": {user: data}}

Every record is also appended to LOG_FILE, and read back at start, so a receiver stopped and
started again (to play an app that was down) keeps what it had.
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

SECRET, LOG_FILE = sys.argv[1], sys.argv[2]
PORT = int(sys.argv[3]) if len(sys.argv) > 3 else 0

lock = threading.Lock()
mode = {"status": 200, "delay_ms": 0, "hang": False}
received, rejected, holdings = [], [], {}


def apply(record):
    """What an app does with `entitlements.updated`: keep the state of the highest version."""
    body = record["body"]
    if body.get("type") != "entitlements.updated":
        return False
    data = body["data"]
    current = holdings.get(data["userId"])
    if current is None or data["version"] > current["version"]:
        holdings[data["userId"]] = data
        return True
    return False


def keep(record):
    if record["verified"]:
        received.append(record)
        if record["answered"] is not None and 200 <= record["answered"] < 300:
            apply(record)
    else:
        rejected.append(record)
    with open(LOG_FILE, "a") as log:
        log.write(json.dumps(record) + "\n")


def load():
    try:
        with open(LOG_FILE) as log:
            for line in log:
                record = json.loads(line)
                if record["verified"]:
                    received.append(record)
                    if record["answered"] is not None and 200 <= record["answered"] < 300:
                        apply(record)
                else:
                    rejected.append(record)
    except FileNotFoundError:
        pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body=b""):
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path != "/_control/state":
            return self.answer(404)
        with lock:
            state = {"received": received, "rejected": rejected, "holdings": holdings}
            self.answer(200, json.dumps(state).encode())

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.path == "/_control/mode":
            with lock:
                mode.update(json.loads(raw))
            return self.answer(200, b"{}")
        headers = {k.lower(): v for k, v in self.headers.items()}
        record = {
            "path": self.path,
            "id": headers.get("webhook-id"),
            "timestamp": headers.get("webhook-timestamp"),
            "signature": headers.get("webhook-signature"),
            "contentType": headers.get("content-type"),
            "raw": raw.decode("utf-8", "replace"),
            "receivedAt": time.time(),
        }
        try:
            record["body"] = Webhook(SECRET).verify(raw, headers)
            record["verified"] = True
        except (WebhookVerificationError, ValueError) as err:
            record.update(verified=False, error=repr(err), answered=401)
            with lock:
                keep(record)
            return self.answer(401, b'{"error": "bad signature"}')
        with lock:
            hang, delay, status = mode["hang"], mode["delay_ms"], mode["status"]
            record["answered"] = None if hang else status
            keep(record)
        if hang:
            # Holds the request open until told otherwise, as a stuck app would; the sender
            # gives up (or is killed) long before.
            while True:
                with lock:
                    if not mode["hang"]:
                        break
                time.sleep(0.05)
            return
        time.sleep(delay / 1000)
        # Before the answer goes out (the sender may send its next request the moment it reads
        # it): [receivedAt, answeredAt] lies inside the sender's request, so overlapping
        # intervals here are requests the sender had open at once.
        with lock:
            record["answeredAt"] = time.time()
        self.answer(status, b'{"ok": true}' if status < 300 else b'{"error": "the receiver says no"}')


load()
server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
server.daemon_threads = True
print(server.server_address[1], flush=True)
server.serve_forever()
