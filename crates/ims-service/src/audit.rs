//! Audit views of the log: readable history of an image.

use ims_log::{decode_event, Envelope};
use serde_json::{json, Value};

/// A readable line about an event.
pub fn summary(envelope: &Envelope) -> String {
    match decode_event(envelope) {
        Ok(event) => format!("{event:?}"),
        Err(error) => format!("undecodable event: {error}"),
    }
}

/// The history of one stream as JSON: every event in order with position, time, actor and
/// command id.
pub fn history_json(envelopes: &[Envelope]) -> Value {
    let items: Vec<Value> = envelopes.iter().map(event_json).collect();
    json!({"items": items})
}

/// One event as JSON, hashes included.
pub fn event_json(envelope: &Envelope) -> Value {
    let body = &envelope.body;
    json!({
        "position": body.position,
        "event_id": uuid::Uuid::from_bytes(body.event_id).to_string(),
        "stream": body.stream,
        "stream_version": body.stream_version,
        "command_id": body.command_id.map(|id| uuid::Uuid::from_bytes(id).to_string()),
        "actor": body.actor,
        "region": body.region,
        "recorded_at": ims_wire::time::rfc3339(body.recorded_at_ms),
        "type": body.event_type,
        "schema_version": body.schema_version,
        "summary": summary(envelope),
    })
}
