//! Sorted runs: a map from keys to positions packed into sled rows of up to about
//! [`RUN_BYTES`], each row under a tag byte + the key of its first entry. The command index
//! (`log/commands`: command id + actor -> the command's last position, tag `b`) and the stream
//! index's births (`log/births`: a stream with one event -> its position, tag `B`) are runs.
//!
//! Why runs: as a sled row per entry, each of the two cost the log bench a seventh to a fifth of
//! its appends (it ran 15% and 24% faster without them; sled's cost is per row, whatever its
//! size). Their keys arrive mostly in order, command
//! ids and image ids being UUIDs v7 that sort by the millisecond they were made in, so an
//! append's entries land at the end of the last run and its write is a row or two; the last run
//! is kept in memory ([`LastRun`]), so neither lookups of new keys nor writes read sled for it.
//! Keys in no order (ids v4, tenants' names) each rewrite the run they fall in: a row each, as
//! before.
//!
//! A run holds the entries from its key up to the next run's key, so a lookup reads the one run
//! at or before its key. Value: the entries in key order, each the key's length (u16
//! big-endian), the key and the position (u64 big-endian). The bound keeps every row far under
//! sled's blob size (128 KiB) whatever keys a client sends.

use std::ops::Bound;

use super::*;

/// The size past which a run is split.
pub(super) const RUN_BYTES: usize = 4096;

/// The last run of a tag, kept in memory (`None` before the first).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct LastRun(Option<Run>);

#[derive(Clone, Debug, PartialEq, Eq)]
struct Run {
    key: Vec<u8>,
    value: Vec<u8>,
    /// Its last entry's key: new keys (ids v7) sort past it, found absent without a scan.
    last_entry: Vec<u8>,
}

impl LastRun {
    fn of(key: Vec<u8>, value: Vec<u8>) -> Result<Self, LogError> {
        let mut last_entry = Vec::new();
        for entry in entries(&value) {
            last_entry = entry.map_err(|()| cut_short(&key))?.0.to_vec();
        }
        Ok(Self(Some(Run {
            key,
            value,
            last_entry,
        })))
    }

    /// The run, if `seek` (a run key) sorts at or after it.
    fn holding(&self, seek: &[u8]) -> Option<&Run> {
        self.0.as_ref().filter(|run| run.key.as_slice() <= seek)
    }
}

/// A run as stored: key and value.
type StoredRun = Option<(Vec<u8>, Vec<u8>)>;

/// Sled rows to write, key and value.
pub(super) type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// One entry: its key and the position it maps to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Entry {
    pub(super) key: Vec<u8>,
    pub(super) position: u64,
}

impl Entry {
    fn encoded_len(&self) -> usize {
        2 + self.key.len() + 8
    }
}

/// The sled key of a run of `tag` beginning with `key`; also what a lookup of `key` seeks.
pub(super) fn run_key(tag: u8, key: &[u8]) -> Vec<u8> {
    let mut run_key = Vec::with_capacity(1 + key.len());
    run_key.push(tag);
    run_key.extend_from_slice(key);
    run_key
}

fn encode_run(entries: &[Entry]) -> Vec<u8> {
    let mut run = Vec::with_capacity(entries.iter().map(Entry::encoded_len).sum());
    for entry in entries {
        // Keys are an id and a principal's name, or a stream's name: bounded far below 64 KiB.
        let key_len = u16::try_from(entry.key.len()).expect("a key under 64 KiB");
        run.extend_from_slice(&key_len.to_be_bytes());
        run.extend_from_slice(&entry.key);
        run.extend_from_slice(&entry.position.to_be_bytes());
    }
    run
}

/// The entries of a run as (key, position), without copying them; an entry cut short ends it
/// with `Err`.
fn entries(run: &[u8]) -> impl Iterator<Item = Result<(&[u8], u64), ()>> {
    let mut rest = run;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let entry = (|| {
            let (key_len, after) = rest.split_first_chunk::<2>()?;
            let key_len = usize::from(u16::from_be_bytes(*key_len));
            let key = after.get(..key_len)?;
            let (position, after) = after[key_len..].split_first_chunk::<8>()?;
            rest = after;
            Some((key, u64::from_be_bytes(*position)))
        })();
        if entry.is_none() {
            rest = &[];
        }
        Some(entry.ok_or(()))
    })
}

fn cut_short(run_key: &[u8]) -> LogError {
    LogError::Corrupt {
        what: format!("the run at key {}", String::from_utf8_lossy(run_key)),
        reason: "an entry is cut short".to_owned(),
    }
}

fn decode_run(run_key: &[u8], run: &[u8]) -> Result<Vec<Entry>, LogError> {
    entries(run)
        .map(|entry| {
            let (key, position) = entry.map_err(|()| cut_short(run_key))?;
            Ok(Entry {
                key: key.to_vec(),
                position,
            })
        })
        .collect()
}

fn find_in_run(run_key: &[u8], run: &[u8], key: &[u8]) -> Result<Option<u64>, LogError> {
    for entry in entries(run) {
        let (entry_key, position) = entry.map_err(|()| cut_short(run_key))?;
        if entry_key == key {
            return Ok(Some(position));
        }
    }
    Ok(None)
}

/// The sled keys of `tag`'s runs.
fn all(tag: u8) -> std::ops::Range<[u8; 1]> {
    [tag]..[tag + 1]
}

/// The last run of `tag` in `db`.
pub(super) fn last(db: &sled::Db, tag: u8) -> Result<LastRun, LogError> {
    match db.range(all(tag)).next_back().transpose()? {
        Some((key, value)) => LastRun::of(key.to_vec(), value.to_vec()),
        None => Ok(LastRun::default()),
    }
}

/// The run that holds `seek`'s place (the last at or before it; `None` before every run), from
/// `last_run` when `seek` sorts after its key.
fn run_at(db: &sled::Db, tag: u8, last_run: &LastRun, seek: &[u8]) -> Result<StoredRun, LogError> {
    if let Some(run) = last_run.holding(seek) {
        return Ok(Some((run.key.clone(), run.value.clone())));
    }
    Ok(db
        .range([tag].as_slice()..=seek)
        .next_back()
        .transpose()?
        .map(|(key, value)| (key.to_vec(), value.to_vec())))
}

/// The position `key` maps to in `tag`'s runs, if it is there.
pub(super) fn find(
    db: &sled::Db,
    tag: u8,
    last_run: &LastRun,
    key: &[u8],
) -> Result<Option<u64>, LogError> {
    let seek = run_key(tag, key);
    if let Some(run) = last_run.holding(&seek) {
        if key > run.last_entry.as_slice() {
            return Ok(None);
        }
        return find_in_run(&run.key, &run.value, key);
    }
    match db.range([tag].as_slice()..=seek.as_slice()).next_back() {
        Some(run) => run
            .map_err(LogError::from)
            .and_then(|(run_key, run)| find_in_run(&run_key, &run, key)),
        None => Ok(None),
    }
}

/// The bound past every run of `tag` that begins with a key starting with `prefix`.
fn past_prefix(tag: u8, prefix: &[u8]) -> Bound<Vec<u8>> {
    let mut past = prefix.to_vec();
    while past.last() == Some(&u8::MAX) {
        past.pop();
    }
    match past.last_mut() {
        Some(last) => {
            *last += 1;
            Bound::Excluded(run_key(tag, &past))
        }
        None => Bound::Excluded(vec![tag + 1]),
    }
}

/// Every entry of `tag` whose key starts with `prefix`, in key order.
pub(super) fn with_prefix(db: &sled::Db, tag: u8, prefix: &[u8]) -> Result<Vec<Entry>, LogError> {
    let first = run_key(tag, prefix);
    let from = run_at(db, tag, &LastRun::default(), &first)?.map_or(first, |(key, _)| key);
    let until = past_prefix(tag, prefix);
    let mut found = Vec::new();
    for run in db.range((Bound::Included(from), until)) {
        let (run_key, run) = run?;
        let entries = decode_run(&run_key, &run)?;
        found.extend(
            entries
                .into_iter()
                .filter(|entry| entry.key.starts_with(prefix)),
        );
    }
    Ok(found)
}

/// The greatest key of `tag` that starts with `prefix`, read with two runs at most.
pub(super) fn last_with_prefix(
    db: &sled::Db,
    tag: u8,
    prefix: &[u8],
) -> Result<Option<Vec<u8>>, LogError> {
    let first = run_key(tag, prefix);
    let until = past_prefix(tag, prefix);
    // The last run beginning within the prefix holds its greatest key; without one, the run
    // before may end with keys of it.
    let run = match db
        .range((Bound::Included(first.clone()), until))
        .next_back()
    {
        Some(run) => Some(run?),
        None => db
            .range([tag].as_slice()..first.as_slice())
            .next_back()
            .transpose()?,
    };
    let Some((run_key, run)) = run else {
        return Ok(None);
    };
    Ok(decode_run(&run_key, &run)?
        .into_iter()
        .filter(|entry| entry.key.starts_with(prefix))
        .map(|entry| entry.key)
        .next_back())
}

/// The rows that add `added` to `tag`'s runs in `db`, and its last run once they are written:
/// each entry merged into the run it falls in, read from `db` or `last_run` and written back
/// with it, split when it grows past [`RUN_BYTES`].
pub(super) fn merge(
    db: &sled::Db,
    tag: u8,
    last_run: &LastRun,
    mut added: Vec<Entry>,
) -> Result<(Rows, LastRun), LogError> {
    added.sort_unstable();
    let mut added = added.into_iter().peekable();
    let mut rows = Vec::new();
    let mut new_last_run = last_run.clone();
    while let Some(first) = added.peek().cloned() {
        let seek = run_key(tag, &first.key);
        let run = run_at(db, tag, &new_last_run, &seek)?;
        // The run after it bounds what goes in; the last run has none.
        let next_run = match &run {
            Some((key, _)) if new_last_run.0.as_ref().is_some_and(|last| last.key == *key) => None,
            _ => db
                .range::<&[u8], _>((
                    Bound::Excluded(seek.as_slice()),
                    Bound::Excluded(&[tag + 1][..]),
                ))
                .next()
                .transpose()?
                .map(|(key, _)| key),
        };
        let mut entries = match &run {
            Some((key, value)) => decode_run(key, value)?,
            None => Vec::new(),
        };
        // Keys in order add past the run's last entry (the first added is the least).
        let grew_at_end = entries.last().is_none_or(|last| *last < first);
        while let Some(entry) = added.next_if(|entry| {
            next_run
                .as_ref()
                .is_none_or(|next| run_key(tag, &entry.key).as_slice() < next.as_ref())
        }) {
            entries.push(entry);
        }
        entries.sort_unstable();
        entries.dedup_by(|later, earlier| later.key == earlier.key);
        for run in split(entries, grew_at_end) {
            let (key, value) = (run_key(tag, &run[0].key), encode_run(&run));
            if new_last_run.0.as_ref().is_none_or(|last| last.key <= key) {
                new_last_run = LastRun(Some(Run {
                    key: key.clone(),
                    value: value.clone(),
                    last_entry: run
                        .last()
                        .map(|entry| entry.key.clone())
                        .unwrap_or_default(),
                }));
            }
            rows.push((key, value));
        }
    }
    Ok((rows, new_last_run))
}

/// A run grown past [`RUN_BYTES`], as the runs to store. Entries added past its old end (keys
/// in order) fill runs left to right, so that the runs behind the appends stay full; otherwise
/// it is halved, as a B-tree splits a node, so that later entries in its range have room.
fn split(entries: Vec<Entry>, grew_at_end: bool) -> Vec<Vec<Entry>> {
    let bytes: usize = entries.iter().map(Entry::encoded_len).sum();
    if bytes <= RUN_BYTES || entries.len() < 2 {
        return vec![entries];
    }
    if grew_at_end {
        let mut runs = vec![Vec::new()];
        let mut in_last = 0;
        for entry in entries {
            if in_last + entry.encoded_len() > RUN_BYTES && in_last > 0 {
                runs.push(Vec::new());
                in_last = 0;
            }
            in_last += entry.encoded_len();
            runs.last_mut().expect("one run at least").push(entry);
        }
        return runs;
    }
    let mut entries = entries;
    let right = entries.split_off(entries.len() / 2);
    let mut runs = split(entries, false);
    runs.extend(split(right, false));
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, position: u64) -> Entry {
        Entry {
            key: key.as_bytes().to_vec(),
            position,
        }
    }

    #[test]
    fn an_entry_is_found_by_its_whole_key_only() {
        let run = encode_run(&[entry("image/a", 7), entry("image/ab", 9)]);
        assert_eq!(find_in_run(b"k", &run, b"image/a").unwrap(), Some(7));
        assert_eq!(find_in_run(b"k", &run, b"image/ab").unwrap(), Some(9));
        assert_eq!(find_in_run(b"k", &run, b"image/").unwrap(), None);
        assert_eq!(
            decode_run(b"k", &run).unwrap(),
            [entry("image/a", 7), entry("image/ab", 9)]
        );
    }

    #[test]
    fn a_cut_short_run_is_corrupt_not_a_miss() {
        let run = encode_run(&[entry("image/a", 7)]);
        for len in 1..run.len() {
            let error = find_in_run(b"k", &run[..len], b"image/b").unwrap_err();
            assert!(error.to_string().contains("cut short"), "{error}");
            assert!(decode_run(b"k", &run[..len]).is_err());
        }
    }

    #[test]
    fn a_run_grown_at_its_end_splits_into_full_runs_and_one_in_the_middle_into_halves() {
        // 26 bytes an entry: 157 fill 4,082 bytes.
        let entries: Vec<Entry> = (0..200)
            .map(|n| entry(&format!("key-{n:012}"), n))
            .collect();
        let at_end = split(entries.clone(), true);
        assert_eq!(at_end.iter().map(Vec::len).collect::<Vec<_>>(), [157, 43]);
        let halves = split(entries.clone(), false);
        assert_eq!(halves.iter().map(Vec::len).collect::<Vec<_>>(), [100, 100]);
        for runs in [at_end, halves] {
            assert_eq!(runs.concat(), entries);
        }
    }

    #[test]
    fn merged_entries_land_in_their_runs_whatever_order_they_come_in() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_sled(sled::Config::new().path(dir.path())).unwrap();
        let mut last_run = LastRun::default();
        let mut written = Vec::new();
        // 3,000 keys of 17 bytes: in order, then in no order, then in order again.
        let keys = (0..1_000u64)
            .map(|n| n * 3)
            .chain((0..1_000u64).map(|n| (n * 7_919) % 3_000 * 3 + 1))
            .chain((0..1_000u64).map(|n| 9_000 + n));
        for (position, chunk) in keys.collect::<Vec<_>>().chunks(100).enumerate() {
            let added: Vec<Entry> = chunk
                .iter()
                .map(|n| entry(&format!("key-{n:012}"), position as u64))
                .collect();
            written.extend(added.clone());
            let (rows, last) = merge(&db, b'T', &last_run, added).unwrap();
            for (key, value) in rows {
                db.insert(key, value).unwrap();
            }
            last_run = last;
            assert_eq!(last_run, super::last(&db, b'T').unwrap());
        }
        for entry in &written {
            let found = find(&db, b'T', &last_run, &entry.key).unwrap();
            assert_eq!(found, Some(entry.position), "{:?}", entry.key);
            assert_eq!(
                find(&db, b'T', &LastRun::default(), &entry.key).unwrap(),
                found
            );
        }
        assert_eq!(find(&db, b'T', &last_run, b"key-").unwrap(), None);
        let runs: Vec<_> = db.range(all(b'T')).map(Result::unwrap).collect();
        assert!(runs.iter().all(|(_, run)| run.len() <= RUN_BYTES));
        assert!(runs.len() < written.len() / 20, "{} runs", runs.len());
        written.sort();
        assert_eq!(with_prefix(&db, b'T', b"key-").unwrap(), written);
        let tail = last_with_prefix(&db, b'T', b"key-0000000").unwrap();
        assert_eq!(tail, Some(b"key-000000009999".to_vec()));
        assert_eq!(last_with_prefix(&db, b'T', b"kez").unwrap(), None);
    }
}
