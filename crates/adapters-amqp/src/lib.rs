//! AMQP 0-9-1 (RabbitMQ) adapters of wsbridge, on the outer ring of the
//! hexagon beside `adapters-aws`: the same ports, another broker, chosen by
//! configuration in the `app` crate. Nothing here knows about AWS or
//! WebSockets, and the domain knows nothing of AMQP.
//!
//! - [`AmqpCommandSource`] implements `domain::CommandSource` over a durable
//!   queue: manual acknowledgements, prefetch (`basic.qos`) as the
//!   flow-control knob, given-up messages copied with their reason to the
//!   queue's dead-letter exchange, releases with a delay through a TTL
//!   delay queue.
//! - [`AmqpEventSink`] implements `domain::EventSink` over an exchange, with
//!   publisher confirms: `publish` returns once the broker has the event.
//! - [`AmqpReceiptSink`] implements `domain::ReceiptSink` over a topic
//!   exchange (routing key = outcome): recording never waits, a background
//!   task publishes with confirms and retries, `flush` at shutdown.
//! - [`bootstrap`] declares exchanges, queues and bindings, idempotently.
//! - [`tools`] backs `wsbridge send-command` and `wsbridge monitor`.
//!
//! Both sinks publish through one core (`confirmed.rs`). The source and
//! each sink own one connection, kept by the same connection supervisor
//! (`supervisor.rs`), which reconnects with backoff after the broker
//! restarts or the network drops and reopens a channel the broker closed;
//! while it is down they answer `Unavailable` (so `/ready` says 503), and
//! the broker redelivers whatever was not acknowledged.
//!
//! [`AmqpMetrics`] counts what they do at the broker (errors, acks,
//! reconnects, call latencies) and says why the bridge is not ready; the
//! app creates it, hands it to each (`spawn_with_metrics`) and exports it.
//!
//! `amqp://` and `amqps://` (TLS through rustls on `ring`, the system's
//! root certificates plus an optional CA file: [`AmqpUrl::with_ca_file`]),
//! so managed brokers (Amazon MQ for RabbitMQ, CloudAMQP) work.

mod backoff;
pub mod bootstrap;
mod confirmed;
mod link;
mod metrics;
mod receipt;
mod receipt_sink;
mod sink;
mod source;
mod supervisor;
pub mod tools;
mod url;

pub use backoff::Reconnect;
pub use metrics::AmqpMetrics;
pub use receipt_sink::{AmqpReceiptSettings, AmqpReceiptSink};
pub use sink::{AmqpEventSink, AmqpSinkSettings};
pub use source::{
    AmqpCommandSource, AmqpSourceSettings, ReleaseDelay, FIRST_RECEIVED_HEADER,
    RECEIVE_COUNT_HEADER,
};
pub use url::{AmqpUrl, InvalidAmqpUrl, InvalidCaFile};
