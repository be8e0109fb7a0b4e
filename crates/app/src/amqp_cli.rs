//! The command line on RabbitMQ (`broker = "amqp"`): what `dev`,
//! `send-command` and `monitor` do there, the counterparts of the SNS/SQS ones.

use std::time::Duration;

use adapters_amqp::bootstrap::{self, Topology};
use adapters_amqp::tools::{self, Monitor, Target};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::broker::amqp_url;
use crate::cli::{print_event, Failure};
use crate::config::Settings;

fn topology(settings: &Settings) -> Topology {
    Topology::new(&settings.amqp_command_queue, &settings.amqp_events_exchange)
}

/// `dev`: declares the exchanges, queues, bindings and dead-letter queue.
pub(crate) async fn bootstrap(settings: &Settings) -> Result<(), Failure> {
    let url = amqp_url(settings)?;
    let topology = topology(settings);
    bootstrap::ensure(&url, &topology)
        .await
        .map_err(|e| Failure::Runtime(anyhow::anyhow!("bootstrap failed: {e}")))?;
    info!(
        broker = %url.redacted(),
        queue = %topology.command_queue,
        dead_letter_queue = %topology.dead_letter_queue,
        events_exchange = %topology.events_exchange,
        commands_exchange = ?topology.commands_exchange,
        "development resources ready"
    );
    Ok(())
}

/// `send-command`: to the command queue (enveloped unless `raw`), or with
/// `via_topic` to the commands exchange (as a backend would publish).
pub(crate) async fn send_command(
    settings: &Settings,
    json: &str,
    raw: bool,
    via_topic: bool,
) -> Result<(), Failure> {
    let url = amqp_url(settings)?;
    let topology = topology(settings);
    let (target, body) = if via_topic {
        let exchange = topology
            .commands_exchange
            .clone()
            .unwrap_or_else(|| topology.command_queue.clone());
        let target = Target::Exchange {
            name: exchange,
            routing_key: String::new(),
        };
        (target, json.to_owned())
    } else if raw {
        (
            Target::Queue(topology.command_queue.clone()),
            json.to_owned(),
        )
    } else {
        let body = adapters_aws::tools::envelope(json, "amqp:wsbridge-send-command");
        (Target::Queue(topology.command_queue.clone()), body)
    };
    let id = tools::send_command(&url, &target, &body)
        .await
        .map_err(|e| Failure::Runtime(anyhow::anyhow!("{e}")))?;
    println!("{id}");
    Ok(())
}

/// `monitor`: a temporary queue bound to the events exchange.
pub(crate) async fn monitor(
    settings: &Settings,
    count: Option<usize>,
    stop: CancellationToken,
) -> Result<(), Failure> {
    let url = amqp_url(settings)?;
    let exchange = &settings.amqp_events_exchange;
    let mut monitor = Monitor::start(&url, exchange, "#")
        .await
        .map_err(|e| Failure::Runtime(anyhow::anyhow!("{e}")))?;
    eprintln!(
        "monitoring exchange {exchange} through {} (Ctrl-C to stop)",
        monitor.queue()
    );
    let mut seen = 0usize;
    let outcome = loop {
        if count.is_some_and(|n| seen >= n) {
            break Ok(());
        }
        let events = tokio::select! {
            _ = stop.cancelled() => break Ok(()),
            events = monitor.next_events(Duration::from_secs(5)) => events,
        };
        match events {
            Ok(events) => {
                for event in events {
                    print_event(&event.message_id, &event.message, &event.attributes);
                    seen += 1;
                }
            }
            Err(e) => break Err(Failure::Runtime(anyhow::anyhow!("{e}"))),
        }
    };
    if let Err(e) = monitor.stop().await {
        warn!(error = %e, "monitor cleanup failed");
    }
    outcome
}
