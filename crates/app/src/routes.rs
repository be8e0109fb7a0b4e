//! The public HTTP routes (docs/protocol.md): the pages the binary embeds — the demo page
//! (`/`) and the TypeScript client SDK's browser bundle it imports
//! (`/sdk/wsbridge.js`) — and the HTTP adapter's routes (the WebSocket
//! upgrade, `/health`, `/ready`, `/metrics`).

use actix_web::http::header::ContentType;
use actix_web::{web, HttpResponse};

/// Registers every public route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(demo_page))
        .route("/sdk/wsbridge.js", web::get().to(sdk_bundle));
    adapters_http::configure(cfg);
}

const DEMO_PAGE: &str = include_str!("demo.html");

async fn demo_page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::html())
        .body(DEMO_PAGE)
}

/// The TypeScript client SDK's browser bundle (`clients/ts`, built and
/// checked in by `scripts/ts-sdk.sh`), which the demo page imports.
const SDK_BUNDLE: &str = include_str!("sdk/wsbridge.js");

async fn sdk_bundle() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .body(SDK_BUNDLE)
}
