//! Test support for the wsbridge workspace: a real moto server (AWS SNS/SQS
//! emulator) on a loopback port, AWS SDK clients pointed at it, unique resource
//! names, and helpers to create topics and queues and inspect what arrived.
//!
//! This crate is a dev-dependency only; nothing here is part of the product.
//!
//! # The moto server
//!
//! [`moto()`] returns the process-wide [`Moto`] handle:
//!
//! - if `WSBRIDGE_TEST_MOTO_URL` is set (as `scripts/test.sh` does: it starts ONE
//!   shared moto for the whole test run), that server is used;
//! - otherwise a moto server is spawned for this test process on a free
//!   loopback port and dies with the process (a small watchdog shell kills it
//!   within a second of the test process exiting). Under `cargo nextest`, which
//!   runs every test in its own process, that means one moto per test: slower,
//!   so prefer `scripts/test.sh`.
//!
//! The moto binary is `$MOTO_SERVER` if set, else `<workspace>/.venv/bin/moto_server`
//! if it exists (`scripts/moto-venv.sh` creates it), else `moto_server` on `PATH`.
//!
//! Only the endpoint URL is stored statically. SDK clients are built per call
//! ([`Moto::sdk_config`], [`Moto::aws`]), so they belong to the runtime of the
//! test that made them: plain `#[tokio::test]`, multi-threaded runtimes and
//! actix runtimes all work.
//!
//! # Real AWS clients
//!
//! [`tools::aws_cli`] and [`tools::python_with_boto3`] find the AWS CLI and a
//! Python with boto3 (`WSBRIDGE_TEST_AWS_CLI`, `WSBRIDGE_TEST_PYTHON`, else
//! `.venv`), for tests that drive an emulator the way users do.
//!
//! # Fault injection
//!
//! [`FaultProxy`] sits between the code under test and moto and refuses,
//! resets, black-holes, delays or answers with errors on demand, per request;
//! see the [`fault_proxy`] module.
//!
//! # TLS
//!
//! [`TlsProxy`] terminates TLS in front of a plain TCP server (RabbitMQ),
//! with a CA and certificate made at run time: the `amqps://` tests.
//!
//! # A moto of one's own
//!
//! [`IsolatedMoto::spawn`] starts a moto server for one test, with its own
//! environment (e.g. `INITIAL_NO_AUTH_ACTION_COUNT`, which turns on IAM
//! checks), killed when dropped.
//!
//! # Isolation
//!
//! Tests share one moto and run in parallel: every topic and queue must have a
//! name from [`unique_name`]. Never reset moto from a test. Moto fails a Publish
//! as a whole when the topic has a subscription to a deleted queue, so
//! unsubscribe before deleting a queue (or just leave test resources in place:
//! the server is thrown away at the end of the run).
//!
//! ```no_run
//! # async fn demo() {
//! let aws = testkit::moto().aws().await;
//! let queue = aws.create_queue(&testkit::unique_name("demo")).await;
//! aws.send(&queue.url, r#"{"client_id":"c1","command":"ping"}"#).await;
//! let got = aws.receive_at_least(&queue.url, 1, std::time::Duration::from_secs(5)).await;
//! assert_eq!(got.len(), 1);
//! # }
//! ```

mod aws;
pub mod fault_proxy;
mod names;
pub mod schemas;
mod server;
mod tls_proxy;
pub mod tools;

pub use aws::{Aws, Received, TestQueue};
/// The SDK configuration type, for crates that do not depend on `aws-config`.
pub use aws_config::SdkConfig;
pub use fault_proxy::{CannedResponse, Fault, FaultProxy, Limit, Outcome, ProxyStats, Seen};
pub use names::unique_name;
pub use server::{env_vars_at, http_client, moto, sdk_config_at, IsolatedMoto, Moto, TEST_REGION};
pub use tls_proxy::TlsProxy;
