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

mod describe;
mod history;
mod online;
mod replay;
mod verify;

pub use describe::{describe, summary};
pub use history::{event_json, history, history_json, image_owner};
pub use online::{as_of_online, serve_as_of, serve_audits, who_could_use_online};
pub use replay::{
    replay, replay_from_snapshots, replay_with_state, who_could_use_offline, Replayed, Until,
};
pub use verify::{
    first_difference, verify_chain, verify_models, verify_models_offline, verify_objects,
    LiveService, Rebuilt, REBUILD_ROWS_IN_MEMORY,
};

pub use ims_bus::{LogReadError, LogSource, SCAN_BATCH_EVENTS as AUDIT_BATCH_EVENTS};

/// sled's cache for a log an offline audit opens: it reads each event once or a few, so a
/// cache buys little but memory (`EventLog::open_with_cache`).
pub const OFFLINE_LOG_CACHE_BYTES: u64 = 8 << 20;

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
