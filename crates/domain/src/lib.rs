//! The core of wsbridge, at the centre of the hexagon.
//!
//! It holds the message types (`ClientId`, `Command`, `ClientMessage`, the SNS
//! envelope), the ports through which the outside world is reached
//! ([`ports::CommandSource`], [`ports::EventSink`], [`ports::ClientRegistry`]),
//! and the two use cases that drive them: [`downlink::Downlink`] (Commands to
//! clients) and [`uplink::Uplink`] (client messages to the backend).
//!
//! Nothing here knows about AWS, AMQP, actix or HTTP; the adapters implement
//! the ports and the `app` crate wires them together.

pub mod acks;
pub mod client_frame;
pub mod client_id;
pub mod client_message;
pub mod command;
pub mod control;
pub mod dedup;
pub mod downlink;
pub mod envelope;
pub mod ports;
pub mod presence;
pub mod receipts;
pub mod shard;
pub mod stats;
mod text;
pub mod time;
pub mod uplink;

pub use acks::{ConfirmError, DeliveryId, PendingAcks, TakenOut, Tick};
pub use client_frame::ClientFrame;
pub use client_id::{ClientId, ClientIdError};
pub use client_message::{ClientMessage, FrameError, OutboundEvent, Reply};
pub use command::{decode_sqs_body, Command, DecodeError, DecodedCommand};
pub use control::Control;
pub use downlink::{BatchOutcome, Downlink, DownlinkSettings, RetryRule, Undeliverable};
pub use envelope::SnsEnvelope;
pub use ports::{
    AttributeValue, ClientRegistry, CommandSource, DeadLetter, EventSink, Frame, GiveUpReason,
    Handoff, InboundMessage, MessageAttribute, PublishError, Receipt, SourceError,
    DETAIL_ATTRIBUTE, REASON_ATTRIBUTE, RELEASED_ATTRIBUTE,
};
pub use presence::{Disconnect, Presence};
pub use receipts::{DeliveryReceipt, Outcome, ReceiptSink, SkipOutcome};
pub use shard::{shard_of, ShardAssignment, ShardRange, ShardRangeError, MAX_SHARDS};
pub use stats::Stats;
pub use uplink::Uplink;
