//! The stream index: where each stream's events are.
//!
//! - `S` + stream + `0x00` + chunk (u32 big-endian): the positions of versions `chunk * 64 + 1`
//!   to `chunk * 64 + 64`, 8 bytes each (see the module documentation of `log`).
//! - Births, runs of tag `B` (`log/runs`): a stream whose first chunk is not stored holds one
//!   event, at the position its birth gives. Most streams are born by an append that does not
//!   write their second event (every image is created so), and the log bench ran 15% faster
//!   without their chunk rows; packed as runs, the births of an append of new images (ids v7,
//!   in order) are a row or two. The first append of a stream's second event writes
//!   its first chunk, whole; its birth stays, saying the same. Logs written before births have
//!   every first chunk.
//!
//! The append's checks read chunks through [`super::keys::Chunks`], which falls back on the
//! births for a first chunk; [`StreamTails`] answers most "does this new stream exist?" without
//! a read.

use std::collections::BTreeMap;

use super::runs::{self, Entry, LastRun};
use super::*;

/// The tag of the births' runs.
const BIRTH: u8 = b'B';

/// The births' last run, as stored, and the greatest stream name of each kind (`tenant/`,
/// `image/`) in the stream index.
#[derive(Debug, Default)]
pub(super) struct StreamIndexTails {
    births: Mutex<LastRun>,
    kinds: StreamTails,
}

impl StreamIndexTails {
    pub(super) fn read(db: &sled::Db) -> Result<Self, LogError> {
        Ok(Self {
            births: Mutex::new(runs::last(db, BIRTH)?),
            kinds: StreamTails::default(),
        })
    }
}

/// The greatest stream name of each kind of stream (a name up to its first `/`: `image/`,
/// `tenant/`) with chunks or a birth, read from sled on first use and raised as streams are
/// written: a stream whose name sorts past its kind's greatest holds no event, known without a
/// read. Images are named by UUIDs v7, which sort by the millisecond they were made in, so
/// every new image is such a stream (a read that finds nothing was 6% of the log bench's
/// appends). A greatest name too high only costs a read; every written stream raises it before
/// it is written.
#[derive(Debug, Default)]
struct StreamTails(Mutex<HashMap<Vec<u8>, Vec<u8>>>);

/// A stream name's kind: up to its first `/`, or the whole name.
fn kind(stream: &[u8]) -> &[u8] {
    let end = stream
        .iter()
        .position(|&byte| byte == b'/')
        .map_or(stream.len(), |at| at + 1);
    &stream[..end]
}

/// The stream a stream-index key is for (`S` + stream + `0x00` + chunk number).
pub(super) fn stream_of(chunk_key: &[u8]) -> &[u8] {
    &chunk_key[1..chunk_key.len() - 5]
}

impl EventLog {
    fn tails(&self) -> &StreamIndexTails {
        &self.shared.stream_index
    }

    /// Whether `stream` sorts past every stream of its kind in the index, so that it holds no
    /// event.
    pub(super) fn stream_is_past_last(&self, stream: &str) -> Result<bool, LogError> {
        let stream = stream.as_bytes();
        let kind = kind(stream);
        let mut tails = self.tails().kinds.0.lock().expect("stream tails lock");
        if !tails.contains_key(kind) {
            let db = &self.shared.db;
            let chunked = db.scan_prefix([&[STREAM][..], kind].concat()).next_back();
            let chunked = chunked
                .transpose()?
                .map(|(key, _)| stream_of(&key).to_vec());
            let born = runs::last_with_prefix(db, BIRTH, kind)?;
            let greatest = chunked.max(born).unwrap_or_default();
            tails.insert(kind.to_vec(), greatest);
        }
        Ok(tails.get(kind).is_some_and(|last| stream > last.as_slice()))
    }

    /// Notes that `stream` is being written to the index.
    fn raise_tail(&self, stream: &[u8]) {
        let mut tails = self.tails().kinds.0.lock().expect("stream tails lock");
        if let Some(last) = tails
            .get_mut(kind(stream))
            .filter(|last| stream > last.as_slice())
        {
            *last = stream.to_vec();
        }
    }

    /// The positions the stream-index chunk at `key` holds: stored, or for a first chunk that
    /// is not, the stream's birth (none for a stream without events).
    pub(super) fn stored_chunk(&self, key: &[u8]) -> Result<Vec<u8>, LogError> {
        if let Some(chunk) = self.shared.db.get(key)? {
            return Ok(chunk.to_vec());
        }
        let birth = match is_first_chunk(key) {
            true => self.birth(stream_of(key))?,
            false => None,
        };
        Ok(birth.map_or_else(Vec::new, |position| position.to_be_bytes().to_vec()))
    }

    /// The position of `stream`'s one event, if its birth is stored.
    pub(super) fn birth(&self, stream: &[u8]) -> Result<Option<u64>, LogError> {
        let last_run = self.tails().births.lock().expect("births lock");
        runs::find(&self.shared.db, BIRTH, &last_run, stream)
    }

    /// Puts the stream index's `chunks` that an append changed in `batch`: a new stream's first
    /// chunk as a birth, the others as chunks. Returns the births' last run once `batch` is
    /// written, if it writes births.
    pub(super) fn write_stream_index(
        &self,
        chunks: impl Iterator<Item = (Vec<u8>, Vec<u8>)>,
        batch: &mut sled::Batch,
    ) -> Result<Option<LastRun>, LogError> {
        let mut births = Vec::new();
        for (key, chunk) in chunks {
            let stream = stream_of(&key);
            self.raise_tail(stream);
            // One position in a first chunk: a stream born by this append.
            if chunk.len() == 8 && is_first_chunk(&key) {
                let position = be_u64(&chunk);
                births.push(Entry {
                    key: stream.to_vec(),
                    position,
                });
                continue;
            }
            batch.insert(key, chunk);
        }
        if births.is_empty() {
            return Ok(None);
        }
        let last_run = self.tails().births.lock().expect("births lock");
        let (rows, last_run) = runs::merge(&self.shared.db, BIRTH, &last_run, births)?;
        for (key, value) in rows {
            batch.insert(key, value);
        }
        Ok(Some(last_run))
    }

    /// Keeps the births' last run once the append that wrote it is durable.
    pub(super) fn births_written(&self, last_run: Option<LastRun>) {
        if let Some(last_run) = last_run {
            *self.tails().births.lock().expect("births lock") = last_run;
        }
    }

    /// The positions of `stream`'s events, in stream order: its chunks, or its birth.
    fn stream_positions(&self, stream: &str) -> Result<Vec<u64>, LogError> {
        let mut stream_positions = Vec::new();
        for item in self.shared.db.scan_prefix(stream_prefix(STREAM, stream)) {
            stream_positions.extend(positions(&item?.1));
        }
        if stream_positions.is_empty() {
            stream_positions.extend(self.birth(stream.as_bytes())?);
        }
        Ok(stream_positions)
    }

    /// The current version of `stream`: how many events it holds.
    pub fn stream_version(&self, stream: &str) -> Result<u64, LogError> {
        let last = self
            .shared
            .db
            .scan_prefix(stream_prefix(STREAM, stream))
            .next_back()
            .transpose()?;
        match last {
            Some((key, chunk)) => {
                let mut number = [0u8; 4];
                number.copy_from_slice(&key[key.len() - 4..]);
                let full = u64::from(u32::from_be_bytes(number)) * STREAM_CHUNK_EVENTS;
                Ok(full + chunk.len() as u64 / 8)
            }
            None => Ok(u64::from(self.birth(stream.as_bytes())?.is_some())),
        }
    }

    /// The position of the first event of every stream whose name starts with `prefix` (for
    /// example `tenant/`: when each tenant was registered), read from the stream index alone.
    pub fn stream_starts(&self, prefix: &str) -> Result<Vec<(String, u64)>, LogError> {
        let mut starts = BTreeMap::new();
        for birth in runs::with_prefix(&self.shared.db, BIRTH, prefix.as_bytes())? {
            let name = String::from_utf8_lossy(&birth.key).into_owned();
            starts.insert(name, birth.position);
        }
        for item in self
            .shared
            .db
            .scan_prefix([&[STREAM][..], prefix.as_bytes()].concat())
        {
            let (key, value) = item?;
            // Keys are tag, name, 0, chunk number: the first chunk holds the first position.
            if !is_first_chunk(&key) || value.len() < 8 {
                continue;
            }
            let name = String::from_utf8_lossy(stream_of(&key)).into_owned();
            starts.insert(name, be_u64(&value));
        }
        Ok(starts.into_iter().collect())
    }

    /// The events of one stream, in stream order.
    pub fn read_stream(&self, stream: &str) -> Result<Vec<Envelope>, LogError> {
        let until = self.head_position();
        let mut envelopes = Vec::new();
        let mut record: Vec<Envelope> = Vec::new();
        for position in self.stream_positions(stream)? {
            if position > until {
                break;
            }
            // Events of one stream often share a record: decode each record once.
            let held = |record: &[Envelope]| {
                record
                    .iter()
                    .find(|envelope| envelope.position() == position)
                    .cloned()
            };
            let envelope = match held(&record) {
                Some(envelope) => Some(envelope),
                None => {
                    record = self.record_holding(position)?;
                    held(&record)
                }
            };
            envelopes.extend(envelope);
        }
        Ok(envelopes)
    }
}
