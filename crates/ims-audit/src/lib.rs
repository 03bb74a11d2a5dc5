//! Audit: history, time travel, verification and export over the log, online (through NATS) or
//! offline (on a stopped service's data dir). Everything here replays the log itself, so an
//! answer never depends on the live read models it may be checking.
//!
//! Export format (JSON Lines, one event per line, stable; fields are never renamed or removed):
//! `position`, `event_id`, `stream`, `stream_version`, `command_id` (or null), `actor`, `region`,
//! `recorded_at` (RFC 3339), `recorded_at_ms`, `type`, `schema_version`, `summary` (readable,
//! not stable), `body_hex` (the canonical bytes the hash covers), `prev_hash`, `hash` (hex).
//! Check a line with: `sha256(hex_decode(prev_hash) || hex_decode(body_hex)) == hash`, and that
//! each `prev_hash` is the `hash` of the line before (zeros before position 1).

use bytes::Bytes;
use ims_domain::{
    access, evolve, CopyStatus, DiskKind, Event, ImageClass, ImageId, Price, RegionId, Source,
    State, TenantId,
};
use ims_log::{chain_hash, decode_event, Envelope, EventLog};
use ims_projection::queries::{answer, Models};
use ims_projection::{Catalog, ReadModel, Store, UsageLedger};
use ims_wire::{Query, QueryParams, Subjects};
use serde_json::{json, Value};

pub use ims_bus::{LogReadError, LogSource, SCAN_BATCH_EVENTS as AUDIT_BATCH_EVENTS};

/// Why an audit could not answer.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    LogRead(#[from] LogReadError),
    #[error(transparent)]
    Log(#[from] ims_log::LogError),
    #[error(transparent)]
    Model(#[from] ims_projection::ProjectionError),
    #[error("{0}")]
    Query(#[from] ims_wire::WireError),
    #[error("the image store: {0}")]
    Store(#[from] object_store::Error),
    #[error("asking {subject}: {error}")]
    Nats {
        subject: String,
        error: async_nats::Error,
    },
    #[error("{0}")]
    Answered(String),
    #[error("an answer that is not what was asked for: {0}")]
    Json(#[from] serde_json::Error),
    #[error("an answer that is not hex: {0}")]
    Hex(#[from] hex::FromHexError),
}

/// A readable line about an event.
pub fn summary(envelope: &Envelope) -> String {
    match decode_event(envelope) {
        Ok(event) => describe(&event),
        Err(error) => format!("undecodable event: {error}"),
    }
}

fn list(tenants: &[TenantId]) -> String {
    tenants
        .iter()
        .map(TenantId::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A sentence about an event for people reading history.
pub fn describe(event: &Event) -> String {
    match event {
        Event::TenantRegistered { tenant, quota } => {
            format!("tenant {tenant} registered with quota {quota}")
        }
        Event::QuotaSet { tenant, quota } => format!("quota of tenant {tenant} set to {quota}"),
        Event::ImageCreated(new) => describe_created(new),
        Event::ImageUpdated(update) => format!("image {} updated", update.image_id),
        Event::BuildStarted { image_id, .. } => format!("build of image {image_id} started"),
        Event::BuildSucceeded {
            image_id,
            size_bytes,
            ..
        } => format!("build of image {image_id} succeeded ({size_bytes} bytes)"),
        Event::BuildFailed { image_id, .. } => format!("build of image {image_id} failed"),
        Event::BuildFailedBecause {
            image_id, reason, ..
        } => format!("build of image {image_id} failed: {reason}"),
        Event::FileVerified { image_id, file, .. } => format!(
            "file of image {image_id} verified: {}, sha512 {}",
            file.detected_format.as_str(),
            file.sha512
        ),
        Event::ImageDeleted { image_id, .. } => format!("image {image_id} deleted"),
        Event::ImageDeprecated {
            image_id,
            deprecated,
            ..
        } => format!(
            "image {image_id} {}",
            if *deprecated {
                "deprecated"
            } else {
                "no longer deprecated"
            }
        ),
        Event::ImageShared {
            image_id, tenants, ..
        } => format!("image {image_id} shared with {}", list(tenants)),
        Event::ImageUnshared {
            image_id, tenants, ..
        } => format!("image {image_id} no longer shared with {}", list(tenants)),
        Event::ShareAccepted {
            image_id, tenant, ..
        } => format!("tenant {tenant} accepted image {image_id}"),
        Event::ShareRejected {
            image_id, tenant, ..
        } => format!("tenant {tenant} rejected image {image_id}"),
        Event::ListedOnMarketplace {
            image_id, listing, ..
        } => format!(
            "image {image_id} listed on the Marketplace by {} at {}",
            listing.publisher,
            describe_price(&listing.price)
        ),
        Event::DelistedFromMarketplace { image_id, .. } => {
            format!("image {image_id} delisted from the Marketplace")
        }
        Event::CopyRequested {
            image_id,
            copy_image_id,
            target_region,
            ..
        } => format!(
            "copy of image {image_id} to region {target_region} requested as {copy_image_id}"
        ),
        Event::CopyFinished {
            image_id,
            copy_image_id,
            status,
            ..
        } => match status {
            CopyStatus::Requested => format!("copy {copy_image_id} of image {image_id}: requested"),
            CopyStatus::Delivered => format!("copy {copy_image_id} of image {image_id}: delivered"),
            CopyStatus::Failed { reason } => {
                format!("copy {copy_image_id} of image {image_id}: failed: {reason}")
            }
        },
        Event::UsageRecorded {
            tenant,
            image_id,
            hours,
            charge_minor,
            currency,
            ..
        } => {
            format!(
                "tenant {tenant} used image {image_id} for {hours} h, charged {charge_minor} {}",
                currency.as_deref().unwrap_or("")
            )
        }
    }
}

/// Where an image's bytes come from, in words.
fn describe_created(new: &ims_domain::NewImage) -> String {
    let class = match new.class {
        ImageClass::Public => "public",
        ImageClass::Private => "private",
        ImageClass::Marketplace => "marketplace",
    };
    let disk = match new.disk {
        DiskKind::System => "system disk",
        DiskKind::Data => "data disk",
        DiskKind::FullEcs => "full-ECS",
    };
    format!(
        "image {} ({}) created, {class} {disk} image from {}, status {}",
        new.id,
        new.name,
        describe_source(&new.source),
        new.status.as_str()
    )
}

fn describe_price(price: &Price) -> String {
    match price {
        Price::Free => "no charge".to_owned(),
        Price::PerHour {
            amount_minor,
            currency,
        } => format!(
            "{amount_minor} minor units of {} per hour",
            currency.as_str()
        ),
    }
}

fn describe_source(source: &Source) -> String {
    match source {
        Source::Ecs {
            instance_id,
            data_disk_ids,
        } if data_disk_ids.is_empty() => format!("ECS {instance_id}"),
        Source::Ecs {
            instance_id,
            data_disk_ids,
        } => format!(
            "ECS {instance_id} with data disks {}",
            data_disk_ids.join(", ")
        ),
        Source::File { url, format } => format!("{} file {url}", format.as_str()),
        Source::Upload { format } => format!("an uploaded {} file", format.as_str()),
        Source::Copy { region, image_id } => format!("image {image_id} of region {region}"),
        Source::Published => "the operator's publication".to_owned(),
    }
}

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
    pub state: State,
}

/// Checks the stored file of every active image that was imported: it exists, with the size
/// and SHA-256 the log recorded. Returns one line per problem (none: all hold).
pub async fn verify_objects(
    source: &LogSource,
    region: &RegionId,
    store: Option<&ims_store::ImageStore>,
) -> Result<Vec<String>, AuditError> {
    let replayed = replay(source, region, Until::Position(u64::MAX), |_| {}).await?;
    let mut problems = Vec::new();
    for image in replayed.state.images.values() {
        let (Some(_), Some(size), Some(checksum)) =
            (&image.file, image.size_bytes, &image.checksum_sha256)
        else {
            continue;
        };
        if image.status != ims_domain::ImageStatus::Active {
            continue;
        }
        let Some(store) = store else {
            problems.push(format!(
                "image {}: its object is missing (the region has no image store)",
                image.id
            ));
            continue;
        };
        match store.digest(&image.id).await {
            Err(error) => problems.push(format!(
                "image {}: its object cannot be read ({error})",
                image.id
            )),
            Ok(None) => problems.push(format!("image {}: its object is missing", image.id)),
            Ok(Some((length, _))) if length != size => problems.push(format!(
                "image {}: its object is {length} bytes, the log says {size}",
                image.id
            )),
            Ok(Some((_, digest))) if &digest != checksum => problems.push(format!(
                "image {}: its object's SHA-256 is {digest}, the log says {checksum}",
                image.id
            )),
            Ok(Some(_)) => {}
        }
    }
    Ok(problems)
}

/// Replays the log into temporary (in-memory) read models up to `until`.
pub async fn replay(
    source: &LogSource,
    region: &RegionId,
    until: Until,
    progress: impl Fn(u64),
) -> Result<Replayed, AuditError> {
    let head = source.head().await?;
    let to = match until {
        Until::Position(position) => position.min(head),
        Until::Time(_) => head,
    };
    let mut replayed = Replayed {
        region: region.clone(),
        position: 0,
        catalog: ReadModel::in_memory_for(Catalog, to),
        usage: ReadModel::in_memory(UsageLedger),
        state: State::default(),
    };
    source
        .scan(1, to, |batch| -> Result<bool, AuditError> {
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
            for envelope in batch {
                evolve(&mut replayed.state, &decode_event(envelope)?);
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
        Ok(answer(&models, tenant, query, params)?)
    }

    /// The tenants that could use `image` at the replayed moment, and through what.
    pub fn who_could_use(&self, image: ImageId) -> Value {
        who_could_use_answer(
            image,
            self.position,
            self.state.images.get(&image),
            self.state.tenants.keys(),
        )
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
        Until::Time(at_ms) => last_position_at(log, at_ms, head)?,
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
    // A public or Marketplace image reaches every tenant registered by then; any other only its
    // owner and members, so only their registrations are read.
    let everyone = matches!(found.class, ImageClass::Public | ImageClass::Marketplace);
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
    let mut registered = std::collections::BTreeSet::new();
    for prefix in &prefixes {
        for (stream, first) in log.stream_starts(prefix)? {
            if first > position || (!everyone && stream != *prefix) {
                continue;
            }
            if let Some(tenant) = stream
                .strip_prefix("tenant/")
                .and_then(|id| TenantId::parse(id).ok())
            {
                registered.insert(tenant);
            }
        }
    }
    Ok(who_could_use_answer(
        image,
        position,
        Some(found),
        registered.iter(),
    ))
}

/// The answer of who-could-use: each of `registered` (in order) that has access to `found`.
fn who_could_use_answer<'t>(
    image: ImageId,
    position: u64,
    found: Option<&ims_domain::Image>,
    registered: impl Iterator<Item = &'t TenantId>,
) -> Value {
    let Some(found) = found else {
        return json!({"image_id": image.to_string(), "position": position, "exists": false, "tenants": []});
    };
    let tenants: Vec<Value> = registered
        .filter_map(|tenant| {
            access(found, tenant)
                .map(|through| json!({"tenant": tenant.as_str(), "through": through.as_str()}))
        })
        .collect();
    json!({"image_id": image.to_string(), "position": position, "exists": true, "status": found.status.as_str(), "tenants": tenants})
}

/// The last position recorded at or before `at_ms` (0 if none), by bisection.
fn last_position_at(log: &EventLog, at_ms: u64, head: u64) -> Result<u64, AuditError> {
    let recorded_at = |position: u64| -> Result<u64, AuditError> {
        Ok(log
            .read_range(position, 1)?
            .first()
            .map_or(u64::MAX, |envelope| envelope.body.recorded_at_ms))
    };
    // The answer lies in [low, high]: every position up to low is at or before at_ms.
    let (mut low, mut high) = (0u64, head);
    while low < high {
        let middle = low + (high - low).div_ceil(2);
        if recorded_at(middle)? <= at_ms {
            low = middle;
        } else {
            high = middle - 1;
        }
    }
    Ok(low)
}

/// The first break in the chain: a missing position, a bad link or a bad hash.
pub async fn verify_chain(
    source: &LogSource,
    progress: impl Fn(u64),
) -> Result<Result<u64, (u64, String)>, AuditError> {
    let head = source.head().await?;
    if let LogSource::Offline(log) = source {
        // On disk, the log's own check also names events too damaged to decode.
        let checked = log.verify(1..=head)?;
        progress(head);
        return Ok(checked
            .map(|()| head)
            .map_err(|broken| (broken.position, broken.problem)));
    }
    let mut expected = 1;
    let mut prev_hash = [0u8; 32];
    let mut broken = None;
    source
        .scan(1, head, |batch| -> Result<bool, AuditError> {
            for envelope in batch {
                let problem = if envelope.position() != expected {
                    Some((expected, "event is missing".to_owned()))
                } else if envelope.prev_hash != prev_hash {
                    Some((
                        expected,
                        "prev_hash does not match the previous event's hash".to_owned(),
                    ))
                } else if chain_hash(&envelope.prev_hash, &envelope.canonical_body())
                    != envelope.hash
                {
                    Some((
                        expected,
                        "hash does not match the event's contents".to_owned(),
                    ))
                } else {
                    None
                };
                if problem.is_some() {
                    broken = problem;
                    return Ok(false);
                }
                prev_hash = envelope.hash;
                expected += 1;
            }
            progress(expected - 1);
            Ok(true)
        })
        .await?;
    if broken.is_none() && expected <= head {
        broken = Some((expected, "event is missing".to_owned()));
    }
    Ok(match broken {
        Some(broken) => Err(broken),
        None => Ok(head),
    })
}

/// Compares a live read model's rows with a rebuild's; returns the first differing row.
pub fn first_difference(
    live: &[(Vec<u8>, Vec<u8>)],
    rebuilt: &Store,
) -> Result<Option<String>, AuditError> {
    let rebuilt = rebuilt.entries()?;
    for index in 0..live.len().max(rebuilt.len()) {
        match (live.get(index), rebuilt.get(index)) {
            (Some(a), Some(b)) if a == b => continue,
            (Some((key, _)), Some((other, _))) if key != other => {
                return Ok(Some(format!(
                    "row {index}: the live model has key {} where a rebuild has key {}",
                    hex::encode(key),
                    hex::encode(other)
                )));
            }
            (Some((key, _)), Some(_)) => {
                return Ok(Some(format!(
                    "row {index}: key {} has a different value than in a rebuild",
                    hex::encode(key)
                )))
            }
            (Some((key, _)), None) => {
                return Ok(Some(format!(
                    "row {index}: key {} is in the live model but not in a rebuild",
                    hex::encode(key)
                )))
            }
            (None, Some((key, _))) => {
                return Ok(Some(format!(
                    "row {index}: key {} is missing from the live model",
                    hex::encode(key)
                )))
            }
            (None, None) => break,
        }
    }
    Ok(None)
}

/// Where the live read models to check are.
#[derive(Debug)]
pub enum LiveModels<'a> {
    /// The projections folder of a stopped service.
    Offline(&'a std::path::Path),
    /// A running service, through `audit.rows`.
    Online {
        client: &'a async_nats::Client,
        subjects: &'a Subjects,
        region: &'a RegionId,
    },
}

/// Tries at reading a consistent copy of a model from a service that keeps applying events.
const CONSISTENT_READ_TRIES: usize = 5;

async fn online_rows(
    client: &async_nats::Client,
    subject: &str,
    model: &str,
) -> Result<(u64, Vec<(Vec<u8>, Vec<u8>)>), AuditError> {
    'attempt: for _ in 0..CONSISTENT_READ_TRIES {
        let mut rows = Vec::new();
        let mut checkpoint = None;
        let mut after: Option<String> = None;
        loop {
            let request = json!({"model": model, "after": after, "max": 2000});
            let message = client
                .request(
                    subject.to_owned(),
                    Bytes::from(serde_json::to_vec(&request)?),
                )
                .await
                .map_err(|error| AuditError::Nats {
                    subject: subject.to_owned(),
                    error: error.into(),
                })?;
            let page: Value = serde_json::from_slice(&message.payload)?;
            if page["ok"] == false {
                return Err(AuditError::Answered(format!(
                    "{subject} answered {}",
                    page["error"]
                )));
            }
            let page_checkpoint = page["checkpoint"]
                .as_u64()
                .ok_or_else(|| AuditError::Answered(format!("{subject}: no checkpoint")))?;
            if checkpoint.is_some_and(|c| c != page_checkpoint) {
                continue 'attempt; // the model moved on between pages: start again
            }
            checkpoint = Some(page_checkpoint);
            let page_rows = page["rows"].as_array().cloned().unwrap_or_default();
            for row in &page_rows {
                let key = hex::decode(row[0].as_str().unwrap_or_default())?;
                let value = hex::decode(row[1].as_str().unwrap_or_default())?;
                rows.push((key, value));
            }
            // The page is cut by count and by bytes; `next_after` says whether more follow.
            match page["next_after"].as_str() {
                Some(next) => after = Some(next.to_owned()),
                None => return Ok((page_checkpoint, rows)),
            }
        }
    }
    Err(AuditError::Answered(format!(
        "the {model} model kept changing while it was read; run verify when the service is \
         idle, or offline"
    )))
}

/// Checks every live read model against a rebuild from position 1 up to the model's own
/// checkpoint. Returns, per model, `None` when equal or the first differing row.
pub async fn verify_models(
    source: &LogSource,
    region: &RegionId,
    live: LiveModels<'_>,
) -> Result<Vec<(String, Option<String>)>, AuditError> {
    let mut results = Vec::new();
    for model in ["catalog", "usage"] {
        let (checkpoint, rows) = match &live {
            LiveModels::Offline(dir) => {
                let entries = |store: &Store| store.entries();
                if model == "catalog" {
                    let opened = ReadModel::open(dir, Catalog)?;
                    (opened.checkpoint(), entries(opened.store())?)
                } else {
                    let opened = ReadModel::open(dir, UsageLedger)?;
                    (opened.checkpoint(), entries(opened.store())?)
                }
            }
            LiveModels::Online {
                client,
                subjects,
                region,
            } => {
                online_rows(
                    client,
                    &format!("{}.v1.{region}.audit.rows", subjects.prefix),
                    model,
                )
                .await?
            }
        };
        let rebuilt = replay(source, region, Until::Position(checkpoint), |_| {}).await?;
        let store = if model == "catalog" {
            rebuilt.catalog.store()
        } else {
            rebuilt.usage.store()
        };
        results.push((model.to_owned(), first_difference(&rows, store)?));
    }
    Ok(results)
}
