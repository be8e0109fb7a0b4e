//! The layered configuration (docs/configuration.md): defaults, config/default.toml,
//! config/<profile>.toml, environment, command-line overrides; validation.
//! The environment is passed in as pairs: nothing here touches the process's.

use std::path::Path;
use std::time::Duration;

use app::config::{docs, Config, ConfigError, Mode, Settings, Sources, UndeliverablePolicy};
use domain::Undeliverable;
use figment::value::Value;

use crate::support::TempDir;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn sources(dir: &TempDir, pairs: &[(&str, &str)]) -> Sources {
    Sources {
        config_dir: dir.path().to_path_buf(),
        profile: None,
        env: env(pairs),
        overrides: Vec::new(),
    }
}

fn load_err(sources: &Sources) -> ConfigError {
    match Settings::load(sources) {
        Ok(settings) => panic!("expected a ConfigError, loaded {settings:?}"),
        Err(e) => e,
    }
}

/// Asserts the error has exactly one problem, and that it starts with `field:`.
fn assert_one_problem_naming(error: &ConfigError, field: &str) {
    assert_eq!(error.problems.len(), 1, "{error}");
    assert!(
        error.problems[0].starts_with(&format!("{field}:")),
        "the problem should name {field}: {error}"
    );
    assert!(error.to_string().contains(field), "{error}");
}

#[test]
fn without_files_or_environment_the_defaults_apply() {
    let dir = TempDir::new("cfg-defaults");
    let settings = Settings::load(&sources(&dir, &[])).unwrap();
    assert_eq!(settings, Settings::default());
    assert_eq!(settings.host, "127.0.0.1");
    assert_eq!(settings.port, 8000);
    assert_eq!(settings.mode, Mode::Shared);
    assert_eq!(settings.receive_wait_secs, 20);
    assert_eq!(settings.max_message_bytes, 65_536);
    assert_eq!(settings.command_queue_url, None);
    // Unset undeliverable policy in shared mode: retry, 5 s delay, 60 s window.
    assert_eq!(
        Config::new(settings)
            .unwrap()
            .downlink
            .delivery
            .undeliverable,
        Undeliverable::Retry {
            delay: Duration::from_secs(5),
            window: Duration::from_secs(60),
        }
    );
}

/// Compares a committed file generated from the settings table with what
/// the table generates now; `WSBRIDGE_BLESS=1` rewrites the file instead.
fn assert_generated(relative: &str, expected: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative);
    if std::env::var_os("WSBRIDGE_BLESS").is_some() {
        std::fs::write(&path, expected).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap();
    assert!(
        committed == expected,
        "{relative} is not what crates/app/src/config/settings.rs generates; \
         rerun with WSBRIDGE_BLESS=1 to rewrite it. Expected:\n{expected}"
    );
}

#[test]
fn the_shipped_default_toml_is_generated_from_the_settings_table() {
    assert_generated("config/default.toml", &docs::default_toml());
    // And it sets every setting to its built-in default: the two agree.
    let config_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
    let settings = Settings::load(&Sources {
        config_dir,
        ..Sources::default()
    })
    .unwrap();
    assert_eq!(settings, Settings::default());
}

#[test]
fn the_shipped_default_toml_names_no_endpoint_and_no_local_address() {
    // Production configuration is explicit: `serve` gets its queue, topics
    // and broker from the operator, never a local emulator's by default
    // (`dev` makes its own, on the embedded emulator or the endpoint given).
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/default.toml");
    let file = std::fs::read_to_string(&path).unwrap();
    for line in file.lines() {
        let lower = line.to_ascii_lowercase();
        for local in [
            "://127.",
            "@127.",
            "://localhost",
            "@localhost",
            "://0.0.0.0",
            "://[::1]",
        ] {
            assert!(
                !lower.contains(local),
                "a local address in default.toml: {line}"
            );
        }
    }
    for name in [
        "command_queue_url",
        "events_topic_arn",
        "commands_topic_arn",
        "dead_letter_queue_url",
        "amqp_url",
    ] {
        assert!(
            file.lines().any(|l| l.starts_with(&format!("# {name} = "))),
            "{name} is not a commented example"
        );
        assert!(
            !file.lines().any(|l| l.starts_with(&format!("{name} = "))),
            "default.toml sets {name}"
        );
    }
}

#[test]
fn the_configuration_page_settings_table_is_generated_from_the_settings_table() {
    const PAGE: &str = "docs/configuration.md";
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(PAGE);
    let page = std::fs::read_to_string(&path).unwrap();
    let (Some(start), Some(end)) = (
        page.find(docs::README_TABLE_START),
        page.find(docs::README_TABLE_END),
    ) else {
        panic!("{PAGE} has no generated settings table");
    };
    let end = end + docs::README_TABLE_END.len() + 1;
    let expected = format!("{}{}{}", &page[..start], docs::readme_table(), &page[end..]);
    assert_generated(PAGE, &expected);
}

#[test]
fn a_toml_file_overrides_the_defaults() {
    let dir = TempDir::new("cfg-file");
    dir.write(
        "default.toml",
        r#"
port = 9001
undeliverable = "drop"
pollers = 4
command_queue_url = "http://127.0.0.1:5000/123456789012/from-file"
events_topic_arn = "arn:aws:sns:us-east-1:123456789012:from-file"
"#,
    );
    let settings = Settings::load(&sources(&dir, &[])).unwrap();
    assert_eq!(settings.port, 9001);
    assert_eq!(settings.undeliverable, Some(UndeliverablePolicy::Drop));
    assert_eq!(
        Config::new(settings.clone())
            .unwrap()
            .downlink
            .delivery
            .undeliverable,
        Undeliverable::Drop
    );
    assert_eq!(settings.pollers, 4);
    assert_eq!(
        settings.command_queue_url.as_deref(),
        Some("http://127.0.0.1:5000/123456789012/from-file")
    );
    // What the file does not set keeps its default.
    assert_eq!(settings.host, "127.0.0.1");
    assert_eq!(settings.receive_wait_secs, 20);
}

#[test]
fn a_profile_file_overrides_default_toml() {
    let dir = TempDir::new("cfg-profile");
    dir.write(
        "default.toml",
        "port = 9001\nhost = \"0.0.0.0\"\nallow_insecure = true\n",
    );
    dir.write("staging.toml", "port = 9002\n");
    let mut with_profile = sources(&dir, &[]);
    with_profile.profile = Some("staging".into());
    let settings = Settings::load(&with_profile).unwrap();
    assert_eq!(settings.port, 9002);
    assert_eq!(settings.host, "0.0.0.0");

    // Without the profile the profile file is not read.
    let settings = Settings::load(&sources(&dir, &[])).unwrap();
    assert_eq!(settings.port, 9001);
}

#[test]
fn environment_variables_override_files() {
    let dir = TempDir::new("cfg-env");
    dir.write(
        "default.toml",
        "port = 9001\npollers = 3\nmode = \"shared\"\n",
    );
    dir.write("staging.toml", "port = 9002\n");
    let mut s = sources(
        &dir,
        &[
            ("BRIDGE_PORT", "9100"),
            ("BRIDGE_HOST", "0.0.0.0"),
            ("BRIDGE_ALLOW_INSECURE", "true"),
            ("BRIDGE_UNDELIVERABLE", "drop"),
            ("BRIDGE_RECEIVE_WAIT_SECS", "3"),
            (
                "BRIDGE_COMMAND_QUEUE_URL",
                "http://127.0.0.1:5000/123456789012/from-env",
            ),
            (
                "BRIDGE_EVENTS_TOPIC_ARN",
                "arn:aws:sns:us-east-1:123456789012:from-env",
            ),
        ],
    );
    s.profile = Some("staging".into());
    let settings = Settings::load(&s).unwrap();
    assert_eq!(settings.port, 9100);
    assert_eq!(settings.host, "0.0.0.0");
    assert_eq!(settings.undeliverable, Some(UndeliverablePolicy::Drop));
    assert_eq!(settings.receive_wait_secs, 3);
    assert_eq!(
        settings.command_queue_url.as_deref(),
        Some("http://127.0.0.1:5000/123456789012/from-env")
    );
    assert_eq!(
        settings.events_topic_arn.as_deref(),
        Some("arn:aws:sns:us-east-1:123456789012:from-env")
    );
    // The file's value survives where the environment is silent.
    assert_eq!(settings.pollers, 3);
}

#[test]
fn command_line_overrides_win_over_the_environment() {
    let dir = TempDir::new("cfg-cli");
    dir.write("default.toml", "port = 9001\n");
    let mut s = sources(&dir, &[("BRIDGE_PORT", "9100"), ("BRIDGE_HOST", "0.0.0.0")]);
    s.overrides = vec![
        ("port".into(), Value::from(9200u16)),
        ("host".into(), Value::from("::1".to_owned())),
    ];
    let settings = Settings::load(&s).unwrap();
    assert_eq!(settings.port, 9200);
    assert_eq!(settings.host, "::1");
}

#[test]
fn a_port_that_is_not_a_number_is_refused_naming_the_field() {
    let dir = TempDir::new("cfg-bad-port");
    let error = load_err(&sources(&dir, &[("BRIDGE_PORT", "abc")]));
    assert_one_problem_naming(&error, "port");
    assert!(error.to_string().contains("abc"), "{error}");
    assert!(error.to_string().contains("environment"), "{error}");

    let error = load_err(&sources(&dir, &[("BRIDGE_PORT", "70000")]));
    assert_one_problem_naming(&error, "port");
}

#[test]
fn an_unknown_mode_is_refused_naming_the_field() {
    let dir = TempDir::new("cfg-bad-mode");
    let error = load_err(&sources(&dir, &[("BRIDGE_MODE", "sideways")]));
    assert_one_problem_naming(&error, "mode");
    assert!(error.to_string().contains("sideways"), "{error}");
}

#[test]
fn a_frame_limit_above_sns_is_refused_naming_the_field() {
    let dir = TempDir::new("cfg-bad-bytes");
    let error = load_err(&sources(&dir, &[("BRIDGE_MAX_MESSAGE_BYTES", "300000")]));
    assert_one_problem_naming(&error, "max_message_bytes");
    assert!(error.to_string().contains("300000"), "{error}");
    // SNS's own limit is still fine.
    let ok = Settings::load(&sources(&dir, &[("BRIDGE_MAX_MESSAGE_BYTES", "262144")])).unwrap();
    assert_eq!(ok.max_message_bytes, 262_144);
}

#[test]
fn a_receive_wait_above_sqs_limit_is_refused_naming_the_field() {
    let dir = TempDir::new("cfg-bad-wait");
    let error = load_err(&sources(&dir, &[("BRIDGE_RECEIVE_WAIT_SECS", "21")]));
    assert_one_problem_naming(&error, "receive_wait_secs");
    let ok = Settings::load(&sources(&dir, &[("BRIDGE_RECEIVE_WAIT_SECS", "20")])).unwrap();
    assert_eq!(ok.receive_wait_secs, 20);
}

#[test]
fn every_invalid_value_is_reported_at_once() {
    let dir = TempDir::new("cfg-many");
    let error = load_err(&sources(
        &dir,
        &[
            ("BRIDGE_POLLERS", "0"),
            ("BRIDGE_RECEIVE_WAIT_SECS", "21"),
            ("BRIDGE_MAX_MESSAGE_BYTES", "0"),
            ("BRIDGE_HEARTBEAT_SECS", "60"),
            ("BRIDGE_EVENTS_TOPIC_ARN", "not-an-arn"),
        ],
    ));
    let fields = [
        "pollers",
        "receive_wait_secs",
        "max_message_bytes",
        "client_timeout_secs",
        "events_topic_arn",
    ];
    assert_eq!(error.problems.len(), fields.len(), "{error}");
    for field in fields {
        assert!(
            error
                .problems
                .iter()
                .any(|p| p.starts_with(&format!("{field}:"))),
            "{field} not named: {error}"
        );
    }
}

#[test]
fn an_unknown_key_in_a_file_is_refused_naming_it() {
    let dir = TempDir::new("cfg-unknown-key");
    dir.write("default.toml", "port = 9001\nbogus_setting = 1\n");
    let error = load_err(&sources(&dir, &[]));
    assert!(error.to_string().contains("bogus_setting"), "{error}");
}

#[test]
fn a_wrong_type_in_a_file_names_the_field_and_the_file() {
    let dir = TempDir::new("cfg-file-type");
    dir.write("default.toml", "pollers = \"many\"\n");
    let error = load_err(&sources(&dir, &[]));
    assert_one_problem_naming(&error, "pollers");
    assert!(error.to_string().contains("default.toml"), "{error}");
}

#[test]
fn a_mistyped_environment_variable_is_refused_naming_the_setting_it_resembles() {
    let dir = TempDir::new("cfg-unknown-env");
    let error = load_err(&sources(
        &dir,
        &[
            ("BRIDGE_ACK_TIMOUT_SECS", "3"),
            ("BRIDGE_SOMETHING_ELSE", "whatever"),
            ("BRIDGE_PORT", "9000"),
        ],
    ));
    assert_eq!(
        error.problems,
        [
            "unknown environment variable BRIDGE_ACK_TIMOUT_SECS \
             (did you mean BRIDGE_ACK_TIMEOUT_SECS?)",
            "unknown environment variable BRIDGE_SOMETHING_ELSE (no setting has a name \
             like it; `wsbridge config` lists them)",
        ],
        "{error}"
    );
}

#[test]
fn an_unknown_variable_is_reported_with_the_other_problems() {
    let dir = TempDir::new("cfg-unknown-env-and-more");
    let error = load_err(&sources(
        &dir,
        &[("BRIDGE_POLERS", "4"), ("BRIDGE_PORT", "abc")],
    ));
    assert_eq!(error.problems.len(), 2, "{error}");
    assert!(
        error.problems[0].contains("BRIDGE_POLERS (did you mean BRIDGE_POLLERS?)"),
        "{error}"
    );
    assert!(error.problems[1].starts_with("port:"), "{error}");
}

#[test]
fn the_command_lines_own_variables_and_other_prefixes_are_not_settings_but_allowed() {
    let dir = TempDir::new("cfg-not-settings-env");
    let settings = Settings::load(&sources(
        &dir,
        &[
            ("BRIDGE_PROFILE", "staging"),
            ("BRIDGE_CONFIG_DIR", "/nowhere"),
            ("WSBRIDGE_TEST_MOTO_URL", "http://127.0.0.1:5999"),
            ("PORT", "1234"),
            ("bridge_port", "1234"),
            ("BRIDGE_ACK_TIMEOUT_SECS", "3"),
        ],
    ))
    .unwrap();
    assert_eq!(
        settings,
        Settings {
            ack_timeout_secs: 3,
            ..Settings::default()
        }
    );
}

#[test]
fn unreadable_and_invalid_values_are_all_reported_at_once() {
    // Serde stops at the first value it cannot read; every one is named,
    // each with where it came from, together with the out-of-range ones.
    let dir = TempDir::new("cfg-all-at-once");
    dir.write(
        "default.toml",
        "pollers = \"many\"\nreceive_wait_secs = 21\nbogus_setting = 1\n",
    );
    let error = load_err(&sources(
        &dir,
        &[
            ("BRIDGE_PORT", "abc"),
            ("BRIDGE_MODE", "sideways"),
            ("BRIDGE_ECHO_ROUTE", "maybe"),
            ("BRIDGE_MAX_MESSAGE_BYTES", "300000"),
        ],
    ));
    let expected = [
        ("port", "BRIDGE_PORT"),
        ("mode", "sideways"),
        ("echo_route", "BRIDGE_ECHO_ROUTE"),
        ("pollers", "default.toml"),
        ("bogus_setting", "bogus_setting"),
        ("receive_wait_secs", "21"),
        ("max_message_bytes", "300000"),
    ];
    assert_eq!(error.problems.len(), expected.len(), "{error}");
    for (field, detail) in expected {
        let problem = error
            .problems
            .iter()
            .find(|p| p.starts_with(&format!("{field}:")))
            .unwrap_or_else(|| panic!("{field} not named: {error}"));
        assert!(problem.contains(detail), "{problem}");
    }
    // One line.
    assert!(!error.to_string().contains('\n'), "{error}");
}

#[test]
fn default_toml_documents_every_setting() {
    // Set to its default (checked by the_shipped_default_toml_matches_the_built_in_defaults),
    // or shown commented out when the default is "unset".
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/default.toml");
    let file = std::fs::read_to_string(&path).unwrap();
    let serde_json::Value::Object(defaults) = serde_json::to_value(Settings::default()).unwrap()
    else {
        panic!("Settings serializes to an object");
    };
    for (name, default) in &defaults {
        let set = file.lines().any(|l| l.starts_with(&format!("{name} = ")));
        let commented = file.lines().any(|l| l.starts_with(&format!("# {name} = ")));
        assert!(
            set || commented,
            "config/default.toml does not document {name}"
        );
        if !set {
            assert!(
                default.is_null(),
                "{name} is only commented out in config/default.toml but defaults to {default}"
            );
        }
        // It has a comment: the block of settings it stands in (no blank
        // line between) starts with one.
        let lines: Vec<&str> = file.lines().collect();
        let index = lines
            .iter()
            .position(|l| {
                l.starts_with(&format!("{name} = ")) || l.starts_with(&format!("# {name} = "))
            })
            .unwrap();
        let is_setting = |l: &str| {
            let l = l.strip_prefix("# ").unwrap_or(l);
            l.split_once(" = ")
                .is_some_and(|(key, _)| defaults.contains_key(key.trim()))
        };
        let explained = lines[..index]
            .iter()
            .rev()
            .find(|l| !is_setting(l))
            .is_some_and(|l| l.starts_with('#'));
        assert!(explained, "{name} has no comment in config/default.toml");
    }
}

#[test]
fn sharded_mode_takes_its_share_from_shard_owner_or_shard_range() {
    let dir = TempDir::new("cfg-sharded");
    let topic = ("BRIDGE_COMMANDS_TOPIC_ARN", "arn:aws:sns:us-east-1:1:cmds");
    let owner = Settings::load(&sources(
        &dir,
        &[
            ("BRIDGE_MODE", "sharded"),
            ("BRIDGE_SHARD_OWNER", "1/3"),
            topic,
        ],
    ))
    .unwrap();
    let owner = Config::new(owner).unwrap();
    let assignment = owner.shard_assignment().unwrap();
    assert_eq!(
        (assignment.shards, assignment.owned.to_string()),
        (4096, "1366..2731".to_owned())
    );
    // Unset, `undeliverable` is retry: a client of this shard reconnects here.
    assert!(matches!(
        owner.downlink.delivery.undeliverable,
        Undeliverable::Retry { .. }
    ));
    let range = Settings::load(&sources(
        &dir,
        &[
            ("BRIDGE_MODE", "sharded"),
            ("BRIDGE_SHARDS", "16"),
            ("BRIDGE_SHARD_RANGE", "4..9"),
            topic,
        ],
    ))
    .unwrap();
    let range = Config::new(range).unwrap();
    assert_eq!(range.shard_assignment().unwrap().owned.to_string(), "4..9");
    // Outside sharded mode a share would be ignored: it is refused instead.
    let error = load_err(&sources(&dir, &[("BRIDGE_SHARD_OWNER", "0/2")]));
    assert_one_problem_naming(&error, "shard_owner");
    assert!(error.to_string().contains("mode = \"sharded\""), "{error}");
    let shared = Config::load(&sources(&dir, &[])).unwrap();
    assert_eq!(shared.shard_assignment(), None);
}

#[test]
fn sharded_mode_without_a_valid_share_is_refused_naming_the_field() {
    let dir = TempDir::new("cfg-sharded-bad");
    let topic = ("BRIDGE_COMMANDS_TOPIC_ARN", "arn:aws:sns:us-east-1:1:cmds");
    // (environment, field named, text the problem holds)
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: [Case; 7] = [
        (
            &[("BRIDGE_MODE", "sharded"), topic],
            "shard_owner",
            "INDEX/REPLICAS",
        ),
        (
            &[
                ("BRIDGE_MODE", "sharded"),
                ("BRIDGE_SHARD_OWNER", "3/3"),
                topic,
            ],
            "shard_owner",
            "replica 3 of 3",
        ),
        (
            &[
                ("BRIDGE_MODE", "sharded"),
                ("BRIDGE_SHARD_OWNER", "two"),
                topic,
            ],
            "shard_owner",
            "\"two\"",
        ),
        (
            &[
                ("BRIDGE_MODE", "sharded"),
                ("BRIDGE_SHARD_RANGE", "10..5000"),
                topic,
            ],
            "shard_range",
            "4096",
        ),
        (
            &[
                ("BRIDGE_MODE", "sharded"),
                ("BRIDGE_SHARD_RANGE", "0..5"),
                ("BRIDGE_SHARD_OWNER", "0/2"),
                topic,
            ],
            "shard_range",
            "not both",
        ),
        (
            &[("BRIDGE_MODE", "sharded"), ("BRIDGE_SHARD_OWNER", "0/2")],
            "commands_topic_arn",
            "sharded",
        ),
        (&[("BRIDGE_SHARDS", "40000")], "shards", "32768"),
    ];
    for (pairs, field, says) in cases {
        let error = load_err(&sources(&dir, pairs));
        assert_one_problem_naming(&error, field);
        assert!(error.to_string().contains(says), "{pairs:?}: {error}");
    }
}
