//! Fanout mode (SPEC §5): this instance's own queue, subscribed to the
//! commands topic for as long as the instance runs, its heartbeat, and its
//! removal on graceful shutdown.

use std::time::Duration;

use adapters_aws::fanout::{self, FanoutPlan, InstanceQueue};
use adapters_aws::sdk::Clients;
use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::config::Settings;

/// A running instance's queue.
pub struct Instance {
    clients: Clients,
    queue: InstanceQueue,
    heartbeat: JoinHandle<()>,
    stop: CancellationToken,
}

/// Creates this instance's queue and subscription, and starts its heartbeat.
pub async fn join(clients: &Clients, settings: &Settings) -> anyhow::Result<Instance> {
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
    let queue = fanout::create_instance_queue(&clients.sqs, &clients.sns, &plan)
        .await
        .context("cannot create this instance's queue")?;
    let stop = CancellationToken::new();
    let heartbeat = tokio::spawn(beat(
        clients.clone(),
        queue.queue_url.clone(),
        Duration::from_secs(settings.instance_heartbeat_secs),
        stop.clone(),
    ));
    Ok(Instance {
        clients: clients.clone(),
        queue,
        heartbeat,
        stop,
    })
}

impl Instance {
    /// The queue this instance consumes.
    pub fn queue_url(&self) -> &str {
        &self.queue.queue_url
    }

    /// Stops the heartbeat, unsubscribes and deletes the queue.
    pub async fn leave(self) {
        self.stop.cancel();
        let _ = self.heartbeat.await;
        if let Err(error) =
            fanout::remove_instance_queue(&self.clients.sqs, &self.clients.sns, &self.queue).await
        {
            warn!(%error, queue = %self.queue.queue_url, "instance queue not removed; `wsbridge gc` will");
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
