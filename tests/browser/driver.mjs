// Drives one headless Chromium page for tests/browser_clients.rs.
//
//   node tests/browser/driver.mjs PAGE.html URL
//
// Serves tests/browser/PAGE.html as the document at URL (so `location.host` is the gateway's
// address, as when weppcloud serves its pages and the microservices behind one host), with
// tap.js injected first, and opens it. Then answers one JSON line per command on stdin:
//
//   {"op":"wait","expr":"JS","timeout_ms":N}  until the expression is truthy: its value
//   {"op":"eval","expr":"JS"}                 the expression's value now
//
// Replies are one JSON line each on stdout: {"ok":true,"value":…} or {"ok":false,"error":"…"},
// an error carrying the page's record (window.rec), console lines and page errors. The first
// line is the reply to the launch and the page load. EOF on stdin closes the browser.
//
// Chromium comes from $CHROMIUM_BIN (default /usr/bin/chromium); playwright-core is never
// allowed to download a browser. Only the page URL (and `/socket.io.min.js` on its origin, the
// Socket.IO client bundle) is intercepted: WebSockets and XHRs to the gateway are real.
import { createInterface } from "node:readline";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const [pageFile, url] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM_BIN || "/usr/bin/chromium";
const logs = [];

function reply(obj) {
    process.stdout.write(JSON.stringify(obj) + "\n");
}

async function diagnostics(page) {
    let rec = null;
    try {
        rec = await page.evaluate(() => window.rec);
    } catch (e) {
        rec = `unavailable: ${e.message}`;
    }
    return { rec, logs: logs.slice(-50) };
}

const userDataDir = mkdtempSync(join(tmpdir(), "ringcast-chromium-"));
let context;
try {
    context = await chromium.launchPersistentContext(userDataDir, {
        executablePath,
        headless: true,
        timeout: 60_000,
        args: [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            // The document is fulfilled by the driver, so it has no IP address and Chromium's
            // Local Network Access checks count it as public, blocking its WebSocket to
            // loopback (ERR_BLOCKED_BY_LOCAL_NETWORK_ACCESS_CHECKS). A page really served from
            // the gateway's host would be loopback too and pass; this only undoes the artifact.
            // HttpsUpgrades: Chromium would try https:// first for a page like
            // http://vt.superdarn.org/ (an allowed Origin of the SuperDARN preset), which the
            // driver does not serve. One --disable-features flag: a second would replace it.
            "--disable-features=LocalNetworkAccessChecks,HttpsUpgrades",
        ],
    });
} catch (e) {
    rmSync(userDataDir, { recursive: true, force: true });
    reply({ ok: false, error: `launching ${executablePath}: ${e.message}` });
    process.exit(1);
}
const page = context.pages()[0] ?? (await context.newPage());
page.on("console", (m) => logs.push(`console.${m.type()}: ${m.text()}`));
page.on("pageerror", (e) => logs.push(`pageerror: ${e.message}`));
await page.addInitScript({ path: join(here, "tap.js") });
const html = readFileSync(join(here, pageFile), "utf8");
const target = new URL(url).href;
await page.route((u) => u.href === target, (route) =>
    route.fulfill({ status: 200, contentType: "text/html; charset=utf-8", body: html }),
);
// The Socket.IO client bundle, as a SuperDARN page loads it from its own origin (installed by
// scripts/test into tests/sio/node_modules).
const sioBundle = join(here, "..", "sio", "node_modules", "socket.io-client", "dist", "socket.io.min.js");
await page.route((u) => u.origin === new URL(url).origin && u.pathname === "/socket.io.min.js", (route) =>
    route.fulfill({ status: 200, contentType: "text/javascript", body: readFileSync(sioBundle, "utf8") }),
);

async function shutdown(code) {
    await context.close().catch(() => {});
    rmSync(userDataDir, { recursive: true, force: true });
    process.exit(code);
}

try {
    await page.goto(url, { waitUntil: "load", timeout: 30_000 });
    reply({ ok: true, value: null });
} catch (e) {
    reply({ ok: false, error: `opening ${url}: ${e.message}`, ...(await diagnostics(page)) });
    await shutdown(1);
}

// One command at a time, in order.
const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
    let cmd;
    try {
        cmd = JSON.parse(line);
    } catch (e) {
        reply({ ok: false, error: `bad command ${line}: ${e.message}` });
        continue;
    }
    try {
        if (cmd.op === "wait") {
            const handle = await page.waitForFunction(cmd.expr, null, {
                timeout: cmd.timeout_ms,
                polling: 20,
            });
            reply({ ok: true, value: await handle.jsonValue() });
            await handle.dispose();
        } else if (cmd.op === "eval") {
            reply({ ok: true, value: await page.evaluate(cmd.expr) });
        } else {
            reply({ ok: false, error: `unknown op ${cmd.op}` });
        }
    } catch (e) {
        reply({ ok: false, error: `${cmd.op} ${cmd.expr}: ${e.message}`, ...(await diagnostics(page)) });
    }
}
await shutdown(0);
