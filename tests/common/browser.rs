//! A real browser for integration tests: one headless Chromium page, driven by
//! `tests/browser/driver.mjs` (playwright-core) as a child process, whose own JavaScript talks
//! to the gateway. The test asks the page what it recorded or shows; it never touches the
//! page's WebSocket.
//!
//! Needs `node` on `PATH`, Chromium at `$CHROMIUM_BIN` (default `/usr/bin/chromium`) and
//! `tests/browser/node_modules/playwright-core` (`npm ci` in `tests/browser`); `scripts/test`
//! installs both. Without them a test skips with a line on stderr, except under `CI=true`,
//! where it fails.
//!
//! Every exchange with the driver has a timeout; a page wait that runs out fails the test with
//! the page's record (`window.rec`, see `tests/browser/tap.js`), console lines and errors.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

/// How long a page wait may take by default: longer than [`super::TIMEOUT`], because Chromium
/// shares the machine's cores with the gateway, Redis and other tests.
pub const PAGE_TIMEOUT: Duration = Duration::from_secs(20);

/// How long Chromium may take to start and load the page.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(90);

/// Extra time the driver gets to answer beyond a wait's own timeout.
const REPLY_MARGIN: Duration = Duration::from_secs(10);

/// The folder with the driver, the pages and `node_modules`.
fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// The Chromium executable: `$CHROMIUM_BIN`, else `/usr/bin/chromium`.
fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM_BIN")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// Why browser tests cannot run here, if they cannot.
fn missing() -> Option<String> {
    let chromium = chromium();
    if !chromium.is_file() {
        return Some(format!(
            "no Chromium at {} (apt-get install chromium, or set CHROMIUM_BIN)",
            chromium.display()
        ));
    }
    let node = Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        return Some("no working `node` on PATH".to_owned());
    }
    let playwright = browser_dir().join("node_modules/playwright-core/package.json");
    if !playwright.is_file() {
        return Some(format!(
            "no {} (run `npm ci` in tests/browser)",
            playwright.display()
        ));
    }
    None
}

/// True when browser tests can run. Otherwise prints a skip line and returns false, or, under
/// `CI=true`, panics: CI must never pass by skipping them.
pub fn available(test: &str) -> bool {
    let Some(why) = missing() else {
        return true;
    };
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "{test}: browser tests cannot run: {why}. Under CI=true this is a failure; \
             scripts/test installs Chromium and playwright-core."
        );
    }
    eprintln!("SKIPPED {test}: {why}; scripts/test installs Chromium and playwright-core");
    false
}

/// One page in its own headless Chromium, closed on drop.
pub struct Page {
    child: Child,
    /// Commands to the driver, one JSON line each; dropped to make it close the browser.
    stdin: Option<ChildStdin>,
    /// The driver's replies, one JSON line each, in order.
    replies: mpsc::Receiver<String>,
    /// The driver's stderr (node or Chromium trouble), for failure messages.
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Page {
    /// Serves `tests/browser/<html>` as the document at `url` (nothing is requested from that
    /// address; `location` is `url`) and opens it. Call [`available`] first.
    pub fn open(html: &str, url: &str) -> Page {
        let mut child = Command::new("node")
            .arg(browser_dir().join("driver.mjs"))
            .args([html, url])
            .env("CHROMIUM_BIN", chromium())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn node tests/browser/driver.mjs");
        let stdout = child.stdout.take().expect("driver stdout");
        let stderr = child.stderr.take().expect("driver stderr");
        let (tx, replies) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let err_log = Arc::new(Mutex::new(Vec::new()));
        let sink = err_log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut page = Page {
            stdin: child.stdin.take(),
            child,
            replies,
            stderr: err_log,
        };
        if let Err(e) = page.reply(LAUNCH_TIMEOUT) {
            panic!("opening {html} at {url}: {e}");
        }
        page
    }

    /// Waits until the JavaScript expression `expr` is truthy in the page and returns its
    /// value; fails after [`PAGE_TIMEOUT`] with the page's record.
    pub fn wait(&mut self, expr: &str) -> Value {
        self.try_wait(expr, PAGE_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Page::wait`] with its own timeout, returning the failure (with the page's record)
    /// instead of panicking, for tests that explain a failure in their own words.
    pub fn try_wait(&mut self, expr: &str, timeout: Duration) -> Result<Value, String> {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.send(json!({"op": "wait", "expr": expr, "timeout_ms": ms}));
        self.reply(timeout + REPLY_MARGIN)
    }

    /// The value of the JavaScript expression `expr` in the page now.
    pub fn eval(&mut self, expr: &str) -> Value {
        self.send(json!({"op": "eval", "expr": expr}));
        self.reply(REPLY_MARGIN).unwrap_or_else(|e| panic!("{e}"))
    }

    fn send(&mut self, cmd: Value) {
        let stdin = self.stdin.as_mut().expect("driver stdin open");
        writeln!(stdin, "{cmd}").expect("write to the browser driver");
        stdin.flush().expect("flush to the browser driver");
    }

    /// The driver's next reply: its value, or its error with the page's diagnostics.
    fn reply(&mut self, within: Duration) -> Result<Value, String> {
        let line = self.replies.recv_timeout(within).map_err(|e| {
            format!(
                "no reply from the browser driver within {within:?} ({e}); its stderr: {:?}",
                self.stderr.lock().unwrap()
            )
        })?;
        let reply: Value = serde_json::from_str(&line)
            .map_err(|e| format!("bad reply from the browser driver ({e}): {line}"))?;
        if reply["ok"] == true {
            return Ok(reply["value"].clone());
        }
        Err(format!(
            "browser: {}\n  page record: {}\n  page log: {}\n  driver stderr: {:?}",
            reply["error"].as_str().unwrap_or("?"),
            reply["rec"],
            reply["logs"],
            self.stderr.lock().unwrap()
        ))
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // EOF makes the driver close Chromium and remove its profile.
        drop(self.stdin.take());
        if super::try_wait_exit(&mut self.child, Duration::from_secs(10)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `text` as a JavaScript string literal (a JSON string is one).
pub fn js_string(text: &str) -> String {
    Value::from(text).to_string()
}
