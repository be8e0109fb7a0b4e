//! The wsbridge application: the one place where the domain and the
//! concrete adapters meet.
//!
//! [`config`] loads, validates and types the layered settings; [`cli`] is the
//! `wsbridge` command line, one file per subcommand; [`broker`] is the one
//! seam that turns the broker section into the domain's ports (and owns the
//! replica queue of `fanout`/`sharded` mode); [`startup::Application`] wires
//! the ports and the WebSocket adapter into the use cases and runs them with
//! the public [`routes`]; [`http_adapter`] wires the inbound HTTP adapter
//! (upgrade admission, `/ready`, `/metrics`, the admin API, JWT) to the
//! WebSocket adapter, the broker and the configuration; [`consumer`] drives
//! the command pollers. `main.rs` only parses arguments and calls
//! [`cli::run`].

pub mod broker;
pub mod cli;
pub mod config;
pub mod consumer;
mod hand_back;
pub mod http_adapter;
#[cfg(test)]
mod paced_source;
pub mod routes;
pub mod settler;
pub mod startup;
pub mod telemetry;
