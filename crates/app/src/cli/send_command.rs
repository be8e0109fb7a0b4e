//! `wsbridge send-command`: put a Command on the command queue (in an SNS
//! envelope unless `--raw`) or publish it to the commands topic
//! (`--via-topic`), as a backend would. The assignment's `send_sqs_message`.

use domain::Command;

use super::Failure;
use crate::broker::{self, SendTarget};
use crate::config::Config;

/// Checks `json` is a Command, sends it, prints the message id.
pub(crate) async fn run(
    config: &Config,
    json: &str,
    raw: bool,
    via_topic: bool,
) -> Result<(), Failure> {
    let command: Command =
        serde_json::from_str(json).map_err(|e| Failure::Usage(format!("not a Command: {e}")))?;
    let target = match (via_topic, raw) {
        (true, _) => SendTarget::Topic,
        (false, true) => SendTarget::QueueRaw,
        (false, false) => SendTarget::QueueEnveloped,
    };
    let id = broker::send_command(config, json, &command.client_id, target).await?;
    println!("{id}");
    Ok(())
}
