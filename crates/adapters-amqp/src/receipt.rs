//! The receipt token of an AMQP delivery: `amqp:<generation>:<tag>`.
//!
//! A delivery tag only means something on the channel that delivered it, and
//! tags restart at 1 on every new channel. The generation numbers the
//! source's consuming channels (one per (re)connection), so a tag handed out
//! by a channel that has since died is recognised as stale and never acked,
//! nacked or rejected on its successor, where it would name another message.

use domain::Receipt;

const PREFIX: &str = "amqp:";

/// Where a delivery came from: which consuming channel, which tag on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct DeliveryRef {
    pub(crate) generation: u64,
    pub(crate) tag: u64,
}

impl DeliveryRef {
    pub(crate) fn receipt(self) -> Receipt {
        Receipt::new(format!("{PREFIX}{}:{}", self.generation, self.tag))
    }

    pub(crate) fn parse(receipt: &Receipt) -> Option<Self> {
        let rest = receipt.token().strip_prefix(PREFIX)?;
        let (generation, tag) = rest.split_once(':')?;
        Some(Self {
            generation: generation.parse().ok()?,
            tag: tag.parse().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_foreign_tokens() {
        let delivery = DeliveryRef {
            generation: 3,
            tag: 18_446_744_073_709_551_615,
        };
        let receipt = delivery.receipt();
        assert_eq!(receipt.token(), "amqp:3:18446744073709551615");
        assert_eq!(DeliveryRef::parse(&receipt), Some(delivery));
        for foreign in [
            "",
            "amqp:",
            "amqp:1",
            "amqp:x:1",
            "amqp:1:-2",
            "sqs-handle",
            "1:2",
        ] {
            assert_eq!(
                DeliveryRef::parse(&Receipt::new(foreign)),
                None,
                "{foreign}"
            );
        }
    }
}
