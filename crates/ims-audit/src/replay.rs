//! Time travel: the region as it was at a position or a time, and who could use an image then.

use ims_domain::{
    access, evolve, Event, ImageClass, ImageId, OrganizationId, RegionId, State, TenantId, Viewer,
};
use ims_log::{decode_event, EventLog};
use ims_projection::queries::{answer, Models};
use ims_projection::{snapshot, Catalog, ReadModel, UsageLedger};
use ims_wire::{Query, QueryParams};
use serde_json::{json, Value};

use crate::{AuditError, LogSource};

/// A moment in history.
#[derive(Clone, Copy, Debug)]
pub enum Until {
    Position(u64),
    /// Unix milliseconds: every event recorded at or before it.
    Time(u64),
}

/// The region as it was: the read models and the domain state after the last event up to `until`.
#[derive(Debug)]
pub struct Replayed {
    pub region: RegionId,
    pub position: u64,
    pub catalog: ReadModel<Catalog>,
    pub usage: ReadModel<UsageLedger>,
    /// The domain state, when asked for ([`replay_with_state`]): what the full replay of
    /// who-could-use reads. Queries need only the read models.
    pub state: Option<State>,
}

/// Replays the log into temporary (in-memory) read models up to `until`.
pub async fn replay(
    source: &LogSource,
    region: &RegionId,
    until: Until,
    progress: impl Fn(u64),
) -> Result<Replayed, AuditError> {
    let models = Start::empty(source, until).await?;
    replay_into(source, region, until, models, false, progress).await
}

/// [`replay`], starting from the newest chain of snapshots of the read models in `snapshots` (a
/// region's `projections/snapshots`) at or before the moment: only the events after it are
/// replayed, and the models are read from the files as queries need them rather than loaded.
/// Without a usable snapshot it replays from position 1.
pub async fn replay_from_snapshots(
    source: &LogSource,
    region: &RegionId,
    until: Until,
    snapshots: &std::path::Path,
    progress: impl Fn(u64),
) -> Result<Replayed, AuditError> {
    let models = Start::from_snapshots(source, until, snapshots).await?;
    replay_into(source, region, until, models, false, progress).await
}

/// [`replay`], also folding the domain state (about as much memory again as the read models).
pub async fn replay_with_state(
    source: &LogSource,
    region: &RegionId,
    until: Until,
    progress: impl Fn(u64),
) -> Result<Replayed, AuditError> {
    let models = Start::empty(source, until).await?;
    replay_into(source, region, until, models, true, progress).await
}

/// Where a replay starts: the models it folds into, the position after which it reads, and
/// the last position it reads.
struct Start {
    catalog: ReadModel<Catalog>,
    usage: ReadModel<UsageLedger>,
    after: u64,
    to: u64,
}

impl Start {
    async fn empty(source: &LogSource, until: Until) -> Result<Self, AuditError> {
        let head = source.head().await?;
        let to = match until {
            Until::Position(position) => position.min(head),
            Until::Time(_) => head,
        };
        Ok(Self {
            catalog: ReadModel::in_memory_for(Catalog, to),
            usage: ReadModel::in_memory(UsageLedger),
            after: 0,
            to,
        })
    }

    async fn from_snapshots(
        source: &LogSource,
        until: Until,
        dir: &std::path::Path,
    ) -> Result<Self, AuditError> {
        let head = source.head().await?;
        let to = match until {
            Until::Position(position) => position.min(head),
            Until::Time(at_ms) => last_position_at(source, at_ms, head).await?,
        };
        let (catalog, usage) = match (
            snapshot::open_chain(dir, &snapshot::model_name::<Catalog>(), to)?,
            snapshot::open_chain(dir, &snapshot::model_name::<UsageLedger>(), to)?,
        ) {
            (Some(catalog), Some(usage)) => (
                ReadModel::from_snapshots(Catalog, catalog)?,
                ReadModel::from_snapshots(UsageLedger, usage)?,
            ),
            _ => (
                ReadModel::in_memory_for(Catalog, to),
                ReadModel::in_memory(UsageLedger),
            ),
        };
        // Each model skips what it holds already; reading starts after the older of the two.
        let after = catalog.checkpoint().min(usage.checkpoint());
        Ok(Self {
            catalog,
            usage,
            after,
            to,
        })
    }
}

async fn replay_into(
    source: &LogSource,
    region: &RegionId,
    until: Until,
    start: Start,
    with_state: bool,
    progress: impl Fn(u64),
) -> Result<Replayed, AuditError> {
    let Start {
        catalog,
        usage,
        after,
        to,
    } = start;
    let mut replayed = Replayed {
        region: region.clone(),
        position: after,
        catalog,
        usage,
        state: with_state.then(State::default),
    };
    source
        .scan(after + 1, to, |batch| -> Result<bool, AuditError> {
            let cut = match until {
                Until::Time(at_ms) => batch
                    .iter()
                    .position(|e| e.body.recorded_at_ms > at_ms)
                    .unwrap_or(batch.len()),
                Until::Position(_) => batch.len(),
            };
            let whole = batch.len();
            let batch = &batch[..cut];
            replayed.catalog.apply(batch)?;
            replayed.usage.apply(batch)?;
            if let Some(state) = &mut replayed.state {
                for envelope in batch {
                    evolve(state, &decode_event(envelope)?);
                }
            }
            replayed.position = batch.last().map_or(replayed.position, |e| e.position());
            progress(replayed.position);
            Ok(cut == whole)
        })
        .await?;
    Ok(replayed)
}

impl Replayed {
    /// Answers a query for `tenant` as of the replayed moment.
    pub fn query(
        &self,
        tenant: &TenantId,
        query: Query,
        params: &QueryParams,
    ) -> Result<Value, AuditError> {
        let models = Models {
            region: &self.region,
            catalog: self.catalog.store(),
            usage: self.usage.store(),
            position: self.position,
            members_limit: ims_domain::SharingPolicy::default().members_per_image_max,
            // Printed, not sent: the page is bounded by its limit alone.
            reply_bytes_max: usize::MAX,
        };
        Ok(answer(&models, tenant, query, params)?.to_value())
    }

    /// The tenants that could use `image` at the replayed moment, and through what; `None`
    /// unless replayed with the state.
    pub fn who_could_use(&self, image: ImageId) -> Option<Value> {
        let state = self.state.as_ref()?;
        Some(who_could_use_answer(
            image,
            self.position,
            state.images.get(&image),
            state.tenants.values().map(Viewer::of),
        ))
    }
}

/// `who-could-use` of one image as of `until`, read from the image's own stream and the
/// tenants' registrations in the stream index, without replaying the region: the answer of
/// [`Replayed::who_could_use`] after [`replay`] (a property test compares the two), in time
/// that grows with the image's history, not the region's. `Until::Time` assumes recorded times
/// do not decrease along the log (the writer stamps its groups in order).
pub fn who_could_use_offline(
    log: &EventLog,
    image: ImageId,
    until: Until,
) -> Result<Value, AuditError> {
    let head = log.head_position();
    let position = match until {
        Until::Position(position) => position.min(head),
        Until::Time(at_ms) => last_position_at_in(log, at_ms, head)?,
    };
    let mut state = State::default();
    for envelope in log.read_stream(&ims_domain::StreamId::Image(image).to_string())? {
        if envelope.position() > position {
            break;
        }
        evolve(&mut state, &decode_event(&envelope)?);
    }
    let Some(found) = state.images.get(&image) else {
        return Ok(who_could_use_answer(
            image,
            position,
            None,
            std::iter::empty(),
        ));
    };
    // A public or Marketplace image reaches every tenant registered by then, one shared with
    // organizations may reach any; any other only its owner and members, so only their
    // registrations are read.
    let everyone = matches!(found.class, ImageClass::Public | ImageClass::Marketplace)
        || !found.organizations.is_empty();
    let prefixes: Vec<String> = if everyone {
        vec!["tenant/".to_owned()]
    } else {
        found
            .owner
            .tenant()
            .into_iter()
            .chain(found.members.keys())
            .map(|tenant| format!("tenant/{tenant}"))
            .collect()
    };
    let mut registered = std::collections::BTreeMap::new();
    for prefix in &prefixes {
        for (stream, first) in log.stream_starts(prefix)? {
            if first > position || (!everyone && stream != *prefix) {
                continue;
            }
            if let Some(tenant) = stream
                .strip_prefix("tenant/")
                .and_then(|id| TenantId::parse(id).ok())
            {
                let organization = if found.organizations.is_empty() {
                    None
                } else {
                    organization_by(log, &stream, position)?
                };
                registered.insert(tenant, organization);
            }
        }
    }
    Ok(who_could_use_answer(
        image,
        position,
        Some(found),
        registered.iter().map(|(tenant, organization)| Viewer {
            tenant,
            organization: organization.as_ref(),
        }),
    ))
}

/// The organization the tenant of `stream` belonged to at `position`, from its own stream.
fn organization_by(
    log: &EventLog,
    stream: &str,
    position: u64,
) -> Result<Option<OrganizationId>, AuditError> {
    for envelope in log.read_stream(stream)? {
        if envelope.position() > position {
            break;
        }
        if envelope.body.event_type == "tenant_joined_organization" {
            if let Event::TenantJoinedOrganization { organization, .. } = decode_event(&envelope)? {
                return Ok(Some(organization));
            }
        }
    }
    Ok(None)
}

/// The answer of who-could-use: each of `registered` (in tenant order) that has access to
/// `found`.
fn who_could_use_answer<'t>(
    image: ImageId,
    position: u64,
    found: Option<&ims_domain::Image>,
    registered: impl Iterator<Item = Viewer<'t>>,
) -> Value {
    let Some(found) = found else {
        return json!({"image_id": image.to_string(), "position": position, "exists": false, "tenants": []});
    };
    let tenants: Vec<Value> = registered
        .filter_map(|viewer| {
            access(found, viewer).map(
                |through| json!({"tenant": viewer.tenant.as_str(), "through": through.as_str()}),
            )
        })
        .collect();
    // An obsolete image is still reached by its tenants, but `usable` refuses it: the auditor
    // sees the deprecation state with the list.
    json!({"image_id": image.to_string(), "position": position, "exists": true, "status": found.status.as_str(), "deprecation": found.deprecation.state.as_str(), "tenants": tenants})
}

/// The last position recorded at or before `at_ms` (0 if none), by bisection.
async fn last_position_at(source: &LogSource, at_ms: u64, head: u64) -> Result<u64, AuditError> {
    let mut bisection = Bisection { low: 0, high: head };
    while let Some(middle) = bisection.middle() {
        let batch = source.batch(middle, 1).await?;
        bisection.narrow(middle, recorded_at(batch.envelopes.first()) <= at_ms);
    }
    Ok(bisection.low)
}

/// [`last_position_at`] in a log on disk.
fn last_position_at_in(log: &EventLog, at_ms: u64, head: u64) -> Result<u64, AuditError> {
    let mut bisection = Bisection { low: 0, high: head };
    while let Some(middle) = bisection.middle() {
        let envelopes = log.read_range(middle, 1)?;
        bisection.narrow(middle, recorded_at(envelopes.first()) <= at_ms);
    }
    Ok(bisection.low)
}

fn recorded_at(envelope: Option<&ims_log::Envelope>) -> u64 {
    envelope.map_or(u64::MAX, |envelope| envelope.body.recorded_at_ms)
}

/// The search for the last position recorded by a moment: it lies in `[low, high]`, and every
/// position up to `low` was recorded by then.
struct Bisection {
    low: u64,
    high: u64,
}

impl Bisection {
    /// The position to look at next, until the range is one position.
    fn middle(&self) -> Option<u64> {
        (self.low < self.high).then(|| self.low + (self.high - self.low).div_ceil(2))
    }

    fn narrow(&mut self, middle: u64, recorded_by_then: bool) {
        if recorded_by_then {
            self.low = middle;
        } else {
            self.high = middle - 1;
        }
    }
}
