//! The rules a configuration is checked against when it is loaded: every
//! documented environment name is read, ranges and rules between settings,
//! settings of another broker or mode refused, and — for arbitrary values of
//! every setting — a named error or a valid configuration, never a panic.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use app::config::{Config, ConfigError, Settings, Sources, SETTINGS};
use proptest::prelude::*;

use crate::support::TempDir;

fn sources(dir: &TempDir, pairs: &[(&str, &str)]) -> Sources {
    Sources {
        config_dir: dir.path().to_path_buf(),
        profile: None,
        env: pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        overrides: Vec::new(),
    }
}

fn load_err(sources: &Sources) -> ConfigError {
    match Settings::load(sources) {
        Ok(settings) => panic!("expected a ConfigError, loaded {settings:?}"),
        Err(e) => e,
    }
}

/// A value for each setting's environment variable that differs from its
/// default, with what else it needs to be valid.
fn sample(name: &str) -> (&'static str, Vec<(&'static str, &'static str)>) {
    const TOPIC: (&str, &str) = ("BRIDGE_COMMANDS_TOPIC_ARN", "arn:aws:sns:us-east-1:1:c");
    const AMQP: (&str, &str) = ("BRIDGE_BROKER", "amqp");
    const AMQP_URL: (&str, &str) = ("BRIDGE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f");
    match name {
        "host" => ("0.0.0.0", vec![("BRIDGE_ALLOW_INSECURE", "true")]),
        "allow_insecure" => ("true", vec![]),
        "port" => ("9000", vec![]),
        "workers" => ("3", vec![]),
        "handshake_timeout_ms" => ("700", vec![]),
        "shutdown_timeout_secs" => ("20", vec![]),
        "echo_route" => ("true", vec![]),
        "admin_port" => (
            "9100",
            vec![(
                "BRIDGE_ADMIN_TOKEN",
                "admin-token-0123456789-abcdefghijklmnop",
            )],
        ),
        "admin_host" => ("0.0.0.0", vec![]),
        "admin_token" => ("admin-token-0123456789-abcdefghijklmnop", vec![]),
        "broker" => ("amqp", vec![AMQP_URL]),
        "command_queue_url" => ("http://127.0.0.1:1/1/q", vec![]),
        "events_topic_arn" => ("arn:aws:sns:us-east-1:1:e", vec![]),
        "commands_topic_arn" => ("arn:aws:sns:us-east-1:1:c", vec![]),
        "amqp_url" => ("amqp://guest:guest@127.0.0.1:5672/%2f", vec![AMQP]),
        "amqp_ca_file" => (
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/fixtures/amqp-ca.pem"),
            vec![
                AMQP,
                ("BRIDGE_AMQP_URL", "amqps://guest:guest@127.0.0.1:5671/%2f"),
            ],
        ),
        "sqs_client" => ("sdk", vec![]),
        "amqp_command_queue" => ("other.commands", vec![AMQP, AMQP_URL]),
        "amqp_events_exchange" => ("other.events", vec![AMQP, AMQP_URL]),
        "amqp_receipts_exchange" => ("other.receipts", vec![AMQP, AMQP_URL]),
        "amqp_prefetch" => ("250", vec![AMQP, AMQP_URL]),
        "mode" => ("fanout", vec![TOPIC]),
        "shards" => ("16", vec![]),
        "shard_owner" => ("0/2", vec![("BRIDGE_MODE", "sharded"), TOPIC]),
        "shard_range" => ("0..5", vec![("BRIDGE_MODE", "sharded"), TOPIC]),
        "bridge_name" => ("other", vec![]),
        "instance_id" => ("replica-1", vec![("BRIDGE_MODE", "fanout"), TOPIC]),
        "instance_heartbeat_secs" => ("30", vec![]),
        "gc_stale_after_secs" => ("600", vec![]),
        "pollers" => ("4", vec![]),
        "pollers_max" => ("12", vec![]),
        "settle_linger_ms" => ("20", vec![]),
        "receive_wait_secs" => ("3", vec![]),
        "undeliverable" => ("drop", vec![]),
        "retry_delay_secs" => ("6", vec![]),
        "retry_window_secs" => ("30", vec![]),
        "max_receive_count" => ("20", vec![]),
        "dedup_capacity" => ("50", vec![]),
        "dedup_ttl_secs" => ("60", vec![]),
        "ack_timeout_secs" => ("8", vec![]),
        "publish_linger_ms" => ("2", vec![]),
        "receipts_topic_arn" => ("arn:aws:sns:us-east-1:1:r", vec![]),
        "presence_events" => ("true", vec![]),
        "message_rate_per_sec" => ("100", vec![]),
        "message_burst" => ("200", vec![]),
        "rate_limit_strikes" => ("5", vec![]),
        "rate_limit_window_secs" => ("60", vec![]),
        "max_message_bytes" => ("1024", vec![]),
        "fragment_timeout_ms" => ("2000", vec![]),
        "fragment_budget_bytes" => ("1048576", vec![]),
        "outbound_queue" => ("64", vec![]),
        "heartbeat_secs" => ("5", vec![]),
        "client_timeout_secs" => ("20", vec![]),
        "max_connections_per_client" => ("2", vec![]),
        "max_connections_per_ip" => ("10", vec![]),
        "max_connections" => ("100", vec![]),
        "client_ip_header" => ("X-Forwarded-For", vec![]),
        "auth" => (
            "jwt",
            vec![("BRIDGE_JWT_SECRET", "0123456789abcdef0123456789abcdef")],
        ),
        "jwt_secret" => ("0123456789abcdef0123456789abcdef", vec![]),
        "jwt_public_key_file" => ("key.pem", vec![]),
        "jwt_jwks_url" => ("https://idp.example/jwks.json", vec![]),
        "jwt_audience" => ("wsbridge", vec![]),
        "jwt_issuer" => ("https://issuer.example", vec![]),
        "jwt_leeway_secs" => ("5", vec![]),
        "allowed_origins" => ("https://a.example,https://b.example", vec![]),
        "log_format" => ("json", vec![]),
        "dead_letter_queue_url" => ("http://127.0.0.1:1/000000000000/dlq", vec![]),
        "emulator_port" => ("0", vec![]),
        "max_unacked_per_client" => ("7", vec![]),
        other => panic!("no sample for the setting {other}: add one"),
    }
}

#[test]
fn every_documented_environment_name_is_read() {
    let dir = TempDir::new("cfg-env-names");
    for setting in SETTINGS {
        let env = setting.env_name();
        let (value, context) = sample(setting.name);
        let mut pairs = context.clone();
        pairs.push((env.as_str(), value));
        let loaded =
            Settings::load(&sources(&dir, &pairs)).unwrap_or_else(|e| panic!("{env}={value}: {e}"));
        let mut context_only = Settings::load(&sources(&dir, &context))
            .map(|s| serde_json::to_value(s).unwrap())
            .unwrap_or(serde_json::Value::Null);
        if context_only.is_null() {
            context_only = serde_json::to_value(Settings::default()).unwrap();
        }
        let field = |v: &serde_json::Value| v[setting.name].clone();
        // The secret serializes redacted: compare its presence instead.
        let read = serde_json::to_value(&loaded).unwrap();
        assert_ne!(
            field(&read),
            field(&context_only),
            "{env}={value} did not change {}",
            setting.name
        );
    }
}

#[test]
fn out_of_range_values_exit_naming_the_setting_value_and_range() {
    let dir = TempDir::new("cfg-ranges");
    for (env, value, expected) in [
        (
            "BRIDGE_ACK_TIMEOUT_SECS",
            "0",
            "ack_timeout_secs: 0 is outside 1..=43200",
        ),
        (
            "BRIDGE_ACK_TIMEOUT_SECS",
            "100000000000000",
            "ack_timeout_secs: 100000000000000 is outside 1..=43200",
        ),
        (
            "BRIDGE_OUTBOUND_QUEUE",
            "100000000000",
            "outbound_queue: 100000000000 is outside 1..=65536",
        ),
        ("BRIDGE_POLLERS", "0", "pollers: 0 is outside 1..=64"),
        (
            "BRIDGE_DEDUP_TTL_SECS",
            "0",
            "dedup_ttl_secs: 0 is outside 1..=604800",
        ),
        (
            "BRIDGE_RETRY_DELAY_SECS",
            "43201",
            "retry_delay_secs: 43201 is outside 0..=43200",
        ),
        (
            "BRIDGE_MAX_MESSAGE_BYTES",
            "262145",
            "max_message_bytes: 262145 is outside 1..=262144",
        ),
    ] {
        let error = load_err(&sources(&dir, &[(env, value)]));
        assert!(
            error.problems.iter().any(|p| p == expected),
            "{env}={value}: {error}"
        );
    }
    // A number too large for the setting's type is named too.
    let error = load_err(&sources(
        &dir,
        &[("BRIDGE_ACK_TIMEOUT_SECS", "100000000000000000000000")],
    ));
    assert!(
        error.problems[0].starts_with("ack_timeout_secs:"),
        "{error}"
    );
}

#[test]
fn a_fragment_budget_below_the_message_limit_is_refused() {
    let dir = TempDir::new("cfg-fragment-budget");
    let error = load_err(&sources(
        &dir,
        &[
            ("BRIDGE_MAX_MESSAGE_BYTES", "4096"),
            ("BRIDGE_FRAGMENT_BUDGET_BYTES", "4095"),
        ],
    ));
    assert_eq!(error.problems.len(), 1, "{error}");
    assert!(
        error.problems[0]
            .starts_with("fragment_budget_bytes: 4095 must be at least max_message_bytes (4096)"),
        "{error}"
    );
    Settings::load(&sources(
        &dir,
        &[
            ("BRIDGE_MAX_MESSAGE_BYTES", "4096"),
            ("BRIDGE_FRAGMENT_BUDGET_BYTES", "4096"),
        ],
    ))
    .unwrap();
}

#[test]
fn an_amqp_prefetch_not_above_the_unacknowledged_allowance_is_refused() {
    let dir = TempDir::new("cfg-prefetch");
    let amqp = [
        ("BRIDGE_BROKER", "amqp"),
        ("BRIDGE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
    ];
    let with = |prefetch: &'static str| {
        let mut pairs = amqp.to_vec();
        pairs.push(("BRIDGE_MAX_UNACKED_PER_CLIENT", "100"));
        pairs.push(("BRIDGE_AMQP_PREFETCH", prefetch));
        sources(&dir, &pairs)
    };
    let error = load_err(&with("100"));
    assert_eq!(error.problems.len(), 1, "{error}");
    assert!(
        error.problems[0]
            .starts_with("amqp_prefetch: 100 must exceed max_unacked_per_client (100)"),
        "{error}"
    );
    Settings::load(&with("101")).unwrap();
    // The default prefetch leaves room for the default allowance.
    Settings::load(&sources(&dir, &amqp)).unwrap();
}

#[test]
fn too_few_receives_for_the_retry_window_are_refused() {
    let dir = TempDir::new("cfg-receives");
    let error = load_err(&sources(
        &dir,
        &[
            ("BRIDGE_MAX_RECEIVE_COUNT", "5"),
            ("BRIDGE_RETRY_DELAY_SECS", "5"),
            ("BRIDGE_RETRY_WINDOW_SECS", "60"),
        ],
    ));
    assert_eq!(error.problems.len(), 1, "{error}");
    assert!(
        error.problems[0].starts_with("max_receive_count: 5 × retry_delay_secs 5 = 25 s"),
        "{error}"
    );
    // With `drop` nothing is retried: the relation does not apply.
    Settings::load(&sources(
        &dir,
        &[
            ("BRIDGE_MAX_RECEIVE_COUNT", "5"),
            ("BRIDGE_UNDELIVERABLE", "drop"),
        ],
    ))
    .unwrap();
}

#[test]
fn a_setting_of_another_broker_or_mode_is_refused_naming_it() {
    let dir = TempDir::new("cfg-applies");
    let amqp_url = ("BRIDGE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f");
    for (pairs, field, applies) in [
        (vec![amqp_url], "amqp_url", "broker = \"amqp\""),
        (
            vec![("BRIDGE_AMQP_COMMAND_QUEUE", "q")],
            "amqp_command_queue",
            "broker = \"amqp\"",
        ),
        (
            vec![
                ("BRIDGE_BROKER", "amqp"),
                amqp_url,
                ("BRIDGE_COMMAND_QUEUE_URL", "http://127.0.0.1:1/1/q"),
            ],
            "command_queue_url",
            "broker = \"aws\"",
        ),
        // A receipts setting of the other broker: receipts would silently be off.
        (
            vec![
                ("BRIDGE_BROKER", "amqp"),
                amqp_url,
                ("BRIDGE_RECEIPTS_TOPIC_ARN", "arn:aws:sns:us-east-1:1:r"),
            ],
            "receipts_topic_arn",
            "broker = \"aws\"",
        ),
        (
            vec![("BRIDGE_AMQP_RECEIPTS_EXCHANGE", "wsbridge.receipts")],
            "amqp_receipts_exchange",
            "broker = \"amqp\"",
        ),
        (
            vec![("BRIDGE_INSTANCE_ID", "replica-1")],
            "instance_id",
            "mode = \"fanout\" or presence_events = true",
        ),
        (
            vec![("BRIDGE_SHARD_RANGE", "0..5")],
            "shard_range",
            "mode = \"sharded\"",
        ),
    ] {
        let error = load_err(&sources(&dir, &pairs));
        assert_eq!(error.problems.len(), 1, "{pairs:?}: {error}");
        assert_eq!(
            error.problems[0],
            format!("{field}: applies only with {applies}"),
            "{pairs:?}"
        );
    }
    // Its default value is no setting at all: accepted.
    Settings::load(&sources(
        &dir,
        &[("BRIDGE_AMQP_COMMAND_QUEUE", "wsbridge.commands")],
    ))
    .unwrap();
}

#[test]
fn serving_anyone_beyond_loopback_without_auth_or_origins_needs_allow_insecure() {
    let dir = TempDir::new("cfg-insecure");
    let secret = "a-jwt-secret-of-at-least-32-bytes-long";
    for host in [
        "127.0.0.1",
        "127.0.0.2",
        "localhost",
        "::1",
        "0.0.0.0",
        "::",
        "10.1.2.3",
    ] {
        let beyond_loopback = !["127.0.0.1", "127.0.0.2", "localhost", "::1"].contains(&host);
        for jwt in [false, true] {
            for origins in [false, true] {
                for allow in [false, true] {
                    let mut pairs = vec![("BRIDGE_HOST", host)];
                    if jwt {
                        pairs.extend([("BRIDGE_AUTH", "jwt"), ("BRIDGE_JWT_SECRET", secret)]);
                    }
                    if origins {
                        pairs.push(("BRIDGE_ALLOWED_ORIGINS", "https://app.example"));
                    }
                    if allow {
                        pairs.push(("BRIDGE_ALLOW_INSECURE", "true"));
                    }
                    let refused = beyond_loopback && !jwt && !origins && !allow;
                    match Settings::load(&sources(&dir, &pairs)) {
                        Ok(_) => assert!(!refused, "{pairs:?} loaded"),
                        Err(error) => {
                            assert!(refused, "{pairs:?}: {error}");
                            assert_eq!(error.problems.len(), 1, "{error}");
                            let problem = &error.problems[0];
                            assert!(problem.starts_with("allow_insecure: "), "{problem}");
                            for fix in [
                                "auth = \"jwt\"",
                                "BRIDGE_ALLOWED_ORIGINS",
                                "BRIDGE_ALLOW_INSECURE=true",
                                host,
                            ] {
                                assert!(problem.contains(fix), "{fix} not in {problem}");
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn an_amqp_ca_file_must_be_readable_hold_a_certificate_and_go_with_amqps() {
    let dir = TempDir::new("cfg-amqp-ca");
    dir.write("not-a-cert.pem", "hello\n");
    let missing = dir.path().join("missing.pem");
    let text = dir.path().join("not-a-cert.pem");
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/fixtures/amqp-ca.pem");
    let amqps = ("BRIDGE_AMQP_URL", "amqps://guest:guest@127.0.0.1:5671/%2f");
    let amqp = ("BRIDGE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f");
    for (url, file, expected) in [
        (amqps, missing.to_str().unwrap(), "cannot read"),
        (amqps, text.to_str().unwrap(), "no certificate"),
        (amqp, fixture, "amqps://"),
    ] {
        let error = load_err(&sources(
            &dir,
            &[
                ("BRIDGE_BROKER", "amqp"),
                url,
                ("BRIDGE_AMQP_CA_FILE", file),
            ],
        ));
        assert_eq!(error.problems.len(), 1, "{file}: {error}");
        assert!(
            error.problems[0].starts_with("amqp_ca_file: ") && error.problems[0].contains(expected),
            "{file}: {error}"
        );
    }
    Settings::load(&sources(
        &dir,
        &[
            ("BRIDGE_BROKER", "amqp"),
            amqps,
            ("BRIDGE_AMQP_CA_FILE", fixture),
        ],
    ))
    .unwrap();
}

/// Values worth trying for any setting: numbers around every boundary,
/// huge and negative ones, booleans, enum names, URLs, text.
fn any_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        (0u64..100_000).prop_map(|n| n.to_string()),
        prop::sample::select(vec![
            "0",
            "1",
            "2",
            "20",
            "21",
            "64",
            "65",
            "300",
            "43200",
            "43201",
            "65536",
            "65537",
            "262144",
            "262145",
            "4294967296",
            "18446744073709551616",
            "-1",
            "1.5",
            "",
            " ",
            "true",
            "false",
            "maybe",
            "aws",
            "amqp",
            "shared",
            "fanout",
            "sharded",
            "retry",
            "drop",
            "none",
            "jwt",
            "text",
            "json",
            "0/3",
            "3/3",
            "0..5",
            "5..0",
            "http://127.0.0.1:1/1/q",
            "arn:aws:sns:us-east-1:1:t",
            "amqp://h/%2f",
            "https://a.example",
            "X-Forwarded-For",
            "dlq",
        ])
        .prop_map(str::to_owned),
        "[ -~]{0,40}",
    ]
}

fn any_environment() -> impl Strategy<Value = Vec<(String, String)>> {
    let names: Vec<String> = SETTINGS.iter().map(|s| s.env_name()).collect();
    prop::collection::vec((prop::sample::select(names), any_value()), 0..8)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_values_load_or_fail_with_named_problems(env in any_environment()) {
        let dir = TempDir::new("cfg-prop");
        let known: BTreeSet<&str> = SETTINGS.iter().map(|s| s.name).collect();
        let sources = Sources {
            config_dir: dir.path().to_path_buf(),
            profile: None,
            env: env.clone(),
            overrides: Vec::new(),
        };
        match Config::load(&sources) {
            Ok(config) => {
                // Every duration can be waited for from now: none overflows
                // a timer when the bridge uses it.
                let now = Instant::now();
                for duration in [
                    config.server.handshake_timeout,
                    config.server.shutdown_timeout,
                    config.downlink.receive_wait,
                    config.downlink.delivery.ack_timeout,
                    config.downlink.delivery.dedup_ttl,
                    config.uplink.publish_linger,
                    config.session.heartbeat_interval,
                    config.session.client_timeout,
                    config.session.fragment_timeout,
                    config.session.abuse.window,
                    config.fleet.heartbeat,
                    config.fleet.gc_stale_after,
                ] {
                    prop_assert!(now.checked_add(duration).is_some());
                    prop_assert!(duration < Duration::from_secs(31 * 86_400));
                }
                prop_assert!(config.session.outbound_capacity >= 1);
                prop_assert!(config.downlink.pollers >= 1);
            }
            Err(error) => {
                prop_assert!(!error.problems.is_empty());
                for problem in &error.problems {
                    let field = problem.split(':').next().unwrap_or_default();
                    prop_assert!(
                        known.contains(field),
                        "{problem:?} does not start with a setting's name ({env:?})"
                    );
                }
            }
        }
    }
}
