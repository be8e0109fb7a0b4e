//! Refuses an oversized frame as soon as its header arrives.
//!
//! The actix-http codec checks a frame's length against the limit only once
//! the whole frame is buffered, so without this a client that declares a
//! 1 GiB frame makes the server hold up to 1 GiB before it is refused. This
//! stream sits between the request body and actix-ws' `MessageStream`, reads
//! the frame headers going by (it never copies or changes a byte), and fails
//! with [`PayloadError::Overflow`] at the first header over the limit; the
//! session then closes with 1009.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use actix_web::error::PayloadError;
use actix_web::web::Bytes;
use futures_util::Stream;

/// Longest frame header: 2 bytes, 8 of extended length, 4 of mask.
const MAX_HEADER: usize = 14;

#[derive(Debug)]
enum Scan {
    /// Collecting the header of the next frame.
    Header { buf: [u8; MAX_HEADER], have: usize },
    /// Skipping the rest of the current frame's payload.
    Payload { remaining: u64 },
    /// A frame over the limit was seen: the stream has ended.
    Refused,
}

impl Scan {
    fn header() -> Self {
        Self::Header {
            buf: [0; MAX_HEADER],
            have: 0,
        }
    }
}

/// A body stream that ends with [`PayloadError::Overflow`] at the first
/// WebSocket frame whose declared length is over `limit`.
pub(crate) struct FrameLimit<S> {
    inner: S,
    limit: u64,
    scan: Scan,
}

impl<S> FrameLimit<S> {
    /// Watches `inner` for frames over `limit` bytes.
    pub(crate) fn new(inner: S, limit: usize) -> Self {
        Self {
            inner,
            limit: u64::try_from(limit).unwrap_or(u64::MAX),
            scan: Scan::header(),
        }
    }

    /// Follows the frame boundaries through `data`; false at a frame over
    /// the limit.
    fn follow(&mut self, mut data: &[u8]) -> bool {
        while !data.is_empty() {
            match &mut self.scan {
                Scan::Refused => return false,
                Scan::Payload { remaining } => {
                    let skip =
                        usize::try_from(*remaining).map_or(data.len(), |r| r.min(data.len()));
                    // `skip` fits in u64: it is at most `remaining`.
                    *remaining -= skip as u64;
                    data = &data[skip..];
                    if *remaining == 0 {
                        self.scan = Scan::header();
                    }
                }
                Scan::Header { buf, have } => {
                    buf[*have] = data[0];
                    *have += 1;
                    data = &data[1..];
                    if *have < 2 {
                        continue;
                    }
                    let extended = match buf[1] & 0x7f {
                        126 => 2,
                        127 => 8,
                        _ => 0,
                    };
                    let mask = if buf[1] & 0x80 != 0 { 4 } else { 0 };
                    if *have < 2 + extended + mask {
                        continue;
                    }
                    let length = match extended {
                        0 => u64::from(buf[1] & 0x7f),
                        2 => u64::from(u16::from_be_bytes([buf[2], buf[3]])),
                        _ => u64::from_be_bytes([
                            buf[2], buf[3], buf[4], buf[5], buf[6], buf[7], buf[8], buf[9],
                        ]),
                    };
                    if length > self.limit {
                        self.scan = Scan::Refused;
                        return false;
                    }
                    self.scan = if length == 0 {
                        Scan::header()
                    } else {
                        Scan::Payload { remaining: length }
                    };
                }
            }
        }
        !matches!(self.scan, Scan::Refused)
    }
}

impl<S> Stream for FrameLimit<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if matches!(this.scan, Scan::Refused) {
            return Poll::Ready(None);
        }
        match ready!(Pin::new(&mut this.inner).poll_next(cx)) {
            Some(Ok(bytes)) if !this.follow(&bytes) => {
                Poll::Ready(Some(Err(PayloadError::Overflow)))
            }
            other => Poll::Ready(other),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use futures_util::{stream, StreamExt};

    use super::*;

    /// A masked client frame header for a payload of `len` bytes.
    fn header(opcode: u8, len: u64) -> Vec<u8> {
        let mut h = vec![0x80 | opcode];
        if len < 126 {
            h.push(0x80 | len as u8);
        } else if let Ok(short) = u16::try_from(len) {
            h.push(0x80 | 126);
            h.extend_from_slice(&short.to_be_bytes());
        } else {
            h.push(0x80 | 127);
            h.extend_from_slice(&len.to_be_bytes());
        }
        h.extend_from_slice(&[1, 2, 3, 4]);
        h
    }

    fn frame(len: usize) -> Vec<u8> {
        let mut f = header(0x1, len as u64);
        f.extend(std::iter::repeat_n(b'a', len));
        f
    }

    /// Feeds `bytes` in chunks of `chunk` and collects what comes out.
    async fn run(bytes: Vec<u8>, chunk: usize, limit: usize) -> Vec<Result<Bytes, PayloadError>> {
        let chunks: Vec<Result<Bytes, PayloadError>> = bytes
            .chunks(chunk)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        FrameLimit::new(stream::iter(chunks), limit).collect().await
    }

    #[tokio::test]
    async fn frames_within_the_limit_pass_unchanged_however_they_are_split() {
        let mut bytes = frame(0);
        bytes.extend(frame(100));
        bytes.extend(frame(300));
        bytes.extend(frame(1000));
        for chunk in [1, 3, 7, 64, 4096] {
            let out = run(bytes.clone(), chunk, 1000).await;
            let joined: Vec<u8> = out.into_iter().flat_map(|r| r.unwrap().to_vec()).collect();
            assert_eq!(joined, bytes, "chunk size {chunk}");
        }
    }

    #[tokio::test]
    async fn a_header_over_the_limit_ends_the_stream_before_its_payload() {
        for declared in [1001u64, 70_000, 1 << 40] {
            let mut bytes = frame(10);
            bytes.extend(header(0x2, declared));
            bytes.extend(vec![b'b'; 5000]);
            for chunk in [1, 5, 4096] {
                let out = run(bytes.clone(), chunk, 1000).await;
                let last = out.last().unwrap();
                assert!(
                    matches!(last, Err(PayloadError::Overflow)),
                    "declared {declared}, chunk {chunk}: {last:?}"
                );
                let passed: usize = out
                    .iter()
                    .filter_map(|r| r.as_ref().ok())
                    .map(Bytes::len)
                    .sum();
                assert!(
                    passed < 10 + 6 + 14,
                    "declared {declared}, chunk {chunk}: {passed} bytes passed"
                );
            }
        }
    }
}
