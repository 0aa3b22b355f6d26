//! Events as stored: the row shape, metadata, and decoding into domain events
//! (through the upcasters).

use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{EventAddress, EventStoreError};
use crate::tagged::Tagged;
use crate::upcast;

/// Who did what, why and from where: stored with every event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// The member, staff account or service that issued the command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The role it acted in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The command's id (idempotency key, derived id, or a fresh one).
    pub command_id: String,
    /// Shared by every event caused by one outside request.
    pub correlation_id: String,
    /// The event or command that caused this one, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    /// The HTTP request id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The client's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
    /// The W3C trace context of the span that wrote the event (when traces
    /// are on), so whatever acts on it later joins the same trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The trace's W3C `tracestate`, if it carries one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

/// One event as it is in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// Global position: dense from 1, in commit order.
    pub position: u64,
    /// Aggregate type (`Wallet`, ...).
    pub aggregate_type: String,
    /// Aggregate id.
    pub aggregate_id: String,
    /// Position in its stream, from 1.
    pub sequence: u64,
    /// Event name (`PointsEarned`, ...).
    pub event_type: String,
    /// Version of the payload's shape.
    pub event_version: u32,
    /// The payload as stored (JSON text).
    pub payload: String,
    /// The metadata as stored (JSON text).
    pub metadata: String,
    /// When it was recorded, microseconds since the Unix epoch.
    pub recorded_at_us: i64,
    /// SHA-256 chain hash (hex), see [`crate::chain`].
    pub hash: String,
}

impl RecordedEvent {
    /// The fields its Merkle leaf covers (see [`crate::merkle`]).
    pub fn leaf(&self) -> verify::EventLeaf<'_> {
        verify::EventLeaf {
            position: self.position,
            aggregate_type: &self.aggregate_type,
            aggregate_id: &self.aggregate_id,
            sequence: self.sequence,
            event_type: &self.event_type,
            event_version: self.event_version,
            payload: &self.payload,
            metadata_hash: verify::metadata_hash(&self.metadata),
            recorded_at_us: self.recorded_at_us,
        }
    }

    /// The event exactly as stored, as `pointstream log --export` writes it.
    pub fn exported(&self) -> verify::ExportedEvent {
        verify::ExportedEvent {
            position: self.position,
            aggregate_type: self.aggregate_type.clone(),
            aggregate_id: self.aggregate_id.clone(),
            sequence: self.sequence,
            event_type: self.event_type.clone(),
            event_version: self.event_version,
            payload: self.payload.clone(),
            metadata: self.metadata.clone(),
            recorded_at_us: self.recorded_at_us,
            hash: self.hash.clone(),
        }
    }

    /// Where this event is, for error messages and reports.
    pub fn address(&self) -> EventAddress {
        EventAddress {
            position: self.position,
            aggregate_type: self.aggregate_type.clone(),
            aggregate_id: self.aggregate_id.clone(),
            sequence: self.sequence,
        }
    }

    /// The metadata, parsed.
    pub fn metadata(&self) -> Result<Metadata, EventStoreError> {
        serde_json::from_str(&self.metadata).map_err(|e| self.malformed(format!("metadata: {e}")))
    }

    /// The payload upcast to the current version, as JSON.
    pub fn payload_json(&self) -> Result<Value, EventStoreError> {
        let raw: Value = serde_json::from_str(&self.payload).map_err(|e| self.malformed(e.to_string()))?;
        upcast::upcast(&self.aggregate_type, &self.event_type, self.event_version, raw)
            .map_err(|reason| self.malformed(reason))
    }

    /// The domain event, upcast to the current version. At its current
    /// version (no upcaster applies) it is read straight from the payload's
    /// text; an older one goes through [`payload_json`](Self::payload_json).
    pub fn decode<A: Aggregate>(&self) -> Result<A::Event, EventStoreError> {
        let decoded = if upcast::applies(&self.aggregate_type, &self.event_type, self.event_version) {
            let tagged = match self.payload_json()? {
                Value::Null => Value::String(self.event_type.clone()),
                other => Value::Object([(self.event_type.clone(), other)].into_iter().collect()),
            };
            serde_json::from_value(tagged)
        } else {
            A::Event::deserialize(Tagged { variant: &self.event_type, content: &self.payload })
        };
        decoded.map_err(|e| {
            let reason = e.to_string();
            if reason.starts_with("unknown variant") {
                EventStoreError::UnknownEventType {
                    at: self.address(),
                    event_type: self.event_type.clone(),
                    event_version: self.event_version,
                }
            } else {
                self.malformed(reason)
            }
        })
    }

    fn malformed(&self, reason: String) -> EventStoreError {
        EventStoreError::MalformedEvent {
            at: self.address(),
            event_type: self.event_type.clone(),
            event_version: self.event_version,
            reason,
        }
    }
}

/// A domain event split into what the `events` table stores.
pub(crate) struct EncodedEvent {
    pub event_type: String,
    pub event_version: u32,
    pub payload: String,
}

/// Splits an externally tagged event (`{"PointsEarned": {...}}`, or
/// `"StoreClosed"` for a unit variant) into type and payload.
pub(crate) fn encode<E: DomainEvent>(event: &E) -> Result<EncodedEvent, EventStoreError> {
    let encode_err = |reason: String| EventStoreError::Encode { what: "event", reason };
    let event_type = event.event_type();
    let event_version = event.event_version().parse().map_err(|_| encode_err("version is not a number".into()))?;
    let payload = match serde_json::to_value(event).map_err(|e| encode_err(e.to_string()))? {
        Value::Object(mut map) => map.remove(&event_type).unwrap_or(Value::Null),
        _ => Value::Null,
    };
    let payload = serde_json::to_string(&payload).map_err(|e| encode_err(e.to_string()))?;
    Ok(EncodedEvent { event_type, event_version, payload })
}
