//! The app crate end to end: a real bridge on an ephemeral port, real
//! WebSocket and HTTP clients, a real moto behind it (`testkit::moto()`, or
//! the shared one named by `WSBRIDGE_TEST_MOTO_URL`), the layered
//! configuration, and the `wsbridge` binary as a child process.
//!
//! One binary (tests/it), one module per area; `support` holds the helpers.

#![allow(clippy::unwrap_used, missing_docs)]

mod admin;
mod amqps;
mod brokers;
mod browser;
mod cli;
mod config;
mod config_rules;
mod control_plane;
mod credentials;
mod dev_emulator;
mod docs;
mod downlink;
mod faults;
mod http;
mod iam;
mod idle;
mod ops;
mod receipts;
mod scaleout;
mod security;
mod sharded;
mod support;
mod uplink;
