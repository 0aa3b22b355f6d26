//! Prometheus metrics: requests, errors by code, command latency, projection lag.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use projections::ProjectorStatus;
use tokio::sync::watch;

/// Latency buckets in seconds.
const BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's Prometheus recorder, installed on first use; `None` if
/// another recorder was installed first.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| match PrometheusBuilder::new().set_buckets(BUCKETS).and_then(|b| b.install_recorder()) {
            Ok(handle) => Some(handle),
            Err(err) => {
                tracing::warn!(%err, "metrics recorder not installed");
                None
            }
        })
        .as_ref()
}

/// The metrics in Prometheus text format, with the projectors' lag and rate
/// as of now.
pub fn render(statuses: &[watch::Receiver<ProjectorStatus>]) -> String {
    for status in statuses {
        let status = status.borrow();
        metrics::gauge!("pointstream_projection_lag_events", "projection" => status.name).set(status.lag() as f64);
        metrics::gauge!("pointstream_projection_checkpoint", "projection" => status.name).set(status.checkpoint as f64);
        metrics::gauge!("pointstream_projection_events_per_second", "projection" => status.name)
            .set(status.events_per_second);
    }
    handle().map(PrometheusHandle::render).unwrap_or_default()
}
