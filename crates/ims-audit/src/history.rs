//! History: the events of an image or a tenant, readable and as the export lines.

use ims_domain::{Event, ImageId, TenantId};
use ims_log::{decode_event, Envelope};
use serde_json::{json, Value};

use crate::{describe::summary, AuditError, LogSource};

/// The owner of the image whose stream `envelopes` is, as its events leave it (`None` for a
/// public image or one that does not decode).
pub fn image_owner(envelopes: &[Envelope]) -> Option<ims_domain::TenantId> {
    let mut state = ims_domain::State::default();
    for envelope in envelopes {
        ims_domain::evolve(&mut state, &ims_log::decode_event(envelope).ok()?);
    }
    let image = state.images.into_values().next()?;
    image.owner.tenant().cloned()
}

/// The history of one stream as JSON: every event in order.
pub fn history_json(envelopes: &[Envelope]) -> Value {
    json!({"items": envelopes.iter().map(event_json).collect::<Vec<_>>()})
}

/// One event as JSON: the export line format (see the module docs).
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
        "recorded_at_ms": body.recorded_at_ms,
        "type": body.event_type,
        "schema_version": body.schema_version,
        "summary": summary(envelope),
        "body_hex": hex::encode(envelope.canonical_body()),
        "prev_hash": hex::encode(envelope.prev_hash),
        "hash": hex::encode(envelope.hash),
    })
}

/// Whether an event concerns `tenant`: it acted, it is the stream, or the event names it.
fn concerns(envelope: &Envelope, event: &Event, tenant: &TenantId) -> bool {
    if envelope.body.actor == format!("tenant {tenant}")
        || envelope.body.stream == format!("tenant/{tenant}")
    {
        return true;
    }
    match event {
        Event::ImageCreated(new) => new.owner.tenant() == Some(tenant),
        Event::ImageShared { tenants, .. } | Event::ImageUnshared { tenants, .. } => {
            tenants.contains(tenant)
        }
        Event::ShareAccepted { tenant: t, .. } | Event::ShareRejected { tenant: t, .. } => {
            t == tenant
        }
        _ => false,
    }
}

/// Every event about an image and/or a tenant, in order.
pub async fn history(
    source: &LogSource,
    image: Option<ImageId>,
    tenant: Option<&TenantId>,
    progress: impl Fn(u64),
) -> Result<Vec<Value>, AuditError> {
    if let (LogSource::Offline(log), Some(image), None) = (source, image, tenant) {
        return Ok(log
            .read_stream(&format!("image/{image}"))?
            .iter()
            .map(event_json)
            .collect());
    }
    let head = source.head().await?;
    let mut items = Vec::new();
    source
        .scan(1, head, |batch| -> Result<bool, AuditError> {
            for envelope in batch {
                let event = decode_event(envelope)?;
                let image_matches = image.is_none_or(|id| event.image_id() == Some(id));
                let tenant_matches = tenant.is_none_or(|t| concerns(envelope, &event, t));
                if image_matches && tenant_matches {
                    items.push(event_json(envelope));
                }
            }
            progress(batch.last().map_or(0, |e| e.position()));
            Ok(true)
        })
        .await?;
    Ok(items)
}
