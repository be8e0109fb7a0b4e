//! The instance-wide budget of bytes held in incomplete (fragmented)
//! messages.
//!
//! Each connection may hold up to the message size limit while a fragmented
//! message is being reassembled (see `fragments`); nothing in that limit
//! bounds the sum over thousands of connections. The registry owns one
//! [`FragmentBudget`] that every session shares; each session's reassembler
//! holds a [`Charge`] on it, which takes bytes as fragments arrive and gives
//! them back when the message completes, is refused, or the connection ends.
//! The refund is the charge's `Drop`, so no exit path of a session can leak
//! bytes out of the budget.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The counters every charge updates.
#[derive(Debug, Default)]
struct Counters {
    /// Bytes charged now, over all connections.
    held: AtomicUsize,
    /// The most ever charged at once.
    peak: AtomicUsize,
}

/// Bytes held in incomplete messages across all connections of an instance.
///
/// Cheap to clone: clones share the same counters.
#[derive(Debug, Clone, Default)]
pub(crate) struct FragmentBudget {
    counters: Arc<Counters>,
}

/// A charge refused: it would take the instance over its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OverBudget;

impl FragmentBudget {
    /// Bytes held in incomplete messages now.
    pub(crate) fn held(&self) -> usize {
        self.counters.held.load(Ordering::Relaxed)
    }

    /// The most bytes ever held in incomplete messages at once.
    pub(crate) fn peak(&self) -> usize {
        self.counters.peak.load(Ordering::Relaxed)
    }

    /// An empty charge of one connection, refused whenever it would take
    /// the total over `limit` bytes.
    pub(crate) fn charge(&self, limit: usize) -> Charge {
        Charge {
            counters: Arc::clone(&self.counters),
            limit,
            bytes: 0,
        }
    }
}

/// One connection's share of the budget: the bytes of the message it is
/// reassembling. Dropping it gives them all back.
#[derive(Debug)]
pub(crate) struct Charge {
    counters: Arc<Counters>,
    limit: usize,
    bytes: usize,
}

impl Charge {
    /// Bytes this charge holds.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Takes `n` more bytes, unless all connections together would then
    /// hold more than the limit; a refused charge takes nothing.
    pub(crate) fn add(&mut self, n: usize) -> Result<(), OverBudget> {
        if n == 0 {
            return Ok(());
        }
        let limit = self.limit;
        // Check and add in one atomic step: however many sessions race for
        // the last bytes, the total never goes over the limit.
        let before = self
            .counters
            .held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                held.checked_add(n).filter(|&total| total <= limit)
            })
            .map_err(|_| OverBudget)?;
        self.bytes += n;
        self.counters.peak.fetch_max(before + n, Ordering::Relaxed);
        Ok(())
    }

    /// Gives back every byte this charge holds.
    pub(crate) fn clear(&mut self) {
        if self.bytes > 0 {
            self.counters.held.fetch_sub(self.bytes, Ordering::Relaxed);
            self.bytes = 0;
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn charges_add_up_across_connections_and_are_refused_over_the_limit() {
        let budget = FragmentBudget::default();
        let mut a = budget.charge(10);
        let mut b = budget.charge(10);
        assert_eq!(a.add(6), Ok(()));
        assert_eq!(b.add(4), Ok(()));
        assert_eq!(budget.held(), 10);
        // A refused charge takes nothing.
        assert_eq!(b.add(1), Err(OverBudget));
        assert_eq!((budget.held(), b.bytes()), (10, 4));
        a.clear();
        assert_eq!(budget.held(), 4);
        assert_eq!(b.add(6), Ok(()));
        assert_eq!(budget.held(), 10);
        assert_eq!(budget.peak(), 10);
    }

    #[test]
    fn dropping_a_charge_gives_its_bytes_back() {
        let budget = FragmentBudget::default();
        let mut a = budget.charge(100);
        a.add(30).unwrap();
        a.add(0).unwrap();
        let mut b = budget.charge(100);
        b.add(20).unwrap();
        drop(a);
        assert_eq!(budget.held(), 20);
        drop(b);
        assert_eq!(budget.held(), 0);
        assert_eq!(budget.peak(), 50);
    }

    #[test]
    fn racing_charges_never_take_the_total_over_the_limit() {
        let budget = FragmentBudget::default();
        let limit = 1000;
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..2000 {
                        let mut charge = budget.charge(limit);
                        while charge.add(7).is_ok() {}
                        assert!(charge.bytes() <= limit);
                    }
                });
            }
        });
        assert_eq!(budget.held(), 0);
        assert!(budget.peak() <= limit, "peak {}", budget.peak());
        assert!(budget.peak() > limit - 7, "peak {}", budget.peak());
    }
}
