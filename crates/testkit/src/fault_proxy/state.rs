//! The state the test's handle and the connection tasks share: the standing
//! mode, the injected rules, the record of what was seen, the counters, and
//! the reset signal. Deciding a request's fault and recording it happen
//! under one lock, so the record is in the order the decisions were made.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use tokio::sync::watch;

use super::{Fault, Outcome, ProxyStats, Seen};

pub(super) struct Rule {
    pub(super) operation: Option<String>,
    pub(super) fault: Fault,
    pub(super) remaining: Option<u64>,
    pub(super) until: Option<Instant>,
}

impl Rule {
    fn live(&self, now: Instant) -> bool {
        self.remaining.is_none_or(|n| n > 0) && self.until.is_none_or(|t| now < t)
    }
}

pub(super) struct State {
    pub(super) mode: Fault,
    pub(super) rules: Vec<Rule>,
    pub(super) seen: Vec<Seen>,
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) connections: AtomicU64,
    pub(super) requests: AtomicU64,
    pub(super) forwarded: AtomicU64,
    pub(super) answered: AtomicU64,
    pub(super) black_holed: AtomicU64,
    pub(super) refused: AtomicU64,
    pub(super) resets: AtomicU64,
}

impl Counters {
    pub(super) fn snapshot(&self) -> ProxyStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ProxyStats {
            connections: get(&self.connections),
            requests: get(&self.requests),
            forwarded: get(&self.forwarded),
            answered: get(&self.answered),
            black_holed: get(&self.black_holed),
            refused: get(&self.refused),
            resets: get(&self.resets),
        }
    }
}

pub(super) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

pub(super) struct Shared {
    pub(super) target: SocketAddr,
    pub(super) state: Mutex<State>,
    /// Bumped to reset every open connection.
    pub(super) resets: watch::Sender<u64>,
    pub(super) counters: Counters,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn refusing(&self) -> bool {
        self.lock().mode == Fault::Refuse
    }

    pub(super) fn black_holing(&self) -> bool {
        self.lock().mode == Fault::BlackHole
    }

    pub(super) fn record(&self, operation: &str, outcome: Outcome) {
        self.lock().seen.push(Seen {
            at: Instant::now(),
            operation: operation.to_owned(),
            outcome,
            access_key_id: String::new(),
        });
    }

    /// Picks the fault for a request and records the request (its
    /// operation and the access key id that signed it).
    pub(super) fn decide(&self, operation: &str, access_key_id: String) -> Fault {
        let now = Instant::now();
        let mut state = self.lock();
        state.rules.retain(|r| r.live(now));
        let fault = match state
            .rules
            .iter_mut()
            .find(|r| r.operation.as_deref().is_none_or(|op| op == operation))
        {
            Some(rule) => {
                if let Some(n) = rule.remaining.as_mut() {
                    *n -= 1;
                }
                rule.fault.clone()
            }
            None => state.mode.clone(),
        };
        bump(&self.counters.requests);
        let outcome = match &fault {
            Fault::PassThrough | Fault::Delay(_) | Fault::DelayResponse(_) => Outcome::Forwarded,
            Fault::Refuse => Outcome::Refused,
            Fault::BlackHole => Outcome::BlackHoled,
            Fault::ServerError => Outcome::Answered(500),
            Fault::Throttle => Outcome::Answered(400),
            Fault::Respond(canned) => Outcome::Answered(canned.status),
        };
        state.seen.push(Seen {
            at: now,
            operation: operation.to_owned(),
            outcome,
            access_key_id,
        });
        fault
    }
}
