//! Readiness of a `broker = "amqp"` bridge until the AMQP adapter reports its
//! own (as `adapters_aws::AwsMetrics` does for AWS): the outcome of the last
//! receive of the source it wraps, with the reasons `/ready` gave before
//! readiness moved out of the domain. The AMQP adapter's metrics replace it.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use domain::{CommandSource, InboundMessage, Receipt, SourceError};

const NOT_YET: u8 = 0;
const SUCCEEDED: u8 = 1;
const FAILED: u8 = 2;

/// A command source that remembers whether its last receive succeeded.
pub(crate) struct ReceiveWatch {
    source: Arc<dyn CommandSource>,
    last: AtomicU8,
}

impl ReceiveWatch {
    /// Watches `source`'s receives.
    pub(crate) fn new(source: Arc<dyn CommandSource>) -> Self {
        Self {
            source,
            last: AtomicU8::new(NOT_YET),
        }
    }

    /// Why the consumer cannot take traffic, or `None` after a successful
    /// receive.
    pub(crate) fn not_ready_reason(&self) -> Option<String> {
        match self.last.load(Ordering::Relaxed) {
            SUCCEEDED => None,
            NOT_YET => Some("starting: the command consumer has not received yet".to_owned()),
            _ => Some("the command consumer's last receive failed".to_owned()),
        }
    }
}

#[async_trait]
impl CommandSource for ReceiveWatch {
    async fn receive(&self) -> Result<Vec<InboundMessage>, SourceError> {
        let result = self.source.receive().await;
        let outcome = if result.is_ok() { SUCCEEDED } else { FAILED };
        self.last.store(outcome, Ordering::Relaxed);
        result
    }

    async fn acknowledge(&self, receipts: Vec<Receipt>) -> Result<(), SourceError> {
        self.source.acknowledge(receipts).await
    }

    async fn release(&self, receipts: Vec<Receipt>, delay: Duration) -> Result<(), SourceError> {
        self.source.release(receipts, delay).await
    }

    async fn reject(&self, receipts: Vec<Receipt>) -> Result<(), SourceError> {
        self.source.reject(receipts).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Answers its receives from a script; settles nothing.
    struct Scripted(Mutex<Vec<Result<Vec<InboundMessage>, SourceError>>>);

    #[async_trait]
    impl CommandSource for Scripted {
        async fn receive(&self) -> Result<Vec<InboundMessage>, SourceError> {
            self.0.lock().unwrap().remove(0)
        }
        async fn acknowledge(&self, _: Vec<Receipt>) -> Result<(), SourceError> {
            unreachable!("not settled")
        }
        async fn release(&self, _: Vec<Receipt>, _: Duration) -> Result<(), SourceError> {
            unreachable!("not settled")
        }
        async fn reject(&self, _: Vec<Receipt>) -> Result<(), SourceError> {
            unreachable!("not settled")
        }
    }

    #[tokio::test]
    async fn readiness_follows_the_last_receive() {
        let watch = ReceiveWatch::new(Arc::new(Scripted(Mutex::new(vec![
            Ok(Vec::new()),
            Err(SourceError::Unavailable("channel closed".into())),
            Ok(Vec::new()),
        ]))));
        assert_eq!(
            watch.not_ready_reason().as_deref(),
            Some("starting: the command consumer has not received yet")
        );
        watch.receive().await.unwrap();
        assert_eq!(watch.not_ready_reason(), None);
        watch.receive().await.unwrap_err();
        assert_eq!(
            watch.not_ready_reason().as_deref(),
            Some("the command consumer's last receive failed")
        );
        watch.receive().await.unwrap();
        assert_eq!(watch.not_ready_reason(), None);
    }
}
