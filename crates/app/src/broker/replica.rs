//! The queue a replica consumes in `fanout` and `sharded` mode (docs/scaling.md),
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
use tracing::{info, warn};

use crate::config::{AwsResources, BrokerConfig, Config, Scale};

/// How long removing a fanout instance's queue at shutdown may take.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A running instance's queue.
pub struct Instance {
    clients: Clients,
    queue: InstanceQueue,
    /// Removed when the instance leaves (fanout), or kept (sharded).
    owned_by_instance: bool,
    /// Ends with the queue as it is then (re-created if it had to be).
    heartbeat: JoinHandle<InstanceQueue>,
    stop: CancellationToken,
}

/// What the replica's queue is made from, to make it again.
#[derive(Debug, Clone)]
enum Plan {
    Fanout(FanoutPlan),
    Sharded(ShardPlan),
}

impl Plan {
    fn of(config: &Config, resources: &AwsResources) -> anyhow::Result<Option<Self>> {
        let fleet = &config.fleet;
        Ok(Some(match &config.scale {
            Scale::Shared => return Ok(None),
            Scale::Fanout { instance_id } => Plan::Fanout(FanoutPlan {
                bridge: fleet.bridge_name.clone(),
                instance: instance_id
                    .clone()
                    .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()),
                commands_topic_arn: resources.commands_topic_arn()?.to_owned(),
                max_receive_count: fleet.max_receive_count,
            }),
            Scale::Sharded(assignment) => Plan::Sharded(ShardPlan {
                bridge: fleet.bridge_name.clone(),
                shards: assignment.shards,
                owned: assignment.owned,
                commands_topic_arn: resources.commands_topic_arn()?.to_owned(),
                max_receive_count: fleet.max_receive_count,
            }),
        }))
    }

    /// Creates the queue and its subscription, or finds them (idempotent).
    async fn provision(&self, clients: &Clients) -> anyhow::Result<InstanceQueue> {
        match self {
            Plan::Fanout(plan) => fanout::create_instance_queue(&clients.sqs, &clients.sns, plan)
                .await
                .context("cannot create this instance's queue"),
            Plan::Sharded(plan) => sharded::ensure_shard_queue(&clients.sqs, &clients.sns, plan)
                .await
                .context("cannot create this replica's shard queue"),
        }
    }
}

/// Creates (or finds) the queue this replica consumes in the configured
/// mode, and starts its heartbeat; returns the configuration with that queue
/// as the command queue. Shared mode: the configuration as it is, no replica.
pub async fn join(
    clients: &Clients,
    mut config: Config,
) -> anyhow::Result<(Config, Option<Instance>)> {
    let BrokerConfig::Aws(resources) = &config.broker else {
        return Ok((config, None));
    };
    let Some(plan) = Plan::of(&config, resources)? else {
        return Ok((config, None));
    };
    let queue = plan.provision(clients).await?;
    let stop = CancellationToken::new();
    let heartbeat = tokio::spawn(beat(
        clients.clone(),
        plan.clone(),
        queue.clone(),
        config.fleet.heartbeat,
        stop.clone(),
    ));
    info!(queue = %queue.queue_url, scale = ?config.scale, "consuming this replica's own queue");
    config.broker = BrokerConfig::Aws(AwsResources {
        command_queue_url: Some(queue.queue_url.clone()),
        ..resources.clone()
    });
    let instance = Instance {
        clients: clients.clone(),
        queue,
        owned_by_instance: matches!(plan, Plan::Fanout(_)),
        heartbeat,
        stop,
    };
    Ok((config, Some(instance)))
}

impl Instance {
    /// The queue this instance consumes.
    pub fn queue_url(&self) -> &str {
        &self.queue.queue_url
    }

    /// Stops the heartbeat; in fanout mode also unsubscribes and deletes the queue.
    pub async fn leave(mut self) {
        self.stop.cancel();
        if let Ok(queue) = (&mut self.heartbeat).await {
            self.queue = queue;
        }
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

/// Refreshes the heartbeat tag every `every`. A queue that is gone while
/// the replica runs (removed by a `wsbridge gc` with too short a threshold,
/// or by hand) is made again with its subscription, so the replica does not
/// stay deaf until it restarts; SQS may refuse the name for 60 s after a
/// deletion, so it keeps trying on every beat. Returns the queue as it is
/// when stopped.
async fn beat(
    clients: Clients,
    plan: Plan,
    mut queue: InstanceQueue,
    every: Duration,
    stop: CancellationToken,
) -> InstanceQueue {
    let mut tick = tokio::time::interval(every);
    tick.tick().await; // the queue was just tagged
    loop {
        tokio::select! {
            _ = stop.cancelled() => return queue,
            _ = tick.tick() => {
                let Err(error) = fanout::heartbeat(&clients.sqs, &queue.queue_url).await else {
                    continue;
                };
                if fanout::queue_exists(&clients.sqs, &queue.queue_url).await.ok() != Some(false) {
                    warn!(%error, "instance heartbeat not recorded");
                    continue;
                }
                warn!(queue = %queue.queue_url, "this replica's queue was removed while it runs; re-creating it");
                match plan.provision(&clients).await {
                    Ok(made) => queue = made,
                    Err(error) => warn!(error = format!("{error:#}"), "queue not re-created yet"),
                }
            }
        }
    }
}
