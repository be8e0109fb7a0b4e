//! The domain's use cases driven through mocks of their ports: the delivery
//! rules of SPEC §3 (downlink) and §4 (uplink), checked by what the ports were
//! asked to do, argument by argument.

#![allow(clippy::unwrap_used, missing_docs)]

mod downlink;
mod uplink;
