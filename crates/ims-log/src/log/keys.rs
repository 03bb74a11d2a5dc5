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

/// Whether `key` is a stream's first chunk (`S` + stream + `0x00` + chunk 0).
pub(super) fn is_first_chunk(key: &[u8]) -> bool {
    key.len() > 5 && key.ends_with(&[0; 5])
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
    /// The chunk at `key`, read from `log` on first use unless `stored` says it cannot exist
    /// yet (a first chunk not stored is the stream's birth, if it has one: `log/streams`).
    pub(super) fn get(
        &mut self,
        log: &EventLog,
        key: Vec<u8>,
        stored: bool,
    ) -> Result<&mut Chunk, LogError> {
        match self.0.entry(key) {
            std::collections::hash_map::Entry::Occupied(chunk) => Ok(chunk.into_mut()),
            std::collections::hash_map::Entry::Vacant(vacant) => {
                let key = vacant.key();
                let positions = match stored {
                    true => log.stored_chunk(key)?,
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

/// The key of a command id's row in the command index of releases before its runs
/// (`log/runs`), and in the log of releases before that: `a` + command id + actor.
pub(super) fn command_key(actor: &str, command_id: &Uuid) -> Vec<u8> {
    let mut key = Vec::with_capacity(17 + actor.len());
    key.push(COMMAND);
    key.extend_from_slice(command_id.as_bytes());
    key.extend_from_slice(actor.as_bytes());
    key
}

pub(super) fn command_records_key(last_position: u64) -> [u8; 9] {
    let mut key = [COMMAND_RECORDS; 9];
    key[1..].copy_from_slice(&last_position.to_be_bytes());
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

/// Encodes the value of an `e` key: a run of consecutive events, under the key of the last one.
///
/// Two formats are read. Format 1 (the first release) stored one [`Envelope`] per key. Format 2,
/// written since, stores a run of events as eight zero bytes (no envelope starts with position 0,
/// so the formats cannot be confused) then the envelopes as a sequence (u64 count, then each
/// envelope). A key per run instead of one per event takes the events' part of an append of 256
/// from 256 sled inserts to a few tens (sled's cost is mostly per key), and lets a scan decode a
/// run at once. Appends write runs of up to 4 KiB (`RECORD_BYTES`; logs written before held a
/// whole append per record; both are read alike). Public for tools and tests that inspect the
/// stored bytes.
pub fn encode_record<'a>(envelopes: impl IntoIterator<Item = &'a Envelope>) -> Vec<u8> {
    let envelopes: Vec<&Envelope> = envelopes.into_iter().collect();
    codec::encode(&(0u64, envelopes))
}

/// The size at which [`encode_records`] closes a record. sled's cost is per key and per page: an
/// append of 256 events is about 25 records of 4 KiB rather than 90 of 1 KiB, and a log holds
/// half the pages, which sled reads and installs every time it opens the log. Measured on a
/// 10M-event region, 4 KiB against 1 KiB (README): 251,018 pages against 534,435, opening the
/// log 77-84 ms and 86 MiB against 145-153 ms and 160 MiB; in `cargo bench -p ims-log`, durable
/// appends 10-14% more events/s and scans 1.8 times as fast. Logs written before keep their
/// records; both sizes read alike.
///
/// What bounds it is the memory a scan holds. sled 0.34 keeps up to 17 keys in a leaf page, and
/// pages over 128 KiB (a quarter of sled's 512 KiB segment) are blobs, which its release weighs
/// at the size of their pointer and never evicts: records of whole appends (about 100 KB for 256
/// events) made leaf pages of about 1.5 MB, and a full scan (`audit verify`, an auditor's
/// `log.read`) kept about 340 MB per million events (spacejam/sled#1036). Records of 4 KiB make
/// leaf pages of at most 17 x 4 KiB, under the blob size, and the patched sled charges a page
/// what it holds and evicts within 1,024 pages of its capacity (`crates/vendor/sled/PATCHES.md`,
/// patches 3 and 10), so a scan holds its cache and at most about 70 MB more, on any log. The
/// release's cache would have held up to 800 MB of them, which is why records were 1 KiB before.
pub(super) const RECORD_BYTES: usize = 4096;

/// sled stores a page over a quarter of its segment (512 KiB by default) as a blob; a leaf of
/// 17 full records, each with its key and length, must stay under it.
const _: () = assert!(17 * (RECORD_BYTES + 64) < (512 << 10) / 4);

/// Encodes envelopes, in order, as records in the format of [`encode_record`] of at most
/// [`RECORD_BYTES`] each (or one envelope, when it alone is larger), each with the position of
/// its last event: the key it is stored under.
pub(super) fn encode_records<'a>(
    envelopes: impl IntoIterator<Item = &'a Envelope>,
) -> Vec<(u64, Vec<u8>)> {
    encode_runs(envelopes, Envelope::position, &[0; 8], RECORD_BYTES)
}

/// The size at which [`encode_command_records`] closes a run. The command records are read only
/// to rebuild the command index, after a crash or when it is lost. Runs of 64 KiB made leaf
/// pages over 128 KiB: blobs, which sled's cache never evicts, so reading the runs of a
/// 10M-event log grew a probe by 556 MB. Runs of 4 KiB keep a page of 17 under that (and an
/// append of 256 commands is a few keys): with the patched sled's 16 cache shards the same read
/// held 183 MB (466 MB with sled's 256, whose late eviction kept all 12,800 pages).
const COMMAND_RUN_BYTES: usize = 4 << 10;

/// Encodes a group's command records as runs of at most [`COMMAND_RUN_BYTES`] (each a sequence
/// that decodes as `Vec<CommandRecord>`), each with the last position of its last command.
pub(super) fn encode_command_records(records: &[CommandRecord]) -> Vec<(u64, Vec<u8>)> {
    encode_runs(
        records,
        |record| record.stored.last_position,
        &[],
        COMMAND_RUN_BYTES,
    )
}

/// Encodes `items` as runs of `marker`, a bincode sequence length (u64 little-endian) and the
/// items, closing a run before it would pass `max_bytes` (a lone item may), each with the
/// position of its last item.
fn encode_runs<'a, T: Serialize + 'a>(
    items: impl IntoIterator<Item = &'a T>,
    position: impl Fn(&T) -> u64,
    marker: &[u8],
    max_bytes: usize,
) -> Vec<(u64, Vec<u8>)> {
    let header = marker.len() + 8;
    let new_run = || {
        let mut run = marker.to_vec();
        run.extend_from_slice(&[0; 8]);
        run
    };
    let close = |runs: &mut Vec<(u64, Vec<u8>)>, mut run: Vec<u8>, count: u64, last: u64| {
        run[header - 8..header].copy_from_slice(&count.to_le_bytes());
        runs.push((last, run));
    };
    let mut runs = Vec::new();
    let mut run = new_run();
    let (mut count, mut last) = (0u64, 0u64);
    let mut encoded = Vec::new();
    for item in items {
        encoded.clear();
        codec::encode_into(&mut encoded, item);
        if count > 0 && run.len() + encoded.len() > max_bytes {
            close(
                &mut runs,
                std::mem::replace(&mut run, new_run()),
                count,
                last,
            );
            count = 0;
        }
        run.extend_from_slice(&encoded);
        count += 1;
        last = position(item);
    }
    if count > 0 {
        close(&mut runs, run, count, last);
    }
    runs
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

#[cfg(test)]
mod records {
    use super::*;

    fn envelopes(count: u64, payload_bytes: usize) -> Vec<Envelope> {
        let mut prev_hash = [0; 32];
        (1..=count)
            .map(|position| {
                let envelope = test_envelope(position, prev_hash, vec![7; payload_bytes]);
                prev_hash = envelope.hash;
                envelope
            })
            .collect()
    }

    #[test]
    fn a_short_run_is_one_record_in_the_format_of_a_whole_append() {
        let run = envelopes(3, 100);
        assert_eq!(encode_records(&run), vec![(3, encode_record(&run))]);
    }

    #[test]
    fn an_append_of_256_events_is_split_into_records_of_at_most_4_kib_that_decode_to_it() {
        let run = envelopes(256, 400);
        let records = encode_records(&run);
        assert!(records.len() > 20, "{} records", records.len());
        let mut decoded = Vec::new();
        for (last_position, record) in &records {
            assert!(
                record.len() <= RECORD_BYTES,
                "a record of {} bytes",
                record.len()
            );
            let envelopes = decode_record(record, *last_position).unwrap();
            assert_eq!(envelopes.last().unwrap().position(), *last_position);
            decoded.extend(envelopes);
        }
        assert_eq!(decoded, run);
    }

    #[test]
    fn command_records_are_runs_small_enough_for_sleds_cache_to_evict() {
        let records: Vec<CommandRecord> = (1..=300u64)
            .map(|position| CommandRecord {
                actor: format!("tenant-{position}"),
                command_id: [position as u8; 16],
                stored: crate::StoredCommand {
                    first_position: position,
                    last_position: position,
                    reply: vec![1; 60],
                    digest: Some([2; 32]),
                },
            })
            .collect();
        let runs = encode_command_records(&records);
        assert!(runs.len() > 5, "{} runs", runs.len());
        let mut decoded = Vec::new();
        for (last_position, run) in &runs {
            assert!(
                run.len() <= COMMAND_RUN_BYTES,
                "a run of {} bytes",
                run.len()
            );
            let run: Vec<CommandRecord> = codec::decode(run, String::new).unwrap();
            assert_eq!(run.last().unwrap().stored.last_position, *last_position);
            decoded.extend(run);
        }
        assert_eq!(decoded, records);
    }

    #[test]
    fn an_event_larger_than_a_record_is_a_record_of_its_own() {
        let mut run = envelopes(3, 100);
        run[1] = envelopes(2, RECORD_BYTES + 1)[1].clone();
        let records = encode_records(&run);
        let counts: Vec<usize> = records
            .iter()
            .map(|(last, record)| decode_record(record, *last).unwrap().len())
            .collect();
        assert_eq!(counts, vec![1, 1, 1]);
    }
}
