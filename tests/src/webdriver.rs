//! A real headless Chromium driven over W3C WebDriver: the tests start
//! Debian's `chromedriver` on a free port and speak its JSON protocol with
//! the HTTP client the tests already use (only plain HTTP to localhost is
//! needed, so no WebDriver crate with its TLS stack is pulled in).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::{TestDir, eventually, free_port};

/// The W3C key of an element in a WebDriver answer.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Where the browser and its driver are (Debian's packages).
pub fn chromium() -> PathBuf {
    std::env::var_os("HOOKMESH_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

pub fn chromedriver() -> PathBuf {
    std::env::var_os("HOOKMESH_CHROMEDRIVER")
        .map_or_else(|| PathBuf::from("/usr/bin/chromedriver"), PathBuf::from)
}

/// A browser session; the driver and the browser end with it.
#[derive(Debug)]
pub struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`
    session: String,
    driver: Child,
    profile: TestDir,
}

/// An element of the page, by its WebDriver reference.
#[derive(Debug, Clone)]
pub struct Element(String);

fn value_of(answer: Value) -> Result<Value, String> {
    let value = answer.get("value").cloned().unwrap_or(Value::Null);
    match value.get("error").and_then(Value::as_str) {
        Some(error) => Err(format!(
            "{error}: {}",
            value.get("message").and_then(Value::as_str).unwrap_or("")
        )),
        None => Ok(value),
    }
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a fresh profile.
    pub async fn start() -> Self {
        let port = free_port();
        let driver = Command::new(chromedriver())
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver runs (apt-get install chromium-driver)");
        let http = hookmesh_runtime::http::client_builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        eventually(Duration::from_secs(20), "chromedriver to listen", || {
            let http = http.clone();
            let status = format!("{base}/status");
            async move { http.get(status).send().await.ok() }
        })
        .await;
        let profile = TestDir::new("chromium-profile");
        let args = [
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-quic".to_owned(),
            "--no-proxy-server".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--window-size=1280,900".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium(), "args": args},
        }}});
        let answer: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let value = value_of(answer).expect("a Chromium session starts");
        let id = value["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        Self {
            http,
            session: format!("{base}/session/{id}"),
            driver,
            profile,
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> Result<Value, String> {
        let request = self
            .http
            .request(method.clone(), format!("{}{path}", self.session));
        let request = if method == reqwest::Method::GET {
            request
        } else {
            request.json(&body)
        };
        let answer: Value = request
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        value_of(answer)
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, body)
            .await
            .unwrap_or_else(|error| panic!("WebDriver {path}: {error}"))
    }

    async fn get(&self, path: &str) -> Value {
        self.call(reqwest::Method::GET, path, Value::Null)
            .await
            .unwrap_or_else(|error| panic!("WebDriver {path}: {error}"))
    }

    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    pub async fn current_url(&self) -> String {
        self.get("/url")
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub async fn title(&self) -> String {
        self.get("/title")
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub async fn set_size(&self, width: u32, height: u32) {
        self.post("/window/rect", json!({"width": width, "height": height}))
            .await;
    }

    /// Every element `css` selects, now.
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        let found = self
            .post("/elements", json!({"using": "css selector", "value": css}))
            .await;
        found
            .as_array()
            .map(|elements| {
                elements
                    .iter()
                    .filter_map(|e| e[ELEMENT].as_str().map(|id| Element(id.to_owned())))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The first element `css` selects, waiting up to 10 s for it.
    pub async fn find(&self, css: &str) -> Element {
        self.wait_for(css, Duration::from_secs(10)).await
    }

    pub async fn wait_for(&self, css: &str, timeout: Duration) -> Element {
        eventually(timeout, &format!("an element {css:?}"), || async {
            self.find_all(css).await.into_iter().next()
        })
        .await
    }

    pub async fn click(&self, element: &Element) {
        self.post(&format!("/element/{}/click", element.0), json!({}))
            .await;
    }

    /// Replaces the control's value with `text`, as typed.
    pub async fn fill(&self, element: &Element, text: &str) {
        self.post(&format!("/element/{}/clear", element.0), json!({}))
            .await;
        self.post(
            &format!("/element/{}/value", element.0),
            json!({ "text": text }),
        )
        .await;
    }

    pub async fn text(&self, element: &Element) -> String {
        self.get(&format!("/element/{}/text", element.0))
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub async fn attribute(&self, element: &Element, name: &str) -> Option<String> {
        self.get(&format!("/element/{}/attribute/{name}", element.0))
            .await
            .as_str()
            .map(str::to_owned)
    }

    /// Runs `script` in the page (synchronously) and returns its value.
    pub async fn execute(&self, script: &str, args: Value) -> Value {
        self.post("/execute/sync", json!({"script": script, "args": args}))
            .await
    }

    /// Runs `script`, whose last argument is the callback to call with the result.
    pub async fn execute_async(&self, script: &str, args: Value) -> Value {
        self.post("/execute/async", json!({"script": script, "args": args}))
            .await
    }

    pub async fn set_script_timeout(&self, timeout: Duration) {
        self.post("/timeouts", json!({"script": timeout.as_millis() as u64}))
            .await;
    }

    /// A PNG of the visible page, written to `path`.
    pub async fn screenshot(&self, path: &Path) {
        use base64::Engine as _;
        let png = self.get("/screenshot").await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap_or_default())
            .expect("a base64 PNG");
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(path, bytes).unwrap();
    }

    /// Ends the session (and the browser), then the driver.
    pub async fn quit(mut self) {
        let _ = self.http.delete(&self.session).send().await;
        let _ = self.driver.kill().await;
    }
}

impl Drop for Browser {
    /// A test that fails before [`Browser::quit`] leaves no Chromium behind:
    /// killing the driver alone would orphan the browser it started, so
    /// every process of this browser's profile goes.
    fn drop(&mut self) {
        let _ = self.driver.start_kill();
        let _ = std::process::Command::new("pkill")
            .arg("-KILL")
            .arg("-f")
            .arg("--")
            .arg(format!("--user-data-dir={}", self.profile.path().display()))
            .status();
    }
}
