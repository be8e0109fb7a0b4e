//! Integration tests of the AWS adapters against a real moto server
//! (`testkit::moto()`: the one named by `WSBRIDGE_TEST_MOTO_URL`, or one
//! spawned for this process).
//!
//! Every test creates its own uniquely named topics and queues, so the tests
//! run in parallel, as threads (`cargo test`) or processes (`cargo nextest`).

#![allow(clippy::unwrap_used, missing_docs)]

#[macro_use]
mod support;

mod bootstrap;
mod credentials;
mod fanout;
mod faults;
mod metrics;
mod sharded;
mod sns_sink;
mod sqs_source;
mod tools;
