"""A real python-socketio 5.x client for tests/socketio_clients.rs, used the way the SuperDARN
third-party note uses it: ``sio.on("<abbr>")`` handlers, then ``sio.connect(url)``.

    python client.py URL TRANSPORTS COUNT EVENT...

TRANSPORTS: ``websocket`` (``transports=['websocket']``) or ``default`` (the library's default:
polling, then the upgrade, which python-engineio attempts inside ``connect``). COUNT: exit after
that many events (0: only at stdin EOF). Exits at stdin EOF in any case.

Prints one JSON line per state change or event, as tests/sio/client.mjs does:
    {"open":"polling"}            the Engine.IO handshake (from python-engineio's own log)
    {"upgrade":"websocket"}       python-engineio's "WebSocket upgrade was successful"
    {"ping":true}                 an Engine.IO ping from the server (the client pongs it)
    {"connected":true,"transport":"websocket","sid":"..."}
    {"event":"sas","data":{...}}
    {"connect_error":"..."}   {"disconnect":true}   {"upgrade_failed":"..."}
Reconnection is off: a broken session must show as a line, not be papered over.
"""

import json
import logging
import os
import sys
import threading

import socketio

_lock = threading.Lock()


def out(obj):
    line = json.dumps(obj, separators=(",", ":")) + "\n"
    with _lock:
        sys.stdout.write(line)
        sys.stdout.flush()


class EngineLog(logging.Handler):
    """Turns python-engineio's transport log lines into JSON lines (it has no events for them)."""

    MESSAGES = (
        ("Polling connection accepted", {"open": "polling"}),
        ("WebSocket connection accepted", {"open": "websocket"}),
        ("WebSocket upgrade was successful", {"upgrade": "websocket"}),
        ("Received packet PING", {"ping": True}),
    )

    def emit(self, record):
        msg = record.getMessage()
        for prefix, obj in self.MESSAGES:
            if msg.startswith(prefix):
                out(obj)
                return
        if msg.startswith("WebSocket upgrade failed"):
            out({"upgrade_failed": msg})


def main():
    if len(sys.argv) < 5 or sys.argv[2] not in ("websocket", "default"):
        sys.stderr.write("usage: python client.py URL websocket|default COUNT EVENT...\n")
        return 2
    url, transports, count, events = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]

    engine_log = logging.getLogger("ringcast-test-engineio")
    engine_log.setLevel(logging.INFO)
    engine_log.propagate = False
    engine_log.addHandler(EngineLog())
    sio = socketio.Client(reconnection=False, engineio_logger=engine_log, request_timeout=30)

    done = threading.Event()
    state = {"received": 0, "code": 0}

    @sio.event
    def connect():
        out({"connected": True, "transport": sio.transport(), "sid": sio.sid})

    @sio.event
    def disconnect(*_reason):
        out({"disconnect": True})
        if not done.is_set():
            state["code"] = 1
            done.set()

    def handler(name):
        def on_event(data):
            out({"event": name, "data": data})
            state["received"] += 1
            if 0 < count <= state["received"]:
                done.set()

        return on_event

    for name in events:
        sio.on(name, handler(name))

    def stdin_eof():
        sys.stdin.read()
        done.set()

    threading.Thread(target=stdin_eof, daemon=True).start()

    try:
        sio.connect(
            url,
            transports=["websocket"] if transports == "websocket" else None,
            wait_timeout=30,
        )
    except socketio.exceptions.ConnectionError as e:
        out({"connect_error": str(e)})
        return 1
    done.wait()
    code = state["code"]
    sio.disconnect()
    return code


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    # python-socketio's background threads must not keep a finished client alive.
    os._exit(code)
