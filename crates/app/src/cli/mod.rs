//! The `wsbridge` command line (docs/operations.md). Exit codes: 0 ok, 1 runtime
//! failure, 2 usage or configuration error.

//!
//! One file per subcommand: [`serve`] (`serve` and `dev`), [`emulator`],
//! [`send_command`], [`monitor`], [`gc`], [`shards`], [`config`],
//! [`token`], [`health`] and [`completions`]. This module
//! parses the command line, loads the configuration (flags are its last
//! layer) and maps each outcome to its exit code. `.env` is read by `dev`
//! only ([`Cli::reads_dotenv`], [`load_dotenv`]): a development file never
//! configures a production `serve`.

mod admin;
mod completions;
pub mod config;
mod emulator;
mod gc;
mod health;
mod monitor;
mod send_command;
mod serve;
pub mod shards;
mod token;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use figment::value::Value;
use tokio_util::sync::CancellationToken;
use tracing::info;

use self::config::ShowFormat;
use self::token::{parse_token_ttl, parse_ttl};
use crate::broker::Dev;
use crate::config::{Config, ConfigError, Settings, Sources};
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
    /// The variables `.env` filled in (`dev` only).
    #[arg(skip)]
    from_dotenv: Vec<String>,
}

impl Cli {
    /// Whether this command reads `.env`: `dev` only.
    pub fn reads_dotenv(&self) -> bool {
        matches!(self.command, CliCommand::Dev(_))
    }

    /// Records the variables [`load_dotenv`] filled in, for the `export`
    /// lines `dev` prints for another shell.
    #[must_use]
    pub fn with_dotenv(mut self, filled: Vec<String>) -> Self {
        self.from_dotenv = filled;
        self
    }
}

/// Loads `.env` from the working directory into the process environment,
/// filling in what is not set (never overriding); returns the names it
/// filled in. No `.env` is no error; one that cannot be read or parsed is.
/// Call before any thread starts (it sets environment variables).
pub fn load_dotenv() -> Result<Vec<String>, String> {
    let before: std::collections::HashSet<std::ffi::OsString> =
        std::env::vars_os().map(|(name, _)| name).collect();
    match dotenvy::dotenv() {
        Ok(_) => {}
        Err(e) if e.not_found() => return Ok(Vec::new()),
        Err(e) => return Err(format!(".env: {e}")),
    }
    let mut filled: Vec<String> = std::env::vars_os()
        .filter(|(name, _)| !before.contains(name))
        .map(|(name, _)| name.to_string_lossy().into_owned())
        .collect();
    filled.sort();
    Ok(filled)
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

#[derive(Debug, Args, Default)]
struct DevArgs {
    #[command(flatten)]
    serve: ServeArgs,
    /// The SQS/SNS endpoint to create the resources on and use (moto,
    /// LocalStack, …), instead of AWS_ENDPOINT_URL; with neither, the
    /// embedded emulator is started on 127.0.0.1:emulator_port.
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
}

#[derive(Debug, Subcommand)]
enum CliCommand {
    /// Run the bridge.
    ///
    /// Example: BRIDGE_COMMAND_QUEUE_URL=… BRIDGE_EVENTS_TOPIC_ARN=… wsbridge serve
    Serve(ServeArgs),
    /// Create the topics, queues, subscription and dead-letter queue if
    /// missing (idempotent), then run the bridge. With broker = "aws" and no
    /// endpoint (--endpoint, AWS_ENDPOINT_URL), first start the embedded
    /// SQS/SNS emulator on 127.0.0.1:emulator_port (BRIDGE_EMULATOR_PORT,
    /// default 9324) and print `export AWS_ENDPOINT_URL=…` for the helper
    /// commands, the AWS CLI and SDKs in another shell.
    ///
    /// Example: wsbridge dev   (or: wsbridge dev --endpoint http://127.0.0.1:5000 with moto)
    Dev(DevArgs),
    /// Run the embedded SQS/SNS emulator alone (in memory, on 127.0.0.1)
    /// until Ctrl-C or SIGTERM; print `export AWS_ENDPOINT_URL=…` (and the
    /// region and credentials the AWS tools need, when the environment has
    /// none).
    ///
    /// Example: wsbridge emulator --port 9324   (in a container: --host 0.0.0.0)
    Emulator {
        /// Address to listen on (default 127.0.0.1; 0.0.0.0 in a container,
        /// for the other containers: it has no authentication, publish its
        /// port on loopback only).
        #[arg(long)]
        host: Option<String>,
        /// Port to listen on (default: emulator_port; 0: any free port).
        #[arg(long)]
        port: Option<u16>,
    },
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
    /// environment, flags), secrets redacted; exit 2 naming every invalid
    /// setting. (`.env` is read by `dev` only.)
    ///
    /// Example: BRIDGE_PORT=9000 wsbridge --profile staging config --format json
    Config {
        /// toml (a valid config file) or json.
        #[arg(long, value_enum, default_value = "toml")]
        format: ShowFormat,
    },
    /// Call the admin API of a running bridge (admin_port, admin_token):
    /// list clients, show one, disconnect, send a frame.
    ///
    /// Example: BRIDGE_ADMIN_PORT=9100 BRIDGE_ADMIN_TOKEN=… wsbridge admin list
    Admin {
        /// The admin API's base URL (default: http://127.0.0.1:<admin_port>).
        #[arg(long, global = true)]
        url: Option<String>,
        #[command(subcommand)]
        command: admin::AdminCommand,
    },
    /// Print a development token (HS256, signed with the configured
    /// jwt_secret) for a client id, with the configured audience and issuer.
    ///
    /// Example: BRIDGE_JWT_SECRET=… wsbridge token --sub client123 --ttl 15m
    Token {
        /// The client id (the token's `sub`).
        #[arg(long)]
        sub: String,
        /// How long the token is valid: 90s, 15m, 2h, 1d (a bare number is
        /// seconds), at most 366d.
        #[arg(long, default_value = "15m", value_parser = parse_token_ttl)]
        ttl: Duration,
    },
    /// Check that a bridge answers: GET its /health (on 127.0.0.1 and the
    /// configured port, or --url); exit 0 on 200, 1 on anything else (another
    /// status, no answer within --timeout, nothing listening), saying which.
    /// For container health checks: no curl needed in the image.
    ///
    /// Example: wsbridge health   (or: wsbridge health --url http://127.0.0.1:8000/ready)
    Health {
        /// The URL to GET (plain http://); default
        /// http://127.0.0.1:PORT/health with the configured port (BRIDGE_PORT).
        #[arg(long)]
        url: Option<String>,
        /// How long to wait for the answer, in whole seconds or minutes
        /// (3s, 1m; a bare number is seconds).
        #[arg(long, default_value = "3s", value_parser = parse_ttl)]
        timeout: Duration,
    },
    /// Print the shell completion script for bash, zsh or fish.
    ///
    /// Example: wsbridge completions bash > /etc/bash_completion.d/wsbridge
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: completions::Shell,
    },
}

/// Runs the parsed command line; returns the process exit code.
pub async fn run(cli: Cli) -> ExitCode {
    // Commands that need no configuration: a bad one does not stop them.
    match &cli.command {
        CliCommand::Completions { shell } => {
            completions::print(*shell);
            return ExitCode::SUCCESS;
        }
        CliCommand::Health {
            url: Some(url),
            timeout,
        } => return exit_code(health::run(url, *timeout).await),
        _ => {}
    }
    let (overrides, dev) = match &cli.command {
        CliCommand::Serve(args) => (serve_overrides(args), None),
        CliCommand::Dev(args) => (
            serve_overrides(&args.serve),
            Some(Dev {
                endpoint: args.endpoint.clone(),
                from_dotenv: cli.from_dotenv.clone(),
            }),
        ),
        _ => (Vec::new(), None),
    };
    let sources = Sources {
        config_dir: cli.global.config_dir.clone(),
        profile: cli.global.profile.clone(),
        env: std::env::vars().collect(),
        overrides,
    };
    let config = match Settings::load(&sources).and_then(Config::new) {
        Ok(config) => config,
        Err(e) => return config_failure(&e),
    };
    if let CliCommand::Config { format } = cli.command {
        print!("{}", config::render(config.settings(), format));
        return ExitCode::SUCCESS;
    }
    let _telemetry = telemetry::init(config.log_format);
    let result = match cli.command {
        CliCommand::Serve(_) | CliCommand::Dev(_) => serve::run(config, dev).await,
        CliCommand::Emulator { host, port } => emulator::run(&config, host.as_deref(), port).await,
        CliCommand::SendCommand {
            json,
            raw,
            via_topic,
        } => send_command::run(&config, &json, raw, via_topic).await,
        CliCommand::Monitor { count } => monitor::run(&config, count).await,
        CliCommand::Token { sub, ttl } => token::run(&config, &sub, ttl),
        CliCommand::Admin { url, command } => admin::run(&config, url.as_deref(), command).await,
        CliCommand::Config { .. } | CliCommand::Completions { .. } => Ok(()),
        CliCommand::Health { url, timeout } => {
            let url = url.unwrap_or_else(|| health::default_url(&config.server));
            health::run(&url, timeout).await
        }
        CliCommand::Gc {
            stale_after_secs,
            shard_queues,
        } => gc::run(&config, stale_after_secs, shard_queues).await,
        CliCommand::Shards {
            replicas,
            servers,
            client_id,
        } => shards::print(
            config.fleet.shards,
            replicas,
            &servers,
            client_id.as_deref(),
        ),
    };
    exit_code(result)
}

/// Reports a failure on stderr; the exit code of the outcome.
fn exit_code(result: Result<(), Failure>) -> ExitCode {
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

/// How a subcommand failed, deciding the exit code.
pub(crate) enum Failure {
    /// Usage or configuration (exit 2).
    Usage(String),
    /// At run time (exit 1).
    Runtime(anyhow::Error),
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure::Usage(e.to_string())
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        // A setting found missing when a command starts is reported as a
        // ConfigError inside anyhow: still a configuration error (exit 2).
        match e.downcast::<ConfigError>() {
            Ok(config) => Failure::Usage(config.to_string()),
            Err(e) => Failure::Runtime(e),
        }
    }
}

/// The flags of `serve` and `dev`, as the last configuration layer.
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
        for expected in [
            "serve",
            "dev",
            "emulator",
            "send-command",
            "monitor",
            "token",
            "config",
            "health",
            "completions",
        ] {
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
        assert_eq!(
            parse_token_ttl("366d"),
            Ok(Duration::from_secs(366 * 86_400))
        );
        for absurd in ["367d", "18446744073709551615", "9000h"] {
            assert!(parse_token_ttl(absurd).is_err(), "{absurd:?}");
        }
    }
}
