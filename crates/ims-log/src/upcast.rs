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
            format!(
                "event payload at position {position} (type {:?})",
                body.event_type
            )
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

/// A tenant as the writer keeps it beside each append (see `EventLog::snapshot`), in its current
/// shape or in the shape releases before recycle bins and organizations wrote (no retention:
/// the policy's; no organization).
pub fn decode_tenant_snapshot(bytes: &[u8], tenant: &str) -> Result<ims_domain::Tenant, LogError> {
    /// The frozen shape of a tenant snapshot before `retention_days`.
    #[derive(serde::Deserialize)]
    struct TenantBeforeRetention {
        id: ims_domain::TenantId,
        quota: u32,
        owned_private_images: u32,
        charges_minor: std::collections::BTreeMap<String, u64>,
        version: u64,
    }
    let what = || format!("snapshot of tenant {tenant}");
    codec::decode(bytes, what).or_else(|error| {
        let old: TenantBeforeRetention = codec::decode(bytes, what).map_err(|_| error)?;
        Ok(ims_domain::Tenant {
            id: old.id,
            quota: old.quota,
            owned_private_images: old.owned_private_images,
            charges_minor: old.charges_minor,
            version: old.version,
            retention_days: None,
            organization: None,
        })
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_tenant_snapshot_of_the_release_before_retention_reads_with_none() {
        #[derive(serde::Serialize)]
        struct Old {
            id: ims_domain::TenantId,
            quota: u32,
            owned_private_images: u32,
            charges_minor: std::collections::BTreeMap<String, u64>,
            version: u64,
        }
        let id = ims_domain::TenantId::parse("acme").unwrap();
        let old = crate::codec::encode(&Old {
            id: id.clone(),
            quota: 7,
            owned_private_images: 2,
            charges_minor: [("USD".to_owned(), 5)].into(),
            version: 9,
        });
        let read = super::decode_tenant_snapshot(&old, "acme").unwrap();
        assert_eq!(
            (read.quota, read.owned_private_images, read.version),
            (7, 2, 9)
        );
        assert_eq!(read.retention_days, None);
        let current = ims_domain::Tenant {
            retention_days: Some(30),
            ..read
        };
        let again = super::decode_tenant_snapshot(&crate::codec::encode(&current), "acme");
        assert_eq!(again.unwrap(), current);
        assert!(super::decode_tenant_snapshot(b"\x01", "acme")
            .unwrap_err()
            .to_string()
            .contains("snapshot of tenant acme"));
    }
}
