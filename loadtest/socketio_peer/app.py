"""The SuperDARN real-time server's Socket.IO stack, as the peer of `ringcast-loadtest socketio`.

The original (vtsuperdarn rt-data-sockets, docs COMPAT.md section 5) is a Flask app with
Flask-SocketIO, run as `gunicorn -k eventlet -w 1`, that emits one event per radar record to
every client: `socketio.emit(site, data)` from an eventlet background task. This peer is that
stack with the radar feeds replaced by an HTTP route, so that the load test publishes to it
exactly as it publishes to ringcast:

- `POST /api/publish` with `{"channel": "<site>", "data": {...}}`: `socketio.emit(channel,
  data)` to every client of the default namespace (python-socketio encodes the packet once
  and queues it to each client), then 200 `{"ok": true}`.
- `GET /metrics`: `eio_sessions <open Engine.IO sessions>`, so the load test can wait until
  the server has every client.

The Socket.IO settings are the original's: async_mode eventlet, the library's heartbeat
defaults (pingInterval 25 s, pingTimeout 20 s), and its fixed `cors_allowed_origins` list
(clients that send no Origin, as the load test's, are accepted).

Run (as loadtest/socketio.sh does):

    gunicorn -k eventlet -w 1 --worker-connections 12000 --bind 127.0.0.1:PORT \
        --chdir loadtest/socketio_peer app:app
"""

from flask import Flask, Response, jsonify, request
from flask_socketio import SocketIO

ORIGINS = [
    "http://localhost:5002",
    "http://127.0.0.1:5002",
    "http://localhost",
    "http://127.0.0.1",
    "http://vt.superdarn.org",
    "http://vt.superdarn.org:80",
    "http://vt.superdarn.org:81",
    "http://superdarn.org",
    "http://superdarn.org:80",
    "http://superdar.org:81",
]

app = Flask(__name__)
socketio = SocketIO(app, async_mode="eventlet", cors_allowed_origins=ORIGINS)


@app.post("/api/publish")
def publish():
    body = request.get_json(force=True)
    socketio.emit(body["channel"], body["data"])
    return jsonify(ok=True)


@app.get("/metrics")
def metrics():
    sessions = len(socketio.server.eio.sockets)
    return Response(f"eio_sessions {sessions}\n", mimetype="text/plain")
