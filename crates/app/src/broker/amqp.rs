//! The RabbitMQ side of the broker seam: the AMQP command source, event
//! sink and (with `amqp_receipts_exchange`) receipt sink, `dev`'s topology,
//! and the helper commands (the counterparts of the SNS/SQS ones).

use std::sync::Arc;
use std::time::Duration;

use adapters_amqp::bootstrap::{self, Topology};
use adapters_amqp::tools::{self, Target};
use adapters_amqp::{
    AmqpCommandSource, AmqpEventSink, AmqpMetrics, AmqpReceiptSettings, AmqpReceiptSink,
    AmqpSinkSettings, AmqpSourceSettings,
};
use domain::{CommandSource, EventSink, ReceiptSink, Stats};
use tracing::info;

use super::{BrokerStatus, CloserKind, ControlRelay, Ports, SeenEvent, SendTarget};
use crate::config::{AmqpResources, Config};

/// What shutdown closes: the channels are settled and closed
/// (unacknowledged deliveries go back to the queue).
pub struct Closer {
    source: Arc<AmqpCommandSource>,
    sink: Arc<AmqpEventSink>,
    receipts: Option<Arc<AmqpReceiptSink>>,
}

impl Closer {
    /// Closes the event sink; publishes the receipts still queued and
    /// closes their connection; then closes the source.
    pub async fn close(&self) {
        self.sink.close().await;
        if let Some(receipts) = &self.receipts {
            receipts.close().await;
        }
        self.source.close().await;
    }
}

/// The AMQP source, sink and receipt sink (when on) of `resources`.
pub fn connect(config: &Config, resources: &AmqpResources, stats: &Arc<Stats>) -> Ports {
    // One recorder for every link: the adapter's own series and readiness.
    let metrics = AmqpMetrics::new();
    let source = Arc::new(AmqpCommandSource::spawn_with_metrics(
        resources.url.clone(),
        AmqpSourceSettings {
            queue: resources.command_queue.clone(),
            prefetch: resources.prefetch,
            wait_time: config.downlink.receive_wait,
            // The one `dev`'s bootstrap declares; a queue declared with
            // another has its given-up messages rejected to it instead.
            dead_letter_exchange: Some(topology(resources).dead_letter_exchange),
            ..AmqpSourceSettings::default()
        },
        metrics.clone(),
    ));
    let sink = Arc::new(AmqpEventSink::spawn_with_metrics(
        resources.url.clone(),
        AmqpSinkSettings {
            exchange: resources.events_exchange.clone(),
            ..AmqpSinkSettings::default()
        },
        metrics.clone(),
    ));
    // A link of its own, beside the event sink's (see the adapter).
    let receipts = resources.receipts_exchange.as_ref().map(|exchange| {
        Arc::new(AmqpReceiptSink::spawn_with_metrics(
            resources.url.clone(),
            AmqpReceiptSettings {
                exchange: exchange.clone(),
                ..AmqpReceiptSettings::default()
            },
            stats.clone(),
            metrics.clone(),
        ))
    });
    let (commands, events): (Arc<dyn CommandSource>, Arc<dyn EventSink>) =
        (source.clone(), sink.clone());
    Ports {
        source: commands,
        sink: events,
        receipts: receipts.clone().map(|r| r as Arc<dyn ReceiptSink>),
        closer: super::Closer(CloserKind::Amqp(Closer {
            source,
            sink,
            receipts,
        })),
        status: BrokerStatus::new({
            let metrics = metrics.clone();
            move || metrics.not_ready_reason()
        })
        .with_collector(metrics),
        aws_metrics: None,
        relay: Arc::new(ControlRelay::amqp(resources.clone())),
    }
}

fn topology(resources: &AmqpResources) -> Topology {
    let topology = Topology::new(&resources.command_queue, &resources.events_exchange);
    match &resources.receipts_exchange {
        Some(exchange) => topology.with_receipts_exchange(exchange),
        None => topology,
    }
}

/// `dev`: declares the exchanges, queues, bindings and dead-letter queue
/// (and the receipts exchange, when receipts are on).
pub async fn prepare_dev(resources: &AmqpResources) -> anyhow::Result<()> {
    let topology = topology(resources);
    bootstrap::ensure(&resources.url, &topology)
        .await
        .map_err(|e| anyhow::anyhow!("bootstrap failed: {e}"))?;
    info!(
        broker = %resources.url.redacted(),
        queue = %topology.command_queue,
        dead_letter_queue = %topology.dead_letter_queue,
        events_exchange = %topology.events_exchange,
        receipts_exchange = ?topology.receipts_exchange,
        commands_exchange = ?topology.commands_exchange,
        "development resources ready"
    );
    Ok(())
}

/// `send-command`: to the command queue (enveloped unless raw), or to the
/// commands exchange (as a backend would publish).
pub async fn send_command(
    resources: &AmqpResources,
    json: &str,
    target: SendTarget,
) -> anyhow::Result<String> {
    let topology = topology(resources);
    let (target, body) = match target {
        SendTarget::Topic => {
            let exchange = topology
                .commands_exchange
                .clone()
                .unwrap_or_else(|| topology.command_queue.clone());
            let target = Target::Exchange {
                name: exchange,
                routing_key: String::new(),
            };
            (target, json.to_owned())
        }
        SendTarget::QueueRaw => (
            Target::Queue(topology.command_queue.clone()),
            json.to_owned(),
        ),
        SendTarget::QueueEnveloped => {
            let body = adapters_aws::tools::envelope(json, "amqp:wsbridge-send-command");
            (Target::Queue(topology.command_queue.clone()), body)
        }
    };
    tools::send_command(&resources.url, &target, &body)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// `monitor`: a temporary queue bound to the events exchange.
pub async fn monitor(resources: &AmqpResources) -> anyhow::Result<(tools::Monitor, String)> {
    let exchange = &resources.events_exchange;
    let monitor = tools::Monitor::start(&resources.url, exchange, "#")
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let what = format!("exchange {exchange} through {}", monitor.queue());
    Ok((monitor, what))
}

/// The monitor's next events, waiting up to `wait`.
pub async fn next_events(
    monitor: &mut tools::Monitor,
    wait: Duration,
) -> anyhow::Result<Vec<SeenEvent>> {
    Ok(monitor
        .next_events(wait)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .into_iter()
        .map(|event| SeenEvent {
            message_id: event.message_id,
            message: event.message,
            attributes: event.attributes,
        })
        .collect())
}
