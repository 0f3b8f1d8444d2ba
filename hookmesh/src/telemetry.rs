//! Structured logs on stderr (stdout is kept for the lines meant for people
//! and scripts, such as `hookmesh up`'s ready line), and OpenTelemetry
//! traces over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//!
//! Traces follow the OpenTelemetry SDK's own environment variables:
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `…_TRACES_ENDPOINT`), `…_HEADERS`,
//! `…_TIMEOUT`, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_TRACES_SAMPLER` and `…_ARG`. Unset, no exporter is made and no span
//! beyond the logs' own is recorded.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::cli::LogFormat;

/// The variables that turn the exporter on.
const ENDPOINT_VARIABLES: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// The OpenTelemetry environment variables hookmesh reads, for `--help`.
pub const VARIABLES: &[(&str, &str)] = &[
    (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "Export traces over OTLP to this collector (http://host:4318); unset: no traces",
    ),
    (
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "http/protobuf (the only one built in)",
    ),
    (
        "OTEL_EXPORTER_OTLP_HEADERS",
        "Headers sent with each export, key=value,key=value",
    ),
    (
        "OTEL_SERVICE_NAME",
        "The service name on every span (default: hookmesh-<command>)",
    ),
    (
        "OTEL_TRACES_SAMPLER",
        "parentbased_traceidratio with OTEL_TRACES_SAMPLER_ARG=0.01 keeps 1% of traces (default: all)",
    ),
];

/// Keeps the exporter for the life of the process; [`Telemetry::shutdown`]
/// exports what is left.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered. Call outside the async runtime.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            eprintln!("hookmesh: the last traces were not exported: {error}");
        }
    }
}

fn exporting() -> bool {
    ENDPOINT_VARIABLES
        .iter()
        .any(|variable| std::env::var(variable).is_ok_and(|value| !value.trim().is_empty()))
}

/// The tracer provider of the OTLP exporter the environment describes.
fn provider(service: &str) -> Result<SdkTracerProvider, String> {
    let protocol = std::env::var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_else(|_| "http/protobuf".to_owned());
    if protocol.trim() != "http/protobuf" {
        return Err(format!(
            "OTEL_EXPORTER_OTLP_PROTOCOL={protocol} is not built in: use http/protobuf (a \
             collector's port 4318)"
        ));
    }
    hookmesh_runtime::http::install_crypto_provider();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .build()
        .map_err(|error| format!("the OTLP exporter: {error}"))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name(service.to_owned());
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// Starts logging with `filter` in `format`, and the trace exporter when
/// the environment asks for one; `service` names the spans unless
/// `OTEL_SERVICE_NAME` does.
pub fn init(filter: &str, format: LogFormat, service: &str) -> Result<Telemetry, String> {
    let filter = EnvFilter::try_new(filter).map_err(|e| format!("HOOKMESH_LOG: {e}"))?;
    let logs = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .compact()
            .boxed(),
    };
    let provider = exporting().then(|| provider(service)).transpose()?;
    // The mesh's own spans, whatever HOOKMESH_LOG lets into the logs.
    let spans = tracing_subscriber::filter::Targets::new().with_targets(
        [
            "hookmesh",
            "hookmesh_gateway",
            "hookmesh_runtime",
            "hookmesh_nats",
            "hookmesh_csr_consumer",
            "hookmesh_batch_processor",
            "hookmesh_sweep_worker",
        ]
        .map(|target| (target, tracing::Level::INFO)),
    );
    let traces = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("hookmesh"))
            .with_filter(spans)
    });
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(traces)
        .init();
    if provider.is_some() {
        hookmesh_nats::trace::enable();
    }
    Ok(Telemetry { provider })
}
