//! The public routes through the crate's public surface ([`configure`],
//! [`AppState`]) against fakes of its ports: admission of upgrades, with
//! every refusal answered and counted, and the probes. The whole bridge,
//! with real WebSocket clients and brokers, is tested in the app's suite.
//!
//! [`configure`]: adapters_http::configure
//! [`AppState`]: adapters_http::AppState

#![allow(clippy::unwrap_used, missing_docs)]

mod probes;
mod support;
mod upgrade;
