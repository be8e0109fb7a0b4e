//! `wsbridge serve` and `wsbridge dev`: run the bridge until SIGTERM/Ctrl-C
//! (`dev` first makes sure the development resources exist, on the embedded
//! emulator when no endpoint is given).

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{cancel_on_signal, Failure};
use crate::broker::{embedded, Dev, Serving};
use crate::config::Config;
use crate::startup::Application;

/// Connects, joins the replica queue of the configured mode, serves until a
/// signal, drains, and leaves the replica queue.
pub(crate) async fn run(config: Config, dev: Option<Dev>) -> Result<(), Failure> {
    warn_when_open(&config);
    let stop = CancellationToken::new();
    cancel_on_signal(stop.clone()).map_err(|e| Failure::Runtime(e.into()))?;
    let from_dotenv = dev
        .as_ref()
        .map(|dev| dev.from_dotenv.clone())
        .unwrap_or_default();
    let serving = Serving::start(config, dev).await?;
    if let Some(endpoint) = serving.emulator_endpoint() {
        for line in embedded::exports(endpoint, &from_dotenv) {
            println!("{line}");
        }
    }
    let app = match Application::build(serving.config.clone(), serving.connection.clone()).await {
        Ok(app) => app,
        Err(e) => {
            serving.leave().await;
            return Err(e.into());
        }
    };
    let shutdown = app.shutdown_token();
    tokio::spawn(async move {
        stop.cancelled().await;
        shutdown.cancel();
    });
    info!(
        url = %format!("http://{}:{}/", serving.config.server.host, app.port()),
        "demo page"
    );
    let result = app.run_until_stopped().await;
    // After the drain: nothing is received from the queue any more.
    serving.leave().await;
    result?;
    Ok(())
}

/// Validation lets an open bridge (beyond loopback, no authentication, no
/// origin list) start only with `allow_insecure = true`; it still says so at
/// every start, so the choice stays visible in the log.
fn warn_when_open(config: &Config) {
    let settings = config.settings();
    if settings.open_to_anyone() {
        warn!(
            host = %settings.host,
            "allow_insecure = true: listening beyond loopback with auth = \"none\" and no \
             allowed_origins: anyone who reaches this port can connect as any client id, \
             take its Commands and publish as it (set auth = \"jwt\" or allowed_origins)"
        );
    }
}
