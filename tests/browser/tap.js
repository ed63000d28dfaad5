// Records what a test page's WebSockets do, for tests/browser_clients.rs to read through the
// driver (driver.mjs injects this before any page script runs). It changes nothing on the wire:
// every socket is the browser's own WebSocket, with listeners added next to the page's.
//
// window.rec:
//   urls    the URL of every WebSocket the page opened, in order
//   opens   performance.now() at each `open`
//   sent    every text the page sent, in order
//   frames  every message the page received, as received (text)
//   closes  {code, reason, wasClean, at} for each `close`
"use strict";
(function () {
    const rec = { urls: [], opens: [], sent: [], frames: [], closes: [] };
    window.rec = rec;
    const Native = window.WebSocket;
    const send = Native.prototype.send;
    Native.prototype.send = function (data) {
        rec.sent.push(String(data));
        return send.call(this, data);
    };
    class TappedWebSocket extends Native {
        constructor(url, protocols) {
            super(url, protocols);
            rec.urls.push(String(url));
            this.addEventListener("open", () => rec.opens.push(performance.now()));
            this.addEventListener("message", (e) => rec.frames.push(String(e.data)));
            this.addEventListener("close", (e) =>
                rec.closes.push({
                    code: e.code,
                    reason: e.reason,
                    wasClean: e.wasClean,
                    at: performance.now(),
                }),
            );
        }
    }
    window.WebSocket = TappedWebSocket;
})();
