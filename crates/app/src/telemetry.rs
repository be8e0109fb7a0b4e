//! Tracing setup: written to stderr, filtered by `RUST_LOG`, as
//! human-readable lines or one JSON object per line. `log_format = "auto"`
//! (the default) picks by where stderr goes: lines for a person at a
//! terminal, JSON for everything else (a container runtime, a log
//! collector, a file); `"text"` and `"json"` (`BRIDGE_LOG_FORMAT`) force
//! one. Colours (ANSI escapes) only when stderr is a terminal and
//! `NO_COLOR` is unset, so no escape code ever reaches a file or a collector.
//!
//! Spans carry the context: `ws_connection{client_id, connection_id}` around
//! everything a connection does, `command{message_id, client_id}` around the
//! handling of one SQS message. Text lines show them as a prefix; JSON lines
//! carry them as `span` (the innermost) and `spans` (all, outermost first),
//! each with its fields.
//!
//! With the `otlp` cargo feature (off by default), spans are also exported
//! over OTLP/HTTP (protobuf) when `OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set (e.g. `http://127.0.0.1:4318`);
//! the other standard `OTEL_*` variables apply. Plain HTTP only: point it at
//! a local collector or sidecar.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

use crate::config::LogFormat;

/// The filter used when `RUST_LOG` is unset or invalid.
pub const DEFAULT_FILTER: &str = "info,aws_config=warn,aws_smithy_runtime=warn";

/// Keeps telemetry running; dropping it flushes what is still buffered
/// (OTLP spans, with the `otlp` feature).
#[must_use = "dropping the guard stops exporting spans"]
pub struct Telemetry {
    #[cfg(feature = "otlp")]
    otlp: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.otlp.take() {
            if let Err(e) = provider.shutdown() {
                eprintln!("wsbridge: flushing OTLP spans failed: {e}");
            }
        }
    }
}

/// Installs the global subscriber; later calls only return a guard (tests
/// build several apps in one process).
pub fn init(format: LogFormat) -> Telemetry {
    let rust_log = std::env::var("RUST_LOG").ok();
    let (filter, bad_filter) = log_filter(rust_log.as_deref());
    let terminal = std::io::stderr().is_terminal();
    let output = match format.resolve(terminal) {
        LogFormat::Text | LogFormat::Auto => fmt::layer()
            .with_ansi(colours(terminal, std::env::var_os("NO_COLOR").as_deref()))
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => fmt::layer()
            .with_ansi(false)
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    #[cfg(feature = "otlp")]
    let (otlp_layer, otlp, otlp_error) = match otlp::provider() {
        Ok(Some(provider)) => (Some(otlp::layer(&provider)), Some(provider), None),
        Ok(None) => (None, None, None),
        Err(e) => (None, None, Some(e)),
    };
    let registry = tracing_subscriber::registry().with(filter).with(output);
    #[cfg(feature = "otlp")]
    let registry = registry.with(otlp_layer);
    let installed = registry.try_init().is_ok();
    if installed {
        if let Some(error) = bad_filter {
            tracing::warn!(%error, default = DEFAULT_FILTER, "RUST_LOG is invalid, using the default filter");
        }
        #[cfg(feature = "otlp")]
        if let Some(error) = otlp_error {
            tracing::warn!(%error, "OTLP export is off: the exporter could not be built");
        }
    }
    Telemetry {
        #[cfg(feature = "otlp")]
        otlp,
    }
}

/// Whether text lines get colours: on a terminal, unless `NO_COLOR` is set
/// to anything non-empty (<https://no-color.org>).
fn colours(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(std::ffi::OsStr::is_empty)
}

/// The filter `RUST_LOG` asks for, or the default one and why `RUST_LOG`
/// could not be used.
fn log_filter(rust_log: Option<&str>) -> (EnvFilter, Option<String>) {
    match rust_log.filter(|value| !value.trim().is_empty()) {
        None => (EnvFilter::new(DEFAULT_FILTER), None),
        Some(directives) => match EnvFilter::try_new(directives) {
            Ok(filter) => (filter, None),
            Err(e) => (EnvFilter::new(DEFAULT_FILTER), Some(e.to_string())),
        },
    }
}

#[cfg(feature = "otlp")]
mod otlp {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::{SpanExporter, WithExportConfig as _};
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use opentelemetry_sdk::Resource;
    use tracing_subscriber::registry::LookupSpan;

    /// A provider exporting over OTLP/HTTP, when an endpoint is configured.
    pub(super) fn provider() -> Result<Option<SdkTracerProvider>, String> {
        let configured = [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ]
        .iter()
        .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()));
        if !configured {
            return Ok(None);
        }
        let exporter = SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .build()
            .map_err(|e| e.to_string())?;
        let resource = Resource::builder().with_service_name("wsbridge").build();
        Ok(Some(
            SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource)
                .build(),
        ))
    }

    pub(super) fn layer<S>(provider: &SdkTracerProvider) -> impl tracing_subscriber::Layer<S>
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        tracing_opentelemetry::layer().with_tracer(provider.tracer("wsbridge"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_text_on_a_terminal_json_elsewhere_and_explicit_formats_stay() {
        assert_eq!(LogFormat::Auto.resolve(true), LogFormat::Text);
        assert_eq!(LogFormat::Auto.resolve(false), LogFormat::Json);
        for terminal in [true, false] {
            assert_eq!(LogFormat::Text.resolve(terminal), LogFormat::Text);
            assert_eq!(LogFormat::Json.resolve(terminal), LogFormat::Json);
        }
    }

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(colours(true, None));
        assert!(colours(true, Some(OsStr::new(""))));
        assert!(!colours(true, Some(OsStr::new("1"))));
        assert!(!colours(false, None));
        assert!(!colours(false, Some(OsStr::new("1"))));
    }

    #[test]
    fn rust_log_filters_and_an_invalid_one_falls_back_to_the_default() {
        let (filter, error) = log_filter(Some("app=debug,warn"));
        assert_eq!(error, None);
        assert_eq!(filter.to_string(), "app=debug,warn");

        let (filter, error) = log_filter(None);
        assert_eq!(error, None);
        assert_eq!(
            filter.to_string(),
            EnvFilter::new(DEFAULT_FILTER).to_string()
        );

        let (filter, error) = log_filter(Some("app=notalevel"));
        assert!(error.is_some());
        assert_eq!(
            filter.to_string(),
            EnvFilter::new(DEFAULT_FILTER).to_string()
        );
    }
}
