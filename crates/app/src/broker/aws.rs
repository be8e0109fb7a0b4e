//! The SNS/SQS side of the broker seam: the SQS command source and SNS event
//! sink, `dev`'s resources (created idempotently), and the helper commands.

use std::sync::Arc;
use std::time::Duration;

use adapters_aws::bootstrap::{self, Plan};
use adapters_aws::sdk::Clients;
use adapters_aws::tools;
use adapters_aws::{
    AwsMetrics, SnsEventSink, SnsReceiptSink, SnsSinkSettings, SqsCommandSource, SqsHttpClient,
    SqsSourceSettings,
};
use domain::{ClientId, CommandSource, EventSink, ReceiptSink, Stats};
use tracing::info;

use super::{embedded, BrokerStatus, CloserKind, ControlRelay, Ports, SeenEvent, SendTarget};
use crate::config::{AwsResources, BrokerConfig, Config, ConfigError, SqsClient};
use crate::settler::{Settler, SettlerSettings};

/// The resource names `dev` uses when the configuration names none.
const DEV_COMMAND_QUEUE: &str = "wsbridge-commands";
const DEV_EVENTS_TOPIC: &str = "wsbridge-events";
const DEV_COMMANDS_TOPIC: &str = "wsbridge-commands";

/// What shutdown flushes: every delete and release already queued is sent,
/// every publish already queued is answered.
pub struct Closer {
    settler: Arc<Settler>,
    sink: SnsEventSink,
    receipts: Option<SnsReceiptSink>,
}

impl Closer {
    /// Waits for the settler's queued settles and the sink's pending publishes.
    pub async fn close(&self) {
        self.settler.close().await;
        self.sink.flush().await;
        if let Some(receipts) = &self.receipts {
            receipts.flush().await;
        }
    }
}

/// The SQS source and SNS sink of `resources`.
pub fn connect(
    config: &Config,
    resources: &AwsResources,
    clients: Clients,
    stats: &Arc<Stats>,
) -> Result<Ports, ConfigError> {
    let metrics = AwsMetrics::new();
    let relay = ControlRelay::aws(
        clients.clone(),
        resources.clone(),
        &config.scale,
        config.fleet.shards,
    );
    let queue_url = resources.command_queue_url()?;
    let topic_arn = resources.events_topic_arn()?;
    let mut source = SqsCommandSource::new(
        clients.sqs,
        queue_url,
        SqsSourceSettings {
            wait_time: config.downlink.receive_wait,
            dead_letter_queue_url: resources.dead_letter_queue_url.clone(),
            ..SqsSourceSettings::default()
        },
    )
    .with_metrics(metrics.clone());
    if config.downlink.sqs_client == SqsClient::Lean {
        let http = SqsHttpClient::from_config(&clients.config).map_err(|problem| ConfigError {
            problems: vec![format!(
                "sqs_client: the lean SQS client cannot start: {problem} \
                 (sqs_client = \"sdk\" uses the AWS SDK)"
            )],
        })?;
        source = source.with_http_client(http);
    }
    let sink = SnsEventSink::spawn_with_metrics(
        clients.sns.clone(),
        topic_arn,
        SnsSinkSettings {
            linger: config.uplink.publish_linger,
            ..SnsSinkSettings::default()
        },
        metrics.clone(),
    );
    // Deletes and releases leave the receive path: batched across pollers
    // and sent in the background.
    let settler = Settler::spawn(
        Arc::new(source),
        SettlerSettings {
            linger: config.downlink.settle_linger,
            ..SettlerSettings::default()
        },
    );
    let receipts = resources
        .receipts_topic_arn
        .as_ref()
        .map(|topic| SnsReceiptSink::spawn(clients.sns.clone(), topic, stats.clone()));
    let source: Arc<dyn CommandSource> = settler.clone();
    let events: Arc<dyn EventSink> = Arc::new(sink.clone());
    Ok(Ports {
        source,
        sink: events,
        receipts: receipts
            .clone()
            .map(|r| Arc::new(r) as Arc<dyn ReceiptSink>),
        closer: super::Closer(CloserKind::Aws(Closer {
            settler,
            sink,
            receipts,
        })),
        status: BrokerStatus::new({
            let metrics = metrics.clone();
            move || metrics.not_ready_reason()
        })
        .with_collector(metrics.clone()),
        aws_metrics: Some(metrics),
        relay: Arc::new(relay),
    })
}

/// `dev`: makes sure the queue, topics, subscription and dead-letter queue
/// exist (idempotent) — those the configuration names, else the development
/// names — and returns the configuration with the resources as made.
pub async fn prepare_dev(clients: &Clients, mut config: Config) -> anyhow::Result<Config> {
    let BrokerConfig::Aws(resources) = &config.broker else {
        return Ok(config);
    };
    let plan = dev_plan(resources, config.fleet.max_receive_count)?;
    let infra = bootstrap::ensure(&clients.sqs, &clients.sns, &plan)
        .await
        .map_err(|e| anyhow::anyhow!("bootstrap failed: {e}"))?;
    info!(
        queue = %infra.command_queue_url,
        dead_letter_queue = %infra.dead_letter_queue_url,
        events_topic = %infra.events_topic_arn,
        commands_topic = %infra.commands_topic_arn,
        "development resources ready"
    );
    config.broker = BrokerConfig::Aws(AwsResources {
        command_queue_url: Some(infra.command_queue_url),
        events_topic_arn: Some(infra.events_topic_arn),
        commands_topic_arn: Some(infra.commands_topic_arn),
        ..resources.clone()
    });
    Ok(config)
}

/// `dev`'s clients: for `endpoint` (the `--endpoint` flag) when given, else
/// for `AWS_ENDPOINT_URL` when set, else for the embedded emulator, started
/// here on 127.0.0.1:`emulator_port` and returned with them.
pub async fn dev_clients(
    endpoint: Option<&str>,
    emulator_port: u16,
) -> anyhow::Result<(Clients, Option<emulator::Emulator>)> {
    if let Some(endpoint) = endpoint {
        let config = adapters_aws::sdk::load()
            .await
            .to_builder()
            .endpoint_url(endpoint)
            .build();
        return Ok((Clients::from_config(&config), None));
    }
    if embedded::endpoint_in_env() {
        return Ok((Clients::from_env().await, None));
    }
    let emulator = embedded::start(embedded::DEFAULT_HOST, emulator_port).await?;
    info!(endpoint = %emulator.endpoint(), "embedded SQS/SNS emulator started");
    let clients = Clients::from_config(&embedded::sdk_config(emulator.endpoint()).await);
    Ok((clients, Some(emulator)))
}

/// The resource names `dev` makes sure of: from the configured URL and ARNs,
/// or the development names.
fn dev_plan(resources: &AwsResources, max_receive_count: u32) -> Result<Plan, ConfigError> {
    let name_error = |field: &str, value: &str| ConfigError {
        problems: vec![format!("{field}: cannot take a name from {value:?}")],
    };
    let queue = match &resources.command_queue_url {
        Some(url) => bootstrap::queue_name_from_url(url)
            .ok_or_else(|| name_error("command_queue_url", url))?,
        None => DEV_COMMAND_QUEUE,
    };
    let topic = |field: &str, arn: &Option<String>, default: &'static str| match arn {
        Some(arn) => bootstrap::topic_name_from_arn(arn)
            .map(str::to_owned)
            .ok_or_else(|| name_error(field, arn)),
        None => Ok(default.to_owned()),
    };
    Ok(Plan {
        command_queue: queue.to_owned(),
        events_topic: topic(
            "events_topic_arn",
            &resources.events_topic_arn,
            DEV_EVENTS_TOPIC,
        )?,
        commands_topic: topic(
            "commands_topic_arn",
            &resources.commands_topic_arn,
            DEV_COMMANDS_TOPIC,
        )?,
        max_receive_count,
    })
}

/// The configured command queue, or else the one `dev` makes, looked up by
/// its name on the configured endpoint.
async fn command_queue(clients: &Clients, resources: &AwsResources) -> anyhow::Result<String> {
    if let Some(url) = &resources.command_queue_url {
        return Ok(url.clone());
    }
    tools::queue_url_by_name(&clients.sqs, DEV_COMMAND_QUEUE)
        .await
        .map_err(|e| unset_and_not_found("command_queue_url", DEV_COMMAND_QUEUE, e))
}

/// The configured topic, or else the one `dev` makes, looked up by its name.
async fn topic(
    clients: &Clients,
    field: &str,
    configured: &Option<String>,
    dev_name: &str,
) -> anyhow::Result<String> {
    if let Some(arn) = configured {
        return Ok(arn.clone());
    }
    tools::topic_arn_by_name(&clients.sns, dev_name)
        .await
        .map_err(|e| unset_and_not_found(field, dev_name, e))
}

fn unset_and_not_found(field: &str, dev_name: &str, error: tools::ToolError) -> anyhow::Error {
    ConfigError {
        problems: vec![format!(
            "{field}: not set (config file, or BRIDGE_{}), and no `dev` resource named \
             {dev_name} was found ({error})",
            field.to_uppercase()
        )],
    }
    .into()
}

/// `send-command` on SNS/SQS, with the clients the environment gives.
pub async fn send_command(
    config: &Config,
    resources: &AwsResources,
    json: &str,
    client_id: &ClientId,
    target: SendTarget,
) -> anyhow::Result<String> {
    let clients = Clients::from_env().await;
    put_command(
        &clients,
        resources,
        config.fleet.shards,
        json,
        client_id,
        target,
    )
    .await
}

/// Puts `json` (a Command for `client_id`) where `target` says, through
/// `clients`; returns the message id.
pub(super) async fn put_command(
    clients: &Clients,
    resources: &AwsResources,
    shards: u32,
    json: &str,
    client_id: &ClientId,
    target: SendTarget,
) -> anyhow::Result<String> {
    let id = match target {
        SendTarget::Topic => {
            let topic = commands_topic(clients, resources).await?;
            // The `shard` attribute is what sharded replicas' subscriptions
            // filter on; other modes ignore it.
            tools::publish_to_topic(&clients.sns, &topic, json, client_id, Some(shards)).await?
        }
        SendTarget::QueueRaw | SendTarget::QueueEnveloped => {
            let queue = command_queue(clients, resources).await?;
            let body = if target == SendTarget::QueueRaw {
                json.to_owned()
            } else {
                let topic = resources
                    .commands_topic_arn
                    .as_deref()
                    .unwrap_or("arn:aws:sns:us-east-1:000000000000:wsbridge-send-command");
                tools::envelope(json, topic)
            };
            tools::send_to_queue(&clients.sqs, &queue, &body, client_id).await?
        }
    };
    Ok(id)
}

/// The commands topic: the setting, else `dev`'s, looked up by name.
async fn commands_topic(clients: &Clients, resources: &AwsResources) -> anyhow::Result<String> {
    topic(
        clients,
        "commands_topic_arn",
        &resources.commands_topic_arn,
        DEV_COMMANDS_TOPIC,
    )
    .await
}

/// Publishes `json` (a Command for `client_id` this replica held at its
/// shutdown) again to the commands topic, marked as handed back by `from`
/// ([`domain::RELEASED_ATTRIBUTE`]); returns the SNS message id.
pub(super) async fn hand_back_command(
    clients: &Clients,
    resources: &AwsResources,
    shards: u32,
    json: &str,
    client_id: &ClientId,
    from: &str,
) -> anyhow::Result<String> {
    let topic = commands_topic(clients, resources).await?;
    let marker = [(domain::RELEASED_ATTRIBUTE, from)];
    let id =
        tools::publish_to_topic_with(&clients.sns, &topic, json, client_id, Some(shards), &marker)
            .await?;
    Ok(id)
}

/// `monitor` on SNS: a temporary queue subscribed to the events topic.
pub async fn monitor(resources: &AwsResources) -> anyhow::Result<(tools::Monitor, String)> {
    let clients = Clients::from_env().await;
    let topic = topic(
        &clients,
        "events_topic_arn",
        &resources.events_topic_arn,
        DEV_EVENTS_TOPIC,
    )
    .await?;
    let monitor = tools::Monitor::start(clients.sqs, clients.sns, &topic).await?;
    let what = format!("{topic} through {}", monitor.queue_url());
    Ok((monitor, what))
}

/// The monitor's next events, waiting up to `wait` (at most SQS's 20 s).
pub async fn next_events(
    monitor: &tools::Monitor,
    wait: Duration,
) -> anyhow::Result<Vec<SeenEvent>> {
    let wait_secs = i32::try_from(wait.as_secs().min(20)).unwrap_or(20);
    Ok(monitor
        .next_events(wait_secs)
        .await?
        .into_iter()
        .map(|event| SeenEvent {
            message_id: event.message_id,
            message: event.message,
            attributes: event.attributes,
        })
        .collect())
}
