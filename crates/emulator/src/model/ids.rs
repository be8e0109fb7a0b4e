//! Message and subscription ids: UUID-shaped, unique within a model, drawn
//! from a counter so that minting one costs no random draw.

use std::sync::atomic::{AtomicU64, Ordering};

/// Unique, UUID-shaped ids without a random draw per id.
#[derive(Debug)]
pub(super) struct IdGen {
    prefix: u32,
    counter: AtomicU64,
}

impl IdGen {
    pub(super) fn new() -> Self {
        Self {
            prefix: rand::random(),
            counter: AtomicU64::new(rand::random::<u32>().into()),
        }
    }

    pub(super) fn next(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            self.prefix,
            (n >> 48) & 0xffff,
            (n >> 36) & 0xfff,
            (n >> 24) & 0xfff,
            n & 0xff_ffff_ffff
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_look_like_uuids_and_differ() {
        let ids = IdGen::new();
        let (a, b) = (ids.next(), ids.next());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
    }
}
