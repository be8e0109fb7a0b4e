//! Reassembly of fragmented messages, under the same size limit as a frame,
//! within a deadline, and within the instance-wide fragment budget.
//!
//! actix-ws can aggregate continuations itself (`aggregate_continuations()`
//! with `max_continuation_size`), but it reports an oversized message as a
//! generic I/O error that cannot be told apart from a broken connection. This
//! small reassembler says exactly what went wrong, so the session closes with
//! 1009 for "too big" and 1007 for invalid UTF-8. The codec already enforces
//! the order of fragments (no new message before the last fragment).
//!
//! A message started in fragments holds memory until its last fragment, so
//! two more bounds apply to it: a deadline from its first fragment (the
//! session loop closes the connection when [`Reassembler::deadline`] passes:
//! trickling fragments cannot pin memory forever), and a [`Charge`] on the
//! budget shared by all connections (see `fragment_budget`).

use std::time::Duration;

use actix_web::web::Bytes;
use actix_ws::Item;
use tokio::time::Instant;

use crate::fragment_budget::Charge;

/// A message complete after its last fragment.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reassembled {
    /// More fragments to come.
    Pending,
    /// A complete text message.
    Text(String),
    /// A complete binary message.
    Binary(Bytes),
}

/// Why a fragmented message is refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FragmentError {
    /// The fragments add up to more than the limit.
    TooBig,
    /// Holding the fragment would take all connections together over the
    /// fragment budget.
    OverBudget,
    /// A text message whose bytes are not UTF-8.
    InvalidUtf8,
}

/// Collects the fragments of one message at a time.
#[derive(Debug)]
pub(crate) struct Reassembler {
    limit: usize,
    timeout: Duration,
    text: bool,
    /// When the message being reassembled must be complete; `None` between
    /// messages.
    deadline: Option<Instant>,
    /// The bytes held in `parts`, charged to the shared budget.
    charge: Charge,
    parts: Vec<Bytes>,
}

impl Reassembler {
    /// A reassembler for messages of at most `limit` bytes, each complete
    /// within `timeout` of its first fragment, holding its fragments on
    /// `charge`.
    pub(crate) fn new(limit: usize, timeout: Duration, charge: Charge) -> Self {
        Self {
            limit,
            timeout,
            text: false,
            deadline: None,
            charge,
            parts: Vec::new(),
        }
    }

    /// When the message under way must be complete; `None` when no
    /// fragmented message is under way (or its timeout is too long to be a
    /// point in time).
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Takes one fragment.
    pub(crate) fn push(&mut self, item: Item) -> Result<Reassembled, FragmentError> {
        let (bytes, last) = match item {
            Item::FirstText(bytes) => {
                self.start(true);
                (bytes, false)
            }
            Item::FirstBinary(bytes) => {
                self.start(false);
                (bytes, false)
            }
            Item::Continue(bytes) => (bytes, false),
            Item::Last(bytes) => (bytes, true),
        };
        if self.charge.bytes().saturating_add(bytes.len()) > self.limit {
            self.reset();
            return Err(FragmentError::TooBig);
        }
        if !last {
            // The last fragment is not charged: it completes the message,
            // which gives the whole charge back at once, and refusing it
            // would close the one connection about to free its bytes.
            if self.charge.add(bytes.len()).is_err() {
                self.reset();
                return Err(FragmentError::OverBudget);
            }
            if !bytes.is_empty() {
                self.parts.push(bytes);
            }
            return Ok(Reassembled::Pending);
        }
        let mut parts = std::mem::take(&mut self.parts);
        parts.push(bytes);
        let text = self.text;
        self.reset();
        let bytes = parts.concat();
        if !text {
            return Ok(Reassembled::Binary(Bytes::from(bytes)));
        }
        String::from_utf8(bytes)
            .map(Reassembled::Text)
            .map_err(|_| FragmentError::InvalidUtf8)
    }

    fn start(&mut self, text: bool) {
        self.reset();
        self.text = text;
        // A timeout too long to be a point in time is no deadline at all.
        self.deadline = Instant::now().checked_add(self.timeout);
    }

    /// Between messages: nothing held, no deadline.
    fn reset(&mut self) {
        self.text = false;
        self.deadline = None;
        self.charge.clear();
        self.parts.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fragment_budget::FragmentBudget;

    /// A reassembler with a deadline far away and a budget of its own.
    fn reassembler(limit: usize) -> Reassembler {
        let budget = FragmentBudget::default();
        Reassembler::new(limit, Duration::from_secs(60), budget.charge(usize::MAX))
    }

    fn b(s: &'static [u8]) -> Bytes {
        Bytes::from_static(s)
    }

    #[test]
    fn joins_text_fragments() {
        let mut r = reassembler(10);
        assert_eq!(r.push(Item::FirstText(b(b"ab"))), Ok(Reassembled::Pending));
        assert_eq!(r.push(Item::Continue(b(b""))), Ok(Reassembled::Pending));
        assert_eq!(r.push(Item::Continue(b(b"cd"))), Ok(Reassembled::Pending));
        assert_eq!(
            r.push(Item::Last(b(b"ef"))),
            Ok(Reassembled::Text("abcdef".into()))
        );
        // The next message starts afresh.
        assert_eq!(
            r.push(Item::FirstBinary(b(b"123456"))),
            Ok(Reassembled::Pending)
        );
        assert_eq!(
            r.push(Item::Last(b(b"7890"))),
            Ok(Reassembled::Binary(b(b"1234567890")))
        );
    }

    #[test]
    fn refuses_more_than_the_limit_in_total() {
        let mut r = reassembler(10);
        assert_eq!(
            r.push(Item::FirstText(b(b"123456"))),
            Ok(Reassembled::Pending)
        );
        assert_eq!(
            r.push(Item::Continue(b(b"78901"))),
            Err(FragmentError::TooBig)
        );
        let mut r = reassembler(10);
        assert_eq!(
            r.push(Item::FirstText(b(b"1234567890"))),
            Ok(Reassembled::Pending)
        );
        assert_eq!(
            r.push(Item::Last(b(b""))),
            Ok(Reassembled::Text("1234567890".into()))
        );
    }

    #[test]
    fn refuses_text_that_is_not_utf8_even_when_split_inside_a_character() {
        let mut r = reassembler(10);
        let e_acute = "é".as_bytes();
        assert_eq!(
            r.push(Item::FirstText(Bytes::copy_from_slice(&e_acute[..1]))),
            Ok(Reassembled::Pending)
        );
        assert_eq!(
            r.push(Item::Last(Bytes::copy_from_slice(&e_acute[1..]))),
            Ok(Reassembled::Text("é".into()))
        );
        assert_eq!(
            r.push(Item::FirstText(b(b"\xff"))),
            Ok(Reassembled::Pending)
        );
        assert_eq!(r.push(Item::Last(b(b"a"))), Err(FragmentError::InvalidUtf8));
    }

    #[test]
    fn fragments_are_charged_until_the_message_completes() {
        let budget = FragmentBudget::default();
        let mut r = Reassembler::new(100, Duration::from_secs(60), budget.charge(8));
        assert_eq!(r.push(Item::FirstText(b(b"abc"))), Ok(Reassembled::Pending));
        assert_eq!(r.push(Item::Continue(b(b"def"))), Ok(Reassembled::Pending));
        assert_eq!(budget.held(), 6);
        // The last fragment completes the message: not charged, even when
        // the budget has no room for it, and everything is given back.
        assert_eq!(
            r.push(Item::Last(b(b"ghijk"))),
            Ok(Reassembled::Text("abcdefghijk".into()))
        );
        assert_eq!(budget.held(), 0);

        // Over the budget (8 bytes here, for all connections together).
        let mut other = budget.charge(8);
        other.add(5).unwrap();
        assert_eq!(r.push(Item::FirstText(b(b"12"))), Ok(Reassembled::Pending));
        assert_eq!(
            r.push(Item::Continue(b(b"34"))),
            Err(FragmentError::OverBudget)
        );
        assert_eq!(budget.held(), 5, "the refused message gave its bytes back");
        assert_eq!(r.deadline(), None);

        // Dropping the reassembler (the connection ends) gives back the rest.
        assert_eq!(r.push(Item::FirstText(b(b"1"))), Ok(Reassembled::Pending));
        assert_eq!(budget.held(), 6);
        drop(r);
        assert_eq!(budget.held(), 5);
    }

    #[test]
    fn a_message_too_big_gives_its_bytes_back() {
        let budget = FragmentBudget::default();
        let mut r = Reassembler::new(4, Duration::from_secs(60), budget.charge(100));
        assert_eq!(
            r.push(Item::FirstBinary(b(b"123"))),
            Ok(Reassembled::Pending)
        );
        assert_eq!(r.push(Item::Continue(b(b"45"))), Err(FragmentError::TooBig));
        assert_eq!(budget.held(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_runs_from_the_first_fragment_to_the_last() {
        let mut r = reassembler(100);
        assert_eq!(r.deadline(), None);
        let before = Instant::now();
        r.push(Item::FirstText(b(b"a"))).unwrap();
        let deadline = r.deadline().unwrap();
        assert!(deadline >= before + Duration::from_secs(60));
        assert_eq!(deadline, before + Duration::from_secs(60));
        // Later fragments do not push it back.
        tokio::time::advance(Duration::from_secs(30)).await;
        r.push(Item::Continue(b(b"b"))).unwrap();
        assert_eq!(r.deadline(), Some(deadline));
        r.push(Item::Last(b(b"c"))).unwrap();
        assert_eq!(r.deadline(), None);
        // The next message has a deadline of its own.
        r.push(Item::FirstText(b(b"d"))).unwrap();
        assert_eq!(r.deadline(), Some(Instant::now() + Duration::from_secs(60)));
    }
}
