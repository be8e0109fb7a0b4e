//! The in-memory state: queues with their messages, topics with their
//! subscriptions, and the operations on them, independent of any protocol.
//!
//! Each queue has its own lock, held only for a few map operations and never
//! across an `.await`. A queue keeps its visible messages in send order
//! (`ready`) and the invisible ones — in flight or delayed — by the instant
//! they become visible again (`hidden`); every operation first moves what is
//! due from one to the other. Long polls wait on the queue's [`Notify`](tokio::sync::Notify) and
//! wake when a message arrives or the next hidden one becomes visible.
//!
//! The parts: the values taken and answered (`values`), one queue's state
//! (`queue`), the queue operations (`queue_admin`), sending (`send`),
//! receiving and settling (`receive`), topics and subscriptions (`topics`),
//! publishing with its fan-out (`publish`), and ids (`ids`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

mod ids;
mod publish;
mod queue;
mod queue_admin;
mod receive;
mod send;
mod topics;
mod values;

use ids::IdGen;
use topics::Topic;

pub use queue::QueueCell;
pub use values::{
    payload_bytes, Attributes, Delivered, MessageAttribute, NewMessage, Publication, QueueCounts,
    ReceiveRequest, Sent, SubscriptionInfo,
};

/// SQS's and SNS's limit on a message (256 KiB).
pub const MAX_MESSAGE_BYTES: usize = 262_144;
/// Longest visibility timeout (12 h).
const MAX_VISIBILITY_SECS: u32 = 43_200;

/// Counters of the model itself (per-operation counts live with the server).
#[derive(Debug, Default)]
pub struct ModelCounters {
    /// Messages put on queues (sends, fan-out, dead-lettering).
    pub enqueued: AtomicU64,
    /// Messages handed out by receives.
    pub received: AtomicU64,
    /// Messages deleted.
    pub deleted: AtomicU64,
    /// SNS deliveries to queues.
    pub fanout_deliveries: AtomicU64,
    /// SNS deliveries that found no queue.
    pub fanout_failures: AtomicU64,
    /// Messages moved to a dead-letter queue.
    pub dead_lettered: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Everything the server holds.
#[derive(Debug)]
pub struct Model {
    account: String,
    region: String,
    base_url: String,
    queues: RwLock<HashMap<String, Arc<QueueCell>>>,
    topics: RwLock<BTreeMap<String, Topic>>,
    next_queue_id: AtomicU64,
    ids: IdGen,
    /// What the model did.
    pub counters: ModelCounters,
}

impl Model {
    /// An empty model whose queue URLs start with `base_url`
    /// (`http://127.0.0.1:PORT`).
    pub fn new(base_url: impl Into<String>, region: impl Into<String>) -> Self {
        Self {
            account: "123456789012".into(),
            region: region.into(),
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            queues: RwLock::default(),
            topics: RwLock::default(),
            next_queue_id: AtomicU64::new(1),
            ids: IdGen::new(),
            counters: ModelCounters::default(),
        }
    }

    /// Removes every queue, topic and subscription.
    pub fn reset(&self) {
        let queues =
            std::mem::take(&mut *self.queues.write().unwrap_or_else(PoisonError::into_inner));
        for cell in queues.values() {
            lock(&cell.state).deleted = true;
            cell.notify.notify_waiters();
        }
        self.topics
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

/// What the tests of the parts share: a model and the requests they build.
#[cfg(test)]
mod test_support {
    use super::{Model, NewMessage, ReceiveRequest};

    pub(super) fn model() -> Model {
        Model::new("http://127.0.0.1:1", "us-east-1")
    }

    pub(super) fn receive_now(max: usize) -> ReceiveRequest {
        ReceiveRequest {
            max_messages: max,
            system_attributes: vec!["All".into()],
            ..ReceiveRequest::default()
        }
    }

    pub(super) fn body(text: &str) -> NewMessage {
        NewMessage {
            body: text.into(),
            ..NewMessage::default()
        }
    }
}
