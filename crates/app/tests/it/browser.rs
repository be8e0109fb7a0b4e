//! The demo page in a real browser: headless Chromium driven over WebDriver
//! (chromedriver + fantoccini). A person's path through it: connect with a
//! client id, watch Commands sent with `wsbridge send-command` arrive (newest
//! first, with their time), press the button, see the ack — and the
//! ClientMessage arrives on a queue subscribed to the events topic with the
//! right `client_id` attribute. A screenshot is kept in
//! `target/test-artifacts/demo-page.png`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (scripts/test.sh and
//! .ci/run install them with apt when they can). Elsewhere point
//! `WSBRIDGE_CHROME` and `WSBRIDGE_CHROMEDRIVER` at a Chrome/Chromium and a
//! matching chromedriver. Without them the test FAILS, saying so: it is not
//! skipped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use tokio::process::{Child, Command};

use crate::cli::{describe, run, text, with_moto, wsbridge};
use crate::support::{client_id, Env, TempDir, PATIENCE};

/// Chromium flags for this machine: no sandbox (root), no GPU, and no
/// background traffic to Google's hosts (the network is closed).
const CHROME_FLAGS: [&str; 9] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1100,1000",
];

/// An executable named by `variable`, else the first of `names` on PATH.
pub(crate) fn find_executable(variable: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(variable).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

fn browser_and_driver() -> (PathBuf, PathBuf) {
    let chrome = find_executable(
        "WSBRIDGE_CHROME",
        &["chromium", "chromium-browser", "google-chrome"],
    );
    let driver = find_executable("WSBRIDGE_CHROMEDRIVER", &["chromedriver"]);
    match (chrome, driver) {
        (Some(chrome), Some(driver)) => (chrome, driver),
        (chrome, driver) => panic!(
            "the demo page test needs a headless Chromium and its chromedriver \
             (found chromium: {chrome:?}, chromedriver: {driver:?}). Install Debian's \
             packages: `apt-get install chromium chromium-driver` (scripts/test.sh does it \
             when it can), or set WSBRIDGE_CHROME and WSBRIDGE_CHROMEDRIVER."
        ),
    }
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// chromedriver on a free loopback port, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    async fn start(driver: &Path, log: &Path) -> Self {
        let port = free_port();
        let log_file = std::fs::File::create(log).unwrap();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver.display()));
        let url = format!("http://127.0.0.1:{port}");
        let status = format!("{url}/status");
        let deadline = Instant::now() + PATIENCE;
        loop {
            let ready = async {
                let body: Value = reqwest::get(&status).await.ok()?.json().await.ok()?;
                body["value"]["ready"].as_bool()
            };
            if ready.await == Some(true) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer on {status} within {PATIENCE:?}; its log: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self { child, url }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Where test artifacts (the screenshot, chromedriver's log) are kept.
fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The text of every `li` of the list `id`, top first.
async fn items(page: &Client, list: &str) -> Vec<String> {
    let mut out = Vec::new();
    for li in page
        .find_all(Locator::Css(&format!("#{list} li")))
        .await
        .unwrap()
    {
        out.push(li.text().await.unwrap());
    }
    out
}

/// Polls the list `id` until `check` holds on its items; returns them.
async fn wait_for_items(
    page: &Client,
    list: &str,
    what: &str,
    check: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let now = items(page, list).await;
        if check(&now) {
            return now;
        }
        if Instant::now() >= deadline {
            let status = page
                .find(Locator::Id("status"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap_or_default();
            panic!("timed out waiting for {what} in #{list}: {now:?} (status: {status})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `wsbridge send-command` (the real binary) for `command`.
async fn send_command(env: &Env, dir: &TempDir, command: &Value) {
    let mut child = wsbridge(dir.path());
    with_moto(&mut child);
    child
        .env("BRIDGE_COMMAND_QUEUE_URL", &env.infra.command_queue_url)
        .args(["send-command", &command.to_string()]);
    let output = run(child).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert!(
        !text(&output.stdout).trim().is_empty(),
        "no message id printed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_connects_shows_commands_and_publishes_with_the_button() {
    let (chrome, driver_path) = browser_and_driver();
    let env = Env::new(5).await;
    let observer = env.events_observer().await;
    let bridge = env.bridge(|_| {}).await;
    bridge.wait_until_polling().await;

    let artifacts = artifacts();
    let driver = Driver::start(&driver_path, &artifacts.join("chromedriver.log")).await;
    let profile = TempDir::new("chromium-profile");
    let mut args: Vec<String> = CHROME_FLAGS.iter().map(|f| (*f).to_owned()).collect();
    args.push(format!("--user-data-dir={}", profile.path().display()));
    let capabilities = json!({
        "goog:chromeOptions": {"binary": chrome, "args": args},
    });
    let Value::Object(capabilities) = capabilities else {
        unreachable!("a JSON object literal")
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let page = ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .unwrap_or_else(|e| panic!("starting {} through chromedriver: {e}", chrome.display()));

    let outcome = drive(&page, &env, &bridge, &observer).await;
    // The screenshot is taken whatever happened, then the browser closed.
    let shot = page.screenshot().await;
    let _ = page.close().await;
    drop(driver);
    let png = shot.expect("taking a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    std::fs::write(artifacts.join("demo-page.png"), &png).unwrap();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    bridge.stop().await;
}

/// The person's path through the page; a failure is returned (not raised)
/// so the caller still takes the screenshot.
async fn drive(
    page: &Client,
    env: &Env,
    bridge: &crate::support::Bridge,
    observer: &testkit::TestQueue,
) -> Result<(), Box<dyn std::any::Any + Send>> {
    use futures_util::FutureExt;
    let id = client_id("browser");
    let dir = TempDir::new("browser-cli");
    std::panic::AssertUnwindSafe(async {
        page.goto(&bridge.http("/")).await.unwrap();
        assert_eq!(page.title().await.unwrap(), "wsbridge demo");

        // Connect as `id`.
        let input = page.find(Locator::Id("client-id")).await.unwrap();
        input.clear().await.unwrap();
        input.send_keys(&id).await.unwrap();
        page.find(Locator::Id("connect"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let status = page.find(Locator::Id("status")).await.unwrap();
        let deadline = Instant::now() + PATIENCE;
        loop {
            let text = status.text().await.unwrap();
            if text.starts_with("connected") {
                assert!(text.contains(&id), "{text}");
                break;
            }
            assert!(Instant::now() < deadline, "not connected: {text}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        // Two Commands through the real binary: each appears, newest first,
        // with its time.
        let first = json!({"client_id": id, "command": "first-from-cli", "data": {"n": 1}});
        send_command(env, &dir, &first).await;
        wait_for_items(page, "commands", "the first Command", |items| {
            items.iter().any(|i| i.contains("first-from-cli"))
        })
        .await;
        let second = json!({"client_id": id, "command": "second-from-cli"});
        send_command(env, &dir, &second).await;
        let shown = wait_for_items(page, "commands", "the second Command", |items| {
            items.len() == 2
        })
        .await;
        assert!(
            shown[0].contains("second-from-cli"),
            "newest first: {shown:?}"
        );
        assert!(shown[1].contains("first-from-cli"), "{shown:?}");
        assert!(
            shown[1].contains("\"data\":{\"n\":1}"),
            "the whole Command: {shown:?}"
        );
        let times = page
            .find_all(Locator::Css("#commands li time"))
            .await
            .unwrap();
        assert_eq!(times.len(), 2);
        for time in times {
            let text = time.text().await.unwrap();
            assert!(
                text.chars().any(|c| c.is_ascii_digit()),
                "no time: {text:?}"
            );
        }

        // The button publishes a ClientMessage; the page shows the ack.
        let action = page.find(Locator::Id("action")).await.unwrap();
        action.clear().await.unwrap();
        action
            .send_keys("button_clicked_in_chromium")
            .await
            .unwrap();
        page.find(Locator::Id("send"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        // It reached the events topic with the connection's client id.
        let received = env.aws.receive_at_least(&observer.url, 1, PATIENCE).await;
        assert_eq!(received.len(), 1, "{received:?}");
        let attributes = received[0].published_attributes();
        assert_eq!(attributes.get("client_id"), Some(&id), "{attributes:?}");
        assert_eq!(
            attributes.get("action").map(String::as_str),
            Some("button_clicked_in_chromium")
        );
        let message: Value = serde_json::from_str(&received[0].payload()).unwrap();
        assert_eq!(message["client_id"], id.as_str());
        assert_eq!(message["action"], "button_clicked_in_chromium");
        assert_eq!(message["data"], json!({"hello": "world"}));
        // The SDK chose the message's id; the page shows the bridge's ack of it.
        let message_id = message["id"].as_str().expect("an id").to_owned();
        wait_for_items(page, "replies", "the ack", |items| {
            items
                .iter()
                .any(|i| i.contains(&format!("ack {message_id}")))
        })
        .await;
    })
    .catch_unwind()
    .await
}
