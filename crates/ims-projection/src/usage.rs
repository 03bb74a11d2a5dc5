//! The `usage` projection: the ledger of Marketplace usage charged to each tenant (rule 8).
//!
//! Keys: `p` (checkpoint); `u` + tenant + 0 + position: one [`UsageEntry`].

use ims_domain::{Event, ImageId};
use ims_log::Envelope;
use serde::{Deserialize, Serialize};

use crate::catalog::tenant_key;
use crate::store::{Changes, Store};
use crate::{Fold, Notice, ProjectionError};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageEntry {
    pub image_id: ImageId,
    pub hours: u32,
    pub charge_minor: u64,
    pub currency: Option<String>,
    pub at_ms: u64,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct UsageLedger;

impl Fold for UsageLedger {
    const NAME: &'static str = "usage";
    const LAYOUT: u32 = 1;

    fn wants(&self, event_type: &str) -> bool {
        event_type == "usage_recorded"
    }

    fn apply(
        &self,
        _: &Store,
        changes: &mut Changes,
        envelope: &Envelope,
        event: &Event,
    ) -> Result<Vec<Notice>, ProjectionError> {
        if let Event::UsageRecorded {
            tenant,
            image_id,
            hours,
            charge_minor,
            currency,
            at_ms,
        } = event
        {
            let entry = UsageEntry {
                image_id: *image_id,
                hours: *hours,
                charge_minor: *charge_minor,
                currency: currency.clone(),
                at_ms: *at_ms,
            };
            changes.insert(
                tenant_key(b'u', tenant, &envelope.position().to_be_bytes()),
                ims_log::encode(&entry),
            );
        }
        Ok(Vec::new())
    }
}
