//! The projector runtime: keeps a region's read models up to date from NATS, exactly once.
//!
//! It subscribes to live events first, then catches up through `log.read` from its checkpoint,
//! then applies live events in order. Anything at or below the checkpoint is skipped; a gap (a
//! live message lost, or the publisher behind) is filled from `log.read`; a periodic check finds a
//! tail that no live message announced. After a restart it resumes from its checkpoint.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use ims_domain::{RegionId, SharingPolicy, TenantId};
use ims_log::Envelope;
use ims_projection::queries::{answer, Models};
use ims_projection::{snapshot, Catalog, Changed, Notice, ProjectionError, ReadModel, UsageLedger};
use ims_wire::views::{Answer, FeedItem};
use ims_wire::{Query, QueryParams};
use ims_wire::{Subjects, WireError, WireErrorCode};
use tokio::sync::watch;

use ims_bus::{LogReadError, LogSource, RoleError};

/// Events asked for per `log.read` during catch-up: the log's own maximum per reply.
pub const CATCH_UP_BATCH_EVENTS: usize = 1000;

/// How long one catch-up read may take before it is asked again. A read is a few ms even of
/// 1,000 events; the bound is what a read that will never be answered costs (it reached a leader
/// that was killed), and meanwhile queries with `min_position` answer `stale`.
pub const LOG_READ_TIMEOUT: Duration = Duration::from_secs(3);

/// Live events applied together: bounds the atomic batch and the lock hold time.
pub const LIVE_BATCH_EVENTS_MAX: usize = 512;

/// How often an idle projector asks the log whether it missed a tail.
pub const TAIL_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// How long a query with `min_position` waits for the projection before answering `stale`.
pub const READ_YOUR_WRITES_WAIT_MAX: Duration = Duration::from_secs(2);

/// The read models of one region, shared by the projector (writes) and the queries (reads).
#[derive(Debug)]
pub struct RegionModels {
    pub region: RegionId,
    models: RwLock<(ReadModel<Catalog>, ReadModel<UsageLedger>)>,
    position: watch::Sender<u64>,
    /// The newest log head the projector has heard of.
    head_seen: AtomicU64,
    /// Whether the last `log.read` was answered: false from the start until the head is known,
    /// and again while the log cannot be read, so that readiness never claims what it cannot
    /// know.
    log_readable: AtomicBool,
    members_limit: usize,
    /// The most bytes a query's answer may take; see [`RegionModels::set_reply_bytes_max`].
    reply_bytes_max: AtomicUsize,
    /// Where snapshots of the models go (`projections/snapshots`), and when.
    snapshots: PathBuf,
    snapshot_policy: std::sync::Mutex<SnapshotPolicy>,
}

/// When the projector writes snapshots: one every `every` events (0: never), a delta of what
/// changed since the last when it can, and a whole one when there is no delta to build on or the
/// chain has [`DELTAS_PER_WHOLE`] deltas, no sooner than `min_gap` after the last whole one, so
/// that a catch-up over millions of events writes few copies of the whole model.
#[derive(Clone, Copy, Debug)]
pub struct SnapshotPolicy {
    pub every: u64,
    pub min_gap: Duration,
    last_whole: Option<std::time::Instant>,
}

impl SnapshotPolicy {
    pub fn new(every: u64, min_gap: Duration) -> Self {
        Self {
            every,
            min_gap,
            last_whole: None,
        }
    }
}

/// After how many deltas on a whole snapshot the next one is whole (time allowing): an audit
/// reads through at most about this many files.
pub const DELTAS_PER_WHOLE: usize = 16;

/// Every how many events the projector writes a snapshot of each read model, for audits as of a
/// past position (see `ims_projection::snapshot`).
pub const SNAPSHOT_EVERY_EVENTS: u64 = 100_000;

/// The least time between two whole snapshots of a region's models.
pub const SNAPSHOT_MIN_GAP: Duration = Duration::from_secs(60);

/// Until the query service reads the server's limit: NATS's default `max_payload` (1 MiB)
/// less room for framing.
pub const REPLY_BYTES_MAX_DEFAULT: usize = 1024 * 1024 - 4 * 1024;

/// The read models are ahead of the log they follow: the start must stop rather than serve
/// them (they belong to another or a newer log).
#[derive(Debug, thiserror::Error)]
#[error(
    "the read models of region {region} are at position {checkpoint}, beyond the log's head \
     {head}: they belong to another or a newer log; move the region's projections folder away \
     to rebuild them from this log"
)]
pub struct CheckpointBeyondHead {
    pub region: RegionId,
    pub checkpoint: u64,
    pub head: u64,
}

impl RegionModels {
    /// Opens the read models of `region` under `dir` (one sled database per projection).
    pub fn open(
        dir: &Path,
        region: RegionId,
        policy: &SharingPolicy,
    ) -> Result<Self, ProjectionError> {
        let mut catalog = ReadModel::open(dir, Catalog)?;
        let mut usage = ReadModel::open(dir, UsageLedger)?;
        catalog.keep_changed(SNAPSHOT_EVERY_EVENTS > 0);
        usage.keep_changed(SNAPSHOT_EVERY_EVENTS > 0);
        let position = catalog.checkpoint().min(usage.checkpoint());
        Ok(Self {
            region,
            models: RwLock::new((catalog, usage)),
            position: watch::channel(position).0,
            head_seen: AtomicU64::new(0),
            log_readable: AtomicBool::new(false),
            members_limit: policy.members_per_image_max,
            reply_bytes_max: AtomicUsize::new(REPLY_BYTES_MAX_DEFAULT),
            snapshots: snapshots_path(dir),
            snapshot_policy: std::sync::Mutex::new(SnapshotPolicy::new(
                SNAPSHOT_EVERY_EVENTS,
                SNAPSHOT_MIN_GAP,
            )),
        })
    }

    /// When to write snapshots instead of every [`SNAPSHOT_EVERY_EVENTS`] events, with whole
    /// ones at most once per [`SNAPSHOT_MIN_GAP`].
    pub fn set_snapshot_policy(&self, policy: SnapshotPolicy) {
        let mut models = self.models.write().expect("read model lock");
        models.0.keep_changed(policy.every > 0);
        models.1.keep_changed(policy.every > 0);
        *self.snapshot_policy.lock().expect("snapshot policy lock") = policy;
    }

    /// Writes a snapshot of each model when `from..=to` crossed a multiple of the interval:
    /// `changed` holds what each changed since the last. A snapshot that cannot be written is
    /// logged and skipped: the next one is then whole, and audits start further back meanwhile.
    fn write_snapshots(&self, changed: [Option<Changed>; 2]) {
        let models = self.models.read().expect("read model lock");
        let stores = [
            (snapshot::model_name::<Catalog>(), models.0.store()),
            (snapshot::model_name::<UsageLedger>(), models.1.store()),
        ];
        for ((name, store), changed) in stores.into_iter().zip(changed) {
            // Seconds of file writing for a whole big model: on a worker of a multi-threaded
            // runtime, the runtime first moves its other tasks elsewhere.
            let write = || self.write_snapshot(&name, store, changed);
            let written = match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
                Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
                    tokio::task::block_in_place(write)
                }
                _ => write(),
            };
            match written {
                Ok(path) => {
                    tracing::info!(region = %self.region, path = %path.display(), "read model snapshot written")
                }
                Err(error) => {
                    tracing::warn!(region = %self.region, %error, "a read model snapshot could not be written")
                }
            }
        }
    }

    /// Writes one model's snapshot: a delta over the newest file when `changed` starts there
    /// and the chain is short enough (or the last whole one too recent), else a whole one.
    fn write_snapshot(
        &self,
        name: &str,
        store: &ims_projection::Store,
        changed: Option<Changed>,
    ) -> Result<std::path::PathBuf, ProjectionError> {
        let files = snapshot::list(&self.snapshots, name)?;
        let newest = files.last();
        let chain = newest.and_then(|file| snapshot::chain_of(&files, file));
        let delta_base = changed.as_ref().filter(|changed| {
            changed.since == 0
                || (newest.is_some_and(|file| file.position == changed.since) && chain.is_some())
        });
        let mut policy = self.snapshot_policy.lock().expect("snapshot policy lock");
        let whole_allowed = policy
            .last_whole
            .is_none_or(|last| last.elapsed() >= policy.min_gap);
        let long = chain.is_some_and(|chain| chain.len() > DELTAS_PER_WHOLE);
        match delta_base {
            Some(changed) if !(long && whole_allowed) => {
                drop(policy);
                snapshot::write_delta(&self.snapshots, name, store, changed.since, &changed.keys)
            }
            _ => {
                policy.last_whole = Some(std::time::Instant::now());
                drop(policy);
                snapshot::write_whole(&self.snapshots, name, store)
            }
        }
    }

    /// The position every read model has reached.
    pub fn position(&self) -> u64 {
        *self.position.borrow()
    }

    /// Whether the models have caught up with the newest head heard of, the log having answered
    /// at least once since the start and the last time it was asked.
    pub fn caught_up(&self) -> bool {
        self.log_readable.load(Ordering::Acquire)
            && self.position() >= self.head_seen.load(Ordering::Acquire)
    }

    /// Cuts answers to `bytes` (the transport's limit, such as NATS's `max_payload`).
    pub fn set_reply_bytes_max(&self, bytes: usize) {
        self.reply_bytes_max.store(bytes, Ordering::Relaxed);
    }

    /// Whether the log answered the last time it was read.
    pub fn log_readable(&self) -> bool {
        self.log_readable.load(Ordering::Acquire)
    }

    pub fn lag(&self) -> u64 {
        self.head_seen
            .load(Ordering::Acquire)
            .saturating_sub(self.position())
    }

    /// Applies envelopes to every model; returns the notices and the first position it could not
    /// apply (a gap, or an event that breaks the hash chain), if any.
    pub fn apply(
        &self,
        envelopes: &[Envelope],
    ) -> Result<(Vec<Notice>, Option<u64>), ProjectionError> {
        #[cfg(feature = "failpoints")]
        if let (Some(at), Some(last)) = (
            ims_log::failpoints::value("projector-panic-at"),
            envelopes.last(),
        ) {
            assert!(
                last.position() < at,
                "injected projector panic at position {at} (IMS_FAILPOINTS)"
            );
        }
        let mut models = self.models.write().expect("read model lock");
        let applied = models.0.apply(envelopes)?;
        models.1.apply(envelopes)?;
        if let Some(position) = applied.broken_at {
            // Only the service may publish events, so this is a forgery that got past NATS's
            // permissions or a corrupted message: refuse it and read the truth from the log.
            tracing::error!(region = %self.region, position, "an event does not chain to the last applied one (wrong prev_hash); refused, reading the log instead");
            metrics::counter!("ims_projection_chain_breaks_total", "region" => self.region.to_string()).increment(1);
        }
        let before = self.position();
        let position = models.0.checkpoint().min(models.1.checkpoint());
        let every = self
            .snapshot_policy
            .lock()
            .expect("snapshot policy lock")
            .every;
        if every > 0 && before / every != position / every {
            let changed = [models.0.take_changed(), models.1.take_changed()];
            drop(models);
            self.write_snapshots(changed);
        } else {
            drop(models);
        }
        if let Some(last) = envelopes.last() {
            self.head_seen.fetch_max(last.position(), Ordering::AcqRel);
        }
        self.position.send_replace(position);
        metrics::gauge!("ims_projection_position", "region" => self.region.to_string())
            .set(position as f64);
        metrics::gauge!("ims_projection_lag_events", "region" => self.region.to_string())
            .set(self.lag() as f64);
        Ok((applied.notices, applied.gap_at.or(applied.broken_at)))
    }

    /// Answers a query, first waiting (bounded) for `min_position` if it asks for one.
    pub async fn query(
        &self,
        tenant: &TenantId,
        query: Query,
        params: &QueryParams,
    ) -> Result<Answer, WireError> {
        let started = std::time::Instant::now();
        if let Some(wanted) = params.min_position {
            let mut position = self.position.subscribe();
            let reached = tokio::time::timeout(
                READ_YOUR_WRITES_WAIT_MAX,
                position.wait_for(|p| *p >= wanted),
            )
            .await;
            if !matches!(reached, Ok(Ok(_))) {
                return Err(WireError::new(
                    WireErrorCode::Stale,
                    format!("the read model is at position {} and did not reach min_position {wanted} within {READ_YOUR_WRITES_WAIT_MAX:?}; retry", self.position()),
                ));
            }
        }
        let models = self.models.read().expect("read model lock");
        let view = Models {
            region: &self.region,
            catalog: models.0.store(),
            usage: models.1.store(),
            position: self.position(),
            members_limit: self.members_limit,
            reply_bytes_max: self.reply_bytes_max.load(Ordering::Relaxed),
        };
        let result = answer(&view, tenant, query, params);
        metrics::histogram!("ims_query_seconds", "query" => query.as_str())
            .record(started.elapsed().as_secs_f64());
        result
    }

    /// Up to `max` rows of a model's store after key `after`, with the model's checkpoint: what
    /// an online `audit verify` compares with its own rebuild.
    pub fn rows(
        &self,
        model: &str,
        after: Option<&[u8]>,
        max: usize,
    ) -> Result<(u64, Vec<ims_projection::store::Entry>), WireError> {
        let models = self.models.read().expect("read model lock");
        let (store, checkpoint) = match model {
            "catalog" => (models.0.store(), models.0.checkpoint()),
            "usage" => (models.1.store(), models.1.checkpoint()),
            other => {
                return Err(WireError::new(
                    WireErrorCode::InvalidArgument,
                    format!("model {other:?} is not known; expected catalog or usage"),
                ))
            }
        };
        let start = after
            .map(|key| [key, &[0u8][..]].concat())
            .unwrap_or_default();
        let rows = store
            .scan_from(b"", start)
            .take(max)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| WireError::new(WireErrorCode::Internal, e.to_string()))?;
        Ok((checkpoint, rows))
    }

    fn saw_head(&self, head: u64) {
        self.head_seen.fetch_max(head, Ordering::AcqRel);
    }
}

/// The read-model folder of `region` under `data_dir`.
pub fn projections_path(data_dir: &Path, region: &RegionId) -> std::path::PathBuf {
    data_dir.join(region.as_str()).join("projections")
}

/// Why a catch-up stopped short of the head.
#[derive(Debug, thiserror::Error)]
enum CatchUpError {
    #[error(transparent)]
    BeyondHead(#[from] CheckpointBeyondHead),
    #[error(transparent)]
    LogRead(#[from] LogReadError),
    #[error(transparent)]
    Model(#[from] ProjectionError),
    #[error("log.read returned a batch with a gap at {0}")]
    Gap(u64),
}

/// Where the snapshots of the read models under `projections` are kept.
pub fn snapshots_path(projections: &Path) -> PathBuf {
    projections.join("snapshots")
}

/// Reads and applies the log from the checkpoint until the head.
async fn catch_up(
    client: &async_nats::Client,
    subjects: &Subjects,
    models: &RegionModels,
) -> Result<(), CatchUpError> {
    let reader =
        LogSource::online(client.clone(), subjects, &models.region).with_timeout(LOG_READ_TIMEOUT);
    loop {
        let from = models.position() + 1;
        let batch = match reader.batch(from, CATCH_UP_BATCH_EVENTS).await {
            Ok(batch) => batch,
            Err(error) => {
                models.log_readable.store(false, Ordering::Release);
                return Err(error.into());
            }
        };
        if batch.head < models.position() {
            return Err(CheckpointBeyondHead {
                region: models.region.clone(),
                checkpoint: models.position(),
                head: batch.head,
            }
            .into());
        }
        models.saw_head(batch.head);
        models.log_readable.store(true, Ordering::Release);
        if batch.envelopes.is_empty() {
            return Ok(());
        }
        let (_, gap) = models.apply(&batch.envelopes)?;
        if let Some(gap) = gap {
            return Err(CatchUpError::Gap(gap));
        }
        if models.position() >= batch.head {
            return Ok(());
        }
    }
}

async fn publish_notices(
    client: &async_nats::Client,
    subjects: &Subjects,
    region: &RegionId,
    notices: Vec<Notice>,
) {
    for notice in notices {
        let item = FeedItem {
            position: notice.position,
            at: ims_wire::time::rfc3339(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
            ),
            kind: notice.kind.to_owned(),
            image_id: notice.image_id.to_string(),
            message: notice.message,
        };
        // Tenant ids never start with '_', so `_all` cannot be a tenant's feed.
        let subject = match &notice.tenant {
            Some(tenant) => subjects.feed(region, tenant),
            None => subjects.feed_all(region),
        };
        if let Ok(payload) = serde_json::to_vec(&item) {
            let _ = client.publish(subject, Bytes::from(payload)).await;
        }
    }
}

/// Runs the projector of one region until `stop` completes.
pub async fn run_projector(
    client: async_nats::Client,
    subjects: Subjects,
    models: Arc<RegionModels>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), RoleError> {
    let region = models.region.clone();
    let events = subjects.events(&region);
    let mut live = client
        .subscribe(events.clone())
        .await
        .map_err(|e| RoleError::nats(format!("subscribing to {events}"), e))?;
    let mut tail_check = tokio::time::interval(TAIL_CHECK_INTERVAL);
    tokio::pin!(stop);
    let mut need_catch_up = true;
    loop {
        if need_catch_up {
            // A stop is not held up by a log.read that nobody answers (NATS down, the leader
            // gone): it waits for its timeout, seconds. Nothing is half-applied: the models
            // take each batch whole, between awaits.
            let caught_up = tokio::select! {
                _ = &mut stop => return Ok(()),
                caught_up = catch_up(&client, &subjects, &models) => caught_up,
            };
            match caught_up {
                Ok(()) => need_catch_up = false,
                Err(CatchUpError::BeyondHead(error)) => {
                    return Err(RoleError::Broken(error.to_string()))
                }
                // An event the read models cannot apply (of a type this release does not know,
                // or their storage failing) fails the same way on every retry: stop and say
                // which, rather than stay "catching up" with nothing in the log at info level.
                Err(CatchUpError::Model(error)) => {
                    return Err(RoleError::Broken(format!(
                        "the read models of region {region} cannot apply the log: {error}"
                    )))
                }
                Err(error) => tracing::debug!(%region, %error, "catch-up failed; retrying"),
            }
        }
        tokio::select! {
            _ = &mut stop => return Ok(()),
            _ = tail_check.tick() => need_catch_up = true,
            message = live.next() => {
                let Some(message) = message else { return Ok(()) };
                let mut payloads = vec![message.payload];
                while payloads.len() < LIVE_BATCH_EVENTS_MAX {
                    match futures::FutureExt::now_or_never(live.next()) {
                        Some(Some(message)) => payloads.push(message.payload),
                        _ => break,
                    }
                }
                let envelopes: Vec<Envelope> = payloads
                    .iter()
                    .filter_map(|payload| match Envelope::decode(payload) {
                        Ok(envelope) => Some(envelope),
                        Err(error) => {
                            tracing::warn!(%region, %error, "an undecodable live event was ignored; log.read will supply it");
                            None
                        }
                    })
                    .collect();
                match models.apply(&envelopes) {
                    Ok((notices, gap)) => {
                        if gap.is_some() {
                            need_catch_up = true;
                        }
                        publish_notices(&client, &subjects, &region, notices).await;
                    }
                    Err(error) => {
                        tracing::error!(%region, %error, "applying live events failed");
                        need_catch_up = true;
                    }
                }
            }
        }
    }
}
