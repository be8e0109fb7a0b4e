//! `/metrics` in the Prometheus text exposition format, rendered from the
//! use cases' counters and the registry's connection count.

use std::fmt::Write;

use domain::stats::{DownlinkSnapshot, UplinkSnapshot};

/// Renders every metric.
pub fn render(
    downlink: &DownlinkSnapshot,
    uplink: &UplinkSnapshot,
    open_connections: usize,
    ready: bool,
) -> String {
    let mut out = String::with_capacity(2048);
    gauge(
        &mut out,
        "wsbridge_open_connections",
        "Open WebSocket connections.",
        open_connections as u64,
    );
    gauge(
        &mut out,
        "wsbridge_ready",
        "1 while the command consumer's last receive succeeded.",
        u64::from(ready),
    );
    let commands: [(&str, u64); 7] = [
        ("received", downlink.received),
        ("forwarded", downlink.forwarded),
        ("undeliverable", downlink.undeliverable),
        ("released", downlink.released),
        ("malformed", downlink.malformed),
        ("duplicate", downlink.duplicate),
        ("frames_queued", downlink.frames_queued),
    ];
    labelled_counter(
        &mut out,
        "wsbridge_commands_total",
        "Commands by outcome (frames_queued counts one per connection written to).",
        "outcome",
        &commands,
    );
    counter(
        &mut out,
        "wsbridge_sqs_receive_errors_total",
        "Failed SQS receive calls.",
        downlink.receive_errors,
    );
    counter(
        &mut out,
        "wsbridge_sqs_settle_errors_total",
        "Failed SQS delete / visibility calls (after retries).",
        downlink.settle_errors,
    );
    let messages: [(&str, u64); 3] = [
        ("published", uplink.published),
        ("failed", uplink.failed),
        ("invalid", uplink.invalid),
    ];
    labelled_counter(
        &mut out,
        "wsbridge_client_messages_total",
        "Client messages by outcome.",
        "outcome",
        &messages,
    );
    out
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, help, "gauge");
    let _ = writeln!(out, "{name} {value}");
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, help, "counter");
    let _ = writeln!(out, "{name} {value}");
}

fn labelled_counter(out: &mut String, name: &str, help: &str, label: &str, values: &[(&str, u64)]) {
    header(out, name, help, "counter");
    for (key, value) in values {
        let _ = writeln!(out, "{name}{{{label}=\"{key}\"}} {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_their_values() {
        let downlink = DownlinkSnapshot {
            received: 5,
            forwarded: 3,
            malformed: 2,
            ..Default::default()
        };
        let uplink = UplinkSnapshot {
            published: 7,
            ..Default::default()
        };
        let text = render(&downlink, &uplink, 4, true);
        assert!(text.contains("wsbridge_open_connections 4\n"), "{text}");
        assert!(text.contains("wsbridge_ready 1\n"), "{text}");
        assert!(
            text.contains("wsbridge_commands_total{outcome=\"received\"} 5\n"),
            "{text}"
        );
        assert!(
            text.contains("wsbridge_commands_total{outcome=\"forwarded\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("wsbridge_commands_total{outcome=\"malformed\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("wsbridge_client_messages_total{outcome=\"published\"} 7\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE wsbridge_commands_total counter\n"),
            "{text}"
        );
    }
}
