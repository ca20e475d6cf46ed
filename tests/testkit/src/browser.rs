//! A real browser for the dashboard's tests: headless Chromium (Debian's
//! `/usr/bin/chromium`, or `$REPOSAFE_CHROMIUM`) driven over the Chrome DevTools
//! Protocol by a small synchronous client on `tungstenite`.
//!
//! [`Browser::start`] launches Chromium with a throw-away profile and
//! `--remote-debugging-port=0`, reads the port it picked from the profile's
//! `DevToolsActivePort`, opens one page target (a flattened session) and enables the
//! `Page`, `Runtime` and `Network` domains. Then a test navigates ([`Browser::goto`]),
//! types and clicks by CSS selector (real mouse events at the element's centre, so a
//! hidden or covered element is reported rather than clicked), waits for a JavaScript
//! condition ([`Browser::wait_for`]) and saves screenshots ([`Browser::screenshot`]).
//!
//! Events are handled while waiting for answers: `confirm()`/`alert()` dialogs are
//! accepted and recorded ([`Browser::dialogs`]), uncaught exceptions and
//! `console.error` lines are kept ([`Browser::js_errors`]), and each top-level
//! document's HTTP status is kept ([`Browser::last_status`]).
//!
//! Like the rest of the testkit the helpers panic with a message naming what failed
//! (the selector, the condition, the page's URL), after saving a screenshot named
//! `<browser name>-failure-<n>`. Screenshots go to `$REPOSAFE_ARTIFACTS` when set,
//! else to `<target dir>/test-artifacts/screenshots/`. Chromium is closed (and
//! killed if it lingers) when the [`Browser`] is dropped.

use crate::TempDir;
use base64::Engine as _;
use serde_json::{json, Value};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tungstenite::{Message, WebSocket};

/// How long one DevTools command may take before the test fails.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// The default wait of [`Browser::goto`], clicks that navigate and [`Browser::wait_for`].
pub const DEFAULT_WAIT: Duration = Duration::from_secs(20);

/// One headless Chromium with one page.
pub struct Browser {
    name: String,
    child: KillOnDrop,
    ws: WebSocket<TcpStream>,
    session: String,
    next_id: u64,
    profile: TempDir,
    dialogs: Vec<String>,
    js_errors: Vec<String>,
    last_status: Option<(String, u16)>,
    failures: u32,
}

/// Where screenshots go: `$REPOSAFE_ARTIFACTS`, else `<target>/test-artifacts/screenshots`
/// (the target dir found from the running test binary, `<target>/<profile>/deps/<test>`).
pub fn artifacts_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("REPOSAFE_ARTIFACTS") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let target = exe
        .ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target"));
    target.join("test-artifacts").join("screenshots")
}

/// The Chromium binary: `$REPOSAFE_CHROMIUM`, else `/usr/bin/chromium`.
pub fn chromium_path() -> PathBuf {
    std::env::var_os("REPOSAFE_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

impl Browser {
    /// Starts headless Chromium; `name` prefixes its failure screenshots.
    pub fn start(name: &str) -> Browser {
        let profile = TempDir::new("reposafe-chromium");
        let bin = chromium_path();
        let log = std::fs::File::create(profile.path().join("chromium.log"))
            .expect("create the Chromium log file");
        let child = Command::new(&bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--password-store=basic",
                "--window-size=1280,900",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start Chromium ({}): {e}; install Debian's `chromium` or set REPOSAFE_CHROMIUM",
                    bin.display()
                )
            });
        // Killed if anything below fails, before the `Browser` that owns it exists.
        let child = KillOnDrop(child);
        let (port, path) = wait_for_port_file(profile.path());
        let stream = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("cannot connect to Chromium's DevTools port {port}: {e}"));
        let url = format!("ws://127.0.0.1:{port}{path}");
        let (ws, _) = tungstenite::client::client(url.as_str(), stream)
            .unwrap_or_else(|e| panic!("DevTools WebSocket handshake with {url} failed: {e}"));
        // Reads wake up now and then, so waits can check their deadlines.
        ws.get_ref()
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("set the DevTools socket's read timeout");
        let mut b = Browser {
            name: name.to_string(),
            child,
            ws,
            session: String::new(),
            next_id: 0,
            profile,
            dialogs: Vec::new(),
            js_errors: Vec::new(),
            last_status: None,
            failures: 0,
        };
        b.open_page();
        b
    }

    /// Creates the page target, attaches to it and enables the domains used.
    fn open_page(&mut self) {
        let created = self.browser_call("Target.createTarget", json!({"url": "about:blank"}));
        let target = created["targetId"].as_str().unwrap_or_default().to_string();
        let attached = self.browser_call(
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
        );
        self.session = attached["sessionId"]
            .as_str()
            .expect("a sessionId from Target.attachToTarget")
            .to_string();
        for domain in ["Page", "Runtime", "Network"] {
            self.call(&format!("{domain}.enable"), json!({}));
        }
    }

    /// A command to the browser itself (no session).
    fn browser_call(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, None)
    }

    /// A command to the page; returns its `result` or panics with the protocol error.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(method, params, Some(&session))
    }

    fn send(&mut self, method: &str, params: Value, session: Option<&str>) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.write(&msg);
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            assert!(
                Instant::now() < deadline,
                "DevTools command {method} got no answer in {COMMAND_TIMEOUT:?}"
            );
            let Some(m) = self.read() else { continue };
            if m["id"].as_u64() == Some(id) {
                if let Some(err) = m.get("error") {
                    panic!("DevTools command {method} failed: {err}");
                }
                return m["result"].clone();
            }
            self.on_event(&m);
        }
    }

    fn write(&mut self, msg: &Value) {
        self.ws
            .send(Message::text(msg.to_string()))
            .unwrap_or_else(|e| panic!("cannot write to Chromium's DevTools socket: {e}"));
    }

    /// The next message, or `None` after a short wait without one.
    fn read(&mut self) -> Option<Value> {
        match self.ws.read() {
            Ok(Message::Text(t)) => serde_json::from_str(t.as_str()).ok(),
            Ok(_) => None,
            Err(tungstenite::Error::Io(e))
                // A signal during the wait (EINTR) is no failure either: read again.
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                None
            }
            Err(e) => panic!("Chromium's DevTools connection failed: {e}"),
        }
    }

    /// Handles an event: dialogs accepted, errors and document statuses kept.
    fn on_event(&mut self, m: &Value) {
        let p = &m["params"];
        match m["method"].as_str().unwrap_or_default() {
            "Page.javascriptDialogOpening" => {
                self.dialogs
                    .push(p["message"].as_str().unwrap_or_default().to_string());
                self.next_id += 1;
                let reply = json!({"id": self.next_id, "method": "Page.handleJavaScriptDialog",
                    "params": {"accept": true}, "sessionId": self.session});
                self.write(&reply);
            }
            "Runtime.exceptionThrown" => {
                let d = &p["exceptionDetails"];
                let text = d["exception"]["description"]
                    .as_str()
                    .or(d["text"].as_str())
                    .unwrap_or("exception");
                self.js_errors.push(text.to_string());
            }
            "Runtime.consoleAPICalled" if p["type"] == "error" => {
                let args: Vec<String> = p["args"]
                    .as_array()
                    .map(|a| a.iter().map(|v| v["value"].to_string()).collect())
                    .unwrap_or_default();
                self.js_errors
                    .push(format!("console.error: {}", args.join(" ")));
            }
            "Network.responseReceived" if p["type"] == "Document" => {
                let r = &p["response"];
                let url = r["url"].as_str().unwrap_or_default().to_string();
                let status = r["status"].as_u64().unwrap_or(0) as u16;
                self.last_status = Some((url, status));
            }
            _ => {}
        }
    }

    /// Handles the events that arrived so far.
    fn pump(&mut self) {
        while let Some(m) = self.read() {
            self.on_event(&m);
        }
    }

    /// Evaluates `expression` in the page (promises awaited) and returns its value;
    /// panics on a JavaScript exception.
    pub fn eval(&mut self, expression: &str) -> Value {
        match self.try_eval(expression) {
            Ok(v) => v,
            Err(e) => self.fail(&format!("evaluating `{expression}`: {e}")),
        }
    }

    /// Like [`Browser::eval`], with the exception (or a destroyed context during a
    /// navigation) as an error.
    pub fn try_eval(&mut self, expression: &str) -> Result<Value, String> {
        let session = self.session.clone();
        self.next_id += 1;
        let id = self.next_id;
        let params = json!({"expression": expression, "returnByValue": true, "awaitPromise": true});
        self.write(&json!({"id": id, "method": "Runtime.evaluate", "params": params, "sessionId": session}));
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            if Instant::now() >= deadline {
                return Err(format!("no answer in {COMMAND_TIMEOUT:?}"));
            }
            let Some(m) = self.read() else { continue };
            if m["id"].as_u64() != Some(id) {
                self.on_event(&m);
                continue;
            }
            if let Some(err) = m.get("error") {
                return Err(err.to_string());
            }
            let r = &m["result"];
            if let Some(d) = r.get("exceptionDetails") {
                let text = d["exception"]["description"]
                    .as_str()
                    .or(d["text"].as_str())
                    .unwrap_or("exception");
                return Err(text.to_string());
            }
            return Ok(r["result"]["value"].clone());
        }
    }

    /// Opens `url` and waits until its document has loaded; panics on a network error.
    pub fn goto(&mut self, url: &str) {
        self.mark_document();
        let r = self.call("Page.navigate", json!({"url": url}));
        if let Some(e) = r["errorText"].as_str().filter(|e| !e.is_empty()) {
            self.fail(&format!("navigating to {url}: {e}"));
        }
        self.wait_for_new_document(&format!("the page {url}"));
    }

    /// Marks the current document, so that [`Browser::wait_for_new_document`] can tell
    /// when another one replaced it.
    fn mark_document(&mut self) {
        let _ = self.try_eval("window.__reposafeOldDocument = true");
    }

    /// Waits until a document other than the marked one has completely loaded.
    fn wait_for_new_document(&mut self, what: &str) {
        self.wait_for_timeout(
            "!window.__reposafeOldDocument && document.readyState === 'complete'",
            DEFAULT_WAIT,
            &format!("{what} to load"),
        );
    }

    /// Clicks the element `selector` with the mouse at the centre of its first box (a
    /// link wrapped over two lines: its first line), after scrolling it into view;
    /// panics when there is none or something else covers it.
    pub fn click(&mut self, selector: &str) {
        let sel = js_str(selector);
        let at = self.eval(&format!(
            "(() => {{ const el = document.querySelector({sel}); if (!el) return 'missing';
               el.scrollIntoView({{block: 'center', inline: 'center'}});
               const r = [...el.getClientRects()].find(r => r.width > 0 && r.height > 0);
               if (!r) return 'hidden';
               const x = r.left + r.width / 2, y = r.top + r.height / 2;
               const hit = document.elementFromPoint(x, y);
               if (!hit || !(hit === el || el.contains(hit) || hit.contains(el) && hit.tagName === 'LABEL')) return 'covered';
               return [x, y]; }})()"
        ));
        let (x, y) = match (&at[0], &at[1]) {
            (Value::Number(x), Value::Number(y)) => {
                (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0))
            }
            _ => {
                let why = at.as_str().unwrap_or("not clickable").to_string();
                self.fail(&format!("cannot click `{selector}`: {why}"))
            }
        };
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            );
        }
        self.pump();
    }

    /// Clicks `selector` and waits for the document it leads to (a link, a form
    /// submission and its redirects) to load.
    pub fn click_and_wait(&mut self, selector: &str) {
        self.mark_document();
        self.click(selector);
        self.wait_for_new_document(&format!("the page after clicking `{selector}`"));
    }

    /// Replaces the value of the input or textarea `selector` by typing `text`.
    pub fn type_into(&mut self, selector: &str, text: &str) {
        let sel = js_str(selector);
        let ok = self.eval(&format!(
            "(() => {{ const el = document.querySelector({sel}); if (!el) return false;
               el.scrollIntoView({{block: 'center'}}); el.focus(); el.value = '';
               el.dispatchEvent(new Event('input', {{bubbles: true}})); return true; }})()"
        ));
        if ok != Value::Bool(true) {
            self.fail(&format!("no field `{selector}` to type into"));
        }
        if !text.is_empty() {
            self.call("Input.insertText", json!({"text": text}));
        }
        self.pump();
    }

    /// Checks or unchecks the checkbox `selector` by clicking it when needed.
    pub fn set_checked(&mut self, selector: &str, checked: bool) {
        let now = self.eval(&format!(
            "document.querySelector({})?.checked ?? null",
            js_str(selector)
        ));
        match now {
            Value::Bool(b) if b == checked => {}
            Value::Bool(_) => self.click(selector),
            _ => self.fail(&format!("no checkbox `{selector}`")),
        }
    }

    /// Picks `value` in the `<select>` `selector` (firing `change`).
    pub fn select(&mut self, selector: &str, value: &str) {
        let ok = self.eval(&format!(
            "(() => {{ const el = document.querySelector({}); if (!el) return false;
               if (![...el.options].some(o => o.value === {v})) return false;
               el.value = {v}; el.dispatchEvent(new Event('change', {{bubbles: true}})); return true; }})()",
            js_str(selector),
            v = js_str(value)
        ));
        if ok != Value::Bool(true) {
            self.fail(&format!("no option {value:?} in `{selector}`"));
        }
    }

    /// Whether an element matches `selector`.
    pub fn exists(&mut self, selector: &str) -> bool {
        self.count(selector) > 0
    }

    /// How many elements match `selector`.
    pub fn count(&mut self, selector: &str) -> usize {
        let n = self.eval(&format!(
            "document.querySelectorAll({}).length",
            js_str(selector)
        ));
        n.as_u64().unwrap_or(0) as usize
    }

    /// The trimmed text of the first element matching `selector`; panics if none does.
    pub fn text(&mut self, selector: &str) -> String {
        let v = self.eval(&format!(
            "document.querySelector({})?.textContent?.trim() ?? null",
            js_str(selector)
        ));
        match v {
            Value::String(s) => s,
            _ => self.fail(&format!("no element `{selector}`")),
        }
    }

    /// The texts of every element matching `selector`.
    pub fn texts(&mut self, selector: &str) -> Vec<String> {
        let v = self.eval(&format!(
            "[...document.querySelectorAll({})].map(e => e.textContent.trim())",
            js_str(selector)
        ));
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The attribute `name` of the first element matching `selector`.
    pub fn attr(&mut self, selector: &str, name: &str) -> Option<String> {
        let v = self.eval(&format!(
            "document.querySelector({})?.getAttribute({}) ?? null",
            js_str(selector),
            js_str(name)
        ));
        v.as_str().map(String::from)
    }

    /// The page's URL.
    pub fn url(&mut self) -> String {
        self.eval("location.href")
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Waits (up to [`DEFAULT_WAIT`]) until `condition` is truthy; `what` says what
    /// the test waits for in the failure message.
    pub fn wait_for(&mut self, condition: &str, what: &str) {
        self.wait_for_timeout(condition, DEFAULT_WAIT, what);
    }

    /// Waits up to `timeout` until the JavaScript `condition` is truthy (errors while
    /// a document is being replaced count as not yet).
    pub fn wait_for_timeout(&mut self, condition: &str, timeout: Duration, what: &str) {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.try_eval(&format!("!!({condition})")) {
                Ok(Value::Bool(true)) => return,
                Ok(v) => v.to_string(),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "waited {timeout:?} for {what} (`{condition}`, last: {last})"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until an element matches `selector`.
    pub fn wait_for_selector(&mut self, selector: &str) {
        let cond = format!("document.querySelector({})", js_str(selector));
        self.wait_for(&cond, &format!("an element `{selector}`"));
    }

    /// Saves a PNG of the whole page as `<artifacts>/<name>.png` and returns its path.
    pub fn screenshot(&mut self, name: &str) -> PathBuf {
        let m = self.call("Page.getLayoutMetrics", json!({}));
        let size = &m["cssContentSize"];
        let width = size["width"].as_f64().unwrap_or(1280.0).max(1.0);
        let height = size["height"]
            .as_f64()
            .unwrap_or(900.0)
            .clamp(1.0, 10_000.0);
        let shot = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true,
                   "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}}),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap_or_default())
            .expect("a base64 PNG from Page.captureScreenshot");
        let dir = artifacts_dir();
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }

    /// The messages of the dialogs (`confirm`, `alert`) the page opened, all accepted.
    pub fn dialogs(&self) -> &[String] {
        &self.dialogs
    }

    /// Uncaught exceptions and `console.error` lines of the pages so far.
    pub fn js_errors(&mut self) -> Vec<String> {
        self.pump();
        self.js_errors.clone()
    }

    /// The URL and HTTP status of the last top-level document received.
    pub fn last_status(&mut self) -> Option<(String, u16)> {
        self.pump();
        self.last_status.clone()
    }

    /// Panics with `msg` and the page's URL, after saving a failure screenshot.
    pub fn fail(&mut self, msg: &str) -> ! {
        self.failures += 1;
        let name = format!("{}-failure-{}", self.name, self.failures);
        let url = self
            .try_eval("location.href")
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        let shot =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.screenshot(&name)))
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "none".into());
        panic!("browser: {msg} (page {url}; screenshot {shot})");
    }

    /// Chromium's own log (its stderr), for a failing test's message.
    pub fn chromium_log(&self) -> String {
        std::fs::read_to_string(self.profile.path().join("chromium.log")).unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.next_id += 1;
        let close = json!({"id": self.next_id, "method": "Browser.close", "params": {}});
        let _ = self.ws.send(Message::text(close.to_string()));
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Still running: `KillOnDrop` kills it.
    }
}

/// The Chromium process, killed (and reaped) when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Waits (up to 30 s) for Chromium to write `DevToolsActivePort` in its profile:
/// the port, then the browser target's WebSocket path.
fn wait_for_port_file(profile: &Path) -> (u16, String) {
    let file = profile.join("DevToolsActivePort");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(&file) {
            let mut lines = text.lines();
            if let (Some(Ok(port)), Some(path)) = (lines.next().map(str::parse), lines.next()) {
                return (port, path.to_string());
            }
        }
        if Instant::now() >= deadline {
            let log = std::fs::read_to_string(profile.join("chromium.log")).unwrap_or_default();
            panic!("Chromium did not open its DevTools port in 30 s; its log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// `s` as a JavaScript string literal.
fn js_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}
