//! `EventLog`: one sled database per region holding the events, the stream index, the command
//! records, the head of the hash chain and the writer's entity snapshots, all in one tree so that
//! an append is one atomic `apply_batch` followed by one flush and one fdatasync. The command-id
//! index derived from the records is a database of its own, `commands/` (see `commands.rs`).
//!
//! Keys (one tree, the first byte says what a key is):
//! - `e` + position (u64 big-endian): an event record holding a run of up to 4 KiB of one
//!   append's events, stored under the position of its last event (see [`encode_record`]);
//! - `S` + stream + `0x00` + chunk (u32 big-endian): the stream index, the positions of versions
//!   `chunk * 64 + 1` to `chunk * 64 + 64` of the stream, as u64 big-endian each (a key per 64
//!   events of a stream rather than per event: sled holds memory per key, about 38 bytes, from the
//!   moment it opens a database); the first release kept a key per event (`s` + stream + `0x00` +
//!   version), which `open` converts. A stream's first chunk is stored once the stream has two
//!   events; until then its birth says where its one event is (see `streams.rs`);
//! - `B` + stream: the stream index's births, runs of (stream, position of its first event)
//!   sorted by stream (`runs.rs`);
//! - `p` + position (u64 big-endian): the [`CommandRecord`]s of an append (usually all in one
//!   key), stored under the last position of the last one;
//! - `a` + command id (16 bytes) + actor: a [`StoredCommand`], with the digest of the command;
//!   command ids are scoped by actor, so one principal can never see another's reply. Written
//!   here by releases before the index moved to `commands/` (whose rows were the same until
//!   runs replaced them), and still read for them;
//! - `c` + command id (16 bytes): a command record of releases before actor scoping (no digest),
//!   still honoured for the actor its events name;
//! - `h`: the head, position (u64 big-endian) then hash (32 bytes);
//! - `n` + key: a snapshot written by the command writer in the same batch as its events;
//! - `r`: with replication, the stream sequence (u64 big-endian) of the last group written.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{codec, Envelope, EnvelopeBody, LogError};

const EVENT: u8 = b'e';
/// The stream index of the first release: a key per event. Converted by `open`.
const STREAM_PER_EVENT: u8 = b's';
const STREAM: u8 = b'S';
/// Positions per key of the stream index.
const STREAM_CHUNK_EVENTS: u64 = 64;
/// Command records of releases before actor scoping: the id alone.
const COMMAND_UNSCOPED: u8 = b'c';
const COMMAND: u8 = b'a';
const HEAD: &[u8] = b"h";
const SNAPSHOT: u8 = b'n';
/// The command records of an append, from which the command index is derived (`log/commands`).
const COMMAND_RECORDS: u8 = b'p';
/// With replication: the stream sequence of the last replicated group the log holds.
const REPLICATED: &[u8] = b"r";

/// How many of the last events `open` checks for contiguity and chain validity: enough to catch a
/// torn tail after a crash while keeping start-up well under a second on any log size.
pub const TAIL_CHECK_EVENTS: u64 = 1024;

/// The newest durable event: its position and hash (zeros for an empty log).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub position: u64,
    pub hash: [u8; 32],
}

/// One event to append; `stream_version` must be the stream's current version plus one.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub stream: String,
    pub stream_version: u64,
    pub event_type: String,
    pub schema_version: u16,
    pub payload: Vec<u8>,
}

/// One decided command: its events go in together or not at all.
#[derive(Clone, Debug)]
pub struct NewCommand {
    pub command_id: Option<Uuid>,
    pub actor: String,
    pub recorded_at_ms: u64,
    pub events: Vec<NewEvent>,
    /// A digest of what the command asked, kept with its command id so that a retry can be told
    /// apart from another command reusing the id.
    pub digest: Option<[u8; 32]>,
    /// The reply to return to a retry with the same command id.
    pub reply: Vec<u8>,
    /// Snapshots to write in the same batch (key, value).
    pub snapshots: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What the command-id index keeps of an appended command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCommand {
    pub first_position: u64,
    pub last_position: u64,
    pub reply: Vec<u8>,
    /// The command's digest; `None` for records of releases that kept none.
    pub digest: Option<[u8; 32]>,
}

/// The command record of releases before actor scoping, as stored under `c` keys.
#[derive(Deserialize)]
struct UnscopedCommand {
    first_position: u64,
    last_position: u64,
    reply: Vec<u8>,
}

/// The result of one command of a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Appended {
    /// Written and durable: the positions it got and the sealed envelopes.
    New {
        first_position: u64,
        last_position: u64,
        envelopes: Vec<Envelope>,
    },
    /// Its command id was seen before: nothing written, here is what the first one got.
    Duplicate(StoredCommand),
    /// A stream was not at the version the command was decided against: nothing written.
    Conflict {
        stream: String,
        expected_version: u64,
        actual_version: u64,
    },
}

/// A first bad position found by [`EventLog::verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Broken {
    pub position: u64,
    pub problem: String,
}

#[derive(Debug)]
struct Shared {
    db: sled::Db,
    data_file: File,
    region: String,
    path: PathBuf,
    /// Serialises appends; holds the head as of the last durable append.
    writer: Mutex<Head>,
    /// The last position that is on disk; readers never see past it.
    durable_position: AtomicU64,
    poisoned: AtomicBool,
    commands: commands::CommandIndex,
    stream_index: streams::StreamIndexTails,
    /// Whether the log holds command records of releases that kept the index in it.
    legacy_commands: bool,
}

/// The event log of one region. Cheap to clone; appends are serialised, reads run alongside.
#[derive(Clone, Debug)]
pub struct EventLog {
    shared: Arc<Shared>,
}

mod append;
mod commands;
mod keys;
mod replica;
mod runs;
mod streams;
mod verify;

pub use append::AppendTimings;
pub use commands::{indexed_position, INDEX_DUE_COMMANDS};
use keys::*;
pub use keys::{decode_record, encode_record};
pub use replica::{CommandRecord, GroupRecord, Replicate, ReplicateFn};
pub use verify::ChainCheck;

impl EventLog {
    /// Opens (or creates) the log at `path` for `region`, checking the last
    /// [`TAIL_CHECK_EVENTS`] events: contiguous positions, a valid chain, and a head that matches.
    pub fn open(path: impl AsRef<Path>, region: &str) -> Result<Self, LogError> {
        Self::open_with_cache(path, region, 64 << 20)
    }

    /// [`EventLog::open`] with sled's cache set to `cache_bytes`. An offline audit reads the
    /// log once: a probe that opens a 10M-event log and reads every event record peaked at
    /// 277 MB with the service's 64 MiB and 236 MB with 8 MiB.
    pub fn open_with_cache(
        path: impl AsRef<Path>,
        region: &str,
        cache_bytes: u64,
    ) -> Result<Self, LogError> {
        let path = path.as_ref().to_path_buf();
        let db = open_sled(sled::Config::new().path(&path).cache_capacity(cache_bytes))?;
        // sled 0.34's flush uses sync_file_range, which does not reach the device's cache; an
        // fdatasync on its data file after each flush makes an acknowledged append survive power
        // loss too (DESIGN.md section 3).
        let data_file = File::open(path.join("db"))?;
        let head = read_head(&db)?;
        let legacy_commands = commands::has_legacy_commands(&db)?;
        let stream_index = streams::StreamIndexTails::read(&db)?;
        let log = Self {
            shared: Arc::new(Shared {
                db,
                data_file,
                region: region.to_owned(),
                path,
                writer: Mutex::new(head),
                durable_position: AtomicU64::new(head.position),
                poisoned: AtomicBool::new(false),
                commands: Default::default(),
                stream_index,
                legacy_commands,
            }),
        };
        log.convert_stream_index()?;
        log.check_tail(head)?;
        Ok(log)
    }

    /// Converts a stream index of the first release (a key per event) into chunks, in one atomic
    /// batch. Logs written since have none, so this costs one empty scan.
    fn convert_stream_index(&self) -> Result<(), LogError> {
        let db = &self.shared.db;
        let mut batch = sled::Batch::default();
        let mut chunks: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = Default::default();
        for item in db.scan_prefix([STREAM_PER_EVENT]) {
            let (key, position) = item?;
            // `s` + stream + 0x00 + version (8 bytes), versions in order within a stream.
            let stream = String::from_utf8_lossy(&key[1..key.len() - 9]).into_owned();
            let version = be_u64(&key[key.len() - 8..]);
            chunks
                .entry(stream_chunk_key(&stream, version))
                .or_default()
                .extend_from_slice(&position);
            batch.remove(key);
        }
        if chunks.is_empty() {
            return Ok(());
        }
        for (key, chunk) in chunks {
            batch.insert(key, chunk);
        }
        db.apply_batch(batch)?;
        db.flush()?;
        self.shared.data_file.sync_data()?;
        Ok(())
    }

    fn check_tail(&self, head: Head) -> Result<(), LogError> {
        let last_stored = self
            .shared
            .db
            .scan_prefix([EVENT])
            .next_back()
            .transpose()?
            .map_or(0, |(key, _)| be_u64(&key[1..]));
        if last_stored != head.position {
            return Err(LogError::Broken {
                position: last_stored.max(head.position),
                problem: format!(
                    "the head says {} but the last stored event is {last_stored}",
                    head.position
                ),
            });
        }
        if head.position == 0 {
            return Ok(());
        }
        let from = head.position.saturating_sub(TAIL_CHECK_EVENTS).max(1);
        if let Err(broken) = self.verify(from..=head.position)? {
            return Err(LogError::Broken {
                position: broken.position,
                problem: broken.problem,
            });
        }
        let last = self.read_range(head.position, 1)?;
        if last.first().map(|e| e.hash) != Some(head.hash) {
            return Err(LogError::Broken {
                position: head.position,
                problem: "the head's hash differs from the last event's hash".to_owned(),
            });
        }
        Ok(())
    }

    pub fn region(&self) -> &str {
        &self.shared.region
    }

    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The newest durable position (0 for an empty log).
    pub fn head_position(&self) -> u64 {
        self.shared.durable_position.load(Ordering::Acquire)
    }

    /// The newest durable event's position and hash.
    pub fn head(&self) -> Head {
        *self.shared.writer.lock().expect("log writer lock")
    }

    /// A snapshot written with an append.
    pub fn snapshot(&self, key: &[u8]) -> Result<Option<Vec<u8>>, LogError> {
        Ok(self
            .shared
            .db
            .get(snapshot_key(key))?
            .map(|value| value.to_vec()))
    }

    /// Up to `max` durable events from position `from` on.
    pub fn read_range(&self, from: u64, max: usize) -> Result<Vec<Envelope>, LogError> {
        self.iter_from(from).take(max).collect()
    }

    /// Every durable event from `from` on, as of the call, streamed in position order.
    pub fn iter_from(&self, from: u64) -> impl Iterator<Item = Result<Envelope, LogError>> + '_ {
        let until = self.head_position();
        let from = from.max(1);
        // Records are keyed by their last position, so the first one at or after `from` holds it;
        // and appends are whole records, so the durable head is always the key of a record.
        self.shared
            .db
            .range(event_key(from)..=event_key(until))
            .flat_map(move |item| {
                let record = item
                    .map_err(LogError::from)
                    .and_then(|(key, value)| decode_record(&value, be_u64(&key[1..])));
                let (mut envelopes, error) = match record {
                    Ok(envelopes) => (envelopes, None),
                    Err(error) => (Vec::new(), Some(Err(error))),
                };
                envelopes.retain(|envelope| envelope.position() >= from);
                envelopes.into_iter().map(Ok).chain(error)
            })
    }

    /// The record holding `position`, if one is stored.
    fn record_holding(&self, position: u64) -> Result<Vec<Envelope>, LogError> {
        match self
            .shared
            .db
            .range(event_key(position)..=event_key(u64::MAX))
            .next()
            .transpose()?
        {
            None => Ok(Vec::new()),
            Some((key, value)) => decode_record(&value, be_u64(&key[1..])),
        }
    }
}
/// An event of stream `image-x` at `position` (its version too), sealed onto `prev_hash`.
#[cfg(test)]
fn test_envelope(position: u64, prev_hash: [u8; 32], payload: Vec<u8>) -> Envelope {
    let body = EnvelopeBody {
        position,
        event_id: [1; 16],
        stream: "image-x".into(),
        stream_version: position,
        command_id: None,
        actor: "operator".into(),
        region: "test-1".into(),
        recorded_at_ms: 0,
        event_type: "image_created".into(),
        schema_version: 1,
        payload,
    };
    Envelope::seal(body, prev_hash)
}

/// How long an open waits for a database that another handle (of this process, just dropped,
/// whose sled threads are still winding down) or a previous process still locks.
pub const OPEN_LOCK_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens a sled database, waiting up to [`OPEN_LOCK_WAIT_MAX`] for its file lock: sled releases
/// the lock only when its background threads have finished, a moment after the last handle is
/// dropped.
pub fn open_sled(config: sled::Config) -> Result<sled::Db, sled::Error> {
    let started = std::time::Instant::now();
    loop {
        match config.open() {
            Err(sled::Error::Io(error))
                if error.to_string().contains("could not acquire lock")
                    && started.elapsed() < OPEN_LOCK_WAIT_MAX =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

fn read_head(db: &sled::Db) -> Result<Head, LogError> {
    match db.get(HEAD)? {
        None => Ok(Head {
            position: 0,
            hash: [0; 32],
        }),
        Some(bytes) if bytes.len() == 40 => {
            let mut hash = [0u8; 32];
            hash.copy_from_slice(&bytes[8..]);
            Ok(Head {
                position: be_u64(&bytes),
                hash,
            })
        }
        Some(bytes) => Err(LogError::Corrupt {
            what: "log head".to_owned(),
            reason: format!("{} bytes, expected 40", bytes.len()),
        }),
    }
}

/// A reply of `ims.v1.<region>.log.read`: a bounded batch of envelopes and the durable head.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogBatch {
    pub envelopes: Vec<Envelope>,
    pub head: u64,
}

impl LogBatch {
    /// The longest prefix of `envelopes` whose batch encodes to at most `bytes_max`, but never
    /// less than one envelope (every envelope is far smaller than any NATS payload limit). The
    /// reader continues from the position after the last one it got.
    pub fn cut(mut envelopes: Vec<Envelope>, head: u64, bytes_max: usize) -> Self {
        // The batch is a u64 count, the envelopes, then the u64 head.
        let mut bytes = 16u64;
        let mut keep = 0;
        for envelope in &envelopes {
            bytes += codec::encoded_len(envelope);
            if keep > 0 && bytes > bytes_max as u64 {
                break;
            }
            keep += 1;
        }
        envelopes.truncate(keep);
        Self { envelopes, head }
    }
}
