//! Every setting, defined once: name, type, default, allowed range and
//! documentation, grouped by section. `config/default.toml` and the settings
//! table of docs/configuration.md are generated from this (tests keep them in
//! step).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::table::{check_range, settings, SettingDoc};
use super::values::{
    comma_list, AuthMode, Broker, LogFormat, Mode, Secret, SqsClient, UndeliverablePolicy,
};

settings! {
    "server" {
        /// Address to listen on.
        host: String = "127.0.0.1".into();
        /// Port to listen on (0: any free port).
        port: u16 = 8000, range 0..=65_535;
        /// HTTP worker threads (0: one per CPU core).
        workers: usize = 0, range 0..=1024;
        /// Time a client has to send its request head, in milliseconds
        /// (slow-loris guard).
        handshake_timeout_ms: u64 = 5000, range 100..=600_000;
        /// Deadline for a graceful shutdown (SIGTERM / Ctrl-C). A receive in
        /// flight then is waited for (up to receive_wait_secs + 1 s, at most
        /// half of this), so Commands already handed to it are delivered or
        /// released at once.
        shutdown_timeout_secs: u64 = 10, range 1..=3600;
        /// Port of the admin API (list clients and their connections,
        /// disconnect, send a frame; every call with `Authorization: Bearer
        /// <admin_token>`). 0: off.
        admin_port: u16 = 0, range 0..=65_535;
        /// Address the admin API listens on.
        admin_host: String = "127.0.0.1".into();
        /// The admin API's bearer token (at least 32 bytes; keep it in the
        /// environment, BRIDGE_ADMIN_TOKEN). Required with admin_port.
        admin_token: Option<Secret> = None, example "\"…\"";
        /// Test only: mount /__echo (same checks and limits as /ws, echoes
        /// messages), for RFC 6455 conformance runs; only in a build with the
        /// `test-routes` feature.
        echo_route: bool = false;
    }
    "broker" {
        /// "aws": SNS/SQS, or an emulator at AWS_ENDPOINT_URL. "amqp":
        /// RabbitMQ at amqp_url (AMQP 0-9-1).
        broker: Broker = Broker::Aws;
        /// With broker = "aws", the SQS queue Commands arrive on (`serve` needs it
        /// in shared mode; `dev` creates it).
        command_queue_url: Option<String> = None,
            example "\"https://sqs.us-east-1.amazonaws.com/123456789012/wsbridge-commands\"";
        /// With broker = "aws", the SNS topic client messages are published to.
        events_topic_arn: Option<String> = None,
            example "\"arn:aws:sns:us-east-1:123456789012:wsbridge-events\"";
        /// With broker = "aws", the SNS topic backends publish Commands to (fanout
        /// and sharded replicas subscribe their queues to it; `dev`
        /// subscribes the command queue).
        commands_topic_arn: Option<String> = None,
            example "\"arn:aws:sns:us-east-1:123456789012:wsbridge-commands\"";
        /// With broker = "aws", the SQS queue Commands the bridge gives up on
        /// (malformed, undeliverable) are sent to, with the reason in the
        /// wsbridge_reason attribute (unset: the command queue's RedrivePolicy
        /// target; with neither they are deleted and logged).
        dead_letter_queue_url: Option<String> = None,
            example "\"https://sqs.us-east-1.amazonaws.com/123456789012/wsbridge-commands-dlq\"";
        /// With broker = "aws", the SNS topic delivery receipts are published
        /// to: one event per Command outcome (delivered, acknowledged,
        /// undeliverable, malformed, dead_lettered) with the message ids and the
        /// Command's own id, attribute outcome (unset: no receipts).
        receipts_topic_arn: Option<String> = None,
            example "\"arn:aws:sns:us-east-1:123456789012:wsbridge-receipts\"";
        /// With broker = "aws", the client of the three calls on the receive
        /// path (ReceiveMessage, DeleteMessageBatch,
        /// ChangeMessageVisibilityBatch): "lean" signs and sends them directly
        /// (same credentials chain, region and endpoint as the SDK, a fraction
        /// of its CPU per call); "sdk" sends them through the AWS SDK, which
        /// makes every other call either way.
        sqs_client: SqsClient = SqsClient::Lean;
        /// With broker = "aws", the port of the embedded SQS/SNS emulator on
        /// 127.0.0.1 that `wsbridge dev` starts when neither AWS_ENDPOINT_URL
        /// nor --endpoint names one, and `wsbridge emulator`'s default
        /// (0: any free port). 9324 is the port SQS emulators customarily use.
        emulator_port: u16 = 9324, range 0..=65_535;
        /// With broker = "amqp", the broker URL (it holds a password: keep it in
        /// the environment, BRIDGE_AMQP_URL). amqps:// connects with TLS (port
        /// 5671 by default), trusting the system's root certificates and
        /// amqp_ca_file.
        amqp_url: Option<String> = None,
            example "\"amqp://wsbridge:PASSWORD@rabbitmq.internal:5672/%2f\"";
        /// With an amqps:// amqp_url, a PEM file of CA certificates trusted
        /// besides the system's roots (a broker with a private CA).
        amqp_ca_file: Option<PathBuf> = None, example "\"/etc/wsbridge/amqp-ca.pem\"";
        /// With broker = "amqp", the durable queue Commands arrive on.
        amqp_command_queue: String = "wsbridge.commands".into();
        /// With broker = "amqp", the topic exchange client messages are published
        /// to (routing key = action, headers client_id and action).
        amqp_events_exchange: String = "wsbridge.events".into();
        /// With broker = "amqp", the topic exchange delivery receipts are
        /// published to: one per Command outcome, routing key = the outcome
        /// (delivered, acknowledged, undeliverable, malformed, dead_lettered),
        /// headers outcome and client_id, the body as on SNS (unset: no
        /// receipts; `dev` declares it).
        amqp_receipts_exchange: Option<String> = None, example "\"wsbridge.receipts\"";
        /// With broker = "amqp", the consumer's prefetch window (basic.qos):
        /// the most deliveries the broker pushes ahead of what the bridge
        /// keeps, sized for throughput. Commands held for clients'
        /// acknowledgements do not close it: once they fill half of it the
        /// bridge opens a new window, up to 10 × amqp_prefetch unsettled
        /// deliveries in all. Must exceed max_unacked_per_client.
        amqp_prefetch: u16 = 500, range 1..=65_535;
    }
    "scale" {
        /// "shared": every instance consumes the one command queue.
        /// "fanout": every instance creates a queue of its own, subscribed to
        /// commands_topic_arn, and removes it on graceful shutdown.
        /// "sharded": every instance owns a range of the shards of the
        /// client-id space and consumes that range's queue, subscribed to
        /// commands_topic_arn with a filter on the `shard` attribute
        /// publishers set (docs/scaling.md).
        mode: Mode = Mode::Shared;
        /// The fleet's number of shards: the same for every replica and every
        /// publisher (they set `shard` from it; also read by `wsbridge shards`).
        shards: u32 = 4096, range 1..=32_768;
        /// Sharded mode: this replica as "INDEX/REPLICAS" (0-based, e.g. a
        /// StatefulSet ordinal): it owns the INDEX-th of REPLICAS near-equal
        /// contiguous ranges of shards.
        shard_owner: Option<String> = None, example "\"0/3\"";
        /// Sharded mode: the shards this replica owns as "START..END" (end
        /// excluded), instead of shard_owner (for uneven splits and resizes).
        shard_range: Option<String> = None, example "\"0..1366\"";
        /// Name of this bridge: prefix of the replica queues and the tag
        /// `wsbridge gc` looks for.
        bridge_name: String = "wsbridge".into();
        /// Fanout mode, and presence events: this instance's id (unset: a
        /// random one per start).
        instance_id: Option<String> = None, example "\"replica-1\"";
        /// How often a fanout or sharded replica refreshes its queue's
        /// heartbeat tag.
        instance_heartbeat_secs: u64 = 60, range 1..=86_400;
        /// `wsbridge gc` removes replica queues whose heartbeat is older than
        /// this (longer than instance_heartbeat_secs).
        gc_stale_after_secs: u64 = 300, range 2..=2_592_000;
    }
    "downlink" {
        /// Long-poll loops that always run (the floor; at it an idle queue
        /// costs one long poll per loop per receive_wait_secs).
        pollers: usize = 2, range 1..=64;
        /// Long-poll loops that may run under load: a receive that comes back
        /// full starts another loop, up to this many; one that comes back short
        /// retires its loop, down to `pollers`. Against SQS (10–20 ms a call)
        /// one loop takes a few hundred Commands a second. Values below
        /// `pollers` count as `pollers`.
        pollers_max: usize = 32, range 1..=256;
        /// With broker = "aws": how long a delete or visibility change waits
        /// for others to share its batch call, in milliseconds (deletes are
        /// sent in the background, never on a poller's receive path).
        settle_linger_ms: u64 = 5, range 0..=10_000;
        /// Long-poll wait of each receive, in seconds (SQS allows 0..=20).
        receive_wait_secs: u64 = 20, range 0..=20;
        /// What happens to a Command for a client not connected here: "retry"
        /// (make it visible again after retry_delay_secs, give up after
        /// retry_window_secs) or "drop" (delete at once). Unset: "drop" in
        /// fanout mode, else "retry".
        undeliverable: Option<UndeliverablePolicy> = None, example "\"retry\"";
        /// Delay before a Command for an absent client is received again
        /// (SQS allows up to 12 h).
        retry_delay_secs: u64 = 5, range 0..=43_200;
        /// Age after which a Command for an absent client is given up (at
        /// most SQS's 12 h).
        retry_window_secs: u64 = 60, range 0..=43_200;
        /// Receives after which the dead-letter queue takes a message (set on
        /// the queues the bridge creates). Releases of Commands for absent
        /// clients count as receives: max_receive_count × retry_delay_secs
        /// must exceed retry_window_secs. Whatever the queue's own
        /// maxReceiveCount, the bridge gives a Command up itself, with its
        /// reason, rather than release it at that count.
        max_receive_count: u32 = 15, range 1..=1000;
        /// Forwarded message ids remembered for de-duplication.
        dedup_capacity: usize = 100_000, range 1..=10_000_000;
        /// How long a forwarded message id is remembered, in seconds.
        dedup_ttl_secs: u64 = 600, range 1..=604_800;
        /// Acknowledged delivery (clients connecting with ?ack=true): how long
        /// a Command waits for the client's {"ack_delivery": id} before it is
        /// released and delivered again. The message's visibility is extended
        /// meanwhile, whatever the queue's visibility timeout.
        ack_timeout_secs: u64 = 15, range 1..=43_200;
        /// Acknowledged delivery: unacknowledged Commands one client may hold
        /// at once; more for it wait (on SQS parked in the bridge, their
        /// visibility kept; on RabbitMQ received again after
        /// retry_delay_secs), so a client that never acknowledges cannot
        /// stall the others.
        max_unacked_per_client: usize = 100, range 1..=100_000;
    }
    "uplink" {
        /// How long the first client message of a batch waits for others to
        /// share a PublishBatch call, in milliseconds.
        publish_linger_ms: u64 = 5, range 0..=1000;
        /// Client messages per second per connection, on average (a token
        /// bucket; over it: a `rate_limited` error, not published).
        message_rate_per_sec: u32 = 20, range 1..=1_000_000;
        /// Client messages accepted at once per connection.
        message_burst: u32 = 50, range 1..=1_000_000;
        /// Rate-limited messages within rate_limit_window_secs that close the
        /// connection with 1008.
        rate_limit_strikes: u32 = 50, range 1..=1_000_000;
        /// The window of rate_limit_strikes, in seconds.
        rate_limit_window_secs: u64 = 10, range 1..=86_400;
        /// Publish a "$connect" / "$disconnect" event to the events topic (or
        /// exchange) each time a connection opens / closes, with client_id,
        /// connection_id, at, instance_id (and code, reason on disconnect),
        /// attributes client_id and action.
        presence_events: bool = false;
    }
    "connections" {
        /// Largest client frame accepted, in bytes (at most 262144, SNS's
        /// message limit).
        max_message_bytes: usize = 65_536, range 1..=262_144;
        /// A message sent in fragments must be complete this long after its
        /// first fragment, in milliseconds (over it: closed with 1008). Its
        /// own setting, not handshake_timeout_ms: that bounds a request head
        /// of a few hundred bytes, this up to max_message_bytes from a
        /// client on a slow link.
        fragment_timeout_ms: u64 = 10_000, range 100..=600_000;
        /// Most bytes all connections together may hold in incomplete
        /// (fragmented) messages (at least max_message_bytes); a fragment
        /// over it closes its connection with 1013, try again later.
        fragment_budget_bytes: usize = 67_108_864, range 1..=4_294_967_295;
        /// Frames queued per connection before the client counts as too slow
        /// (closed with 1013).
        outbound_queue: usize = 256, range 1..=65_536;
        /// Interval between pings to each client, in seconds.
        heartbeat_secs: u64 = 15, range 1..=3600;
        /// A client silent for this long is disconnected (longer than
        /// heartbeat_secs).
        client_timeout_secs: u64 = 45, range 2..=86_400;
        /// Open connections allowed per client id (over: 429 before the upgrade).
        max_connections_per_client: usize = 16, range 1..=1_000_000;
        /// Open connections allowed per client IP address (over: 429).
        max_connections_per_ip: usize = 1000, range 1..=10_000_000;
        /// Open connections allowed on this instance (over: 503).
        max_connections: usize = 20_000, range 1..=10_000_000;
        /// Behind a proxy: the header whose LAST entry is the client's address,
        /// as appended by a trusted proxy (unset: the TCP peer's address).
        client_ip_header: Option<String> = None, example "\"X-Forwarded-For\"";
    }
    "auth" {
        /// "none": the client id comes from the URL (development). "jwt": the
        /// client id is the `sub` of a signed token (Authorization: Bearer,
        /// Sec-WebSocket-Protocol "bearer, TOKEN", or ?token=), verified with
        /// jwt_secret or jwt_public_key_file.
        auth: AuthMode = AuthMode::None;
        /// HS256 shared secret (auth = "jwt", and `wsbridge token`); at least
        /// 32 bytes, e.g. `openssl rand -base64 48`. Keep it in the environment.
        jwt_secret: Option<Secret> = None, example "\"…\"";
        /// RS256 public key: a PEM file, or a JWKS (JSON) file (auth = "jwt").
        jwt_public_key_file: Option<PathBuf> = None, example "\"key.pem\"";
        /// RS256 keys from a JWKS URL (auth = "jwt"): fetched at start, again
        /// when the answer's Cache-Control max-age runs out (60 s..24 h,
        /// default 300 s) and at once for an unknown kid (at most every 30 s);
        /// a failed refresh keeps the keys known. https://, or http:// to a
        /// loopback host.
        jwt_jwks_url: Option<String> = None,
            example "\"https://issuer.example/.well-known/jwks.json\"";
        /// When set, tokens must carry this `aud`.
        jwt_audience: Option<String> = None, example "\"wsbridge\"";
        /// When set, tokens must carry this `iss`.
        jwt_issuer: Option<String> = None, example "\"https://issuer.example\"";
        /// Clock skew tolerated on `exp` and `nbf`, in seconds.
        jwt_leeway_secs: u64 = 30, range 0..=300;
        /// Origins (scheme://host[:port]) whose pages may open a WebSocket;
        /// empty: any (development). In the environment a comma-separated
        /// list: BRIDGE_ALLOWED_ORIGINS=https://a.example,https://b.example
        #[serde(deserialize_with = "comma_list")]
        allowed_origins: Vec<String> = Vec::new();
        /// Serve with auth = "none" and no allowed_origins on a host beyond
        /// loopback (e.g. 0.0.0.0 in a container), where anyone who reaches
        /// the port can connect as any client id: refused unless this is
        /// true, and then a warning is logged at every start.
        allow_insecure: bool = false;
    }
    "telemetry" {
        /// "auto": human-readable lines when stderr is a terminal, else one
        /// JSON object per line (containers, log collectors, files); "text"
        /// or "json" whatever the output. Colours only on a terminal (and
        /// never with NO_COLOR set). Filter with RUST_LOG.
        log_format: LogFormat = LogFormat::Auto;
    }
}
