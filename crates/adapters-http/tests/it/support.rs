//! Fakes of the ports, and a service over [`adapters_http::configure`].

use std::sync::{Arc, Mutex};

use actix_web::dev::{Service, ServiceResponse};
use actix_web::test::{init_service, read_body_json, TestRequest};
use actix_web::{web, App, HttpRequest, HttpResponse};
use adapters_http::{
    Access, AccessSettings, Admitted, AppState, BrokerProbe, ConnectionLimit, ErrorBody, Refusals,
    SessionRefused, Sessions,
};
use domain::{ShardAssignment, Stats};
use prometheus_client::collector::Collector;
use tokio_util::sync::CancellationToken;

/// Sessions that record whom they were asked to start, and answer 101 (or
/// refuse the next one, when told to).
#[derive(Default)]
pub struct FakeSessions {
    pub started: Mutex<Vec<Admitted>>,
    pub refuse: Mutex<Option<Refuse>>,
}

/// How the fake sessions refuse.
pub enum Refuse {
    /// Not a handshake, as actix-web answers it.
    Handshake,
    /// A connection limit.
    Limit(ConnectionLimit),
}

impl Sessions for FakeSessions {
    fn start(
        &self,
        _: &HttpRequest,
        _: web::Payload,
        peer: Admitted,
    ) -> Result<HttpResponse, SessionRefused> {
        match self.refuse.lock().unwrap().take() {
            Some(Refuse::Handshake) => {
                let refused = actix_web::error::ErrorBadRequest("no upgrade");
                return Err(SessionRefused::Handshake(refused));
            }
            Some(Refuse::Limit(limit)) => {
                return Err(SessionRefused::Limit(limit, "the limit is 1".into()));
            }
            None => {}
        }
        self.started.lock().unwrap().push(peer);
        Ok(HttpResponse::SwitchingProtocols().finish())
    }

    fn open_connections(&self) -> usize {
        self.started.lock().unwrap().len()
    }

    fn fragment_bytes_held(&self) -> usize {
        0
    }
}

/// A broker whose readiness the test sets.
#[derive(Default)]
pub struct FakeBroker {
    pub not_ready: Mutex<Option<&'static str>>,
}

impl BrokerProbe for FakeBroker {
    fn not_ready(&self) -> Option<&'static str> {
        *self.not_ready.lock().unwrap()
    }

    fn collector(&self) -> Option<Box<dyn Collector>> {
        None
    }
}

/// One bridge's HTTP side, with fakes behind it.
pub struct Bridge {
    pub sessions: Arc<FakeSessions>,
    pub broker: Arc<FakeBroker>,
    pub stats: Arc<Stats>,
    pub refused: Arc<Refusals>,
    pub closing: CancellationToken,
    access: AccessSettings,
    shards: Option<ShardAssignment>,
}

impl Bridge {
    pub fn new(access: AccessSettings) -> Self {
        Self {
            sessions: Arc::default(),
            broker: Arc::default(),
            stats: Arc::default(),
            refused: Arc::default(),
            closing: CancellationToken::new(),
            access,
            shards: None,
        }
    }

    pub fn sharded(mut self, shards: ShardAssignment) -> Self {
        self.shards = Some(shards);
        self
    }

    /// The answer to `request`.
    pub async fn call(&self, request: TestRequest) -> ServiceResponse {
        let state = AppState {
            sessions: self.sessions.clone(),
            stats: self.stats.clone(),
            broker: self.broker.clone(),
            access: Access::new(&self.access).unwrap(),
            refused: self.refused.clone(),
            closing: self.closing.clone(),
            shards: self.shards,
        };
        let app = init_service(
            App::new()
                .app_data(web::Data::new(state))
                .configure(adapters_http::configure),
        )
        .await;
        app.call(request.to_request()).await.unwrap()
    }

    /// The status and error code of the answer to `request`, whose body
    /// must be the one error body with a message.
    pub async fn refusal(&self, request: TestRequest) -> (u16, String) {
        let response = self.call(request).await;
        let status = response.status().as_u16();
        let body: ErrorBody = read_body_json(response).await;
        assert!(!body.error.message.is_empty(), "{body:?}");
        (status, body.error.code)
    }

    /// The upgrade refusals counted, without the zeros.
    pub fn upgrade_refusals(&self) -> Vec<(&'static str, u64)> {
        let counts = self.refused.upgrades();
        counts.into_iter().filter(|(_, n)| *n > 0).collect()
    }
}

/// A WebSocket handshake for `uri` (what the fake sessions would upgrade).
pub fn handshake(uri: &str) -> TestRequest {
    TestRequest::get()
        .uri(uri)
        .insert_header(("Upgrade", "websocket"))
        .insert_header(("Connection", "Upgrade"))
        .insert_header(("Sec-WebSocket-Version", "13"))
        .insert_header(("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="))
}
