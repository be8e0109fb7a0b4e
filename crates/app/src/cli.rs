//! The `wsbridge` command line (SPEC §8). Exit codes: 0 ok, 1 runtime
//! failure, 2 usage or configuration error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use adapters_aws::bootstrap::{self, Plan};
use adapters_aws::fanout::GcScope;
use adapters_aws::sdk::Clients;
use adapters_aws::tools::{self, Monitor};
use clap::{Args, Parser, Subcommand};
use domain::{ClientId, Command};
use figment::value::Value;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::amqp_cli;
use crate::auth;
use crate::broker::Connection;
use crate::config::{Broker, ConfigError, Settings, Sources, ENV_PREFIX};
use crate::effective_config::{self, ShowFormat};
use crate::replica;
use crate::shards;
use crate::startup::Application;
use crate::telemetry;

/// Exit code of a runtime failure.
const EXIT_FAILURE: u8 = 1;
/// Exit code of a usage or configuration error.
const EXIT_USAGE: u8 = 2;

/// Bridges WebSocket clients and an SNS/SQS backend.
#[derive(Debug, Parser)]
#[command(name = "wsbridge", version)]
pub struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: CliCommand,
}

#[derive(Debug, Args)]
struct GlobalArgs {
    /// Folder with default.toml and <profile>.toml.
    #[arg(
        long,
        global = true,
        env = "BRIDGE_CONFIG_DIR",
        default_value = "config"
    )]
    config_dir: PathBuf,
    /// Configuration profile layered over default.toml (config/<profile>.toml).
    #[arg(long, global = true, env = "BRIDGE_PROFILE")]
    profile: Option<String>,
}

#[derive(Debug, Args, Default)]
struct ServeArgs {
    /// Address to listen on (BRIDGE_HOST).
    #[arg(long)]
    host: Option<String>,
    /// Port to listen on (BRIDGE_PORT).
    #[arg(long)]
    port: Option<u16>,
}

#[derive(Debug, Subcommand)]
enum CliCommand {
    /// Run the bridge.
    ///
    /// Example: BRIDGE_COMMAND_QUEUE_URL=… BRIDGE_EVENTS_TOPIC_ARN=… wsbridge serve
    Serve(ServeArgs),
    /// Create the topics, queues, subscription and dead-letter queue on the
    /// configured endpoint if missing (idempotent), then run the bridge.
    ///
    /// Example: AWS_ENDPOINT_URL=http://127.0.0.1:5000 AWS_REGION=us-east-1 wsbridge dev
    Dev(ServeArgs),
    /// Put a Command on the command queue (in an SNS envelope unless --raw),
    /// or publish it to the commands topic with --via-topic.
    ///
    /// Example: wsbridge send-command '{"command": "test", "client_id": "client123"}'
    SendCommand {
        /// The Command JSON: {"client_id": "...", "command": "...", "data": ...}.
        json: String,
        /// Send the bare Command, without an SNS envelope.
        #[arg(long, conflicts_with = "via_topic")]
        raw: bool,
        /// Publish to the commands topic instead of the queue.
        #[arg(long)]
        via_topic: bool,
    },
    /// Print every ClientMessage published to the events topic, with its
    /// attributes, one JSON line each, until Ctrl-C; then clean up.
    ///
    /// Example: wsbridge monitor
    Monitor {
        /// Stop after this many messages.
        #[arg(long)]
        count: Option<usize>,
    },
    /// Remove the queues and subscriptions of fanout instances that stopped
    /// without cleaning up (no heartbeat for gc_stale_after_secs).
    ///
    /// Example: BRIDGE_COMMANDS_TOPIC_ARN=… wsbridge gc --stale-after-secs 600
    Gc {
        /// Override gc_stale_after_secs.
        #[arg(long)]
        stale_after_secs: Option<u64>,
        /// Also remove stale shard-range queues (sharded mode), which are
        /// otherwise kept for their range's next owner: for a fleet that
        /// shrank or was split differently. Commands still in them are lost.
        #[arg(long)]
        shard_queues: bool,
    },
    /// Print how the configured number of shards splits among REPLICAS
    /// replicas (each one's shard_owner and range) as an nginx configuration
    /// that routes every client to its shard's owner; with --client-id, that
    /// client's shard and owner instead.
    ///
    /// Example: wsbridge shards --replicas 3 --servers 10.0.1.10:8000,10.0.1.11:8000,10.0.1.12:8000
    Shards {
        /// The number of replicas.
        #[arg(long)]
        replicas: u32,
        /// The replicas' addresses (host:port), in shard_owner order,
        /// comma-separated; default wsbridge-INDEX:8000.
        #[arg(long, value_delimiter = ',')]
        servers: Vec<String>,
        /// Print this client id's shard and owner.
        #[arg(long)]
        client_id: Option<String>,
    },
    /// Print the effective configuration (built-in defaults, config files,
    /// .env, environment, flags), secrets redacted; exit 2 naming every
    /// invalid setting.
    ///
    /// Example: BRIDGE_PORT=9000 wsbridge --profile staging config --format json
    Config {
        /// toml (a valid config file) or json.
        #[arg(long, value_enum, default_value = "toml")]
        format: ShowFormat,
    },
    /// Print a development token (HS256, signed with the configured
    /// jwt_secret) for a client id, with the configured audience and issuer.
    ///
    /// Example: BRIDGE_JWT_SECRET=… wsbridge token --sub client123 --ttl 15m
    Token {
        /// The client id (the token's `sub`).
        #[arg(long)]
        sub: String,
        /// How long the token is valid: 90s, 15m, 2h, 1d (a bare number is seconds).
        #[arg(long, default_value = "15m", value_parser = parse_ttl)]
        ttl: Duration,
    },
}

/// Parses `90`, `90s`, `15m`, `2h` or `1d`.
fn parse_ttl(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 90s, 15m, 2h or 1d"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d")),
    };
    match number.checked_mul(scale) {
        Some(secs) if secs > 0 => Ok(Duration::from_secs(secs)),
        _ => Err(format!("{text:?} is not a positive duration")),
    }
}

/// Runs the parsed command line; returns the process exit code.
pub async fn run(cli: Cli) -> ExitCode {
    let (overrides, dev) = match &cli.command {
        CliCommand::Serve(args) => (serve_overrides(args), false),
        CliCommand::Dev(args) => (serve_overrides(args), true),
        _ => (Vec::new(), false),
    };
    let sources = Sources {
        config_dir: cli.global.config_dir.clone(),
        profile: cli.global.profile.clone(),
        env: std::env::vars().collect(),
        overrides,
    };
    let settings = match Settings::load(&sources) {
        Ok(settings) => settings,
        Err(e) => return config_failure(&e),
    };
    if let CliCommand::Config { format } = cli.command {
        print!("{}", effective_config::render(&settings, format));
        return ExitCode::SUCCESS;
    }
    let _telemetry = telemetry::init(settings.log_format);
    let result = match cli.command {
        CliCommand::Serve(_) | CliCommand::Dev(_) => serve(settings, dev).await,
        CliCommand::SendCommand {
            json,
            raw,
            via_topic,
        } => send_command(&settings, &json, raw, via_topic).await,
        CliCommand::Monitor { count } => monitor(&settings, count).await,
        CliCommand::Token { sub, ttl } => token(&settings, &sub, ttl),
        CliCommand::Config { .. } => Ok(()),
        CliCommand::Gc {
            stale_after_secs,
            shard_queues,
        } => gc(&settings, stale_after_secs, shard_queues).await,
        CliCommand::Shards {
            replicas,
            servers,
            client_id,
        } => shards::print(settings.shards, replicas, &servers, client_id.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("wsbridge: {message}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(Failure::Runtime(error)) => {
            eprintln!("wsbridge: {error:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn config_failure(error: &ConfigError) -> ExitCode {
    eprintln!("wsbridge: {error}");
    ExitCode::from(EXIT_USAGE)
}

pub(crate) enum Failure {
    Usage(String),
    Runtime(anyhow::Error),
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure::Usage(e.to_string())
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        // `Application::build` reports a missing setting as a ConfigError
        // inside anyhow: still a configuration error (exit 2), not a runtime one.
        match e.downcast::<ConfigError>() {
            Ok(config) => Failure::Usage(config.to_string()),
            Err(e) => Failure::Runtime(e),
        }
    }
}

fn serve_overrides(args: &ServeArgs) -> Vec<(String, Value)> {
    let mut overrides = Vec::new();
    if let Some(host) = &args.host {
        overrides.push(("host".to_owned(), Value::from(host.clone())));
    }
    if let Some(port) = args.port {
        overrides.push(("port".to_owned(), Value::from(port)));
    }
    overrides
}

async fn serve(mut settings: Settings, dev: bool) -> Result<(), Failure> {
    let stop = CancellationToken::new();
    cancel_on_signal(stop.clone()).map_err(|e| Failure::Runtime(e.into()))?;
    if settings.broker == Broker::Amqp {
        if dev {
            amqp_cli::bootstrap(&settings).await?;
        }
        return run_app(settings, Connection::Amqp, None, stop).await;
    }
    let clients = Clients::from_env().await;
    if dev {
        if std::env::var_os("AWS_ENDPOINT_URL").is_none() {
            warn!("AWS_ENDPOINT_URL is not set: `dev` will create resources on real AWS");
        }
        let plan = dev_plan(&settings)?;
        let infra = bootstrap::ensure(&clients.sqs, &clients.sns, &plan)
            .await
            .map_err(|e| Failure::Runtime(anyhow::anyhow!("bootstrap failed: {e}")))?;
        info!(
            queue = %infra.command_queue_url,
            dead_letter_queue = %infra.dead_letter_queue_url,
            events_topic = %infra.events_topic_arn,
            commands_topic = %infra.commands_topic_arn,
            "development resources ready"
        );
        settings.command_queue_url = Some(infra.command_queue_url);
        settings.events_topic_arn = Some(infra.events_topic_arn);
        settings.commands_topic_arn = Some(infra.commands_topic_arn);
    }
    let instance = replica::join(&clients, &settings).await?;
    if let Some(instance) = &instance {
        info!(queue = %instance.queue_url(), mode = ?settings.mode, "consuming this replica's own queue");
        settings.command_queue_url = Some(instance.queue_url().to_owned());
    }
    run_app(settings, Connection::Aws(clients), instance, stop).await
}

/// Builds and runs the bridge until `stop`; a fanout instance's queue is
/// removed afterwards.
async fn run_app(
    settings: Settings,
    connection: Connection,
    instance: Option<replica::Instance>,
    stop: CancellationToken,
) -> Result<(), Failure> {
    let app = match Application::build(settings.clone(), connection).await {
        Ok(app) => app,
        Err(e) => {
            if let Some(instance) = instance {
                instance.leave().await;
            }
            return Err(e.into());
        }
    };
    let shutdown = app.shutdown_token();
    tokio::spawn(async move {
        stop.cancelled().await;
        shutdown.cancel();
    });
    info!(
        url = %format!("http://{}:{}/", settings.host, app.port()),
        "demo page"
    );
    let result = app.run_until_stopped().await;
    // After the drain: nothing is received from the queue any more.
    if let Some(instance) = instance {
        instance.leave().await;
    }
    result?;
    Ok(())
}

/// The resource names `dev` makes sure of, taken from the configured URL and ARNs.
fn dev_plan(settings: &Settings) -> Result<Plan, ConfigError> {
    let queue_url = settings.required("command_queue_url", &settings.command_queue_url)?;
    let events = settings.required("events_topic_arn", &settings.events_topic_arn)?;
    let commands = settings.required("commands_topic_arn", &settings.commands_topic_arn)?;
    let name_error = |field: &str, value: &str| ConfigError {
        problems: vec![format!("{field}: cannot take a name from {value:?}")],
    };
    Ok(Plan {
        command_queue: bootstrap::queue_name_from_url(queue_url)
            .ok_or_else(|| name_error("command_queue_url", queue_url))?
            .to_owned(),
        events_topic: bootstrap::topic_name_from_arn(events)
            .ok_or_else(|| name_error("events_topic_arn", events))?
            .to_owned(),
        commands_topic: bootstrap::topic_name_from_arn(commands)
            .ok_or_else(|| name_error("commands_topic_arn", commands))?
            .to_owned(),
        max_receive_count: settings.max_receive_count,
    })
}

/// Cancels `token` on SIGINT (Ctrl-C) or SIGTERM: the one place that owns
/// signals. The handlers are installed before this returns, so a signal that
/// arrives while the caller is still starting up is not lost.
pub fn cancel_on_signal(token: CancellationToken) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        tokio::spawn(async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
            info!("shutdown signal received");
            token.cancel();
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        info!("shutdown signal received");
        token.cancel();
    });
    Ok(())
}

async fn gc(
    settings: &Settings,
    stale_after_secs: Option<u64>,
    shard_queues: bool,
) -> Result<(), Failure> {
    let topic = settings.required("commands_topic_arn", &settings.commands_topic_arn)?;
    let stale_after =
        std::time::Duration::from_secs(stale_after_secs.unwrap_or(settings.gc_stale_after_secs));
    let clients = Clients::from_env().await;
    let removed = adapters_aws::fanout::collect_garbage(
        &clients.sqs,
        &clients.sns,
        &settings.bridge_name,
        topic,
        stale_after,
        if shard_queues {
            GcScope::InstancesAndShards
        } else {
            GcScope::Instances
        },
    )
    .await
    .map_err(|e| Failure::Runtime(anyhow::anyhow!("gc failed: {e}")))?;
    for queue in &removed {
        println!(
            "removed {} (instance {}, {} subscription(s))",
            queue.queue_url, queue.instance, queue.subscriptions
        );
    }
    eprintln!("{} orphan instance queue(s) removed", removed.len());
    Ok(())
}

async fn send_command(
    settings: &Settings,
    json: &str,
    raw: bool,
    via_topic: bool,
) -> Result<(), Failure> {
    let command: Command =
        serde_json::from_str(json).map_err(|e| Failure::Usage(format!("not a Command: {e}")))?;
    if settings.broker == Broker::Amqp {
        return amqp_cli::send_command(settings, json, raw, via_topic).await;
    }
    let clients = Clients::from_env().await;
    let id = if via_topic {
        let topic = settings.required("commands_topic_arn", &settings.commands_topic_arn)?;
        // The `shard` attribute is what sharded replicas' subscriptions
        // filter on; other modes ignore it.
        tools::publish_to_topic(
            &clients.sns,
            topic,
            json,
            &command.client_id,
            Some(settings.shards),
        )
        .await
    } else {
        let queue = settings.required("command_queue_url", &settings.command_queue_url)?;
        let body = if raw {
            json.to_owned()
        } else {
            let topic = settings
                .commands_topic_arn
                .as_deref()
                .unwrap_or("arn:aws:sns:us-east-1:000000000000:wsbridge-send-command");
            tools::envelope(json, topic)
        };
        tools::send_to_queue(&clients.sqs, queue, &body, &command.client_id).await
    }
    .map_err(|e| Failure::Runtime(e.into()))?;
    println!("{id}");
    Ok(())
}

fn token(settings: &Settings, sub: &str, ttl: Duration) -> Result<(), Failure> {
    let secret = settings.jwt_secret.as_ref().ok_or_else(|| {
        Failure::Usage(
            ConfigError {
                problems: vec![format!(
                    "jwt_secret: not set (config file, or {ENV_PREFIX}JWT_SECRET); \
                     `wsbridge token` signs with it"
                )],
            }
            .to_string(),
        )
    })?;
    let sub = ClientId::parse(sub).map_err(|e| Failure::Usage(format!("--sub: {e}")))?;
    let token = auth::mint(
        secret,
        &sub,
        ttl,
        settings.jwt_audience.as_deref(),
        settings.jwt_issuer.as_deref(),
    )
    .map_err(|e| Failure::Runtime(anyhow::anyhow!("cannot sign the token: {e}")))?;
    println!("{token}");
    Ok(())
}

async fn monitor(settings: &Settings, count: Option<usize>) -> Result<(), Failure> {
    let stop = CancellationToken::new();
    cancel_on_signal(stop.clone()).map_err(|e| Failure::Runtime(e.into()))?;
    if settings.broker == Broker::Amqp {
        return amqp_cli::monitor(settings, count, stop).await;
    }
    let topic = settings.required("events_topic_arn", &settings.events_topic_arn)?;
    let clients = Clients::from_env().await;
    let monitor = Monitor::start(clients.sqs, clients.sns, topic)
        .await
        .map_err(|e| Failure::Runtime(e.into()))?;
    eprintln!(
        "monitoring {topic} through {} (Ctrl-C to stop)",
        monitor.queue_url()
    );
    let mut seen = 0usize;
    let outcome = loop {
        if count.is_some_and(|n| seen >= n) {
            break Ok(());
        }
        let events = tokio::select! {
            _ = stop.cancelled() => break Ok(()),
            events = monitor.next_events(5) => events,
        };
        match events {
            Ok(events) => {
                for event in events {
                    print_event(&event.message_id, &event.message, &event.attributes);
                    seen += 1;
                }
            }
            Err(e) => break Err(Failure::Runtime(e.into())),
        }
    };
    if let Err(e) = monitor.stop().await {
        warn!(error = %e, "monitor cleanup failed");
    }
    outcome
}

/// One line of `wsbridge monitor`: the event with its attributes, as JSON.
pub(crate) fn print_event(
    message_id: &str,
    message: &str,
    attributes: &std::collections::BTreeMap<String, String>,
) {
    let message = serde_json::from_str::<serde_json::Value>(message)
        .unwrap_or_else(|_| serde_json::Value::String(message.to_owned()));
    let line = serde_json::json!({
        "message_id": message_id,
        "attributes": attributes,
        "message": message,
    });
    println!("{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subcommand_has_help_with_an_example() {
        use clap::CommandFactory;
        let cli = Cli::command();
        cli.clone().debug_assert();
        let mut names = Vec::new();
        for sub in cli.get_subcommands() {
            let about = sub
                .get_long_about()
                .map(ToString::to_string)
                .unwrap_or_default();
            assert!(
                about.contains("Example: "),
                "`wsbridge {}` --help has no example:\n{about}",
                sub.get_name()
            );
            names.push(sub.get_name().to_owned());
        }
        for expected in ["serve", "dev", "send-command", "monitor", "token", "config"] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} missing: {names:?}"
            );
        }
    }

    #[test]
    fn ttls_take_a_unit_and_must_be_positive() {
        assert_eq!(parse_ttl("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_ttl("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_ttl("1d"), Ok(Duration::from_secs(86_400)));
        for bad in [
            "",
            "0",
            "0m",
            "m",
            "15x",
            "1.5h",
            "-3s",
            "99999999999999999999d",
        ] {
            assert!(parse_ttl(bad).is_err(), "{bad:?}");
        }
    }
}
