//! The bus side of the admin API: where a `disconnect` or `send` goes when
//! the client it names has no connection on this replica. It is published
//! as the control message (docs/control-plane.md) a backend would send, to where this
//! fleet reads Commands — the commands topic in fanout and sharded mode (so
//! every replica, or the client's shard, gets it), the command queue in
//! shared mode, the commands exchange (else the queue) on RabbitMQ — and the
//! replica that holds the client carries it out.
//!
//! Also the way back to the fleet for the Commands a fanout or sharded
//! replica holds unacknowledged when it shuts down ([`ControlRelay::hand_back`]).

use adapters_aws::sdk::Clients;
use domain::ClientId;

use super::SendTarget;
use crate::config::{AmqpResources, AwsResources, Scale};

/// Publishes control messages onto the bus, with the bridge's own clients.
pub struct ControlRelay(Kind);

enum Kind {
    Aws {
        clients: Clients,
        resources: AwsResources,
        shards: u32,
        target: SendTarget,
    },
    Amqp(AmqpResources),
}

impl ControlRelay {
    /// On SNS/SQS, through `clients`, to where `scale` reads Commands.
    pub(super) fn aws(
        clients: Clients,
        resources: AwsResources,
        scale: &Scale,
        shards: u32,
    ) -> Self {
        let target = match scale {
            Scale::Shared => SendTarget::QueueRaw,
            Scale::Fanout { .. } | Scale::Sharded(_) => SendTarget::Topic,
        };
        Self(Kind::Aws {
            clients,
            resources,
            shards,
            target,
        })
    }

    /// Whether Commands held at shutdown are handed back through here: on
    /// SNS/SQS where the fleet reads Commands from the topic (fanout,
    /// sharded). Elsewhere the queue a release goes to outlives the replica.
    pub fn hands_back(&self) -> bool {
        matches!(
            &self.0,
            Kind::Aws {
                target: SendTarget::Topic,
                ..
            }
        )
    }

    /// Publishes `json`, a Command for `client_id` this replica held at its
    /// shutdown, again to the commands topic, marked with
    /// [`domain::RELEASED_ATTRIBUTE`] (its value: this replica's queue).
    pub async fn hand_back(&self, json: &str, client_id: &ClientId) -> anyhow::Result<String> {
        match &self.0 {
            Kind::Aws {
                clients,
                resources,
                shards,
                target: SendTarget::Topic,
            } => {
                let from = resources
                    .command_queue_url
                    .as_deref()
                    .and_then(|url| url.rsplit('/').next())
                    .unwrap_or("wsbridge");
                super::aws::hand_back_command(clients, resources, *shards, json, client_id, from)
                    .await
            }
            _ => anyhow::bail!("Commands are not handed back on this broker and mode"),
        }
    }

    /// On RabbitMQ: to the commands exchange, else the command queue.
    pub(super) fn amqp(resources: AmqpResources) -> Self {
        Self(Kind::Amqp(resources))
    }

    /// Publishes `json`, a control message for `client_id`; returns the
    /// broker's message id.
    pub async fn relay(&self, json: &str, client_id: &ClientId) -> anyhow::Result<String> {
        match &self.0 {
            Kind::Aws {
                clients,
                resources,
                shards,
                target,
            } => {
                super::aws::put_command(clients, resources, *shards, json, client_id, *target).await
            }
            Kind::Amqp(resources) => {
                super::amqp::send_command(resources, json, SendTarget::Topic).await
            }
        }
    }
}
