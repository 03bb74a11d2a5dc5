use thiserror::Error;

/// What can go wrong with the log. A failed append leaves nothing acknowledged.
#[derive(Debug, Error)]
pub enum LogError {
    #[error("storage error in the event log: {0}")]
    Storage(#[from] sled::Error),
    #[error("i/o error syncing the event log: {0}")]
    Io(#[from] std::io::Error),
    #[error("{what} cannot be decoded: {reason}")]
    Corrupt { what: String, reason: String },
    #[error("the log is broken at position {position}: {problem}")]
    Broken { position: u64, problem: String },
    #[error(
        "event at position {position} has type {event_type:?} schema version {schema_version}, \
         which this release cannot read; upgrade ims"
    )]
    UnknownSchema {
        position: u64,
        event_type: String,
        schema_version: u16,
    },
    /// The replicated log (DESIGN.md section 12) did not take the group, so nothing of it was
    /// written here either. `fenced`: another writer has appended since, so this one no longer
    /// leads; otherwise the outcome is unknown until the node catches up from the stream.
    #[error("the group was not replicated{}: {reason}", if *.fenced { " (fenced: another writer leads)" } else { "" })]
    NotReplicated { fenced: bool, reason: String },
    #[error("an earlier write or flush failed, so the log refuses appends until it is reopened")]
    Poisoned,
}
