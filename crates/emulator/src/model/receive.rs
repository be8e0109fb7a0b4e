//! Receiving and what follows a receive: long polls that wake when a
//! message arrives or becomes visible, taking a batch (one batch in flight
//! per FIFO group), moving messages received too often to the dead-letter
//! queue, the system and message attributes a receive asks for, deleting by
//! receipt handle and changing a message's visibility timeout.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::queue::{release_group, Queue, QueueCell, Stored};
use super::{lock, Attributes, Delivered, Model, NewMessage, ReceiveRequest, MAX_VISIBILITY_SECS};
use crate::error::{ApiError, ApiResult, ErrorKind};
use crate::time::now_millis;

impl Model {
    /// Receives up to `request.max_messages` messages, waiting up to
    /// `request.wait` for the first one.
    pub async fn receive(&self, url: &str, request: &ReceiveRequest) -> ApiResult<Vec<Delivered>> {
        let cell = self.queue(url)?;
        let started = Instant::now();
        let deadline = started + request.wait;
        loop {
            let notified = cell.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = Instant::now();
            let (taken, dead, dead_target, next_visible) = {
                let mut queue = lock(&cell.state);
                if queue.deleted {
                    return Err(ApiError::queue_missing());
                }
                queue.promote(now);
                let (taken, dead) = self.take(&cell, &mut queue, now, request);
                let target = queue.redrive.as_ref().map(|r| r.target.clone());
                (taken, dead, target, queue.hidden.first().map(|(at, _)| *at))
            };
            if !dead.is_empty() {
                self.dead_letter(&cell, dead, dead_target.as_deref());
            }
            if !taken.is_empty() {
                self.counters
                    .received
                    .fetch_add(taken.len() as u64, Ordering::Relaxed);
                return Ok(taken);
            }
            if now >= deadline {
                return Ok(Vec::new());
            }
            let wake = next_visible.map_or(deadline, |at| at.min(deadline));
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
            }
        }
    }

    /// Takes the visible messages a receive gets; returns them and those
    /// that go to the dead-letter queue instead.
    fn take(
        &self,
        cell: &QueueCell,
        queue: &mut Queue,
        now: Instant,
        request: &ReceiveRequest,
    ) -> (Vec<Delivered>, Vec<Stored>) {
        let max = request.max_messages.clamp(1, 10);
        let visibility = request.visibility_secs.unwrap_or(queue.visibility_secs);
        let mut chosen = Vec::with_capacity(max);
        let mut dead_seqs = Vec::new();
        let mut batch_groups: HashSet<&str> = HashSet::new();
        for &seq in &queue.ready {
            if chosen.len() >= max {
                break;
            }
            let Some(message) = queue.messages.get(&seq) else {
                continue;
            };
            if let Some(redrive) = &queue.redrive {
                if message.receive_count >= redrive.max_receive_count {
                    dead_seqs.push(seq);
                    continue;
                }
            }
            if cell.fifo {
                let group = message.group.as_deref().unwrap_or_default();
                if queue.inflight_groups.contains_key(group) && !batch_groups.contains(group) {
                    continue;
                }
                batch_groups.insert(group);
            }
            chosen.push(seq);
        }
        drop(batch_groups);
        let dead: Vec<Stored> = dead_seqs
            .into_iter()
            .filter_map(|seq| queue.remove(seq))
            .collect();
        let now_ms = now_millis();
        let until = now + Duration::from_secs(visibility.into());
        let mut taken = Vec::with_capacity(chosen.len());
        for seq in chosen {
            queue.ready.remove(&seq);
            queue.generation += 1;
            let generation = queue.generation;
            let Some(message) = queue.messages.get_mut(&seq) else {
                continue;
            };
            message.receive_count += 1;
            message.first_receive_millis.get_or_insert(now_ms);
            message.generation = generation;
            message.in_flight = true;
            message.hidden_until = Some(until);
            let delivered = deliver(cell, seq, message, request);
            let group = message.group.clone();
            queue.in_flight += 1;
            if let Some(group) = group {
                *queue.inflight_groups.entry(group).or_insert(0) += 1;
            }
            queue.hidden.insert((until, seq));
            taken.push(delivered);
        }
        (taken, dead)
    }

    fn dead_letter(&self, source: &QueueCell, messages: Vec<Stored>, target: Option<&str>) {
        let Some(target) = target.and_then(|t| self.queue(t).ok()) else {
            return;
        };
        for message in messages {
            let new = NewMessage {
                body: message.body.to_string(),
                attributes: message.attributes,
                delay_secs: Some(0),
                group: message.group,
                dedup_id: message.dedup_id,
            };
            if self.send_to(&target, new, Some(source.arn.clone())).is_ok() {
                self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Deletes the message a receipt handle names. A stale handle (the
    /// message was received again since) deletes nothing, as on AWS.
    pub fn delete_message(&self, url: &str, receipt: &str) -> ApiResult<()> {
        let cell = self.queue(url)?;
        let (seq, generation) = cell.parse_receipt(receipt)?;
        let mut queue = lock(&cell.state);
        if queue
            .messages
            .get(&seq)
            .is_some_and(|m| m.generation == generation)
        {
            queue.remove(seq);
            drop(queue);
            self.counters.deleted.fetch_add(1, Ordering::Relaxed);
            if cell.fifo {
                // A group may be free again.
                cell.notify.notify_waiters();
            }
        }
        Ok(())
    }

    /// Changes the visibility timeout of a message in flight.
    pub fn change_visibility(&self, url: &str, receipt: &str, secs: u32) -> ApiResult<()> {
        let cell = self.queue(url)?;
        let (seq, generation) = cell.parse_receipt(receipt)?;
        if secs > MAX_VISIBILITY_SECS {
            return Err(ApiError::invalid(format!(
                "Value {secs} for parameter VisibilityTimeout is invalid. Reason: must be between 0 and 43200."
            )));
        }
        let now = Instant::now();
        let mut queue = lock(&cell.state);
        queue.promote(now);
        let Some(message) = queue.messages.get_mut(&seq) else {
            return Err(ApiError::invalid(format!(
                "Value {receipt} for parameter ReceiptHandle is invalid. Reason: Message does not exist or is not available for visibility timeout change."
            )));
        };
        if !message.in_flight || message.generation != generation {
            return Err(ApiError::new(
                ErrorKind::NotInflight,
                "Message not inflight.",
            ));
        }
        let old = message.hidden_until.unwrap_or(now);
        let group = message.group.clone();
        if secs == 0 {
            message.hidden_until = None;
            message.in_flight = false;
            queue.hidden.remove(&(old, seq));
            queue.in_flight -= 1;
            if let Some(group) = group {
                release_group(&mut queue.inflight_groups, &group);
            }
            queue.ready.insert(seq);
            drop(queue);
            cell.notify.notify_waiters();
        } else {
            let until = now + Duration::from_secs(secs.into());
            message.hidden_until = Some(until);
            queue.hidden.remove(&(old, seq));
            queue.hidden.insert((until, seq));
        }
        Ok(())
    }
}

fn wants_attribute(selection: &[String], name: &str) -> bool {
    selection.iter().any(|s| {
        s == "All"
            || s == ".*"
            || s == name
            || s.strip_suffix(".*").is_some_and(|prefix| {
                name.starts_with(prefix) && name[prefix.len()..].starts_with('.')
            })
    })
}

fn wants_system(selection: &[String], name: &str) -> bool {
    selection.iter().any(|s| s == "All" || s == name)
}

fn deliver(cell: &QueueCell, seq: u64, message: &Stored, request: &ReceiveRequest) -> Delivered {
    let mut system = BTreeMap::new();
    let wanted = &request.system_attributes;
    if !wanted.is_empty() {
        let mut put = |name: &'static str, value: Option<String>| {
            if let Some(value) = value {
                if wants_system(wanted, name) {
                    system.insert(name, value);
                }
            }
        };
        put("SenderId", Some("AIDAIT2UOQQY3AUEKVGXU".into()));
        put("SentTimestamp", Some(message.sent_millis.to_string()));
        put(
            "ApproximateReceiveCount",
            Some(message.receive_count.to_string()),
        );
        put(
            "ApproximateFirstReceiveTimestamp",
            message.first_receive_millis.map(|ms| ms.to_string()),
        );
        put("MessageGroupId", message.group.clone());
        put("MessageDeduplicationId", message.dedup_id.clone());
        put("SequenceNumber", cell.fifo.then(|| format!("{seq:020}")));
        put(
            "DeadLetterQueueSourceArn",
            message.dead_letter_source.clone(),
        );
    }
    let message_attributes = if request.message_attributes.is_empty() {
        Attributes::new()
    } else {
        message
            .attributes
            .iter()
            .filter(|(name, _)| wants_attribute(&request.message_attributes, name))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    Delivered {
        message_id: message.message_id.clone(),
        receipt_handle: cell.receipt(seq, message.generation),
        md5_of_body: message.md5.clone(),
        body: message.body.clone(),
        system_attributes: system,
        message_attributes,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::super::test_support::{body, model, receive_now};
    use super::*;
    use crate::model::QueueCounts;

    #[tokio::test]
    async fn messages_come_back_after_their_visibility_timeout() {
        let model = model();
        let url = model
            .create_queue("q", &BTreeMap::new(), &BTreeMap::new())
            .unwrap();
        model.send(&url, body("one")).unwrap();
        let first = model
            .receive(
                &url,
                &ReceiveRequest {
                    visibility_secs: Some(0),
                    ..receive_now(10)
                },
            )
            .await
            .unwrap();
        assert_eq!(first.len(), 1);
        let again = model.receive(&url, &receive_now(10)).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].system_attributes["ApproximateReceiveCount"], "2");
        // The first receipt is stale now: deleting with it deletes nothing.
        model
            .delete_message(&url, &first[0].receipt_handle)
            .unwrap();
        assert_eq!(model.queue(&url).unwrap().counts().in_flight, 1);
        model
            .delete_message(&url, &again[0].receipt_handle)
            .unwrap();
        assert_eq!(
            model.queue(&url).unwrap().counts(),
            QueueCounts {
                visible: 0,
                in_flight: 0,
                delayed: 0
            }
        );
    }

    #[tokio::test]
    async fn redrive_moves_a_message_received_too_often() {
        let model = model();
        let dlq = model
            .create_queue("q-dlq", &BTreeMap::new(), &BTreeMap::new())
            .unwrap();
        let policy = r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:123456789012:q-dlq","maxReceiveCount":"2"}"#;
        let attributes = BTreeMap::from([("RedrivePolicy".to_owned(), policy.to_owned())]);
        let url = model
            .create_queue("q", &attributes, &BTreeMap::new())
            .unwrap();
        model.send(&url, body("poison")).unwrap();
        let zero = ReceiveRequest {
            visibility_secs: Some(0),
            ..receive_now(1)
        };
        assert_eq!(model.receive(&url, &zero).await.unwrap().len(), 1);
        assert_eq!(model.receive(&url, &zero).await.unwrap().len(), 1);
        assert!(model.receive(&url, &zero).await.unwrap().is_empty());
        let moved = model.receive(&dlq, &receive_now(1)).await.unwrap();
        assert_eq!(&*moved[0].body, "poison");
        assert!(moved[0].system_attributes["DeadLetterQueueSourceArn"].ends_with(":q"));
    }

    #[tokio::test]
    async fn fifo_groups_are_delivered_in_order_one_batch_at_a_time() {
        let model = model();
        let attributes = BTreeMap::from([
            ("FifoQueue".to_owned(), "true".to_owned()),
            ("ContentBasedDeduplication".to_owned(), "true".to_owned()),
        ]);
        let url = model
            .create_queue("q.fifo", &attributes, &BTreeMap::new())
            .unwrap();
        for text in ["a1", "b1", "a2", "a1"] {
            let group = text[..1].to_owned();
            model
                .send(
                    &url,
                    NewMessage {
                        body: text.into(),
                        group: Some(group),
                        ..NewMessage::default()
                    },
                )
                .unwrap();
        }
        let first = model.receive(&url, &receive_now(1)).await.unwrap();
        assert_eq!(&*first[0].body, "a1");
        // Group a is in flight: only b1 is available.
        let second = model.receive(&url, &receive_now(10)).await.unwrap();
        let bodies: Vec<&str> = second.iter().map(|d| &*d.body).collect();
        assert_eq!(bodies, ["b1"]);
        model
            .delete_message(&url, &first[0].receipt_handle)
            .unwrap();
        let third = model.receive(&url, &receive_now(10)).await.unwrap();
        let bodies: Vec<&str> = third.iter().map(|d| &*d.body).collect();
        // The second "a1" was a duplicate within the window.
        assert_eq!(bodies, ["a2"]);
    }

    #[tokio::test]
    async fn a_long_poll_wakes_when_a_message_arrives() {
        let model = Arc::new(model());
        let url = model
            .create_queue("q", &BTreeMap::new(), &BTreeMap::new())
            .unwrap();
        let poll = {
            let (model, url) = (model.clone(), url.clone());
            tokio::spawn(async move {
                let request = ReceiveRequest {
                    wait: Duration::from_secs(10),
                    ..receive_now(10)
                };
                let started = Instant::now();
                let got = model.receive(&url, &request).await.unwrap();
                (got.len(), started.elapsed())
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        model.send(&url, body("wake up")).unwrap();
        let (count, waited) = poll.await.unwrap();
        assert_eq!(count, 1);
        assert!(waited < Duration::from_secs(5), "{waited:?}");
    }

    #[test]
    fn receipts_of_other_queues_are_invalid() {
        let model = model();
        let a = model
            .create_queue("a", &BTreeMap::new(), &BTreeMap::new())
            .unwrap();
        let b = model
            .create_queue("b", &BTreeMap::new(), &BTreeMap::new())
            .unwrap();
        let handle = model.queue(&a).unwrap().receipt(1, 1);
        let err = model.delete_message(&b, &handle).unwrap_err();
        assert_eq!(err.kind, ErrorKind::ReceiptInvalid);
        let err = model.delete_message(&b, "garbage").unwrap_err();
        assert_eq!(err.kind, ErrorKind::ReceiptInvalid);
    }
}
