//! Putting a message on a queue: size checks, the per-message or queue
//! delay, and on FIFO queues the message group and de-duplication (by id or
//! by content) within a five-minute window. Dead-lettering and SNS fan-out
//! send through here too.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::queue::{QueueCell, Stored};
use super::{lock, payload_bytes, Model, NewMessage, Sent};
use crate::error::{ApiError, ApiResult};
use crate::md5;
use crate::time::now_millis;

/// How long a FIFO de-duplication id is remembered.
const DEDUP_WINDOW: Duration = Duration::from_secs(300);

impl Model {
    /// Puts a message on a queue.
    pub fn send(&self, url: &str, message: NewMessage) -> ApiResult<Sent> {
        let cell = self.queue(url)?;
        self.send_to(&cell, message, None)
    }

    pub(super) fn send_to(
        &self,
        cell: &QueueCell,
        message: NewMessage,
        dead_letter_source: Option<String>,
    ) -> ApiResult<Sent> {
        if message.body.is_empty() {
            return Err(ApiError::missing("MessageBody"));
        }
        let md5 = md5::hex_digest(message.body.as_bytes());
        let now = Instant::now();
        let mut queue = lock(&cell.state);
        if queue.deleted {
            return Err(ApiError::queue_missing());
        }
        if payload_bytes(&message.body, &message.attributes) > queue.max_message_bytes {
            return Err(ApiError::invalid(format!(
                "One or more parameters are invalid. Reason: Message must be shorter than {} bytes.",
                queue.max_message_bytes
            )));
        }
        let mut dedup_id = None;
        if cell.fifo {
            if message.group.is_none() {
                return Err(ApiError::missing("MessageGroupId"));
            }
            let id = match (&message.dedup_id, queue.content_dedup) {
                (Some(id), _) => id.clone(),
                (None, true) => format!("content:{md5}:{}", message.body.len()),
                (None, false) => {
                    return Err(ApiError::invalid(
                        "The queue should either have ContentBasedDeduplication enabled or \
                         MessageDeduplicationId provided explicitly",
                    ))
                }
            };
            queue.dedup.retain(|_, (expires, _)| *expires > now);
            if let Some((_, existing)) = queue.dedup.get(&id) {
                return Ok(Sent {
                    message_id: existing.clone(),
                    md5_of_body: md5,
                    sequence_number: None,
                });
            }
            dedup_id = Some(id);
        }
        let seq = queue.next_seq;
        queue.next_seq += 1;
        let message_id = self.ids.next();
        if let Some(id) = &dedup_id {
            queue
                .dedup
                .insert(id.clone(), (now + DEDUP_WINDOW, message_id.clone()));
        }
        let delay = if cell.fifo {
            queue.delay_secs
        } else {
            message.delay_secs.unwrap_or(queue.delay_secs)
        };
        let hidden_until = (delay > 0).then(|| now + Duration::from_secs(delay.into()));
        let stored = Stored {
            message_id: message_id.clone(),
            body: Arc::from(message.body),
            md5: Arc::from(md5.as_str()),
            attributes: message.attributes,
            sent_millis: now_millis(),
            receive_count: 0,
            first_receive_millis: None,
            group: message.group,
            dedup_id: message.dedup_id,
            hidden_until,
            in_flight: false,
            generation: 0,
            dead_letter_source,
        };
        queue.messages.insert(seq, stored);
        match hidden_until {
            Some(at) => {
                queue.hidden.insert((at, seq));
            }
            None => {
                queue.ready.insert(seq);
            }
        }
        drop(queue);
        self.counters.enqueued.fetch_add(1, Ordering::Relaxed);
        if hidden_until.is_none() {
            cell.notify.notify_waiters();
        }
        Ok(Sent {
            message_id,
            md5_of_body: md5,
            sequence_number: cell.fifo.then(|| format!("{seq:020}")),
        })
    }
}
