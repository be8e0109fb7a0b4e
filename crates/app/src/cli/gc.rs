//! `wsbridge gc`: remove the queues and subscriptions of fanout replicas
//! that stopped without cleaning up (and, with `--shard-queues`, stale
//! shard-range queues).

use adapters_aws::fanout::GcScope;
use adapters_aws::sdk::Clients;

use super::Failure;
use crate::config::{BrokerConfig, Config, ConfigError};

/// Removes what is stale, printing each queue removed.
pub(crate) async fn run(
    config: &Config,
    stale_after_secs: Option<u64>,
    shard_queues: bool,
) -> Result<(), Failure> {
    let BrokerConfig::Aws(resources) = &config.broker else {
        return Err(ConfigError {
            problems: vec![
                "broker: `wsbridge gc` removes SQS queues; broker = \"amqp\" has none".into(),
            ],
        }
        .into());
    };
    let topic = resources.commands_topic_arn()?;
    let stale_after = stale_after_secs
        .map(std::time::Duration::from_secs)
        .unwrap_or(config.fleet.gc_stale_after);
    let clients = Clients::from_env().await;
    let removed = adapters_aws::fanout::collect_garbage(
        &clients.sqs,
        &clients.sns,
        &config.fleet.bridge_name,
        topic,
        stale_after,
        if shard_queues {
            GcScope::InstancesAndShards
        } else {
            GcScope::Instances
        },
    )
    .await
    .map_err(|e| Failure::Runtime(anyhow::anyhow!("gc failed: {e}")))?;
    for queue in &removed {
        println!(
            "removed {} (instance {}, {} subscription(s))",
            queue.queue_url, queue.instance, queue.subscriptions
        );
    }
    eprintln!("{} orphan instance queue(s) removed", removed.len());
    Ok(())
}
