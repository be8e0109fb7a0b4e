//! The receipts the downlink records (docs/control-plane.md): one per Command outcome,
//! built only when a sink wants that outcome.

use std::time::SystemTime;

use super::{CommandInHand, Downlink};
use crate::client_id::ClientId;
use crate::receipts::{command_id, DeliveryReceipt, Outcome};

impl Downlink {
    /// Records one outcome, when receipts are on (nothing is parsed otherwise).
    pub(super) fn receipt(&self, outcome: Outcome, of: ReceiptOf<'_>) {
        let Some(receipts) = self.receipts.as_ref().filter(|r| r.wants(outcome)) else {
            return;
        };
        receipts.record(DeliveryReceipt {
            outcome,
            client_id: of.client_id.cloned(),
            message_id: of.message_id.to_owned(),
            sns_message_id: of.sns_message_id.map(str::to_owned),
            command_id: of.frame.and_then(command_id),
            connections: of.connections,
            at: SystemTime::now(),
        });
    }
}

/// What a receipt is about.
#[derive(Default)]
pub(super) struct ReceiptOf<'a> {
    pub(super) client_id: Option<&'a ClientId>,
    pub(super) message_id: &'a str,
    pub(super) sns_message_id: Option<&'a str>,
    /// The Command's JSON, for its own `id`.
    pub(super) frame: Option<&'a str>,
    pub(super) connections: Option<usize>,
}

impl<'a> ReceiptOf<'a> {
    pub(super) fn command(command: &'a CommandInHand, connections: Option<usize>) -> Self {
        Self {
            client_id: Some(&command.client_id),
            message_id: &command.message.message_id,
            sns_message_id: command.sns_message_id.as_deref(),
            frame: Some(&command.frame),
            connections,
        }
    }
}
