//! Reassembly of fragmented messages, under the same size limit as a frame.
//!
//! actix-ws can aggregate continuations itself (`aggregate_continuations()`
//! with `max_continuation_size`), but it reports an oversized message as a
//! generic I/O error that cannot be told apart from a broken connection. This
//! small reassembler says exactly what went wrong, so the session closes with
//! 1009 for "too big" and 1007 for invalid UTF-8. The codec already enforces
//! the order of fragments (no new message before the last fragment).

use actix_web::web::Bytes;
use actix_ws::Item;

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
    /// A text message whose bytes are not UTF-8.
    InvalidUtf8,
}

/// Collects the fragments of one message at a time.
#[derive(Debug)]
pub(crate) struct Reassembler {
    limit: usize,
    text: bool,
    size: usize,
    parts: Vec<Bytes>,
}

impl Reassembler {
    /// A reassembler for messages of at most `limit` bytes.
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit,
            text: false,
            size: 0,
            parts: Vec::new(),
        }
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
        self.size = self.size.saturating_add(bytes.len());
        if self.size > self.limit {
            self.start(false);
            return Err(FragmentError::TooBig);
        }
        if !bytes.is_empty() {
            self.parts.push(bytes);
        }
        if !last {
            return Ok(Reassembled::Pending);
        }
        let parts = std::mem::take(&mut self.parts);
        let text = self.text;
        self.start(false);
        let bytes = parts.concat();
        if !text {
            return Ok(Reassembled::Binary(Bytes::from(bytes)));
        }
        String::from_utf8(bytes)
            .map(Reassembled::Text)
            .map_err(|_| FragmentError::InvalidUtf8)
    }

    fn start(&mut self, text: bool) {
        self.text = text;
        self.size = 0;
        self.parts.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &'static [u8]) -> Bytes {
        Bytes::from_static(s)
    }

    #[test]
    fn joins_text_fragments() {
        let mut r = Reassembler::new(10);
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
        let mut r = Reassembler::new(10);
        assert_eq!(
            r.push(Item::FirstText(b(b"123456"))),
            Ok(Reassembled::Pending)
        );
        assert_eq!(
            r.push(Item::Continue(b(b"78901"))),
            Err(FragmentError::TooBig)
        );
        let mut r = Reassembler::new(10);
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
        let mut r = Reassembler::new(10);
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
}
