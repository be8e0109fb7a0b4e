//! AMQP 0-9-1 (RabbitMQ) adapters of wsbridge, on the outer ring of the
//! hexagon beside `adapters-aws`: the same ports, another broker, chosen by
//! configuration in the `app` crate. Nothing here knows about AWS or
//! WebSockets, and the domain knows nothing of AMQP.
//!
//! - [`AmqpCommandSource`] implements `domain::CommandSource` over a durable
//!   queue: manual acknowledgements, prefetch (`basic.qos`) as the
//!   flow-control knob, rejects dead-lettered through the queue's
//!   dead-letter exchange, releases with a delay through a TTL delay queue.
//! - [`AmqpEventSink`] implements `domain::EventSink` over an exchange, with
//!   publisher confirms: `publish` returns once the broker has the event.
//! - [`bootstrap`] declares exchanges, queues and bindings, idempotently.
//! - [`tools`] backs `wsbridge send-command` and `wsbridge monitor`.
//!
//! Source and sink each own one connection, kept by a supervisor task that
//! reconnects with backoff after the broker restarts or the network drops;
//! while it is down they answer `Unavailable` (so `/ready` says 503), and
//! the broker redelivers whatever was not acknowledged.
//!
//! Plain `amqp://` only: lapin is built without a TLS stack (see the root
//! `Cargo.toml`).

pub mod bootstrap;
mod link;
mod receipt;
mod sink;
mod source;
pub mod tools;

pub use link::{AmqpUrl, InvalidAmqpUrl, Reconnect};
pub use sink::{AmqpEventSink, AmqpSinkSettings};
pub use source::{
    AmqpCommandSource, AmqpSourceSettings, ReleaseDelay, FIRST_RECEIVED_HEADER,
    RECEIVE_COUNT_HEADER,
};
