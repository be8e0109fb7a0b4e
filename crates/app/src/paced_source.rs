//! Test support for the runtime around the downlink (the consumer's
//! pollers, the settler): a mocked [`CommandSource`] whose calls take time
//! on tokio's clock, as a queue's do. The mock (the domain's `mock` feature)
//! records what each call was asked; the pacing lets a test on paused time
//! see who waited for what, and keeps a loop of receives from spinning.

use std::time::Duration;

use async_trait::async_trait;
use domain::ports::MockCommandSource;
use domain::{CommandSource, DeadLetter, InboundMessage, Receipt, SourceError};
use tokio::time::sleep;

/// A [`MockCommandSource`] behind calls that take time: the mock answers
/// when a call starts, the answer comes back after the call's duration.
pub(crate) struct Paced {
    pub(crate) mock: MockCommandSource,
    /// How long a receive that brings an answer waits (a long poll); a
    /// failed receive answers at once.
    pub(crate) long_poll: Duration,
    /// How long an acknowledge, release, dead letter or extension takes.
    pub(crate) round_trip: Duration,
}

impl Paced {
    pub(crate) fn new(mock: MockCommandSource, long_poll: Duration, round_trip: Duration) -> Self {
        Self {
            mock,
            long_poll,
            round_trip,
        }
    }
}

#[async_trait]
impl CommandSource for Paced {
    async fn receive(&self) -> Result<Vec<InboundMessage>, SourceError> {
        let answer = self.mock.receive().await;
        if answer.is_ok() {
            sleep(self.long_poll).await;
        }
        answer
    }

    async fn acknowledge(&self, receipts: Vec<Receipt>) -> Result<(), SourceError> {
        let answer = self.mock.acknowledge(receipts).await;
        sleep(self.round_trip).await;
        answer
    }

    async fn release(&self, receipts: Vec<Receipt>, delay: Duration) -> Result<(), SourceError> {
        let answer = self.mock.release(receipts, delay).await;
        sleep(self.round_trip).await;
        answer
    }

    async fn dead_letter(&self, letters: Vec<DeadLetter>) -> Result<(), SourceError> {
        let answer = self.mock.dead_letter(letters).await;
        sleep(self.round_trip).await;
        answer
    }

    async fn visibility_timeout(&self) -> Option<Duration> {
        self.mock.visibility_timeout().await
    }

    async fn extend(
        &self,
        receipts: Vec<Receipt>,
        visibility: Duration,
    ) -> Result<(), SourceError> {
        let answer = self.mock.extend(receipts, visibility).await;
        sleep(self.round_trip).await;
        answer
    }

    async fn max_receive_count(&self) -> Option<u32> {
        self.mock.max_receive_count().await
    }
}
