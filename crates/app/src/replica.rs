//! The queue a replica consumes in `fanout` and `sharded` mode (SPEC §5),
//! subscribed to the commands topic, and its heartbeat.
//!
//! - fanout: the instance's own queue, for as long as the instance runs:
//!   removed on graceful shutdown;
//! - sharded: the queue of the shard range this replica owns, kept when the
//!   replica stops, so that the range's next owner (usually the same pod,
//!   restarted) receives what was published meanwhile.

use std::time::Duration;

use adapters_aws::fanout::{self, FanoutPlan, InstanceQueue};
use adapters_aws::sdk::Clients;
use adapters_aws::sharded::{self, ShardPlan};
use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::config::{Mode, Settings};

/// How long removing a fanout instance's queue at shutdown may take.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A running instance's queue.
pub struct Instance {
    clients: Clients,
    queue: InstanceQueue,
    /// Removed when the instance leaves (fanout), or kept (sharded).
    owned_by_instance: bool,
    heartbeat: JoinHandle<()>,
    stop: CancellationToken,
}

/// Creates (or finds) the queue this replica consumes in `settings.mode`,
/// and starts its heartbeat; `None` in shared mode.
pub async fn join(clients: &Clients, settings: &Settings) -> anyhow::Result<Option<Instance>> {
    let (queue, owned_by_instance) = match settings.mode {
        Mode::Shared => return Ok(None),
        Mode::Fanout => (fanout_queue(clients, settings).await?, true),
        Mode::Sharded => (shard_queue(clients, settings).await?, false),
    };
    let stop = CancellationToken::new();
    let heartbeat = tokio::spawn(beat(
        clients.clone(),
        queue.queue_url.clone(),
        Duration::from_secs(settings.instance_heartbeat_secs),
        stop.clone(),
    ));
    Ok(Some(Instance {
        clients: clients.clone(),
        queue,
        owned_by_instance,
        heartbeat,
        stop,
    }))
}

async fn shard_queue(clients: &Clients, settings: &Settings) -> anyhow::Result<InstanceQueue> {
    let commands_topic_arn = settings
        .required("commands_topic_arn", &settings.commands_topic_arn)?
        .to_owned();
    let assignment = settings
        .shard_assignment()
        .context("sharded mode without a valid shard_owner or shard_range")?;
    let plan = ShardPlan {
        bridge: settings.bridge_name.clone(),
        shards: assignment.shards,
        owned: assignment.owned,
        commands_topic_arn,
        max_receive_count: settings.max_receive_count,
    };
    sharded::ensure_shard_queue(&clients.sqs, &clients.sns, &plan)
        .await
        .context("cannot create this replica's shard queue")
}

async fn fanout_queue(clients: &Clients, settings: &Settings) -> anyhow::Result<InstanceQueue> {
    let commands_topic_arn = settings
        .required("commands_topic_arn", &settings.commands_topic_arn)?
        .to_owned();
    let instance = settings
        .instance_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()[..12].to_owned());
    let plan = FanoutPlan {
        bridge: settings.bridge_name.clone(),
        instance,
        commands_topic_arn,
        max_receive_count: settings.max_receive_count,
    };
    fanout::create_instance_queue(&clients.sqs, &clients.sns, &plan)
        .await
        .context("cannot create this instance's queue")
}

impl Instance {
    /// The queue this instance consumes.
    pub fn queue_url(&self) -> &str {
        &self.queue.queue_url
    }

    /// Stops the heartbeat; in fanout mode also unsubscribes and deletes the queue.
    pub async fn leave(self) {
        self.stop.cancel();
        let _ = self.heartbeat.await;
        if !self.owned_by_instance {
            return;
        }
        // Bounded: an unreachable SQS/SNS must not hold the process past its
        // shutdown; what is left behind is what `wsbridge gc` is for.
        let removal =
            fanout::remove_instance_queue(&self.clients.sqs, &self.clients.sns, &self.queue);
        match tokio::time::timeout(LEAVE_TIMEOUT, removal).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                warn!(%error, queue = %self.queue.queue_url, "instance queue not removed; `wsbridge gc` will")
            }
            Err(_elapsed) => warn!(
                queue = %self.queue.queue_url,
                timeout = ?LEAVE_TIMEOUT,
                "instance queue removal timed out; `wsbridge gc` will remove it"
            ),
        }
    }
}

async fn beat(clients: Clients, queue_url: String, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await; // the queue was just tagged
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                if let Err(error) = fanout::heartbeat(&clients.sqs, &queue_url).await {
                    warn!(%error, "instance heartbeat not recorded");
                }
            }
        }
    }
}
