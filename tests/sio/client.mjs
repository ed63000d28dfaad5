// A real socket.io-client (Node) for tests/socketio_clients.rs, used the way the SuperDARN
// front-end uses it: `io(url, {transports})`, then one handler per radar event.
//
//   node client.mjs URL TRANSPORTS COUNT EVENT...
//
// TRANSPORTS: `websocket` (the documented client: `transports: ['websocket']`), `polling`
// (long-polling only) or `default` (the library's default: polling, then the upgrade).
// COUNT: exit after that many events (0: only at stdin EOF). Exits at stdin EOF in any case,
// so a test that drops the child's stdin never leaves it behind.
//
// Prints one JSON line per state change or event:
//   {"open":"polling"}            the Engine.IO handshake, on its first transport
//   {"connected":true,"transport":"polling","sid":"..."}
//   {"upgrade":"websocket"}
//   {"ping":true}                 an Engine.IO ping from the server (the client pongs it)
//   {"event":"sas","data":{...}}
//   {"connect_error":"..."}   {"disconnect":"io server disconnect"}
// Reconnection is off: a broken session must show as a line, not be papered over.

import { io } from "socket.io-client";

const [url, transports, countArg, ...events] = process.argv.slice(2);
if (!url || !transports || countArg === undefined || events.length === 0) {
  process.stderr.write("usage: node client.mjs URL websocket|polling|default COUNT EVENT...\n");
  process.exit(2);
}
const count = Number(countArg);

const options = { reconnection: false, timeout: 30000 };
if (transports === "websocket" || transports === "polling") {
  options.transports = [transports];
} else if (transports !== "default") {
  process.stderr.write(`unknown transports ${transports}\n`);
  process.exit(2);
}

const socket = io(url, options);
let received = 0;
let exiting = false;

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

function exit(code) {
  if (exiting) return;
  exiting = true;
  socket.close();
  // Exit once everything printed has reached the pipe.
  process.stdout.write("", () => process.exit(code));
}

socket.io.on("open", () => {
  out({ open: socket.io.engine.transport.name });
  socket.io.engine.on("upgrade", (transport) => out({ upgrade: transport.name }));
});
socket.io.on("ping", () => out({ ping: true }));
socket.on("connect", () => {
  out({ connected: true, transport: socket.io.engine.transport.name, sid: socket.id });
});
socket.on("connect_error", (err) => {
  out({ connect_error: String(err && err.message) });
  exit(1);
});
socket.on("disconnect", (reason) => {
  out({ disconnect: reason });
  if (!exiting) exit(1);
});
for (const name of events) {
  socket.on(name, (data) => {
    out({ event: name, data });
    received += 1;
    if (count > 0 && received >= count) exit(0);
  });
}

process.stdin.on("end", () => exit(0));
process.stdin.resume();
