//! Presence events (docs/control-plane.md): each connection that opens or closes is
//! announced on the events topic, so a backend knows which clients are
//! online without asking every replica. The events travel the uplink's own
//! sink (batched with client messages) and carry the usual `client_id` and
//! `action` attributes, so subscriptions filter on them.

use std::time::SystemTime;

use serde_json::{json, Map, Value};

use crate::client_id::ClientId;
use crate::client_message::OutboundEvent;
use crate::time::iso8601;

/// `action` of the event for an opened connection.
pub const CONNECT_ACTION: &str = "$connect";
/// `action` of the event for a closed connection.
pub const DISCONNECT_ACTION: &str = "$disconnect";

/// Makes the presence events of one replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    instance_id: String,
}

/// How a connection ended, for its `$disconnect` event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Disconnect<'a> {
    /// The close code sent (or received, when the client closed first).
    pub code: Option<u16>,
    /// The close reason, when there was one.
    pub reason: Option<&'a str>,
}

impl Presence {
    /// Events of the replica named `instance_id`.
    pub fn new(instance_id: impl Into<String>) -> Self {
        Self {
            instance_id: instance_id.into(),
        }
    }

    /// `{"action": "$connect", "client_id", "connection_id", "at", "instance_id"}`.
    pub fn connected(
        &self,
        client_id: &ClientId,
        connection_id: u64,
        at: SystemTime,
    ) -> OutboundEvent {
        self.event(CONNECT_ACTION, client_id, connection_id, at, Map::new())
    }

    /// The `$connect` fields plus `code` and `reason` (null when unknown).
    pub fn disconnected(
        &self,
        client_id: &ClientId,
        connection_id: u64,
        at: SystemTime,
        how: Disconnect<'_>,
    ) -> OutboundEvent {
        let mut extra = Map::new();
        extra.insert("code".into(), json!(how.code));
        extra.insert("reason".into(), json!(how.reason));
        self.event(DISCONNECT_ACTION, client_id, connection_id, at, extra)
    }

    fn event(
        &self,
        action: &str,
        client_id: &ClientId,
        connection_id: u64,
        at: SystemTime,
        extra: Map<String, Value>,
    ) -> OutboundEvent {
        let mut body = Map::new();
        body.insert("action".into(), json!(action));
        body.insert("client_id".into(), json!(client_id.as_str()));
        body.insert("connection_id".into(), json!(connection_id.to_string()));
        body.insert("at".into(), json!(iso8601(at)));
        body.insert("instance_id".into(), json!(self.instance_id));
        body.extend(extra);
        OutboundEvent {
            client_id: client_id.clone(),
            action: action.to_owned(),
            body: Value::Object(body).to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn body(event: &OutboundEvent) -> Value {
        serde_json::from_str(&event.body).unwrap()
    }

    #[test]
    fn connect_and_disconnect_events_name_the_client_connection_time_and_replica() {
        let presence = Presence::new("replica-1");
        let alice = ClientId::parse("alice").unwrap();
        let at = UNIX_EPOCH + Duration::from_millis(1_714_611_246_655);
        let opened = presence.connected(&alice, 7, at);
        assert_eq!(
            (opened.action.as_str(), opened.client_id.as_str()),
            ("$connect", "alice")
        );
        assert_eq!(
            body(&opened),
            json!({"action": "$connect", "client_id": "alice", "connection_id": "7",
                   "at": "2024-05-02T00:54:06.655Z", "instance_id": "replica-1"})
        );
        let closed = presence.disconnected(
            &alice,
            7,
            at,
            Disconnect {
                code: Some(1001),
                reason: Some("server shutting down"),
            },
        );
        assert_eq!(closed.action, "$disconnect");
        let closed = body(&closed);
        assert_eq!(
            (closed["code"].clone(), closed["reason"].clone()),
            (json!(1001), json!("server shutting down"))
        );
        assert_eq!(closed["connection_id"], "7");
        let silent = body(&presence.disconnected(&alice, 8, at, Disconnect::default()));
        assert_eq!(
            (silent["code"].clone(), silent["reason"].clone()),
            (Value::Null, Value::Null)
        );
    }
}
