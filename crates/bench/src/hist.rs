//! A log-linear latency histogram in microseconds (about 3 % precision),
//! mergeable across processes.

use serde::{Deserialize, Serialize};

/// Sub-buckets per power of two.
const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
/// Buckets: exact below 32 µs, then 32 per power of two up to 2^40 µs.
const BUCKETS: usize = (SUB + (40 - SUB_BITS as u64) * SUB) as usize;

/// Counts of values (µs) per bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }
}

fn index(value: u64) -> usize {
    if value < SUB {
        return value as usize;
    }
    let exp = 63 - value.leading_zeros();
    let mantissa = (value >> (exp - SUB_BITS)) & (SUB - 1);
    let i = SUB + u64::from(exp - SUB_BITS) * SUB + mantissa;
    (i as usize).min(BUCKETS - 1)
}

/// The smallest value of bucket `i`.
fn lower_bound(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let exp = (i - SUB) / SUB + u64::from(SUB_BITS);
    let mantissa = (i - SUB) % SUB;
    (SUB + mantissa) << (exp - u64::from(SUB_BITS))
}

/// The sparse form sent between processes: (bucket, count) pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sparse {
    /// Non-empty buckets.
    pub buckets: Vec<(u32, u64)>,
    /// Largest value recorded.
    pub max: u64,
}

impl Histogram {
    /// Records one value in microseconds.
    pub fn record(&mut self, micros: u64) {
        self.counts[index(micros)] += 1;
        self.total += 1;
        self.max = self.max.max(micros);
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The value at quantile `q` (0..=1), in microseconds (bucket midpoint).
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let low = lower_bound(i);
                let high = if i + 1 < BUCKETS {
                    lower_bound(i + 1)
                } else {
                    low
                };
                return Some(((low + high) / 2).min(self.max));
            }
        }
        Some(self.max)
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// The sparse form.
    pub fn to_sparse(&self) -> Sparse {
        Sparse {
            buckets: self
                .counts
                .iter()
                .enumerate()
                .filter(|(_, &c)| c > 0)
                .map(|(i, &c)| (i as u32, c))
                .collect(),
            max: self.max,
        }
    }

    /// From the sparse form.
    pub fn from_sparse(sparse: &Sparse) -> Self {
        let mut histogram = Self::default();
        for &(i, count) in &sparse.buckets {
            if let Some(slot) = histogram.counts.get_mut(i as usize) {
                *slot += count;
                histogram.total += count;
            }
        }
        histogram.max = sparse.max;
        histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for v in [
            0u64, 1, 31, 32, 33, 63, 64, 100, 1000, 12_345, 1_000_000, 60_000_000,
        ] {
            let i = index(v);
            assert!(i >= last, "{v}");
            last = i;
            let low = lower_bound(i);
            assert!(low <= v, "{v}: {low}");
            assert!(v - low <= v / 16 + 1, "{v}: {low}");
        }
    }

    #[test]
    fn quantiles_and_merging() {
        let mut a = Histogram::default();
        let mut b = Histogram::default();
        for v in 1..=500 {
            a.record(v);
        }
        for v in 501..=1000 {
            b.record(v);
        }
        a.merge(&Histogram::from_sparse(&b.to_sparse()));
        assert_eq!(a.count(), 1000);
        let p50 = a.quantile(0.5).unwrap();
        let p99 = a.quantile(0.99).unwrap();
        assert!((480..=520).contains(&p50), "{p50}");
        assert!((960..=1000).contains(&p99), "{p99}");
        assert_eq!(Histogram::default().quantile(0.5), None);
    }
}
