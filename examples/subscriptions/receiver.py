"""An example rest-hook receiver for calaim-fhir subscriptions (docs/subscriptions.md).

Run:  python examples/subscriptions/receiver.py --port 8099 --key <key from $signing-key>

It checks the ``X-Calaim-Signature`` header (HMAC-SHA256 over ``"<t>." + body``; ``t`` no
older than five minutes), answers 200 quickly, and keeps per subscription the highest event
number it has processed: a notification whose numbers it already has is a re-send (delivery
is at-least-once) and is acknowledged without processing again; a gap (a number skipped
because it arrived after a restart of this receiver, say) is filled with
``Subscription/[id]/$events``. Standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_SKEW_SECONDS = 300
processed: dict[str, int] = {}  # subscription reference -> highest event number processed


def verify(key: str, header: str | None, body: bytes) -> bool:
    if not header:
        return False
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        t = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - t) > MAX_SKEW_SECONDS:
        return False
    expected = hmac.new(key.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields.get("v1", ""))


def handle(bundle: dict[str, Any]) -> None:
    status = bundle["entry"][0]["resource"]
    params: dict[str, list[dict[str, Any]]] = {}
    for p in status["parameter"]:
        params.setdefault(p["name"], []).append(p)
    subscription = params["subscription"][0]["valueReference"]["reference"]
    kind = params["type"][0]["valueCode"]
    if kind != "event-notification":
        print(f"{subscription}: {kind}")
        return
    for event in params.get("notification-event", []):
        parts = {p["name"]: p for p in event["part"]}
        number = int(parts["event-number"]["valueString"])
        if number <= processed.get(subscription, 0):
            continue  # a re-send of what was already processed
        if number > processed.get(subscription, 0) + 1:
            print(f"{subscription}: gap before {number}: fetch it with $events")
        focus = parts.get("focus", {}).get("valueReference", {}).get("reference")
        # no focus: the server no longer lets this subscriber see the resource
        print(f"{subscription}: event {number}: {focus or '(no longer visible)'}")
        processed[subscription] = number


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--key", help="the key from Subscription/[id]/$signing-key")
    args = parser.parse_args()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if args.key and not verify(args.key, self.headers.get("X-Calaim-Signature"), body):
                self.send_response(401)
                self.end_headers()
                return
            handle(json.loads(body))
            self.send_response(200)
            self.end_headers()

    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
