//! What a test asks the proxy to do: the [`Fault`] applied to a request and
//! the [`Limit`] of an injected rule.

use std::time::Duration;

use super::CannedResponse;

/// What the proxy does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Forward it and pass the answer back.
    PassThrough,
    /// Reset the connection. As the standing mode ([`FaultProxy::set`](super::FaultProxy::set)), also
    /// every open connection at once and every new one when it is accepted.
    Refuse,
    /// Read it, never answer, and keep the connection silent from then on
    /// (it cannot carry another request: its answer would be out of step).
    /// As the standing mode, an answer arriving from the target for a request
    /// forwarded earlier is swallowed too.
    BlackHole,
    /// Forward it after this long.
    Delay(Duration),
    /// Forward it at once, pass the answer back after this long.
    DelayResponse(Duration),
    /// Answer `500 Internal Server Error` (`InternalError`) without forwarding.
    ServerError,
    /// Answer `400` with a throttling error without forwarding: SQS JSON
    /// (`x-amzn-query-error: Throttling;Sender`, `__type`
    /// `com.amazonaws.sqs#ThrottlingException`) or SNS query
    /// (`<Type>Sender</Type><Code>Throttling</Code>`), by the request's protocol.
    Throttle,
    /// Answer with this response without forwarding.
    Respond(CannedResponse),
}

/// How long an injected rule lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// For the next `n` matching requests.
    Times(u64),
    /// For matching requests from now until this long has passed.
    For(Duration),
}
