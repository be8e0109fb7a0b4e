//! Integration tests of the AMQP adapters against a real RabbitMQ: the one
//! at `WSBRIDGE_TEST_AMQP_URL`, by default `amqp://guest:guest@127.0.0.1:5672/%2f`
//! (start it with `rabbitmq-server -detached`). The reconnection tests also
//! use `rabbitmqctl`, which comes with the broker.
//!
//! Every test declares its own uniquely prefixed queues and exchanges
//! (`wsbt.<test>.<random>`) and deletes them when it ends, so the tests run
//! in parallel, as threads or processes, beside anything else on the broker.

#![allow(clippy::unwrap_used, missing_docs)]

mod bootstrap;
mod metrics;
mod receipt_sink;
mod reconnect;
mod sink;
mod source;
mod support;
mod tools;
