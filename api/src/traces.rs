//! Traces: OpenTelemetry spans exported over OTLP (HTTP/protobuf) when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is
//! set, configured by the standard `OTEL_*` variables (`OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and its `_ARG`,
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_BSP_*`);
//! nothing at all otherwise.
//!
//! Context crosses processes as W3C TraceContext: a client's `traceparent`
//! header (see [`crate::server`]), and each event's metadata and stream entry
//! (see [`eventstore::trace`]).
//!
//! ```no_run
//! # fn demo() -> Result<(), pointstream_api::traces::TracesError> {
//! use tracing_subscriber::prelude::*;
//! let traces = pointstream_api::traces::Traces::from_env("serve")?;
//! tracing_subscriber::registry().with(traces.as_ref().map(|t| t.layer())).init();
//! // ... at exit, spans still buffered are sent:
//! if let Some(traces) = traces {
//!     traces.shutdown();
//! }
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextResolve, ResolveInfo};
use async_graphql::{ServerResult, Value};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracerProvider};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::registry::LookupSpan;

/// Why traces cannot be exported as configured.
#[derive(Debug, thiserror::Error)]
pub enum TracesError {
    /// The exporter refused its configuration.
    #[error("cannot set up the OTLP trace exporter: {0}")]
    Exporter(String),
    /// `OTEL_EXPORTER_OTLP_PROTOCOL` names a protocol this build does not speak.
    #[error("OTEL_EXPORTER_OTLP_PROTOCOL={0}: pointstream exports traces as http/protobuf only")]
    Protocol(String),
}

/// The process's trace pipeline: spans batched and sent to the collector.
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// The pipeline the `OTEL_*` environment describes, for a process in
    /// `role` (`serve`, `worker social` ...: the resource attribute
    /// `pointstream.role`); `None` when no OTLP endpoint is set or
    /// `OTEL_SDK_DISABLED` is `true`. Installs the W3C TraceContext
    /// propagator and turns on [`eventstore::trace`]. Needs a Tokio runtime:
    /// exports run on it.
    pub fn from_env(role: &str) -> Result<Option<Traces>, TracesError> {
        let set = |name: &str| std::env::var(name).is_ok_and(|value| !value.trim().is_empty());
        let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|value| value.trim().eq_ignore_ascii_case("true"));
        if disabled || !(set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) {
            return Ok(None);
        }
        for name in ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"] {
            if let Ok(protocol) = std::env::var(name) {
                if protocol.trim() != "http/protobuf" {
                    return Err(TracesError::Protocol(protocol));
                }
                break;
            }
        }
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| TracesError::Exporter("traces are set up outside a Tokio runtime".into()))?;
        let client = OnRuntime { http: http_client(), runtime };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_http_client(client)
            .build()
            .map_err(|err| TracesError::Exporter(err.to_string()))?;
        let mut resource = opentelemetry_sdk::Resource::builder();
        // The environment's name wins; otherwise the process is `pointstream`.
        let named = set("OTEL_SERVICE_NAME")
            || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|attributes| attributes.contains("service.name="));
        if !named {
            resource = resource.with_service_name("pointstream");
        }
        let resource = resource.with_attribute(opentelemetry::KeyValue::new("pointstream.role", role.to_string()));
        let provider = SdkTracerProvider::builder()
            .with_span_processor(BatchSpanProcessor::builder(exporter).build())
            .with_resource(resource.build())
            .build();
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        eventstore::trace::enable();
        Ok(Some(Traces { provider }))
    }

    /// The tracing layer that turns pointstream's spans into OpenTelemetry
    /// spans: every span of pointstream's crates at INFO or above (the
    /// request, the command and its steps, group commits, batches, network
    /// calls), and events at WARN or above, which become span events. Other
    /// crates' spans (the database driver's, say) stay out.
    pub fn layer<S>(&self) -> impl Layer<S> + use<S>
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        let tracer = self.provider.tracer("pointstream");
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_tracked_inactivity(false)
            .with_threads(false)
            .with_location(false)
            .with_filter(filter_fn(|metadata| {
                let level = *metadata.level();
                metadata.target().starts_with("pointstream")
                    && if metadata.is_span() { level <= tracing::Level::INFO } else { level <= tracing::Level::WARN }
            }))
    }

    /// Sends the spans still buffered and stops the exporter (at exit).
    pub fn shutdown(self) {
        if let Err(err) = self.provider.shutdown_with_timeout(Duration::from_secs(5)) {
            eprintln!("traces: the last spans may be lost: {err}");
        }
    }
}

/// The HTTP client of the exporter: the workspace's reqwest, bounded waits.
fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// An OTLP HTTP client whose requests run on the process's Tokio runtime:
/// the batch processor exports from a thread of its own, outside it.
#[derive(Debug)]
struct OnRuntime {
    http: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OnRuntime {
    async fn send_bytes(
        &self,
        request: opentelemetry_http::Request<opentelemetry_http::Bytes>,
    ) -> Result<opentelemetry_http::Response<opentelemetry_http::Bytes>, opentelemetry_http::HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let http = self.http.clone();
        let sent = self.runtime.spawn(async move {
            let response = http.execute(request).await?;
            let (status, headers) = (response.status(), response.headers().clone());
            let body = response.bytes().await?;
            let mut answer = opentelemetry_http::Response::new(body);
            *answer.status_mut() = status;
            *answer.headers_mut() = headers;
            Ok::<_, reqwest::Error>(answer)
        });
        Ok(sent.await??)
    }
}

/// A span for each root field of a traced operation (`resolve <field>`):
/// where a request's reads and commands happen, so a slow field shows as
/// one. Nested fields are answered from what the root fields loaded (the
/// loaders batch their reads), and get no span of their own. Installed only
/// when traces are on, and spans are made for sampled traces only.
pub struct RootFieldSpans;

impl ExtensionFactory for RootFieldSpans {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(RootFieldSpans)
    }
}

#[async_trait::async_trait]
impl Extension for RootFieldSpans {
    async fn resolve(
        &self,
        ctx: &ExtensionContext<'_>,
        info: ResolveInfo<'_>,
        next: NextResolve<'_>,
    ) -> ServerResult<Option<Value>> {
        // Nested fields first: they are most of the calls, and need no look at the trace.
        let root = info.path_node.parent.is_none() && !info.is_for_introspection;
        if !root || !tracing::Span::current().context().span().span_context().is_sampled() {
            return next.run(ctx, info).await;
        }
        let span = tracing::info_span!(
            target: eventstore::trace::TARGET,
            "resolve",
            otel.name = %format_args!("resolve {}", info.name),
            field = info.name,
        );
        next.run(ctx, info).instrument(span).await
    }
}
