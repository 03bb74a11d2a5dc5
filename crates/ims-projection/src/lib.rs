//! The read side of ims: named projections fold a region's events into their own read models,
//! and queries answer from them.
//!
//! A [`ReadModel`] applies events in position order, exactly once: the model's changes and its
//! checkpoint (the last applied position) are committed in one atomic batch, anything at or below
//! the checkpoint is skipped, and a gap stops the batch so that the caller fills it from the log.
//! A model rebuilt from position 1 is byte-for-byte the model folded live.
//!
//! Modules: `store` (sled or in-memory storage and the batch of changes), `catalog` (images,
//! visibility indexes, feeds), `usage` (the Marketplace usage ledger), `queries` (the answers of
//! DESIGN.md section 5), `snapshot` (a model's rows at a checkpoint, for audits as of a past
//! position).

pub mod catalog;
mod layered;
pub mod queries;
pub mod snapshot;
pub mod store;
pub mod synthetic;
pub mod usage;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use ims_domain::{Event, ImageId, TenantId};
use ims_log::{decode_event, Envelope, LogError};
use thiserror::Error;

pub use catalog::Catalog;
pub use store::Store;
pub use usage::UsageLedger;

use store::Changes;

#[derive(Debug, Error)]
pub enum ProjectionError {
    #[error("read model storage error: {0}")]
    Storage(#[from] sled::Error),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("read model snapshot: {0}")]
    Snapshot(String),
}

/// A notification produced while folding: for one tenant, or every tenant (`None`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub tenant: Option<TenantId>,
    pub kind: &'static str,
    pub image_id: ImageId,
    pub message: String,
    pub position: u64,
}

/// One projection's fold: how an event changes its read model.
pub trait Fold {
    /// The projection's name, as audits and `audit.rows` call it.
    const NAME: &'static str;

    /// The version of the model's key layout. A model lives in `<NAME>.v<LAYOUT>` under the
    /// region's `projections/`, so a new layout starts from an empty folder and the projector
    /// rebuilds it from the log; the old folder can be deleted.
    const LAYOUT: u32;

    /// Whether events of this type tag can change the model; the others are not even decoded,
    /// so a model that reads few event types costs little to keep up.
    fn wants(&self, _event_type: &str) -> bool {
        true
    }

    fn apply(
        &self,
        store: &Store,
        changes: &mut Changes,
        envelope: &Envelope,
        event: &Event,
    ) -> Result<Vec<Notice>, ProjectionError>;
}

/// What one call of [`ReadModel::apply`] did.
#[derive(Debug, Default)]
pub struct Applied {
    pub applied: usize,
    pub notices: Vec<Notice>,
    /// Set when an envelope past checkpoint + 1 arrived: the first missing position.
    pub gap_at: Option<u64>,
    /// Set when the envelope at checkpoint + 1 does not chain to the last applied one (its
    /// `prev_hash` is not that event's hash): a forged or corrupt event, refused with all after
    /// it. The caller reads that position from the log instead.
    pub broken_at: Option<u64>,
}

/// A read model and its checkpoint.
#[derive(Debug)]
pub struct ReadModel<F> {
    store: Store,
    checkpoint: u64,
    /// The hash of the event at the checkpoint (`None`: unknown, for models of older releases).
    checkpoint_hash: Option<[u8; 32]>,
    fold: F,
    _db: Option<sled::Db>,
    /// When kept: the keys changed since a position, for a delta snapshot.
    changed: Option<Changed>,
}

/// The keys a model changed after `since`, in order.
#[derive(Debug, Default)]
pub struct Changed {
    pub since: u64,
    pub keys: BTreeSet<Vec<u8>>,
}

impl<F: Fold> ReadModel<F> {
    /// Opens (or creates) the model under `dir/<name>`, as the service does, with a cache of
    /// 64 MiB. The cache weighs most when something reads every row: on a 10M-event region,
    /// imsd peaked at 2.3 GB during an online `audit verify` with 256 MiB and at 1.4 GB with
    /// 64 MiB while sled counted a page at its size on disk, a fraction of what it holds in
    /// memory for small rows (558 MiB since it counts what the node holds, sled patch 10; 431
    /// MiB on a region written with sled patch 12's fuller leaves);
    /// queries (`http-bench`: p99 1.11-1.14 ms either way) and the projector's rebuild into
    /// sled (80,600-91,600 events/s) did not tell 64 and 256 MiB apart.
    pub fn open(dir: &Path, fold: F) -> Result<Self, ProjectionError> {
        Self::open_with_cache(dir, fold, 64 << 20)
    }

    /// [`ReadModel::open`] with sled's cache set to `cache_bytes`: a full read of a 10M-event
    /// catalog (`audit verify` offline) peaked at 2.0 GB with 256 MiB and 1.1 GB with 32 MiB.
    pub fn open_with_cache(dir: &Path, fold: F, cache_bytes: u64) -> Result<Self, ProjectionError> {
        let db = ims_log::open_sled(
            sled::Config::new()
                .path(dir.join(format!("{}.v{}", F::NAME, F::LAYOUT)))
                .cache_capacity(cache_bytes),
        )?;
        let store = Store::Sled(db.open_tree("model")?);
        let checkpoint = store.checkpoint()?;
        let checkpoint_hash = store.checkpoint_hash()?;
        Ok(Self {
            store,
            checkpoint,
            checkpoint_hash,
            fold,
            _db: Some(db),
            changed: None,
        })
    }

    /// An empty model for a rebuild in bounded memory: past `overlay_max` changed rows it
    /// writes them to files in `scratch` (a folder it owns), which it merges now and then.
    pub fn spilling(fold: F, scratch: std::path::PathBuf, overlay_max: usize) -> Self {
        /// Files stacked before they are merged: each lookup reads through at most this many.
        const FILES_MAX: usize = 8;
        Self::empty(
            fold,
            Store::Layered(layered::Layered::spilling(scratch, overlay_max, FILES_MAX)),
        )
    }

    /// A model with nothing applied yet, in `store`.
    fn empty(fold: F, store: Store) -> Self {
        Self {
            store,
            checkpoint: 0,
            checkpoint_hash: Some([0; 32]),
            fold,
            _db: None,
            changed: None,
        }
    }

    /// A model in memory, for rebuilds and comparisons.
    pub fn in_memory(fold: F) -> Self {
        Self::in_memory_for(fold, 0)
    }

    /// The model a chain of snapshot files holds (newest first, as
    /// [`snapshot::open_chain`] gives it), at its checkpoint; what is applied to it stays in
    /// memory.
    pub fn from_snapshots(
        fold: F,
        files: Vec<snapshot::FileReader>,
    ) -> Result<Self, ProjectionError> {
        let store = Store::Layered(layered::Layered::new(files));
        Ok(Self {
            checkpoint: store.checkpoint()?,
            checkpoint_hash: store.checkpoint_hash()?,
            store,
            fold,
            _db: None,
            changed: None,
        })
    }

    /// A model in memory for a rebuild of about `events` events: its map is sized up front
    /// (about one key per event), rather than rehashed a score of times as it grows.
    pub fn in_memory_for(fold: F, events: u64) -> Self {
        let capacity = usize::try_from(events).unwrap_or(usize::MAX);
        Self::empty(
            fold,
            Store::Memory(HashMap::with_capacity_and_hasher(
                capacity,
                Default::default(),
            )),
        )
    }

    /// The last applied position.
    pub fn checkpoint(&self) -> u64 {
        self.checkpoint
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Writes what a spilling model holds in memory to one scratch file (see
    /// [`ReadModel::spilling`]), for a model only read for a while; nothing for other models.
    pub fn settle(&mut self) -> Result<(), ProjectionError> {
        match &mut self.store {
            Store::Layered(layered) => layered.settle(),
            _ => Ok(()),
        }
    }

    /// Starts or stops keeping the keys changed from now on (see [`ReadModel::take_changed`]).
    pub fn keep_changed(&mut self, keep: bool) {
        self.changed = keep.then(|| Changed {
            since: self.checkpoint,
            keys: BTreeSet::new(),
        });
    }

    /// The keys changed since they were last taken (or kept), and from when; keeping goes on
    /// from the checkpoint.
    pub fn take_changed(&mut self) -> Option<Changed> {
        let since = self.checkpoint;
        self.changed.as_mut().map(|changed| {
            std::mem::replace(
                changed,
                Changed {
                    since,
                    keys: BTreeSet::new(),
                },
            )
        })
    }

    /// Applies `envelopes` (in position order) after the checkpoint, in one atomic batch;
    /// skips those already applied and stops at a gap.
    pub fn apply(&mut self, envelopes: &[Envelope]) -> Result<Applied, ProjectionError> {
        let mut changes = Changes::default();
        let mut applied = Applied::default();
        let mut checkpoint = self.checkpoint;
        let mut checkpoint_hash = self.checkpoint_hash;
        for envelope in envelopes {
            let position = envelope.position();
            if position <= checkpoint {
                continue;
            }
            if position != checkpoint + 1 {
                applied.gap_at = Some(checkpoint + 1);
                break;
            }
            if checkpoint_hash.is_some_and(|hash| hash != envelope.prev_hash) {
                applied.broken_at = Some(position);
                break;
            }
            checkpoint_hash = Some(envelope.hash);
            if self.fold.wants(&envelope.body.event_type) {
                let event = decode_event(envelope)?;
                let notices = self
                    .fold
                    .apply(&self.store, &mut changes, envelope, &event)?;
                applied.notices.extend(notices);
            }
            checkpoint = position;
            applied.applied += 1;
        }
        if let (true, Some(hash)) = (checkpoint != self.checkpoint, checkpoint_hash) {
            if let Some(changed) = &mut self.changed {
                changed.keys.extend(changes.touched());
            }
            changes.commit(&mut self.store, checkpoint, hash)?;
            self.checkpoint = checkpoint;
            self.checkpoint_hash = checkpoint_hash;
        }
        Ok(applied)
    }
}
