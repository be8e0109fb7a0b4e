//! The wsbridge application: the one place where the domain and the
//! concrete adapters meet.
//!
//! [`config`] loads the layered settings, [`cli`] is the `wsbridge` command
//! line, [`startup::Application`] wires SQS/SNS and WebSocket adapters into
//! the use cases and runs them with the HTTP [`routes`], and [`consumer`]
//! drives the command pollers, [`auth`] verifies the tokens of `auth = "jwt"`
//! (on the ring-backed [`jwt_crypto`] provider). `main.rs` only parses
//! arguments and calls [`cli::run`].

mod amqp_cli;
pub mod auth;
pub mod broker;
pub mod cli;
pub mod config;
pub mod consumer;
pub mod effective_config;
pub mod fanout;
pub mod jwt_crypto;
pub mod metrics;
pub mod routes;
pub mod startup;
pub mod telemetry;
