//! The leader's lease of a region: the key `<region>` of the key-value bucket `ims_leases`,
//! created by whoever takes the lead and renewed at its revision. The bucket's entries lapse
//! after [`LEASE_TTL`], so a leader that dies or is cut off loses the lease without anyone
//! deleting it, and a standby creates the key again.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use ims_bus::LeaseDeadline;

use crate::ReplicationError;

/// The key-value bucket that holds one lease per region.
pub const LEASE_BUCKET: &str = "ims_leases";

/// How long a lease lasts unless renewed: the longest a region goes without a writer after its
/// leader dies, plus a standby's catch-up.
pub const LEASE_TTL: Duration = Duration::from_secs(4);

/// How often the leader renews its lease: four renewals per TTL, so one late renewal does not
/// lose it.
pub const LEASE_RENEW_EVERY: Duration = Duration::from_secs(1);

/// How long one call on the lease bucket may take: a renewal that does not come back within it
/// counts as failed, so that a leader whose connection stalls notices in time.
const LEASE_CALL_TIMEOUT: Duration = Duration::from_secs(1);

/// How much sooner than the bucket this node counts its lease as lapsed: room for the two clocks
/// to run at slightly different rates. The count starts when a renewal is sent, which is no
/// later than the bucket's write of it, so the reply's delay needs no room.
const LEASE_CLOCK_MARGIN: Duration = Duration::from_millis(250);

/// Runs `call` on the lease bucket within [`LEASE_CALL_TIMEOUT`].
async fn bounded<T, E: Into<async_nats::Error>>(
    doing: impl Fn() -> String,
    call: impl std::future::Future<Output = Result<T, E>>,
) -> Result<Result<T, E>, ReplicationError> {
    tokio::time::timeout(LEASE_CALL_TIMEOUT, call)
        .await
        .map_err(|_| {
            ReplicationError::nats(doing(), format!("no answer within {LEASE_CALL_TIMEOUT:?}"))
        })
}

/// One node's handle on a region's lease.
#[derive(Debug)]
pub struct Lease {
    store: kv::Store,
    region: String,
    node: String,
    /// The revision of our entry while we hold the lease.
    held: Option<u64>,
    /// Until when the lease is held by this node's clock.
    deadline: LeaseDeadline,
}

impl Lease {
    /// The lease of `region` for node `node`, creating the bucket (`replicas` copies) if needed.
    pub async fn open(
        client: &async_nats::Client,
        region: &str,
        node: &str,
        replicas: usize,
    ) -> Result<Self, ReplicationError> {
        let js = jetstream::new(client.clone());
        let store = match js.get_key_value(LEASE_BUCKET).await {
            Ok(store) => store,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: LEASE_BUCKET.to_owned(),
                    description: "ims: the leader of each region (DESIGN.md section 12)".into(),
                    history: 1,
                    max_age: LEASE_TTL,
                    storage: jetstream::stream::StorageType::File,
                    num_replicas: replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| ReplicationError::nats("creating the lease bucket ims_leases", e))?,
        };
        Ok(Self {
            store,
            region: region.to_owned(),
            node: node.to_owned(),
            held: None,
            deadline: LeaseDeadline::lapsed(),
        })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Until when the lease is held by this node's clock, for the endpoints that must not
    /// answer once it lapsed.
    pub fn deadline(&self) -> LeaseDeadline {
        self.deadline.clone()
    }

    /// Held from `asked`, when the write that took or renewed it was sent.
    fn hold(&mut self, revision: u64, asked: Instant) {
        self.held = Some(revision);
        self.deadline
            .hold_until(asked + LEASE_TTL - LEASE_CLOCK_MARGIN);
    }

    fn lose(&mut self) {
        self.held = None;
        self.deadline.end();
    }

    /// Takes the lease if nobody holds it. `Ok(false)`: another node does.
    pub async fn try_acquire(&mut self) -> Result<bool, ReplicationError> {
        let doing = || format!("taking the lease of region {}", self.region);
        let asked = Instant::now();
        let created = self
            .store
            .create(&self.region, Bytes::from(self.node.clone()));
        match bounded(doing, created).await? {
            Ok(revision) => {
                self.hold(revision, asked);
                Ok(true)
            }
            Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
            Err(error) => Err(ReplicationError::nats(doing(), error)),
        }
    }

    /// Renews a held lease. `Ok(false)`: it lapsed and someone else took it (or it is not held).
    pub async fn renew(&mut self) -> Result<bool, ReplicationError> {
        let Some(revision) = self.held else {
            return Ok(false);
        };
        let doing = || format!("renewing the lease of region {}", self.region);
        let asked = Instant::now();
        let updated = self
            .store
            .update(&self.region, Bytes::from(self.node.clone()), revision);
        match bounded(doing, updated).await? {
            Ok(revision) => {
                self.hold(revision, asked);
                Ok(true)
            }
            Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                self.lose();
                Ok(false)
            }
            Err(error) => Err(ReplicationError::nats(doing(), error)),
        }
    }

    /// Gives a held lease up at once, so that a standby need not wait for it to lapse.
    pub async fn release(&mut self) {
        if let Some(revision) = self.held {
            self.lose();
            let doing = || format!("releasing the lease of region {}", self.region);
            let deleted = self
                .store
                .delete_expect_revision(&self.region, Some(revision));
            let released = bounded(doing, deleted)
                .await
                .and_then(|deleted| deleted.map_err(|e| ReplicationError::nats(doing(), e)));
            if let Err(error) = released {
                tracing::debug!(%error, region = %self.region, "releasing the lease failed; it lapses");
            }
        }
    }

    /// The node holding the lease, if any.
    pub async fn holder(&self) -> Result<Option<String>, ReplicationError> {
        let entry = self
            .store
            .get(&self.region)
            .await
            .map_err(|e| ReplicationError::nats("reading the lease", e))?;
        Ok(entry.map(|value| String::from_utf8_lossy(&value).into_owned()))
    }
}
