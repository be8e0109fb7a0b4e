//! HTTP/1.1 framing, just enough to find where each request and response
//! ends (`Content-Length`, chunked, close-delimited) and which AWS
//! operation a request calls.

use std::io;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Longest request or response head the proxy accepts.
const MAX_HEAD_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Request,
    Response,
}

/// One complete HTTP message, byte for byte.
#[derive(Debug)]
pub(super) struct Message {
    /// The request or status line.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(super) start: String,
    pub(super) raw: Vec<u8>,
    /// Lower-cased header names with their values.
    pub(super) headers: Vec<(String, String)>,
    /// Where the body starts in `raw`.
    pub(super) body_start: usize,
    /// The status of a response.
    pub(super) status: Option<u16>,
    /// The connection ends after this message.
    pub(super) close: bool,
}

impl Message {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub(super) fn body(&self) -> &[u8] {
        &self.raw[self.body_start..]
    }

    /// The AWS operation: `X-Amz-Target: AmazonSQS.ReceiveMessage` (JSON
    /// protocols) or the `Action` field of a form body (query protocols).
    pub(super) fn operation(&self) -> String {
        if let Some(target) = self.header("x-amz-target") {
            return target.rsplit('.').next().unwrap_or(target).to_owned();
        }
        let body = String::from_utf8_lossy(self.body());
        body.split('&')
            .find_map(|pair| pair.strip_prefix("Action="))
            .unwrap_or_default()
            .to_owned()
    }

    /// The access key id the request was signed with: the `Credential=`
    /// of a SigV4 `Authorization` header up to its first `/`; empty when
    /// the request is not signed that way.
    pub(super) fn access_key_id(&self) -> String {
        self.header("authorization")
            .and_then(|auth| auth.split("Credential=").nth(1))
            .and_then(|credential| credential.split('/').next())
            .unwrap_or_default()
            .to_owned()
    }

    pub(super) fn is_json_protocol(&self) -> bool {
        self.header("x-amz-target").is_some()
            || self
                .header("content-type")
                .is_some_and(|t| t.contains("amz-json"))
    }
}

/// Reads one message from `stream`, keeping bytes beyond it in `buf`.
/// `Ok(None)`: the peer closed cleanly between messages.
pub(super) async fn read_message(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    kind: Kind,
) -> io::Result<Option<Message>> {
    let head_end = loop {
        if let Some(pos) = find(buf, b"\r\n\r\n") {
            break pos + 4;
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(invalid("HTTP head too large"));
        }
        if fill(stream, buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let start = lines.next().unwrap_or_default();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            Some((name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        })
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let status = match kind {
        Kind::Request => None,
        Kind::Response => start.split_whitespace().nth(1).and_then(|s| s.parse().ok()),
    };
    let http10 = start.contains("HTTP/1.0");
    let connection = header("connection").map(str::to_ascii_lowercase);
    let mut close = connection.as_deref() == Some("close")
        || (http10 && connection.as_deref() != Some("keep-alive"));
    let chunked =
        header("transfer-encoding").is_some_and(|t| t.to_ascii_lowercase().contains("chunked"));
    let length = header("content-length").and_then(|l| l.parse::<usize>().ok());
    let bodiless = status.is_some_and(|s| (100..200).contains(&s) || s == 204 || s == 304);

    let end = if bodiless {
        head_end
    } else if chunked {
        chunked_end(stream, buf, head_end).await?
    } else if let Some(length) = length {
        fill_to(stream, buf, head_end + length).await?;
        head_end + length
    } else if kind == Kind::Response {
        // Close-delimited body.
        while fill(stream, buf).await? > 0 {}
        close = true;
        buf.len()
    } else {
        head_end
    };
    let raw: Vec<u8> = buf.drain(..end).collect();
    Ok(Some(Message {
        start: start.to_owned(),
        raw,
        headers,
        body_start: head_end,
        status,
        close,
    }))
}

/// Reads a chunked body starting at `start`; returns where the message ends.
async fn chunked_end(stream: &mut TcpStream, buf: &mut Vec<u8>, start: usize) -> io::Result<usize> {
    let mut at = start;
    loop {
        let size_end = line_end(stream, buf, at).await?;
        let line = String::from_utf8_lossy(&buf[at..size_end]).into_owned();
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| invalid("bad chunk size"))?;
        at = size_end + 2;
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let end = line_end(stream, buf, at).await?;
                let empty = end == at;
                at = end + 2;
                if empty {
                    return Ok(at);
                }
            }
        }
        fill_to(stream, buf, at + size + 2).await?;
        at += size + 2;
    }
}

/// Where the line starting at `at` ends (its `\r\n`), reading as needed.
async fn line_end(stream: &mut TcpStream, buf: &mut Vec<u8>, at: usize) -> io::Result<usize> {
    loop {
        if let Some(pos) = find(&buf[at..], b"\r\n") {
            return Ok(at + pos);
        }
        if fill(stream, buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// Reads until `buf` holds at least `len` bytes; the peer closing first is an error.
async fn fill_to(stream: &mut TcpStream, buf: &mut Vec<u8>, len: usize) -> io::Result<()> {
    while buf.len() < len {
        if fill(stream, buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(())
}

async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut chunk = [0u8; 16 * 1024];
    let n = stream.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}
