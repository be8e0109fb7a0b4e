//! What the clients of a worker saw ([`Seen`]): connections, frames,
//! latencies, closes; sent to the parent as one JSON line and merged there.

use std::collections::BTreeMap;

use anyhow::Context;
use serde_json::{json, Value};

use crate::hist::{Histogram, Sparse};

/// What one worker (or all, merged) saw.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// Connections opened.
    pub connected: u64,
    /// Connections that could not be opened.
    pub failed: u64,
    /// First connect error.
    pub first_error: Option<String>,
    /// Command frames received.
    pub frames: u64,
    /// Latency of stamped Commands, µs.
    pub latency: Histogram,
    /// Acks received.
    pub acks: u64,
    /// Send → ack, µs.
    pub ack_latency: Histogram,
    /// Error frames received.
    pub errors: u64,
    /// Close frames received, by code.
    pub closes: BTreeMap<u16, u64>,
    /// Connections that ended (closed or dropped).
    pub ended: u64,
    /// ClientMessages sent.
    pub sent: u64,
    /// When the last Command frame arrived (ns since the epoch).
    pub last_frame_at: u64,
    /// When the last ack arrived (ns since the epoch).
    pub last_ack_at: u64,
}

impl Seen {
    pub(super) fn merge(&mut self, other: &Seen) {
        self.connected += other.connected;
        self.failed += other.failed;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
        self.frames += other.frames;
        self.latency.merge(&other.latency);
        self.acks += other.acks;
        self.ack_latency.merge(&other.ack_latency);
        self.errors += other.errors;
        for (code, n) in &other.closes {
            *self.closes.entry(*code).or_default() += n;
        }
        self.ended += other.ended;
        self.sent += other.sent;
        self.last_frame_at = self.last_frame_at.max(other.last_frame_at);
        self.last_ack_at = self.last_ack_at.max(other.last_ack_at);
    }

    pub(super) fn to_json(&self) -> Value {
        json!({
            "connected": self.connected,
            "failed": self.failed,
            "first_error": self.first_error,
            "frames": self.frames,
            "latency": self.latency.to_sparse(),
            "acks": self.acks,
            "ack_latency": self.ack_latency.to_sparse(),
            "errors": self.errors,
            "closes": self.closes,
            "ended": self.ended,
            "sent": self.sent,
            "last_frame_at": self.last_frame_at,
            "last_ack_at": self.last_ack_at,
        })
    }

    pub(super) fn from_json(value: &Value) -> anyhow::Result<Self> {
        let n = |key: &str| value.get(key).and_then(Value::as_u64).unwrap_or(0);
        let hist = |key: &str| -> anyhow::Result<Histogram> {
            let Some(field) = value.get(key) else {
                return Ok(Histogram::default());
            };
            let sparse: Sparse = serde_json::from_value(field.clone())
                .with_context(|| format!("worker report field {key}"))?;
            Ok(Histogram::from_sparse(&sparse))
        };
        Ok(Self {
            connected: n("connected"),
            failed: n("failed"),
            first_error: value
                .get("first_error")
                .and_then(Value::as_str)
                .map(str::to_owned),
            frames: n("frames"),
            latency: hist("latency")?,
            acks: n("acks"),
            ack_latency: hist("ack_latency")?,
            errors: n("errors"),
            closes: serde_json::from_value(value.get("closes").cloned().unwrap_or(json!({})))?,
            ended: n("ended"),
            sent: n("sent"),
            last_frame_at: n("last_frame_at"),
            last_ack_at: n("last_ack_at"),
        })
    }
}
