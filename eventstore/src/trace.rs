//! Trace context across the log: what joins the spans of a command, its
//! group commit, the relay and the workers that act on its events, in this
//! process or another one minutes later, into one trace.
//!
//! A command's events carry the W3C trace context of the span that wrote them
//! (`traceparent`, and `tracestate` when there is one) in their metadata, and
//! the relay copies it into each stream entry; whoever reads an event makes
//! its span a child of that context ([`parent_of`]).
//!
//! Spans that exist only for traces use the target [`TARGET`], which the
//! logs leave out: with traces off (no OpenTelemetry layer installed) every
//! layer refuses them at the callsite, so they cost an atomic load, and
//! [`enabled`] is false, so no context is formatted or stored.
//!
//! The binary turns traces on ([`enable`]) after installing the
//! OpenTelemetry layer and the W3C TraceContext propagator as the global
//! propagator; this module uses whatever propagator is installed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::Extractor;
use opentelemetry::trace::{SpanContext, TraceContextExt};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The target of spans that exist only for traces (group commits, relay and
/// projector batches, social network calls ...): logs leave it out.
pub const TARGET: &str = "pointstream::trace";

/// Most links a batch span carries to the traces of the events in it.
pub const MAX_LINKS: usize = 32;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns trace context propagation on: called once the OpenTelemetry layer
/// and a global propagator are installed.
pub fn enable() {
    ENABLED.store(true, Ordering::Release);
}

/// Whether traces are exported by this process.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// A W3C trace context as text: `traceparent` and, if any, `tracestate`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceContext {
    /// `00-<trace id>-<span id>-<flags>`.
    pub traceparent: String,
    /// Vendor-specific state, if the trace carries any.
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// The context of `span`, if traces are on and it is recorded in one.
    pub fn of(span: &tracing::Span) -> Option<TraceContext> {
        if !enabled() {
            return None;
        }
        inject(&span.context())
    }

    /// The context of the current span (see [`TraceContext::of`]).
    pub fn current() -> Option<TraceContext> {
        Self::of(&tracing::Span::current())
    }

    /// Whether the trace is sampled (the `traceparent` flags' lowest bit):
    /// spans that exist only for traces are made for sampled traces only,
    /// since nothing else would ever see them.
    pub fn sampled(&self) -> bool {
        let flags = self.traceparent.rsplit('-').next().unwrap_or_default();
        u8::from_str_radix(flags, 16).is_ok_and(|flags| flags & 1 == 1)
    }

    /// The OpenTelemetry context this text stands for (empty if it does not parse).
    pub fn extract(&self) -> opentelemetry::Context {
        let carrier = Carrier { traceparent: Some(&self.traceparent), tracestate: self.tracestate.as_deref() };
        opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(&carrier))
    }

    /// The span context this text stands for, if it parses to a valid one.
    pub fn span_context(&self) -> Option<SpanContext> {
        let context = self.extract();
        let span = context.span();
        let span_context = span.span_context();
        span_context.is_valid().then(|| span_context.clone())
    }
}

/// `context` as W3C text, through the global propagator.
pub fn inject(context: &opentelemetry::Context) -> Option<TraceContext> {
    let mut fields = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|propagator| propagator.inject_context(context, &mut fields));
    let traceparent = fields.remove("traceparent")?;
    let tracestate = fields.remove("tracestate").filter(|state| !state.is_empty());
    Some(TraceContext { traceparent, tracestate })
}

/// A span for traces only, made by `make` if `sampled`, else none at all
/// (the cost of a span is paid only where a trace will show it).
pub fn step(sampled: bool, make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    if sampled { make() } else { tracing::Span::none() }
}

/// The trace context stored in an event's metadata (JSON text), if any.
/// Metadata without `traceparent` (traces off, or an old event) is not parsed.
pub fn stored_in(metadata: &str) -> Option<TraceContext> {
    if !metadata.contains("\"traceparent\"") {
        return None;
    }
    let stored: crate::record::Metadata = serde_json::from_str(metadata).ok()?;
    Some(TraceContext { traceparent: stored.traceparent?, tracestate: stored.tracestate })
}

/// Makes `span` a child of `parent` (if valid), so that it joins the trace
/// of whatever wrote `parent`.
pub fn parent_of(span: &tracing::Span, parent: &TraceContext) {
    if enabled() && span.set_parent(parent.extract()).is_err() {
        tracing::debug!("a span's parent cannot be set (the span has started)");
    }
}

/// Links `span` to each distinct valid context of `contexts`, up to [`MAX_LINKS`].
pub fn link_all<'a>(span: &tracing::Span, contexts: impl IntoIterator<Item = &'a TraceContext>) {
    if !enabled() {
        return;
    }
    let mut linked = Vec::new();
    for context in contexts {
        if linked.len() >= MAX_LINKS {
            break;
        }
        if linked.contains(&&context.traceparent) {
            continue;
        }
        if let Some(span_context) = context.span_context() {
            span.add_link(span_context);
            linked.push(&context.traceparent);
        }
    }
}

/// `traceparent` and `tracestate` read from, or written to, a text carrier.
struct Carrier<'a> {
    traceparent: Option<&'a str>,
    tracestate: Option<&'a str>,
}

impl Extractor for Carrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => self.traceparent,
            "tracestate" => self.tracestate,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        let mut keys = Vec::with_capacity(2);
        if self.traceparent.is_some() {
            keys.push("traceparent");
        }
        if self.tracestate.is_some() {
            keys.push("tracestate");
        }
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::TraceContext;

    fn context(traceparent: &str) -> TraceContext {
        TraceContext { traceparent: traceparent.to_string(), tracestate: None }
    }

    #[test]
    fn the_flags_say_whether_a_trace_is_sampled() {
        assert!(context("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").sampled());
        assert!(context("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03").sampled());
        assert!(!context("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").sampled());
        assert!(!context("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz").sampled());
        assert!(!context("").sampled());
    }
}
