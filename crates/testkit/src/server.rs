//! Finding or starting the moto server, and SDK configuration pointed at it.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_sqs::config::{Credentials, SharedHttpClient};
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};

/// The region every test client uses.
pub const TEST_REGION: &str = "us-east-1";

/// Environment variable naming an already running moto server (`http://host:port`).
const ENV_URL: &str = "WSBRIDGE_TEST_MOTO_URL";
/// Environment variable naming the moto server executable.
const ENV_BIN: &str = "MOTO_SERVER";
/// How long a moto server may take to answer `GET /moto-api/`.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts at spawning moto (another process may take the free port first).
const SPAWN_ATTEMPTS: usize = 3;

/// Kills moto (`$2`) once the test process (`$1`) is gone. Moto has no
/// "exit with parent" option, and a `Child` in a static is never dropped.
const WATCHDOG: &str = r#"parent="$1"; moto="$2"
while kill -0 "$parent" 2>/dev/null && kill -0 "$moto" 2>/dev/null; do sleep 1; done
kill "$moto" 2>/dev/null || true"#;

static MOTO: OnceLock<Moto> = OnceLock::new();

/// A running moto server (the AWS SNS/SQS emulator) on a loopback address.
///
/// Obtained with [`moto()`]; see the crate documentation for where it comes from.
/// Only the endpoint is kept: clients are built per call, on the caller's runtime.
#[derive(Debug)]
pub struct Moto {
    endpoint: String,
    spawned: Option<Spawned>,
}

/// What is known of a moto server that this process started.
#[derive(Debug)]
struct Spawned {
    pid: u32,
    log: PathBuf,
}

/// The moto server for this test process: the one named by
/// `WSBRIDGE_TEST_MOTO_URL`, or one spawned on first use on a free loopback port.
///
/// Blocks (at most 30 s) until the server answers `GET /moto-api/`; panics with
/// the command and its log if it does not. Synchronous on purpose, so it works
/// from any runtime or none; the first call from an async test briefly blocks
/// that test's thread, which is harmless.
pub fn moto() -> &'static Moto {
    MOTO.get_or_init(Moto::find_or_spawn)
}

impl Moto {
    /// The endpoint URL, e.g. `http://127.0.0.1:41234` (no trailing slash).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// True when this process spawned the server (no `WSBRIDGE_TEST_MOTO_URL`).
    pub fn is_spawned(&self) -> bool {
        self.spawned.is_some()
    }

    /// Where the output of a spawned server goes (`None` for an external one).
    pub fn log_path(&self) -> Option<&std::path::Path> {
        self.spawned.as_ref().map(|s| s.log.as_path())
    }

    /// Process id of a spawned server (`None` for an external one).
    pub fn pid(&self) -> Option<u32> {
        self.spawned.as_ref().map(|s| s.pid)
    }

    /// Environment for a child process (e.g. the `wsbridge` binary) that must
    /// talk to this moto: `AWS_ENDPOINT_URL`, `AWS_REGION` and static credentials.
    pub fn env_vars(&self) -> Vec<(&'static str, String)> {
        env_vars_at(&self.endpoint)
    }

    /// An SDK configuration for this server: region `us-east-1`, static test
    /// credentials, the endpoint URL, and an explicit rustls (ring) HTTP client
    /// (the workspace builds the SDK without its default client).
    pub async fn sdk_config(&self) -> SdkConfig {
        sdk_config_at(&self.endpoint).await
    }

    /// A new SQS client for this server.
    pub async fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.sdk_config().await)
    }

    /// A new SNS client for this server.
    pub async fn sns(&self) -> aws_sdk_sns::Client {
        aws_sdk_sns::Client::new(&self.sdk_config().await)
    }

    /// SQS and SNS clients sharing one configuration, with the test helpers.
    pub async fn aws(&self) -> crate::Aws {
        crate::Aws::new(self.sdk_config().await)
    }

    fn find_or_spawn() -> Moto {
        match std::env::var(ENV_URL) {
            Ok(url) if !url.trim().is_empty() => Self::external(url.trim()),
            _ => Self::spawn(),
        }
    }

    fn external(url: &str) -> Moto {
        let endpoint = url.trim_end_matches('/').to_owned();
        let addr = socket_addr(&endpoint)
            .unwrap_or_else(|| panic!("testkit: {ENV_URL}={url} is not an http://host:port URL"));
        let deadline = Instant::now() + START_TIMEOUT;
        while !answers(addr) {
            if Instant::now() > deadline {
                panic!(
                    "testkit: the moto server at {ENV_URL}={url} did not answer GET /moto-api/ \
                     within {START_TIMEOUT:?}"
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto {
            endpoint,
            spawned: None,
        }
    }

    fn spawn() -> Moto {
        let bin = moto_binary();
        let mut failures = Vec::new();
        for _ in 0..SPAWN_ATTEMPTS {
            let port = free_port();
            let command = format!("{bin} -H 127.0.0.1 -p {port}");
            let log = std::env::temp_dir().join(format!(
                "wsbridge-testkit-moto-{}-{port}.log",
                std::process::id()
            ));
            let mut child = start(&bin, port, &log).unwrap_or_else(|e| {
                panic!(
                    "testkit: could not run `{command}`: {e}. Run scripts/moto-venv.sh (creates \
                     .venv with moto[server]), or set {ENV_BIN} to the moto_server executable, \
                     or {ENV_URL} to a running server"
                )
            });
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            match wait_ready(addr, &mut child) {
                Ok(()) => {
                    watchdog(child.id());
                    return Moto {
                        endpoint: format!("http://127.0.0.1:{port}"),
                        spawned: Some(Spawned {
                            pid: child.id(),
                            log,
                        }),
                    };
                }
                Err(Failure::Exited(status)) => {
                    // Most likely the port was taken between probing and binding: retry.
                    failures.push(format!("`{command}` exited ({status}): {}", tail(&log)));
                }
                Err(Failure::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "testkit: `{command}` did not answer GET /moto-api/ within \
                         {START_TIMEOUT:?}; its log ({}):\n{}",
                        log.display(),
                        tail(&log)
                    );
                }
            }
        }
        panic!(
            "testkit: could not start moto after {SPAWN_ATTEMPTS} attempts:\n{}",
            failures.join("\n")
        );
    }
}

/// A moto server of one test's own, with an environment of its own (e.g.
/// `INITIAL_NO_AUTH_ACTION_COUNT`, which turns on moto's IAM checks after
/// that many requests); killed when dropped.
#[derive(Debug)]
pub struct IsolatedMoto {
    endpoint: String,
    child: Child,
    log: PathBuf,
}

impl IsolatedMoto {
    /// Spawns moto on a free loopback port with `env` added to its
    /// environment, and waits until it answers (at most 30 s; panics with
    /// its log otherwise).
    pub fn spawn(env: &[(&str, &str)]) -> Self {
        let bin = moto_binary();
        let mut failures = Vec::new();
        for _ in 0..SPAWN_ATTEMPTS {
            let port = free_port();
            let log = std::env::temp_dir().join(format!(
                "wsbridge-testkit-moto-isolated-{}-{port}.log",
                std::process::id()
            ));
            let mut child = start_with(&bin, port, &log, env)
                .unwrap_or_else(|e| panic!("testkit: could not run `{bin}`: {e}"));
            match wait_ready(SocketAddr::from(([127, 0, 0, 1], port)), &mut child) {
                Ok(()) => {
                    watchdog(child.id());
                    return Self {
                        endpoint: format!("http://127.0.0.1:{port}"),
                        child,
                        log,
                    };
                }
                Err(Failure::Exited(status)) => {
                    failures.push(format!("exited ({status}): {}", tail(&log)));
                }
                Err(Failure::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "testkit: moto did not answer within {START_TIMEOUT:?}:\n{}",
                        tail(&log)
                    );
                }
            }
        }
        panic!(
            "testkit: could not start an isolated moto:\n{}",
            failures.join("\n")
        );
    }

    /// The endpoint URL, e.g. `http://127.0.0.1:41234`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The last lines of its log, for failure messages.
    pub fn log_tail(&self) -> String {
        tail(&self.log)
    }
}

impl Drop for IsolatedMoto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// An SDK configuration for the endpoint `endpoint` (moto, or a
/// [`FaultProxy`](crate::FaultProxy) in front of it): region `us-east-1`,
/// static test credentials, and the workspace's HTTP client ([`http_client`]).
pub async fn sdk_config_at(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(TEST_REGION))
        .credentials_provider(Credentials::new("test", "test", None, None, "testkit"))
        .endpoint_url(endpoint)
        .http_client(http_client())
        .load()
        .await
}

/// Environment for a child process whose AWS calls go to `endpoint`:
/// `AWS_ENDPOINT_URL`, `AWS_REGION` and static credentials.
pub fn env_vars_at(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint.to_owned()),
        ("AWS_REGION", TEST_REGION.to_owned()),
        ("AWS_DEFAULT_REGION", TEST_REGION.to_owned()),
        ("AWS_ACCESS_KEY_ID", "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
    ]
}

/// The HTTP client every test SDK config uses: hyper 1 with rustls and the ring
/// crypto provider. Exposed so other test code building its own configuration
/// does not fall into "No HTTP client was available".
pub fn http_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// Why a spawned moto did not become ready.
enum Failure {
    Exited(ExitStatus),
    Timeout,
}

fn moto_binary() -> String {
    if let Ok(bin) = std::env::var(ENV_BIN) {
        if !bin.trim().is_empty() {
            return bin;
        }
    }
    let venv = workspace_root().join(".venv/bin/moto_server");
    if venv.is_file() {
        return venv.display().to_string();
    }
    "moto_server".to_owned()
}

pub(crate) fn workspace_root() -> PathBuf {
    // crates/testkit -> workspace root
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn free_port() -> u16 {
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .unwrap_or_else(|e| panic!("testkit: cannot bind 127.0.0.1:0 to find a free port: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("testkit: no local address for a bound socket: {e}"))
        .port()
}

fn start(bin: &str, port: u16, log: &std::path::Path) -> std::io::Result<Child> {
    start_with(bin, port, log, &[])
}

fn start_with(
    bin: &str,
    port: u16,
    log: &std::path::Path,
    env: &[(&str, &str)],
) -> std::io::Result<Child> {
    let out = File::create(log)?;
    let err = out.try_clone()?;
    // Output goes to a file, never to an inherited pipe: a test runner waits for
    // its pipes to close, and this server outlives the test by up to a second.
    Command::new(bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
}

fn watchdog(moto_pid: u32) {
    let spawned = Command::new("sh")
        .args(["-c", WATCHDOG, "testkit-moto-watchdog"])
        .arg(std::process::id().to_string())
        .arg(moto_pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    if let Err(e) = spawned {
        // Not fatal: moto would outlive the tests, but the tests still run.
        eprintln!("testkit: could not start the moto watchdog (sh): {e}; moto pid {moto_pid} may outlive this process");
    }
}

fn wait_ready(addr: SocketAddr, child: &mut Child) -> Result<(), Failure> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Failure::Exited(status));
        }
        if answers(addr) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Failure::Timeout);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// True when `GET /moto-api/` at `addr` gets an HTTP answer.
fn answers(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET /moto-api/ HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 5];
    stream.read_exact(&mut head).is_ok() && &head == b"HTTP/"
}

/// `http://host:port[/...]` to a socket address.
fn socket_addr(url: &str) -> Option<SocketAddr> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let authority = rest.split('/').next()?;
    authority.to_socket_addrs().ok()?.next()
}

/// The last lines of a log file, for panic messages.
fn tail(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(20);
    lines[start..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_addr_parses_urls() {
        assert_eq!(
            socket_addr("http://127.0.0.1:5000"),
            Some(SocketAddr::from(([127, 0, 0, 1], 5000)))
        );
        assert_eq!(
            socket_addr("http://127.0.0.1:5000/moto-api/"),
            Some(SocketAddr::from(([127, 0, 0, 1], 5000)))
        );
        assert_eq!(socket_addr("127.0.0.1:5000"), None);
    }

    #[test]
    fn nothing_answers_on_a_closed_port() {
        let port = free_port();
        assert!(!answers(SocketAddr::from(([127, 0, 0, 1], port))));
    }
}
