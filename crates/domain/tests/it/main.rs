//! The domain's use cases driven through mocks of their ports: the delivery
//! rules of docs/delivery.md (downlink and uplink), checked by what the ports were
//! asked to do, argument by argument. `decoders` holds the property tests of
//! the decoders of untrusted input (SQS bodies, client frames, client ids).

#![allow(clippy::unwrap_used, missing_docs)]

mod decoders;
mod downlink;
mod uplink;
