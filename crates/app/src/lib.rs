//! The wsbridge application: the one place where the domain and the
//! concrete adapters meet.
//!
//! [`config`] loads the layered settings, [`cli`] is the `wsbridge` command
//! line, [`startup::Application`] wires SQS/SNS and WebSocket adapters into
//! the use cases and runs them with the HTTP [`routes`] (which learn the
//! broker adapters' readiness and metrics from [`broker_status`]), and [`consumer`]
//! drives the command pollers, [`auth`] verifies the tokens of `auth = "jwt"`
//! (on the ring-backed [`jwt_crypto`] provider), [`replica`] owns the queue
//! of a `fanout` or `sharded` replica and [`shards`] prints a sharded fleet's
//! load-balancer configuration. `main.rs` only parses
//! arguments and calls [`cli::run`].

mod amqp_cli;
mod amqp_readiness;
pub mod auth;
pub mod broker;
pub mod broker_status;
pub mod cli;
pub mod config;
pub mod consumer;
pub mod effective_config;
pub mod jwt_crypto;
pub mod metrics;
pub mod replica;
pub mod routes;
pub mod shards;
pub mod startup;
pub mod telemetry;
