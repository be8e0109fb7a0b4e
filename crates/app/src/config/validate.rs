//! Every rule a configuration must follow, checked once when it is loaded:
//! the ranges of the settings table, the rules between settings, and that a
//! setting of another broker or mode is not set where it would be ignored.
//! Each problem names the setting first (`field: what is wrong`).

use domain::{ShardRange, MAX_SHARDS};

use super::values::{is_name_part, normalize_origin, AuthMode, Broker, Mode, UndeliverablePolicy};
use super::{ConfigError, Settings};

/// Minimum length of `jwt_secret`: HS256 wants a key as long as its hash.
pub const MIN_JWT_SECRET_BYTES: usize = 32;

impl Settings {
    /// Checks what the types alone cannot; every problem at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = self.range_problems();
        let mut check = |ok: bool, problem: String| {
            if !ok {
                problems.push(problem);
            }
        };
        check(!self.host.is_empty(), "host: must not be empty".into());
        check(
            !self.echo_route || cfg!(feature = "test-routes"),
            "echo_route: this build has no test routes (build with --features test-routes)".into(),
        );
        self.validate_relations(&mut check);
        self.validate_applicability(&mut check);
        self.validate_broker(&mut check);
        self.validate_scale(&mut check);
        self.validate_security(&mut check);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems })
        }
    }

    /// The undeliverable policy in effect: the setting, or the mode's default.
    pub fn undeliverable_policy(&self) -> UndeliverablePolicy {
        self.undeliverable.unwrap_or(match self.mode {
            // Only fanout has another copy of each Command elsewhere; in
            // sharded mode a Command for an absent client waits for it to
            // reconnect (to this replica: the load balancer sends it here).
            Mode::Shared | Mode::Sharded => UndeliverablePolicy::Retry,
            Mode::Fanout => UndeliverablePolicy::Drop,
        })
    }

    /// Rules between settings.
    fn validate_relations(&self, check: &mut impl FnMut(bool, String)) {
        check(
            self.client_timeout_secs > self.heartbeat_secs,
            format!(
                "client_timeout_secs: {} must be longer than heartbeat_secs ({})",
                self.client_timeout_secs, self.heartbeat_secs
            ),
        );
        check(
            self.fragment_budget_bytes >= self.max_message_bytes,
            format!(
                "fragment_budget_bytes: {} must be at least max_message_bytes ({}): a \
                 message that size sent in fragments could never complete",
                self.fragment_budget_bytes, self.max_message_bytes
            ),
        );
        check(
            self.gc_stale_after_secs > self.instance_heartbeat_secs,
            format!(
                "gc_stale_after_secs: {} must be longer than instance_heartbeat_secs ({})",
                self.gc_stale_after_secs, self.instance_heartbeat_secs
            ),
        );
        if self.undeliverable_policy() == UndeliverablePolicy::Retry {
            // Every release of a Command for an absent client is a receive:
            // with too few allowed, the redrive takes Commands to the
            // dead-letter queue before their retry window ends.
            let receives_cover =
                u64::from(self.max_receive_count).saturating_mul(self.retry_delay_secs);
            check(
                receives_cover > self.retry_window_secs,
                format!(
                    "max_receive_count: {} × retry_delay_secs {} = {receives_cover} s must exceed \
                     retry_window_secs ({}): each retry is a receive, so the dead-letter queue \
                     would take Commands before their retry window ends",
                    self.max_receive_count, self.retry_delay_secs, self.retry_window_secs
                ),
            );
        }
    }

    /// A setting that only another broker or mode reads must not be set
    /// (to anything but its default) where it would be silently ignored.
    fn validate_applicability(&self, check: &mut impl FnMut(bool, String)) {
        let defaults = Settings::default();
        let aws_only = [
            ("command_queue_url", self.command_queue_url.is_some()),
            ("events_topic_arn", self.events_topic_arn.is_some()),
            ("receipts_topic_arn", self.receipts_topic_arn.is_some()),
            ("commands_topic_arn", self.commands_topic_arn.is_some()),
            (
                "dead_letter_queue_url",
                self.dead_letter_queue_url.is_some(),
            ),
            (
                "settle_linger_ms",
                self.settle_linger_ms != defaults.settle_linger_ms,
            ),
            (
                "emulator_port",
                self.emulator_port != defaults.emulator_port,
            ),
        ];
        let amqp_only = [
            ("amqp_url", self.amqp_url.is_some()),
            ("amqp_ca_file", self.amqp_ca_file.is_some()),
            (
                "amqp_command_queue",
                self.amqp_command_queue != defaults.amqp_command_queue,
            ),
            (
                "amqp_events_exchange",
                self.amqp_events_exchange != defaults.amqp_events_exchange,
            ),
            (
                "amqp_receipts_exchange",
                self.amqp_receipts_exchange.is_some(),
            ),
            (
                "amqp_prefetch",
                self.amqp_prefetch != defaults.amqp_prefetch,
            ),
        ];
        let (ignored, applies_to): (&[(&str, bool)], _) = match self.broker {
            Broker::Aws => (&amqp_only, "broker = \"amqp\""),
            Broker::Amqp => (&aws_only, "broker = \"aws\""),
        };
        for &(field, set) in ignored {
            check(!set, format!("{field}: applies only with {applies_to}"));
        }
        let mode_only = [
            ("shard_owner", self.shard_owner.is_some(), Mode::Sharded),
            ("shard_range", self.shard_range.is_some(), Mode::Sharded),
        ];
        for (field, set, mode) in mode_only {
            check(
                !set || self.mode == mode,
                format!("{field}: applies only with mode = \"{}\"", mode_name(mode)),
            );
        }
        // The replica's name: its queue's in fanout mode, and what its
        // presence events say.
        check(
            self.instance_id.is_none() || self.mode == Mode::Fanout || self.presence_events,
            "instance_id: applies only with mode = \"fanout\" or presence_events = true".into(),
        );
    }

    fn validate_broker(&self, check: &mut impl FnMut(bool, String)) {
        match self.broker {
            Broker::Amqp => {
                match &self.amqp_url {
                    None => check(
                        false,
                        "amqp_url: required with broker = \"amqp\" (BRIDGE_AMQP_URL)".into(),
                    ),
                    Some(url) => match adapters_amqp::AmqpUrl::parse(url) {
                        Err(e) => check(false, format!("amqp_url: {e}")),
                        Ok(url) => {
                            if let Some(path) = &self.amqp_ca_file {
                                if let Err(e) = url.with_ca_file(path) {
                                    check(false, format!("amqp_ca_file: {e}"));
                                }
                            }
                        }
                    },
                }
                check(
                    self.mode == Mode::Shared,
                    "mode: fanout and sharded need SNS; with broker = \"amqp\" bind one queue \
                     per instance instead"
                        .into(),
                );
                // Held deliveries keep their prefetch slots until acknowledged:
                // one client's allowance must leave slots for everyone else.
                check(
                    usize::from(self.amqp_prefetch) > self.max_unacked_per_client,
                    format!(
                        "amqp_prefetch: {} must exceed max_unacked_per_client ({}), or one \
                         client that never acknowledges fills the channel",
                        self.amqp_prefetch, self.max_unacked_per_client
                    ),
                );
                for (field, value) in [
                    ("amqp_command_queue", &self.amqp_command_queue),
                    ("amqp_events_exchange", &self.amqp_events_exchange),
                ] {
                    check(!value.is_empty(), format!("{field}: must not be empty"));
                }
                if let Some(exchange) = &self.amqp_receipts_exchange {
                    check(
                        !exchange.trim().is_empty(),
                        "amqp_receipts_exchange: must not be empty when set".into(),
                    );
                }
            }
            Broker::Aws => self.validate_aws_names(check),
        }
    }

    fn validate_aws_names(&self, check: &mut impl FnMut(bool, String)) {
        for (field, value) in [
            ("command_queue_url", &self.command_queue_url),
            ("events_topic_arn", &self.events_topic_arn),
            ("commands_topic_arn", &self.commands_topic_arn),
        ] {
            if let Some(value) = value {
                check(
                    !value.trim().is_empty(),
                    format!("{field}: must not be empty when set"),
                );
            }
        }
        for (field, arn) in [
            ("events_topic_arn", &self.events_topic_arn),
            ("commands_topic_arn", &self.commands_topic_arn),
        ] {
            if let Some(arn) = arn {
                check(
                    adapters_aws::bootstrap::topic_name_from_arn(arn).is_some(),
                    format!(
                        "{field}: {arn:?} is not a topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)"
                    ),
                );
            }
        }
        if let Some(url) = &self.command_queue_url {
            check(
                url.starts_with("http://") || url.starts_with("https://"),
                format!(
                    "command_queue_url: {url:?} is not a queue URL (http(s)://HOST/ACCOUNT/NAME)"
                ),
            );
        }
        check(
            self.mode == Mode::Shared || self.commands_topic_arn.is_some(),
            "commands_topic_arn: required in fanout and sharded mode (each instance subscribes \
             its queue to it)"
                .into(),
        );
    }

    fn validate_scale(&self, check: &mut impl FnMut(bool, String)) {
        if (1..=MAX_SHARDS).contains(&self.shards) {
            match (&self.shard_owner, &self.shard_range) {
                (Some(_), Some(_)) => check(
                    false,
                    "shard_range: set either shard_owner or shard_range, not both".into(),
                ),
                (None, None) if self.mode == Mode::Sharded => check(
                    false,
                    "shard_owner: sharded mode needs this replica's share, as shard_owner = \
                     \"INDEX/REPLICAS\" (BRIDGE_SHARD_OWNER) or shard_range = \"START..END\""
                        .into(),
                ),
                _ => {
                    if let Err(problem) = self.owned_shards() {
                        check(false, problem);
                    }
                }
            }
        }
        check(
            is_name_part(&self.bridge_name, 40),
            format!(
                "bridge_name: {:?} must be 1..=40 letters, digits, '-' or '_' (it prefixes queue names)",
                self.bridge_name
            ),
        );
        if let Some(instance) = &self.instance_id {
            check(
                instance != "dlq",
                "instance_id: \"dlq\" would name the bridge's dead-letter queue".into(),
            );
            check(
                is_name_part(instance, 36),
                format!("instance_id: {instance:?} must be 1..=36 letters, digits, '-' or '_'"),
            );
        }
    }

    /// The range named by `shard_owner` or `shard_range` (`None` when
    /// neither is set), or the problem with it, naming the field.
    pub(crate) fn owned_shards(&self) -> Result<Option<ShardRange>, String> {
        if let Some(range) = &self.shard_range {
            return ShardRange::parse(range, self.shards)
                .map(Some)
                .map_err(|e| format!("shard_range: {e}"));
        }
        let Some(owner) = &self.shard_owner else {
            return Ok(None);
        };
        let parsed = owner
            .split_once('/')
            .and_then(|(i, n)| Some((i.trim().parse().ok()?, n.trim().parse().ok()?)));
        let Some((index, replicas)) = parsed else {
            return Err(format!(
                "shard_owner: {owner:?} is not INDEX/REPLICAS (e.g. \"0/3\")"
            ));
        };
        ShardRange::of_replica(index, replicas, self.shards)
            .map(Some)
            .map_err(|e| format!("shard_owner: {e}"))
    }

    fn validate_security(&self, check: &mut impl FnMut(bool, String)) {
        if self.admin_port != 0 {
            match &self.admin_token {
                None => check(
                    false,
                    "admin_token: required with admin_port: the admin API never runs without \
                     one (BRIDGE_ADMIN_TOKEN)"
                        .into(),
                ),
                Some(token) => check(
                    token.expose().len() >= MIN_JWT_SECRET_BYTES,
                    format!(
                        "admin_token: must be at least {MIN_JWT_SECRET_BYTES} bytes \
                         (e.g. `openssl rand -base64 48`)"
                    ),
                ),
            }
        }
        if self.auth == AuthMode::Jwt {
            let keys = [
                self.jwt_secret.is_some(),
                self.jwt_public_key_file.is_some(),
                self.jwt_jwks_url.is_some(),
            ];
            let set = keys.iter().filter(|&&k| k).count();
            check(
                set >= 1,
                "jwt_secret: auth = \"jwt\" needs jwt_secret (HS256, BRIDGE_JWT_SECRET), \
                 jwt_public_key_file (RS256, BRIDGE_JWT_PUBLIC_KEY_FILE) or jwt_jwks_url \
                 (RS256, BRIDGE_JWT_JWKS_URL)"
                    .into(),
            );
            check(
                set <= 1,
                "jwt_public_key_file: set one of jwt_secret (HS256), jwt_public_key_file \
                 and jwt_jwks_url (RS256), not several"
                    .into(),
            );
        }
        if let Some(url) = &self.jwt_jwks_url {
            if let Err(problem) = adapters_http::auth::jwks::check_url(url) {
                check(false, format!("jwt_jwks_url: {problem}"));
            }
        }
        if let Some(secret) = &self.jwt_secret {
            check(
                secret.expose().len() >= MIN_JWT_SECRET_BYTES,
                format!(
                    "jwt_secret: must be at least {MIN_JWT_SECRET_BYTES} bytes \
                     (e.g. `openssl rand -base64 48`)"
                ),
            );
        }
        for (field, value) in [
            ("jwt_audience", &self.jwt_audience),
            ("jwt_issuer", &self.jwt_issuer),
        ] {
            if let Some(value) = value {
                check(
                    !value.trim().is_empty(),
                    format!("{field}: must not be empty when set"),
                );
            }
        }
        for origin in &self.allowed_origins {
            check(
                normalize_origin(origin).is_some(),
                format!(
                    "allowed_origins: {origin:?} is not an origin (scheme://host[:port], no path)"
                ),
            );
        }
        check(
            !self.open_to_anyone() || self.allow_insecure,
            format!(
                "allow_insecure: host {:?} is reachable beyond loopback with auth = \"none\" \
                 and no allowed_origins, so anyone can connect as any client id; set auth = \
                 \"jwt\" (BRIDGE_AUTH, with BRIDGE_JWT_SECRET), or allowed_origins \
                 (BRIDGE_ALLOWED_ORIGINS), or listen on 127.0.0.1, or accept it with \
                 allow_insecure = true (BRIDGE_ALLOW_INSECURE=true)",
                self.host
            ),
        );
        if let Some(header) = &self.client_ip_header {
            check(
                actix_web::http::header::HeaderName::from_bytes(header.as_bytes()).is_ok(),
                format!("client_ip_header: {header:?} is not a header name"),
            );
        }
    }
}

impl Settings {
    /// Whether anyone who reaches the port may connect as any client id: a
    /// host beyond loopback, no authentication and no origin list.
    pub fn open_to_anyone(&self) -> bool {
        !is_loopback_host(&self.host)
            && self.auth == AuthMode::None
            && self.allowed_origins.is_empty()
    }
}

/// Whether `host` is only reachable from this machine: `localhost` or a
/// loopback address (`127.0.0.0/8`, `::1`). Any other name counts as
/// reachable from elsewhere.
fn is_loopback_host(host: &str) -> bool {
    let host = host.trim();
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Shared => "shared",
        Mode::Fanout => "fanout",
        Mode::Sharded => "sharded",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_told_from_the_others() {
        for host in [
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "[::1]",
            "localhost",
            "LocalHost",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "0.0.0.0",
            "::",
            "[::]",
            "10.0.0.5",
            "192.168.1.2",
            "example.com",
            "",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }
}
