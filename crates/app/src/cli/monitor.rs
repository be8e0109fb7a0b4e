//! `wsbridge monitor`: print every ClientMessage published to the events
//! topic (exchange) with its attributes, one JSON line each, until Ctrl-C or
//! `--count`; then remove the temporary queue. The assignment's
//! `monitor_sns_topic`, one loop over the broker's monitor capability.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{cancel_on_signal, Failure};
use crate::broker::Monitor;
use crate::config::Config;

/// How long one wait for events lasts before the loop looks at the signal.
const WAIT: Duration = Duration::from_secs(5);

/// Monitors until a signal or `count` events.
pub(crate) async fn run(config: &Config, count: Option<usize>) -> Result<(), Failure> {
    let stop = CancellationToken::new();
    cancel_on_signal(stop.clone()).map_err(|e| Failure::Runtime(e.into()))?;
    let mut monitor = Monitor::start(config).await?;
    eprintln!("monitoring {} (Ctrl-C to stop)", monitor.describe());
    let mut seen = 0usize;
    let outcome = loop {
        if count.is_some_and(|n| seen >= n) {
            break Ok(());
        }
        let events = tokio::select! {
            _ = stop.cancelled() => break Ok(()),
            events = monitor.next_events(WAIT) => events,
        };
        match events {
            Ok(events) => {
                for event in events {
                    print_event(&event.message_id, &event.message, &event.attributes);
                    seen += 1;
                }
            }
            Err(e) => break Err(Failure::Runtime(e)),
        }
    };
    if let Err(e) = monitor.stop().await {
        warn!(error = %e, "monitor cleanup failed");
    }
    outcome
}

/// One line of `wsbridge monitor`: the event with its attributes, as JSON.
fn print_event(message_id: &str, message: &str, attributes: &BTreeMap<String, String>) {
    let message = serde_json::from_str::<serde_json::Value>(message)
        .unwrap_or_else(|_| serde_json::Value::String(message.to_owned()));
    let line = serde_json::json!({
        "message_id": message_id,
        "attributes": attributes,
        "message": message,
    });
    println!("{line}");
}
