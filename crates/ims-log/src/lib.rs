//! The durable event log of one ims region: the source of truth.
//!
//! An append writes a group of decided commands (their events, the stream index, their command
//! records with the stored replies, the head of the hash chain and the writer's snapshots) as one
//! atomic sled batch, then flushes and fdatasyncs once before anything is acknowledged; the
//! command-id index that retries are looked up in is derived from the records (`log/commands`).
//! Positions are region-wide, start at 1 and have no gaps; every event is chained to the one
//! before by SHA-256, so a rewrite of history is detectable by [`EventLog::verify`]. No API
//! deletes or rewrites events. With replication (DESIGN.md section 12),
//! [`EventLog::append_replicated`] hands each sealed group to the replicated log before writing
//! it, and a follower writes the same group with [`EventLog::append_groups`].
//!
//! Modules: `codec` (the only user of bincode), `envelope` (the stored record and its hash chain,
//! with the record format), `log` ([`EventLog`]; `log/replica`: [`GroupRecord`] and the
//! follower's append; `log/commands`: the command-id index; `log/streams`: the stream index;
//! `log/runs`: the sorted runs both indexes pack their entries in), `upcast` (reading old schema
//! versions).

mod codec;
mod envelope;
mod error;
mod log;
mod upcast;

pub use codec::{decode, encode, encoded_len};
pub use envelope::{chain_hash, Envelope, EnvelopeBody};
pub use error::LogError;
pub use log::{
    decode_record, encode_record, indexed_position, open_sled, AppendTimings, Appended, Broken,
    ChainCheck, CommandRecord, EventLog, GroupRecord, Head, LogBatch, NewCommand, NewEvent,
    Replicate, ReplicateFn, StoredCommand, INDEX_DUE_COMMANDS, OPEN_LOCK_WAIT_MAX,
    TAIL_CHECK_EVENTS,
};
pub use upcast::{decode_event, decode_tenant_snapshot, encode_event};

/// Fault injection for tests (feature `failpoints`): `IMS_FAILPOINTS=name=N,other=M` arms the
/// named failpoints of ims-log and ims-projector. Without the feature nothing here exists.
#[cfg(feature = "failpoints")]
pub mod failpoints {
    use std::collections::HashMap;
    use std::sync::OnceLock;

    /// The number given to failpoint `name`, if `IMS_FAILPOINTS` arms it.
    pub fn value(name: &str) -> Option<u64> {
        static ARMED: OnceLock<HashMap<String, u64>> = OnceLock::new();
        ARMED
            .get_or_init(|| {
                std::env::var("IMS_FAILPOINTS")
                    .unwrap_or_default()
                    .split(',')
                    .filter_map(|pair| pair.split_once('='))
                    .filter_map(|(name, n)| Some((name.trim().to_owned(), n.trim().parse().ok()?)))
                    .collect()
            })
            .get(name)
            .copied()
    }
}

/// Builds the [`NewEvent`] for a domain event at `stream_version` of its stream.
pub fn new_event(event: &ims_domain::Event, stream_version: u64) -> NewEvent {
    NewEvent {
        stream: event.stream().to_string(),
        stream_version,
        event_type: event.type_tag().to_owned(),
        schema_version: ims_domain::EVENT_SCHEMA_VERSION,
        payload: encode_event(event),
    }
}
