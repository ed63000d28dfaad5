// k6 fan-out latency test for ringcast (or the baseline gateway): VUS virtual users each open
// one WebSocket subscribed to CHANNEL, one publisher posts timestamped events to
// POST /api/publish, and every subscriber records publish-to-receive latency in the custom
// Trend metric `ws_latency`. See README.md beside this file.
//
//   k6 run loadtest/k6/fanout.js                                   # defaults below
//   k6 run -e TARGET=ws://127.0.0.1:8080 -e VUS=500 -e RATE=20 -e DURATION=30 \
//       -e P99_MS=50 loadtest/k6/fanout.js
//
// The payload is the one ringcast-loadtest sends, {"t":<ns since the UNIX epoch>,"s":<seq>,
// "p":"xx…"}, so either tool can publish for the other (PUBLISH=0 leaves publishing to
// `ringcast-loadtest run`, see README.md).

import http from 'k6/http';
import ws from 'k6/ws';
import exec from 'k6/execution';
import { check, fail } from 'k6';
import { Counter, Trend } from 'k6/metrics';

function env(name, fallback) {
  const v = __ENV[name];
  return v === undefined || v === '' ? fallback : v;
}

const TARGET = env('TARGET', 'ws://127.0.0.1:8080').replace(/\/+$/, '');
const WS_PATH = env('WS_PATH', '/ws');
const HTTP = env('HTTP', TARGET.replace(/^ws(s?):/, 'http$1:')).replace(/\/+$/, '');
const CHANNEL = env('CHANNEL', 'ch0');
const VUS = parseInt(env('VUS', '100'), 10);
const RATE = parseInt(env('RATE', '20'), 10); // events per second, all subscribers get each
const DURATION = parseFloat(env('DURATION', '20')); // seconds of publishing
const CONNECT = parseFloat(env('CONNECT', '5')); // seconds for the subscribers to connect
const DRAIN = parseFloat(env('DRAIN', '2')); // seconds subscribers stay after the last publish
const PAYLOAD_BYTES = parseInt(env('PAYLOAD_BYTES', '200'), 10);
const MAX_MS = parseFloat(env('MAX_MS', '100')); // per-event check: latency below this
const P99_MS = parseFloat(env('P99_MS', '50')); // threshold on the p99 of ws_latency
const PUBLISH = env('PUBLISH', '1') !== '0';
const API_KEY = env('API_KEY', '');

// Publish-to-receive latency in ms (time=true: k6 prints it as a duration).
const wsLatency = new Trend('ws_latency', true);
const wsEvents = new Counter('ws_events');
const wsSubscribed = new Counter('ws_subscribed');
const wsErrors = new Counter('ws_errors');
const publishErrors = new Counter('publish_errors');

const HOLD_S = CONNECT + DURATION + DRAIN;

const scenarios = {
  subscribers: {
    executor: 'per-vu-iterations',
    exec: 'subscriber',
    vus: VUS,
    iterations: 1,
    maxDuration: `${Math.ceil(HOLD_S + 30)}s`,
  },
};
if (PUBLISH) {
  scenarios.publisher = {
    executor: 'constant-arrival-rate',
    exec: 'publisher',
    rate: RATE,
    timeUnit: '1s',
    duration: `${DURATION}s`,
    startTime: `${CONNECT}s`,
    preAllocatedVUs: 2,
    maxVUs: 20,
  };
}

export const options = {
  scenarios,
  thresholds: {
    ws_latency: [`p(99)<${P99_MS}`],
    // Every event's latency check, and at least one event per subscriber.
    checks: ['rate>0.99'],
    ws_events: [`count>=${VUS}`],
    ws_errors: ['count==0'],
    publish_errors: ['count==0'],
  },
};

// ns since the UNIX epoch, as ringcast-loadtest writes it (ms resolution here).
function nowNs() {
  return Date.now() * 1e6;
}

// One subscriber: connect with ?subscribe=CHANNEL, record the latency of every event, close
// after HOLD_S seconds.
export function subscriber() {
  const url = `${TARGET}${WS_PATH}?subscribe=${encodeURIComponent(CHANNEL)}`;
  const res = ws.connect(url, null, function (socket) {
    socket.on('message', function (text) {
      const received = Date.now();
      let msg;
      try {
        msg = JSON.parse(text);
      } catch (e) {
        wsErrors.add(1);
        return;
      }
      if (msg.op === 'subscribed') {
        wsSubscribed.add(1);
        return;
      }
      if (msg.op !== undefined || msg.channel !== CHANNEL) {
        return; // pong, error or another channel
      }
      let data = msg.data;
      if (typeof data === 'string') {
        try {
          data = JSON.parse(data);
        } catch (e) {
          return; // not one of ours
        }
      }
      if (data === null || typeof data !== 'object' || typeof data.t !== 'number') {
        return;
      }
      const latencyMs = received - data.t / 1e6;
      wsEvents.add(1);
      wsLatency.add(latencyMs);
      check(latencyMs, { [`latency < ${MAX_MS} ms`]: (l) => l < MAX_MS });
    });
    socket.on('error', function (e) {
      wsErrors.add(1);
      console.error(`VU ${exec.vu.idInTest}: ${e.error ? e.error() : e}`);
    });
    socket.setTimeout(function () {
      socket.close();
    }, HOLD_S * 1000);
  });
  if (!res || res.status !== 101) {
    wsErrors.add(1);
    fail(`WebSocket upgrade failed: ${res ? res.status : 'no response'}`);
  }
}

const PADDING = 'x'.repeat(Math.max(0, PAYLOAD_BYTES - 40));
const PARAMS = {
  headers: Object.assign(
    { 'Content-Type': 'application/json' },
    API_KEY ? { Authorization: `Bearer ${API_KEY}` } : {},
  ),
  tags: { name: 'publish' },
};

// One event: POST /api/publish with {"channel":CHANNEL,"data":{"t":…,"s":…,"p":"xx…"}}.
export function publisher() {
  const seq = exec.scenario.iterationInTest;
  const body = JSON.stringify({ channel: CHANNEL, data: { t: nowNs(), s: seq, p: PADDING } });
  const res = http.post(`${HTTP}/api/publish`, body, PARAMS);
  if (res.status !== 200) {
    publishErrors.add(1);
  }
}
