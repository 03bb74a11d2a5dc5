//! Reading events of every schema version this release knows. Version 1 is the current one; when
//! a payload type changes, its old shape moves here as a frozen type with a function that turns
//! it into the current event, and `decode_event` dispatches on the stored schema version.

use ims_domain::{Event, EVENT_SCHEMA_VERSION};

use crate::{codec, Envelope, LogError};

/// The domain event stored in `envelope`, upcast to the current schema.
pub fn decode_event(envelope: &Envelope) -> Result<Event, LogError> {
    let body = &envelope.body;
    let position = body.position;
    let event: Event = match body.schema_version {
        EVENT_SCHEMA_VERSION => codec::decode(&body.payload, || {
            format!("event payload at position {position}")
        })?,
        other => {
            return Err(LogError::UnknownSchema {
                position,
                event_type: body.event_type.clone(),
                schema_version: other,
            })
        }
    };
    if event.type_tag() != body.event_type {
        return Err(LogError::Corrupt {
            what: format!("event at position {position}"),
            reason: format!(
                "type tag {:?} does not match its payload ({})",
                body.event_type,
                event.type_tag()
            ),
        });
    }
    Ok(event)
}

/// Encodes a domain event as the payload of a new envelope.
pub fn encode_event(event: &Event) -> Vec<u8> {
    codec::encode(event)
}
