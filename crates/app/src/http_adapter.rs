//! The inbound HTTP adapter (`adapters-http`) wired to the rest of the
//! bridge: its settings made from the configuration, and its ports
//! implemented here, the one place where the adapters meet — the WebSocket
//! sessions, connections and token renewal over `adapters-ws`, readiness
//! and series over [`BrokerStatus`], the admin API's bus over
//! [`ControlRelay`].

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{web, HttpRequest, HttpResponse};
use adapters_http::admin::AdminApi;
use adapters_http::auth::JwtVerifier;
use adapters_http::{
    Access, AccessSettings, Admitted, AppState, BrokerProbe, ConnectionDetails, ConnectionLimit,
    Connections, ControlBus, JwtSettings, NotPublished, Refusals, SessionRefused, Sessions,
    SettingError,
};
use adapters_ws::{
    Credential, LimitExceeded, Peer, Renewal, SessionMode, SessionSettings, StartError,
    TokenRenewer, WsClientRegistry,
};
use async_trait::async_trait;
use domain::{ClientId, Frame, Stats, Uplink};
use prometheus_client::collector::Collector;
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use crate::broker::{BrokerStatus, ControlRelay};
use crate::config::{AdminListener, AuthMode, Config, ConfigError, Jwt};

/// The access settings of `config`.
pub fn access_settings(config: &Config) -> AccessSettings {
    let access = &config.access;
    AccessSettings {
        jwt: (access.auth == AuthMode::Jwt).then(|| jwt_settings(&access.jwt)),
        allowed_origins: access.allowed_origins.clone(),
        client_ip_header: access.client_ip_header.clone(),
        echo_route: config.server.echo_route,
    }
}

/// The JWT settings of `jwt`.
pub fn jwt_settings(jwt: &Jwt) -> JwtSettings {
    JwtSettings {
        secret: jwt.secret.as_ref().map(|s| SecretString::from(s.expose())),
        public_key_file: jwt.public_key_file.clone(),
        jwks_url: jwt.jwks_url.clone(),
        audience: jwt.audience.clone(),
        issuer: jwt.issuer.clone(),
        leeway_secs: jwt.leeway_secs,
    }
}

/// The upgrade checks `config` asks for; a JWT key that cannot be read is
/// a [`ConfigError`] naming its setting.
pub fn access(config: &Config) -> Result<Access, ConfigError> {
    Access::new(&access_settings(config)).map_err(config_error)
}

fn config_error(error: SettingError) -> ConfigError {
    ConfigError {
        problems: vec![error.to_string()],
    }
}

/// What the public routes share, for a bridge configured by `config`.
pub fn state(
    config: &Config,
    registry: Arc<WsClientRegistry>,
    uplink: Arc<Uplink>,
    stats: Arc<Stats>,
    broker: BrokerStatus,
    closing: CancellationToken,
) -> Result<AppState, ConfigError> {
    let sessions = WsSessions {
        registry,
        uplink,
        settings: config.session.clone(),
        closing: closing.clone(),
    };
    Ok(AppState {
        sessions: Arc::new(sessions),
        stats,
        broker: Arc::new(broker),
        access: access(config)?,
        refused: Arc::new(Refusals::default()),
        closing,
        shards: config.shard_assignment(),
    })
}

/// The admin API on `listener`, with the token of `admin`, counting its
/// refusals into `refused` (the public `/metrics` shows them).
pub fn admin_server(
    listener: TcpListener,
    admin: &AdminListener,
    registry: Arc<WsClientRegistry>,
    relay: Arc<ControlRelay>,
    stats: Arc<Stats>,
    refused: Arc<Refusals>,
) -> std::io::Result<Server> {
    let api = AdminApi {
        connections: Arc::new(WsConnections(registry)),
        token: SecretString::from(admin.token.expose()),
        bus: relay,
        stats,
        refused,
    };
    adapters_http::admin::server(listener, api)
}

/// Sessions on the WebSocket adapter.
struct WsSessions {
    registry: Arc<WsClientRegistry>,
    uplink: Arc<Uplink>,
    settings: SessionSettings,
    closing: CancellationToken,
}

impl Sessions for WsSessions {
    fn start(
        &self,
        req: &HttpRequest,
        body: web::Payload,
        peer: Admitted,
    ) -> Result<HttpResponse, SessionRefused> {
        let peer = Peer {
            client_id: peer.client_id,
            ip: peer.ip,
            protocol: peer.protocol,
            mode: if peer.echo {
                SessionMode::Echo
            } else {
                SessionMode::Bridge
            },
            acknowledging: peer.acknowledging,
            credential: peer.credential.map(|c| Credential {
                valid_until: c.valid_until,
                renewer: Arc::new(Renewer(c.verifier)),
            }),
        };
        adapters_ws::start_session(
            req,
            body,
            peer,
            self.registry.clone(),
            self.uplink.clone(),
            self.settings.clone(),
            self.closing.clone(),
        )
        .map_err(|refused| match refused {
            StartError::Handshake(e) => SessionRefused::Handshake(e),
            StartError::Limit(limit) => {
                let which = match limit {
                    LimitExceeded::PerClient { .. } => ConnectionLimit::PerClient,
                    LimitExceeded::PerIp { .. } => ConnectionLimit::PerAddress,
                    LimitExceeded::Total { .. } => ConnectionLimit::Total,
                };
                SessionRefused::Limit(which, limit.to_string())
            }
        })
    }

    fn open_connections(&self) -> usize {
        self.registry.connection_count()
    }

    fn fragment_bytes_held(&self) -> usize {
        self.registry.fragment_bytes_held()
    }
}

/// A connection's fresh tokens, checked by the HTTP adapter's verifier.
struct Renewer(Arc<JwtVerifier>);

impl TokenRenewer for Renewer {
    fn renew<'a>(&'a self, client_id: &'a ClientId, token: &'a str) -> Renewal<'a> {
        Box::pin(self.0.renew(client_id, token))
    }
}

/// The admin API's view of the WebSocket adapter's registry.
struct WsConnections(Arc<WsClientRegistry>);

impl Connections for WsConnections {
    fn clients(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<(ClientId, usize)>, Option<String>) {
        self.0.clients(after, limit)
    }

    fn connections_of(&self, client_id: &ClientId) -> Vec<ConnectionDetails> {
        self.0
            .connection_details(client_id)
            .into_iter()
            .map(|c| ConnectionDetails {
                id: c.id.get(),
                ip: c.ip,
                since: c.since,
                acknowledging: c.acknowledging,
                queued: c.queued,
            })
            .collect()
    }

    fn disconnect(
        &self,
        client_id: &ClientId,
        only: Option<u64>,
        code: u16,
        reason: &str,
    ) -> usize {
        let only = only.map(adapters_ws::ConnectionId::from_raw);
        self.0.disconnect(client_id, only, code, reason)
    }

    fn send_frame(&self, client_id: &ClientId, frame: &Frame) -> usize {
        self.0.send_frame(client_id, frame)
    }
}

impl BrokerProbe for BrokerStatus {
    fn not_ready(&self) -> Option<&'static str> {
        BrokerStatus::not_ready(self).map(|not_ready| not_ready.public)
    }

    fn collector(&self) -> Option<Box<dyn Collector>> {
        BrokerStatus::collector(self)
    }
}

#[async_trait]
impl ControlBus for ControlRelay {
    async fn publish(&self, control: &str, client_id: &ClientId) -> Result<String, NotPublished> {
        self.relay(control, client_id)
            .await
            .map_err(|e| NotPublished(format!("{e:#}")))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use adapters_aws::AwsMetrics;
    use adapters_http::metrics::{render, Format, Snapshot};

    use super::*;

    /// `/metrics` of a bridge on SNS/SQS: its broker probe hands in the
    /// AWS adapter's collector.
    fn scrape(with_aws: bool) -> String {
        let mut status = BrokerStatus::new(|| None);
        if with_aws {
            status = status.with_collector(AwsMetrics::new());
        }
        let snapshot = Snapshot::take(&Stats::default(), 0, 0, true, &Refusals::default());
        render(
            snapshot,
            BrokerProbe::collector(&status),
            Format::Prometheus,
        )
    }

    /// The `# TYPE` lines of `text`: every family's name and type.
    fn families(text: &str) -> BTreeSet<&str> {
        text.lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .collect()
    }

    #[test]
    fn the_aws_collector_renders_its_series_next_to_the_bridges() {
        let text = scrape(true);
        for line in [
            "wsbridge_sqs_deleted_messages_total 0\n",
            "wsbridge_sqs_delete_failures_total 0\n",
            "# TYPE wsbridge_backend_call_duration_seconds histogram\n",
            "# TYPE wsbridge_commands_total counter\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
    }

    #[test]
    fn the_aws_collector_adds_exactly_the_aws_series() {
        let (bridge, with_aws) = (scrape(false), scrape(true));
        let (bridge, with_aws) = (families(&bridge), families(&with_aws));
        let added: Vec<&str> = with_aws.difference(&bridge).copied().collect();
        assert_eq!(
            added,
            [
                "wsbridge_backend_call_duration_seconds histogram",
                "wsbridge_sqs_delete_failures_total counter",
                "wsbridge_sqs_deleted_messages_total counter",
                "wsbridge_sqs_receive_errors_total counter",
                "wsbridge_sqs_settle_errors_total counter",
            ]
        );
        assert!(bridge.is_subset(&with_aws));
    }
}
