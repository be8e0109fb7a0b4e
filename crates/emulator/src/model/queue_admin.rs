//! The queue operations on the [`Model`]: create, find, delete, list,
//! attributes, tags and purge — everything but the messages themselves
//! (`send.rs`, `receive.rs`).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::queue::{queue_name, valid_name, Queue, QueueCell};
use super::{lock, Model};
use crate::error::{ApiError, ApiResult};
use crate::time::now_millis;

impl Model {
    /// Creates a queue (or finds the one of that name); returns its URL.
    pub fn create_queue(
        &self,
        name: &str,
        attributes: &BTreeMap<String, String>,
        tags: &BTreeMap<String, String>,
    ) -> ApiResult<String> {
        if !valid_name(name) {
            return Err(ApiError::invalid(format!(
                "Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in length: {name:?}"
            )));
        }
        let fifo = name.ends_with(".fifo");
        let mut queues = self.queues.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(existing) = queues.get(name) {
            return Ok(existing.url.clone());
        }
        let mut queue = Queue::new(now_millis() / 1000);
        for (key, value) in attributes {
            queue.apply_attribute(key, value, fifo)?;
        }
        if !fifo && attributes.get("FifoQueue").is_some_and(|v| v == "true") {
            return Err(ApiError::invalid(
                "The name of a FIFO queue must end in .fifo",
            ));
        }
        queue.tags = tags.clone();
        let cell = QueueCell {
            id: self.next_queue_id.fetch_add(1, Ordering::Relaxed),
            name: name.to_owned(),
            url: format!("{}/{}/{name}", self.base_url, self.account),
            arn: format!("arn:aws:sqs:{}:{}:{name}", self.region, self.account),
            fifo,
            notify: Notify::new(),
            state: Mutex::new(queue),
        };
        let url = cell.url.clone();
        queues.insert(name.to_owned(), Arc::new(cell));
        Ok(url)
    }

    /// The queue a URL (or name, or ARN) names.
    pub fn queue(&self, url: &str) -> ApiResult<Arc<QueueCell>> {
        let name = queue_name(url);
        self.queues
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
            .ok_or_else(ApiError::queue_missing)
    }

    /// Deletes a queue; its long polls end.
    pub fn delete_queue(&self, url: &str) -> ApiResult<()> {
        let name = queue_name(url);
        let cell = self
            .queues
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name)
            .ok_or_else(ApiError::queue_missing)?;
        lock(&cell.state).deleted = true;
        cell.notify.notify_waiters();
        Ok(())
    }

    /// URLs of the queues whose name starts with `prefix`, by name, from
    /// position `start`, at most `max`; and where the next page starts.
    pub fn list_queues(
        &self,
        prefix: &str,
        start: usize,
        max: usize,
    ) -> (Vec<String>, Option<usize>) {
        let queues = self.queues.read().unwrap_or_else(PoisonError::into_inner);
        let mut names: Vec<&String> = queues.keys().filter(|n| n.starts_with(prefix)).collect();
        names.sort();
        let page: Vec<String> = names
            .iter()
            .skip(start)
            .take(max)
            .filter_map(|n| queues.get(*n).map(|c| c.url.clone()))
            .collect();
        let next = (start + page.len() < names.len()).then_some(start + page.len());
        (page, next)
    }

    /// The attributes of a queue that `names` asks for (`All`: every one).
    pub fn queue_attributes(
        &self,
        url: &str,
        names: &[String],
    ) -> ApiResult<BTreeMap<String, String>> {
        let cell = self.queue(url)?;
        let mut queue = lock(&cell.state);
        queue.promote(Instant::now());
        let counts = queue.counts();
        let mut all: BTreeMap<String, String> = queue.attributes.clone();
        let mut put = |k: &str, v: String| {
            all.insert(k.to_owned(), v);
        };
        put("QueueArn", cell.arn.clone());
        put("ApproximateNumberOfMessages", counts.visible.to_string());
        put(
            "ApproximateNumberOfMessagesNotVisible",
            counts.in_flight.to_string(),
        );
        put(
            "ApproximateNumberOfMessagesDelayed",
            counts.delayed.to_string(),
        );
        put("CreatedTimestamp", queue.created_secs.to_string());
        put("LastModifiedTimestamp", queue.modified_secs.to_string());
        put("VisibilityTimeout", queue.visibility_secs.to_string());
        put("DelaySeconds", queue.delay_secs.to_string());
        put(
            "ReceiveMessageWaitTimeSeconds",
            queue.receive_wait_secs.to_string(),
        );
        put("MaximumMessageSize", queue.max_message_bytes.to_string());
        all.entry("MessageRetentionPeriod".into())
            .or_insert_with(|| "345600".into());
        all.entry("SqsManagedSseEnabled".into())
            .or_insert_with(|| "false".into());
        if cell.fifo {
            all.insert("FifoQueue".into(), "true".into());
            all.insert(
                "ContentBasedDeduplication".into(),
                queue.content_dedup.to_string(),
            );
        }
        Ok(if names.iter().any(|n| n == "All") {
            all
        } else {
            all.into_iter().filter(|(k, _)| names.contains(k)).collect()
        })
    }

    /// The queue's `ReceiveMessageWaitTimeSeconds`: the wait of a receive that sets none.
    pub fn default_wait(&self, url: &str) -> ApiResult<Duration> {
        let cell = self.queue(url)?;
        let secs = lock(&cell.state).receive_wait_secs;
        Ok(Duration::from_secs(secs.into()))
    }

    /// Sets attributes of a queue.
    pub fn set_queue_attributes(
        &self,
        url: &str,
        attributes: &BTreeMap<String, String>,
    ) -> ApiResult<()> {
        let cell = self.queue(url)?;
        let mut queue = lock(&cell.state);
        for (key, value) in attributes {
            queue.apply_attribute(key, value, cell.fifo)?;
        }
        queue.modified_secs = now_millis() / 1000;
        Ok(())
    }

    /// Adds or replaces tags.
    pub fn tag_queue(&self, url: &str, tags: &BTreeMap<String, String>) -> ApiResult<()> {
        let cell = self.queue(url)?;
        lock(&cell.state).tags.extend(tags.clone());
        Ok(())
    }

    /// Removes tags.
    pub fn untag_queue(&self, url: &str, keys: &[String]) -> ApiResult<()> {
        let cell = self.queue(url)?;
        let mut queue = lock(&cell.state);
        for key in keys {
            queue.tags.remove(key);
        }
        Ok(())
    }

    /// The tags of a queue.
    pub fn queue_tags(&self, url: &str) -> ApiResult<BTreeMap<String, String>> {
        Ok(lock(&self.queue(url)?.state).tags.clone())
    }

    /// Deletes every message of a queue.
    pub fn purge_queue(&self, url: &str) -> ApiResult<()> {
        let cell = self.queue(url)?;
        let mut queue = lock(&cell.state);
        queue.messages.clear();
        queue.ready.clear();
        queue.hidden.clear();
        queue.in_flight = 0;
        queue.inflight_groups.clear();
        Ok(())
    }
}
