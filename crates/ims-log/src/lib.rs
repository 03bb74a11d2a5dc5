//! The durable event log of one ims region: the source of truth.
//!
//! An append writes a group of decided commands (their events, the stream index, the command-id
//! index with the stored reply, the head of the hash chain and the writer's snapshots) as one
//! atomic sled batch, then flushes and fdatasyncs once before anything is acknowledged. Positions
//! are region-wide, start at 1 and have no gaps; every event is chained to the one before by
//! SHA-256, so a rewrite of history is detectable by [`EventLog::verify`]. No API deletes or
//! rewrites events.
//!
//! Modules: `codec` (the only user of bincode), `envelope` (the stored record and its hash chain,
//! with the record format), `log` ([`EventLog`]), `upcast` (reading old schema versions).

mod codec;
mod envelope;
mod error;
mod log;
mod upcast;

pub use codec::{decode, encode, encoded_len};
pub use envelope::{chain_hash, Envelope, EnvelopeBody};
pub use error::LogError;
pub use log::{
    decode_record, encode_record, open_sled, Appended, Broken, EventLog, Head, LogBatch,
    NewCommand, NewEvent, StoredCommand, OPEN_LOCK_WAIT_MAX, TAIL_CHECK_EVENTS,
};
pub use upcast::{decode_event, encode_event};

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
