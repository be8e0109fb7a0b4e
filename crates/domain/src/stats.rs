//! Counters kept by the use cases; the app exports them as metrics and uses
//! the receive state for readiness.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

macro_rules! counters {
    ($(#[$meta:meta])* $name:ident / $snap:ident { $($(#[$fmeta:meta])* $field:ident),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Default)]
        pub struct $name { $($(#[$fmeta])* pub $field: AtomicU64,)* }

        /// A point-in-time copy of the counters.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct $snap { $($(#[$fmeta])* pub $field: u64,)* }

        impl $name {
            /// Reads every counter.
            pub fn snapshot(&self) -> $snap {
                $snap { $($field: self.$field.load(Ordering::Relaxed),)* }
            }
        }
    };
}

counters! {
    /// What the downlink did with the messages it received.
    DownlinkStats / DownlinkSnapshot {
        /// Messages received from the source.
        received,
        /// Commands handed to at least one connection.
        forwarded,
        /// Commands deleted without a connection to take them.
        undeliverable,
        /// Commands released to be received again (client absent here).
        released,
        /// Bodies that are not Commands.
        malformed,
        /// Repeats of an already forwarded message.
        duplicate,
        /// Frames queued on connections (one Command, several sockets).
        frames_queued,
        /// Failed receive calls.
        receive_errors,
        /// Acknowledge, release or reject calls that failed.
        settle_errors,
    }
}

counters! {
    /// What the uplink did with client frames.
    UplinkStats / UplinkSnapshot {
        /// Events accepted by the sink.
        published,
        /// Events the sink failed or refused.
        failed,
        /// Frames that were not valid ClientMessages.
        invalid,
    }
}

/// Shared by all use cases of one bridge.
#[derive(Debug, Default)]
pub struct Stats {
    /// Downlink counters.
    pub downlink: DownlinkStats,
    /// Uplink counters.
    pub uplink: UplinkStats,
    consumer_healthy: AtomicBool,
}

impl Stats {
    /// Whether the consumer's last receive succeeded (readiness).
    pub fn consumer_healthy(&self) -> bool {
        self.consumer_healthy.load(Ordering::Relaxed)
    }

    /// Records the outcome of a receive.
    pub fn set_consumer_healthy(&self, healthy: bool) {
        self.consumer_healthy.store(healthy, Ordering::Relaxed);
    }
}

pub(crate) fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}
