//! Replicated durability and failover of an ims region on JetStream (DESIGN.md section 12).
//!
//! - `log` ([`ReplicatedLog`]): the stream `IMS_LOG_<region>` of committed append groups. The
//!   leader publishes each group (split when larger than the server's `max_payload`) with
//!   `Nats-Expected-Last-Sequence`, so that a writer that is no longer the leader is fenced out,
//!   and its replicated ack is the commit point: only then does the group go to the local sled
//!   log. A node behind the stream appends what it misses, hash chain checked, before it serves
//!   commands; a standby follows the stream into its own log continuously.
//! - `lease` ([`Lease`]): who leads a region, as a key of the key-value bucket `ims_leases`
//!   whose entries lapse unless renewed.
//!
//! JetStream's Raft does the consensus; ims adds none of its own. The lease only decides who
//! tries to write: the expected last sequence decides who succeeds.

mod lease;
mod log;

pub use lease::{Lease, LEASE_BUCKET, LEASE_RENEW_EVERY, LEASE_TTL};
pub use log::{stream_name, ReplicatedLog};

/// Why replication could not go on.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("{doing}: {error}")]
    Nats {
        doing: String,
        error: async_nats::Error,
    },
    #[error(transparent)]
    Log(#[from] ims_log::LogError),
    #[error("{0}")]
    Diverged(String),
}

impl ReplicationError {
    fn nats(doing: impl Into<String>, error: impl Into<async_nats::Error>) -> Self {
        Self::Nats {
            doing: doing.into(),
            error: error.into(),
        }
    }
}
