//! The keys of the log's one sled tree (see the module documentation) and the record format.

use std::collections::HashMap;

use super::*;

pub(super) fn event_key(position: u64) -> [u8; 9] {
    let mut key = [EVENT; 9];
    key[1..].copy_from_slice(&position.to_be_bytes());
    key
}

pub(super) fn stream_prefix(tag: u8, stream: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(stream.len() + 10);
    key.push(tag);
    key.extend_from_slice(stream.as_bytes());
    key.push(0);
    key
}

/// The key of the chunk of the stream index that holds `version` (from 1).
pub(super) fn stream_chunk_key(stream: &str, version: u64) -> Vec<u8> {
    let chunk = u32::try_from((version - 1) / STREAM_CHUNK_EVENTS).expect("under 2^38 versions");
    let mut key = stream_prefix(STREAM, stream);
    key.extend_from_slice(&chunk.to_be_bytes());
    key
}

pub(super) fn positions(chunk: &[u8]) -> impl Iterator<Item = u64> + '_ {
    chunk.chunks_exact(8).map(be_u64)
}

/// One chunk of the stream index as an append sees it.
#[derive(Default)]
pub(super) struct Chunk {
    positions: Vec<u8>,
    changed: bool,
}

impl Chunk {
    /// How many positions it holds.
    pub(super) fn len(&self) -> u64 {
        self.positions.len() as u64 / 8
    }

    pub(super) fn push_position(&mut self, position: u64) {
        self.positions.extend_from_slice(&position.to_be_bytes());
        self.changed = true;
    }
}

/// The stream-index chunks one append reads (each from sled at most once, for the version
/// checks and then for the events) and changes.
#[derive(Default)]
pub(super) struct Chunks(HashMap<Vec<u8>, Chunk>);

impl Chunks {
    /// The chunk at `key`, read from `db` on first use unless `stored` says it cannot exist yet.
    pub(super) fn get(
        &mut self,
        db: &sled::Db,
        key: Vec<u8>,
        stored: bool,
    ) -> Result<&mut Chunk, LogError> {
        match self.0.entry(key) {
            std::collections::hash_map::Entry::Occupied(chunk) => Ok(chunk.into_mut()),
            std::collections::hash_map::Entry::Vacant(vacant) => {
                let positions = match stored {
                    true => db.get(vacant.key())?.map_or_else(Vec::new, |v| v.to_vec()),
                    false => Vec::new(),
                };
                Ok(vacant.insert(Chunk {
                    positions,
                    changed: false,
                }))
            }
        }
    }

    /// The chunks the append changed, to write with it.
    pub(super) fn changed(self) -> impl Iterator<Item = (Vec<u8>, Vec<u8>)> {
        self.0
            .into_iter()
            .filter(|(_, chunk)| chunk.changed)
            .map(|(key, chunk)| (key, chunk.positions))
    }
}

pub(super) fn command_key(actor: &str, command_id: &Uuid) -> Vec<u8> {
    let mut key = Vec::with_capacity(17 + actor.len());
    key.push(COMMAND);
    key.extend_from_slice(command_id.as_bytes());
    key.extend_from_slice(actor.as_bytes());
    key
}

pub(super) fn unscoped_command_key(command_id: &Uuid) -> [u8; 17] {
    let mut key = [COMMAND_UNSCOPED; 17];
    key[1..].copy_from_slice(command_id.as_bytes());
    key
}

pub(super) fn snapshot_key(key: &[u8]) -> Vec<u8> {
    let mut full = Vec::with_capacity(key.len() + 1);
    full.push(SNAPSHOT);
    full.extend_from_slice(key);
    full
}

/// Encodes the value of an `e` key: the events of one append, under the key of the last one.
///
/// Two formats are read. Format 1 (the first release) stored one [`Envelope`] per key. Format 2,
/// written since, stores a whole append group as eight zero bytes (no envelope starts with
/// position 0, so the formats cannot be confused) then the envelopes as a sequence (u64 count,
/// then each envelope). One key per append instead of one per event takes the events' part of an
/// append of 256 from 256 sled inserts to one (sled's cost is mostly per key), and lets a scan
/// decode a whole append at once. Public for tools and tests that inspect the stored bytes.
pub fn encode_record<'a>(envelopes: impl IntoIterator<Item = &'a Envelope>) -> Vec<u8> {
    let envelopes: Vec<&Envelope> = envelopes.into_iter().collect();
    codec::encode(&(0u64, envelopes))
}

/// Decodes the value of the `e` key at `key_position`, in either format (see [`encode_record`]).
pub fn decode_record(bytes: &[u8], key_position: u64) -> Result<Vec<Envelope>, LogError> {
    let what = || format!("event record at position {key_position}");
    if bytes.len() >= 8 && bytes[..8] == [0; 8] {
        let (_, envelopes): (u64, Vec<Envelope>) = codec::decode(bytes, what)?;
        Ok(envelopes)
    } else {
        Ok(vec![codec::decode(bytes, what)?])
    }
}

pub(super) fn be_u64(bytes: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    buf.copy_from_slice(&bytes[..8]);
    u64::from_be_bytes(buf)
}
