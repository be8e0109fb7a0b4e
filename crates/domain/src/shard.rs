//! Shards of the client-id space, for the `sharded` scale-out mode (docs/scaling.md).
//!
//! Three parties must agree on a client's shard without talking to each
//! other: publishers (they set the `shard` message attribute), the load
//! balancer (it routes the WebSocket upgrade) and the replica (its
//! subscription's filter policy takes the shard's Commands). The function is
//! therefore the one nginx's non-consistent `hash $key;` computes to pick a
//! peer: `((crc32(key) >> 16) & 0x7fff) mod S`, CRC-32 as in zlib. Listing
//! the replicas in range order with `weight = hi − lo` makes nginx route each
//! client to the owner of its shard.

use std::fmt;
use std::str::FromStr;

use crate::ClientId;

/// The most shards there can be: the hash keeps 15 bits.
pub const MAX_SHARDS: u32 = 32_768;

/// CRC-32 (IEEE 802.3, reflected, as zlib's `crc32`), one table lookup per byte.
fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut crc = i as u32;
            let mut bit = 0;
            while bit < 8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
                bit += 1;
            }
            table[i] = crc;
            i += 1;
        }
        table
    };
    !bytes.iter().fold(!0u32, |crc, &byte| {
        TABLE[((crc ^ u32::from(byte)) & 0xff) as usize] ^ (crc >> 8)
    })
}

/// The shard (`0..shards`) of a client id among `shards` shards.
///
/// # Panics
/// When `shards` is 0 (configuration keeps it in `1..=MAX_SHARDS`).
pub fn shard_of(client_id: &ClientId, shards: u32) -> u32 {
    ((crc32(client_id.as_str().as_bytes()) >> 16) & 0x7fff) % shards
}

/// A contiguous, non-empty range of shards `[start, end)`: what one replica owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShardRange {
    start: u32,
    end: u32,
}

/// Why a shard range or owner cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardRangeError {
    /// Not `START..END` nor `INDEX/COUNT`.
    #[error("{0:?} is not a range START..END (end excluded)")]
    Syntax(String),
    /// `start >= end`.
    #[error("{start}..{end} is empty")]
    Empty {
        /// First shard.
        start: u32,
        /// One past the last shard.
        end: u32,
    },
    /// The range reaches past the number of shards.
    #[error("{start}..{end} reaches past the {shards} shards (0..{shards})")]
    OutOfBounds {
        /// First shard.
        start: u32,
        /// One past the last shard.
        end: u32,
        /// Number of shards.
        shards: u32,
    },
    /// A replica index outside `0..replicas`, or more replicas than shards.
    #[error("replica {index} of {replicas} cannot own a share of {shards} shards")]
    Owner {
        /// The replica's index.
        index: u32,
        /// The number of replicas.
        replicas: u32,
        /// Number of shards.
        shards: u32,
    },
}

impl ShardRange {
    /// `[start, end)`, checked against the number of shards.
    pub fn new(start: u32, end: u32, shards: u32) -> Result<Self, ShardRangeError> {
        if start >= end {
            return Err(ShardRangeError::Empty { start, end });
        }
        if end > shards {
            return Err(ShardRangeError::OutOfBounds { start, end, shards });
        }
        Ok(Self { start, end })
    }

    /// The share of replica `index` (0-based) when `shards` are split among
    /// `replicas` in order, the first `shards % replicas` replicas taking one
    /// more than the others. Every shard has exactly one owner.
    pub fn of_replica(index: u32, replicas: u32, shards: u32) -> Result<Self, ShardRangeError> {
        if replicas == 0 || index >= replicas || replicas > shards {
            return Err(ShardRangeError::Owner {
                index,
                replicas,
                shards,
            });
        }
        let (base, extra) = (shards / replicas, shards % replicas);
        let start = index * base + index.min(extra);
        let end = start + base + u32::from(index < extra);
        Self::new(start, end, shards)
    }

    /// Parses `START..END` (end excluded), checked against `shards`.
    pub fn parse(text: &str, shards: u32) -> Result<Self, ShardRangeError> {
        let syntax = || ShardRangeError::Syntax(text.to_owned());
        let (start, end) = text.trim().split_once("..").ok_or_else(syntax)?;
        let start = u32::from_str(start.trim()).map_err(|_| syntax())?;
        let end = u32::from_str(end.trim()).map_err(|_| syntax())?;
        Self::new(start, end, shards)
    }

    /// The first shard.
    pub fn start(&self) -> u32 {
        self.start
    }

    /// One past the last shard.
    pub fn end(&self) -> u32 {
        self.end
    }

    /// The number of shards in the range (an nginx upstream weight).
    pub fn len(&self) -> u32 {
        self.end - self.start
    }

    /// Always false: ranges are never empty.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether `shard` is in the range.
    pub fn contains(&self, shard: u32) -> bool {
        (self.start..self.end).contains(&shard)
    }
}

impl fmt::Display for ShardRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.start, self.end)
    }
}

/// Which shards this replica serves: `shards` in all, `owned` here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardAssignment {
    /// The number of shards of the fleet.
    pub shards: u32,
    /// The range this replica owns.
    pub owned: ShardRange,
}

impl ShardAssignment {
    /// The shard of `client_id`, and whether it is owned here.
    pub fn locate(&self, client_id: &ClientId) -> (u32, bool) {
        let shard = shard_of(client_id, self.shards);
        (shard, self.owned.contains(shard))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ClientId {
        ClientId::parse(s.to_owned()).unwrap()
    }

    #[test]
    fn crc32_is_zlibs() {
        // The standard check value, and zlib.crc32 of two short strings.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"a"), 0xE8B7_BE43);
    }

    #[test]
    fn shards_match_the_published_formula() {
        // Values from `scripts/scaling-model.py --shard-of ID --shards N`
        // (Python's zlib.crc32), which nginx's `hash` reproduces.
        for (client, s4096, s7) in [
            ("client123", 2018, 2),
            ("a", 2231, 4),
            ("alice", 1934, 4),
            ("bob", 1483, 6),
            ("k7", 3949, 1),
        ] {
            assert_eq!(shard_of(&id(client), 4096), s4096, "{client}");
            assert_eq!(shard_of(&id(client), 7), s7, "{client}");
        }
        assert_eq!(shard_of(&id("anything"), 1), 0);
    }

    #[test]
    fn replicas_split_the_shards_in_order_without_gaps() {
        for (shards, replicas) in [(4096, 3), (4096, 1), (10, 10), (7, 3), (32_768, 200)] {
            let mut next = 0;
            for index in 0..replicas {
                let range = ShardRange::of_replica(index, replicas, shards).unwrap();
                assert_eq!(range.start(), next, "{shards}/{replicas} #{index}");
                assert!(range.len() == shards / replicas || range.len() == shards / replicas + 1);
                next = range.end();
            }
            assert_eq!(next, shards, "{shards}/{replicas}");
        }
        assert_eq!(
            ShardRange::of_replica(0, 3, 4096).unwrap().to_string(),
            "0..1366"
        );
        assert_eq!(
            ShardRange::of_replica(2, 3, 4096).unwrap().to_string(),
            "2731..4096"
        );
    }

    #[test]
    fn impossible_owners_and_ranges_are_refused() {
        assert!(matches!(
            ShardRange::of_replica(3, 3, 4096),
            Err(ShardRangeError::Owner { .. })
        ));
        assert!(ShardRange::of_replica(0, 0, 4096).is_err());
        assert!(ShardRange::of_replica(0, 5, 4).is_err());
        assert_eq!(
            ShardRange::parse("5..5", 10),
            Err(ShardRangeError::Empty { start: 5, end: 5 })
        );
        assert!(matches!(
            ShardRange::parse("0..11", 10),
            Err(ShardRangeError::OutOfBounds { .. })
        ));
        for bad in ["", "3", "3-5", "a..b", "..4", "-1..3"] {
            assert!(
                matches!(ShardRange::parse(bad, 10), Err(ShardRangeError::Syntax(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            ShardRange::parse(" 2 .. 9 ", 10).unwrap(),
            ShardRange::new(2, 9, 10).unwrap()
        );
    }

    #[test]
    fn an_assignment_locates_clients_inside_and_outside_its_range() {
        let assignment = ShardAssignment {
            shards: 4096,
            owned: ShardRange::new(1366, 2731, 4096).unwrap(),
        };
        assert_eq!(assignment.locate(&id("client123")), (2018, true));
        assert_eq!(assignment.locate(&id("k7")), (3949, false));
        assert!(!assignment.owned.contains(2731));
        assert!(assignment.owned.contains(1366));
    }
}
