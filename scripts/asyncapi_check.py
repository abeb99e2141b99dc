#!/usr/bin/env python3
"""Validates WebSocket frames against docs/asyncapi.yaml.

1. Every JSON example in docs/protocol.md, by its `type`, against the schema of that message in
   its direction (client requests or server messages).
2. Real frames of every server message type, from a real server this script drives over a real
   socket (HTTP_URL / WS_URL / SERVER_PID, as scripts/with-server.sh sets them): every frame it
   receives and every request it sends. It ends with SIGTERM for `server_shutdown`.

Stdlib plus PyYAML and jsonschema. Exits non-zero on the first kind of failure it finds, naming
the frame. Usage: scripts/with-server.sh python3 scripts/asyncapi_check.py
"""

import base64
import json
import os
import re
import signal
import socket
import struct
import sys
import time
import urllib.parse

import jsonschema
import referencing
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC_URI = "urn:cryptobot:asyncapi"


def load_validators():
    with open(os.path.join(ROOT, "docs", "asyncapi.yaml"), encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    resource = referencing.Resource.from_contents(doc, default_specification=referencing.jsonschema.DRAFT202012)
    registry = referencing.Registry().with_resource(DOC_URI, resource)

    def names(operation):
        refs = doc["operations"][operation]["messages"]
        return [ref["$ref"].rsplit("/", 1)[1] for ref in refs]

    validators = {}
    for direction, operation in (("client", "clientRequests"), ("server", "serverMessages")):
        for name in names(operation):
            message = doc["channels"]["gateway"]["messages"][name]["$ref"].rsplit("/", 1)[1]
            payload = doc["components"]["messages"][message]["payload"]
            schema = {"$ref": DOC_URI + payload["$ref"]}
            validators[(direction, name)] = jsonschema.Draft202012Validator(
                schema, registry=registry, format_checker=jsonschema.FormatChecker()
            )
    return validators


VALIDATORS = load_validators()
CLIENT = {name for (direction, name) in VALIDATORS if direction == "client"}
SERVER = {name for (direction, name) in VALIDATORS if direction == "server"}
assert not CLIENT & SERVER, "a type in both directions"


def errors(frame, direction):
    """The schema's complaints about one frame (empty when valid)."""
    kind = frame.get("type") if isinstance(frame, dict) else None
    validator = VALIDATORS.get((direction, kind))
    if validator is None:
        return [f"no {direction} message of type {kind!r} in docs/asyncapi.yaml"]
    return [f"{'/'.join(map(str, e.absolute_path)) or '<frame>'}: {e.message}" for e in validator.iter_errors(frame)]


def check(frame, direction, where):
    problems = errors(frame, direction)
    if problems:
        sys.exit(f"FAIL {where}: {json.dumps(frame)[:400]}\n  " + "\n  ".join(problems))


def check_protocol_examples():
    with open(os.path.join(ROOT, "docs", "protocol.md"), encoding="utf-8") as f:
        text = f.read()
    count = 0
    for block in re.findall(r"```json\n(.*?)```", text, re.S):
        for line in block.splitlines():
            if not line.strip():
                continue
            frame = json.loads(line)
            if "type" not in frame:
                continue  # an HTTP body (a refused upgrade), not a frame
            direction = "client" if frame["type"] in CLIENT else "server"
            check(frame, direction, "docs/protocol.md example")
            count += 1
    return count


class Socket:
    """A minimal RFC 6455 client: masked text frames out, unfragmented frames in."""

    def __init__(self, url, deadline=10):
        parsed = urllib.parse.urlsplit(url)
        self.sock = socket.create_connection((parsed.hostname, parsed.port), timeout=deadline)
        key = base64.b64encode(os.urandom(16)).decode()
        path = parsed.path + ("?" + parsed.query if parsed.query else "")
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: {parsed.netloc}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._read()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n")[0]:
            sys.exit(f"FAIL upgrade refused: {head[:200]!r}")
        self.sent = []

    def _read(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed")
        return chunk

    def _take(self, n):
        while len(self.buffer) < n:
            self.buffer += self._read()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def _write(self, opcode, payload):
        mask = os.urandom(4)
        header = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 65536:
            header += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def send(self, frame, valid=True):
        text = frame if isinstance(frame, str) else json.dumps(frame)
        if valid:
            check(json.loads(text), "client", "request sent")
        self._write(0x1, text.encode())

    def recv(self, timeout):
        """The next text frame as JSON, or None once the server closed."""
        self.sock.settimeout(timeout)
        while True:
            first, second = self._take(2)
            opcode, n = first & 0x0F, second & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._take(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._take(8))[0]
            payload = self._take(n)
            if opcode == 0x1:
                return json.loads(payload)
            if opcode == 0x9:
                self._write(0xA, payload)
            elif opcode == 0x8:
                return None


class Session:
    """Drives the server and validates everything it sends."""

    def __init__(self):
        self.seen = {}
        self.log = []  # (socket, frame) of every frame received, in order

    def mark(self):
        return len(self.log)

    def read(self, ws, until, limit=15, since=None):
        """Reads frames (validating each) until one satisfies `until`; returns it. With `since` (a
        mark), a frame of `ws` received since then that satisfies it counts too: an event and the
        reply of the command that caused it may come in either order."""
        if since is not None:
            for sock, frame in self.log[since:]:
                if sock is ws and until(frame):
                    return frame
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            try:
                frame = ws.recv(max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                break  # the deadline passed inside a read: the same failure, said below
            if frame is None:
                sys.exit("FAIL the server closed the connection unexpectedly")
            check(frame, "server", "real frame")
            self.seen.setdefault(frame["type"], frame)
            self.log.append((ws, frame))
            if until(frame):
                return frame
        last = [json.dumps(f)[:160] for sock, f in self.log[-200:] if sock is ws and f["type"] != "ticker_update"][-6:]
        sys.exit(f"FAIL no expected frame within {limit} s; seen so far: {sorted(self.seen)}; last frames of that socket:\n  " + "\n  ".join(last))

    def reply(self, ws, request, kind):
        ws.send(request)
        got = self.read(ws, lambda f: f.get("id") == request.get("id") and f["type"] in (kind, "error"))
        if got["type"] != kind:
            sys.exit(f"FAIL {request} was refused: {got}")
        return got


def drive_orders_and_candles(s, ws):
    """Orders (commands, replies, the orders channel), candles, and refused orders."""

    def order(oid, **fields):
        payload = {"symbol": "BTCUSDT", "side": "buy", "type": "limit", "quantity": "0.001", "price": "1000"}
        return {"type": "place_order", "id": oid, "payload": {**payload, **fields}}

    def refused(request, code, valid):
        """A request the server refuses with `code`; `valid` says whether the schema accepts it."""
        if not valid and not errors(request, "client"):
            sys.exit(f"FAIL the schema accepts an invalid request: {request}")
        ws.send(request, valid=valid)
        got = s.read(ws, lambda f: f["type"] == "error" and f.get("id") == request["id"])
        if got["code"] != code:
            sys.exit(f"FAIL expected {code} for {request}, got {got}")

    # A resting limit buy far below the market, then the orders channel: its snapshot has it.
    placed = s.reply(ws, order("o1", client_order_id="asyncapi-o1"), "order_placed")["payload"]["order"]
    if placed["status"] != "new":
        sys.exit(f"FAIL a limit buy at 1000 did not rest: {placed}")
    channels = ["orders", "candles:BTCUSDT:1m"]
    mark = s.mark()
    s.reply(ws, {"type": "subscribe", "id": "o2", "payload": {"channels": channels}}, "subscribed")
    snapshot = s.read(ws, lambda f: f["type"] == "open_orders", since=mark)
    if placed["id"] not in [o["id"] for o in snapshot["payload"]["orders"]]:
        sys.exit(f"FAIL open_orders lacks order {placed['id']}: {snapshot}")
    # The candle of the running minute: the snapshot, or the next live one within a second or two.
    s.read(ws, lambda f: f["type"] == "candle" and f["channel"] == "candles:BTCUSDT:1m", limit=10, since=mark)
    listed = s.reply(ws, {"type": "list_orders", "id": "o3", "payload": {"status": "open", "limit": 10}}, "orders")
    if placed["id"] not in [o["id"] for o in listed["payload"]["orders"]]:
        sys.exit(f"FAIL list_orders lacks order {placed['id']}: {listed}")
    mark = s.mark()
    s.reply(ws, {"type": "cancel_order", "id": "o4", "payload": {"client_order_id": "asyncapi-o1"}}, "order_canceled")
    s.read(ws, lambda f: f["type"] == "order_update" and f["payload"]["order"]["id"] == placed["id"] and f["payload"]["event"] == "canceled", since=mark)
    # A limit that crosses fills at once: order_update new, then filled (its trade on trades between).
    mark = s.mark()
    filled = s.reply(ws, order("o5", quantity="0.0001", price="1000000"), "order_placed")["payload"]["order"]
    if filled["status"] != "filled":
        sys.exit(f"FAIL a crossing limit buy did not fill: {filled}")
    s.read(ws, lambda f: f["type"] == "order_update" and f["payload"]["order"]["id"] == filled["id"] and f["payload"]["event"] == "filled", since=mark)
    # cancel_all_orders of a symbol with one open order, then with no payload and nothing open.
    s.reply(ws, order("o6"), "order_placed")
    gone = s.reply(ws, {"type": "cancel_all_orders", "id": "o7", "payload": {"symbol": "BTCUSDT"}}, "orders_canceled")
    if len(gone["payload"]["orders"]) != 1:
        sys.exit(f"FAIL cancel_all_orders did not cancel the one open order: {gone}")
    none = s.reply(ws, {"type": "cancel_all_orders", "id": "o8"}, "orders_canceled")
    if none["payload"]["orders"]:
        sys.exit(f"FAIL cancel_all_orders with nothing open canceled something: {none}")
    # Refused orders: the schema refuses the first two too; the others only the server can refuse.
    no_price = order("r1")
    del no_price["payload"]["price"]
    refused(no_price, "invalid_order", valid=False)
    refused({"type": "place_order", "id": "r2", "payload": ["BTCUSDT", "buy", "limit", "0.001", None, "1000"]}, "invalid_payload", valid=False)
    refused(order("r3", price="1000000", post_only=True), "post_only_would_cross", valid=True)
    refused({"type": "cancel_order", "id": "r4", "payload": {"order_id": 999999}}, "unknown_order", valid=True)
    refused({"type": "cancel_order", "id": "r5", "payload": {"order_id": placed["id"]}}, "order_not_open", valid=True)


def drive_controls(s, ws):
    """Runtime controls: the bot channel (snapshot, events), pause / resume, a force exit."""
    mark = s.mark()
    s.reply(ws, {"type": "subscribe", "id": "b1", "payload": {"channels": ["bot"]}}, "subscribed")
    s.read(ws, lambda f: f["type"] == "bot_state_update" and f.get("snapshot") is True, since=mark)
    for n, kind in enumerate(("resume_trading", "pause_trading")):
        mark = s.mark()
        state = s.reply(ws, {"type": kind, "id": f"b{n + 2}"}, "bot_state")["payload"]["state"]
        if state != ("paused" if kind == "pause_trading" else "running"):
            sys.exit(f"FAIL {kind} answered {state}")
    s.read(ws, lambda f: f["type"] == "bot_state_update" and f.get("snapshot") is None, since=mark)
    s.reply(ws, {"type": "manual_trade", "id": "b5", "payload": {"symbol": "SOLUSDT", "side": "buy", "amount": "50"}}, "trade_executed")
    exited = s.reply(ws, {"type": "force_exit", "id": "b6", "payload": {"symbol": "SOLUSDT", "client_order_id": "asyncapi-x1"}}, "position_exited")
    if exited["payload"]["trade"]["origin"] != "force_exit":
        sys.exit(f"FAIL a force exit's trade has another origin: {exited}")
    ws.send({"type": "force_exit", "id": "b7", "payload": {"symbol": "SOLUSDT"}})
    got = s.read(ws, lambda f: f["type"] == "error" and f.get("id") == "b7")
    if got["code"] != "no_position":
        sys.exit(f"FAIL expected no_position for a second force exit, got {got}")


def drive_the_server():
    ws_url, pid = os.environ["WS_URL"], int(os.environ["SERVER_PID"])
    s = Session()
    ws = Socket(ws_url + "?welcome=1")
    welcome = s.read(ws, lambda f: f["type"] == "welcome")
    s.reply(ws, {"type": "subscribe", "id": 1, "payload": {"channels": ["ticker:BTCUSDT", "signals"]}}, "subscribed")
    s.read(ws, lambda f: f["type"] == "ticker_update")
    s.reply(ws, {"type": "subscribe_ticker", "id": 2, "payload": {"symbol": "ETHUSDT"}}, "subscription_success")
    s.reply(ws, {"type": "unsubscribe_ticker", "id": 3, "payload": {"symbol": "ETHUSDT"}}, "unsubscription_success")
    s.reply(ws, {"type": "unsubscribe", "id": 4, "payload": {"channels": ["ticker:BTCUSDT"]}}, "unsubscribed")
    s.reply(ws, {"type": "list_subscriptions", "id": 5}, "subscriptions")
    s.reply(ws, {"type": "ping", "id": 6}, "pong")
    # The events a command causes may come before its reply (a loaded machine does that): each
    # read of them counts frames since just before the command.
    buy = {"symbol": "BTCUSDT", "side": "buy", "amount": "100", "client_order_id": "asyncapi-1"}
    mark = s.mark()
    s.reply(ws, {"type": "manual_trade", "id": 7, "payload": buy}, "trade_executed")
    trade = s.read(ws, lambda f: f["type"] == "trade_notification", since=mark)
    mark = s.mark()
    s.reply(ws, {"type": "manual_trade", "id": 8, "payload": {"symbol": "BTCUSDT", "side": "buy", "quantity": "0.001"}}, "trade_executed")
    s.read(ws, lambda f: f["type"] == "portfolio_update", since=mark)
    s.reply(ws, {"type": "update_position", "id": 9, "payload": {"symbol": "BTCUSDT", "stop_loss": "1000", "take_profit": None}}, "position_updated")
    # Refusals: the schema refuses these requests too, and the server answers with error frames.
    for bad, bad_id in (("hello", None), ({"type": "launch_rocket", "id": 10}, 10), ({"type": "subscribe", "id": 11, "payload": {"channels": ["candles:BTCUSDT:2m"]}}, 11)):
        if not isinstance(bad, str) and not errors(bad, "client"):
            sys.exit(f"FAIL the schema accepts an invalid request: {bad}")
        ws.send(bad, valid=False)
        s.read(ws, lambda f, bad_id=bad_id: f["type"] == "error" and f.get("id") == bad_id)
    drive_orders_and_candles(s, ws)
    drive_controls(s, ws)
    # A resume on a second connection replays the trade.
    ws2 = Socket(ws_url + "?welcome=1")
    s.read(ws2, lambda f: f["type"] == "welcome")
    resume = {"epoch": welcome["epoch"], "last_seq": {"trades": trade["seq"] - 1}}
    mark = s.mark()
    s.reply(ws2, {"type": "resume", "id": 1, "payload": resume}, "resumed")
    s.read(ws2, lambda f: f["type"] == "trade_notification", since=mark)
    # Signals and alerts come within seconds with the short windows of the run's settings.
    s.read(ws, lambda f: f["type"] == "signal", limit=60)
    s.read(ws, lambda f: f["type"] == "alert", limit=60)
    s.read(ws, lambda f: f["type"] == "portfolio_update" and f.get("snapshot") is True, limit=30)
    os.kill(pid, signal.SIGTERM)
    s.read(ws, lambda f: f["type"] == "server_shutdown")
    missing = SERVER - set(s.seen)
    if missing:
        sys.exit(f"FAIL server messages never received: {sorted(missing)}")
    # The check can fail: a real frame with a field removed or added is refused.
    broken = dict(s.seen["trade_notification"])
    del broken["seq"]
    extra = dict(s.seen["ticker_update"], undocumented=1)
    if not errors(broken, "server") or not errors(extra, "server"):
        sys.exit("FAIL the schemas accept a frame without seq or with an undocumented field")
    return len(s.seen)


def main():
    examples = check_protocol_examples()
    if examples < 30:
        sys.exit(f"FAIL only {examples} examples found in docs/protocol.md")
    print(f"asyncapi: {examples} docs/protocol.md examples valid")
    passed = 1
    if "WS_URL" in os.environ:
        kinds = drive_the_server()
        print(f"asyncapi: real frames of all {kinds} server message types valid")
        passed += 1
    print(f"asyncapi: {passed} passed, 0 failed")


if __name__ == "__main__":
    main()
