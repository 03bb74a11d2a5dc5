//! The command index's rows (`log/commands`): its entries sorted by command id and actor, packed
//! into runs of up to about [`RUN_BYTES`], each run under the key of its first entry.
//!
//! Why runs: a key per command cost the log bench about a sixth of its appends (sled's cost is
//! per key, whatever the key's size). Command ids are UUIDs v7 from imsctl, the HTTP API and the
//! bench, which sort by the millisecond they were made in, so an append's commands land at the
//! end of the last run or two and its index write is a key or two. Ids in no order (v4, or
//! chosen by hand) each rewrite the run they fall in: a key each, as a row per command did.
//!
//! Key: `b` + the first entry's id (16 bytes) + its actor. A run holds the entries from its key
//! up to the next run's key, so a lookup reads the one run at or before what it looks for.
//! Value: the entries in order, each the id (16 bytes), the command's last position (u64
//! big-endian), the actor's length (u16 big-endian) and the actor. The bound keeps every row far
//! under sled's blob size (128 KiB) whatever ids a client sends.

use super::*;

const RUN: u8 = b'b';
/// The size past which a run is split.
pub(super) const RUN_BYTES: usize = 4096;

/// One command in the index: its id and actor, and its last position, where the log's run of
/// command records holding it is found.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Entry {
    pub(super) command_id: [u8; 16],
    pub(super) actor: String,
    pub(super) last_position: u64,
}

impl Entry {
    fn encoded_len(&self) -> usize {
        16 + 8 + 2 + self.actor.len()
    }

    /// The key of a run that begins with this entry; also what a lookup of it seeks.
    pub(super) fn key(&self) -> Vec<u8> {
        run_key(&self.command_id, &self.actor)
    }
}

pub(super) fn run_key(command_id: &[u8; 16], actor: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(17 + actor.len());
    key.push(RUN);
    key.extend_from_slice(command_id);
    key.extend_from_slice(actor.as_bytes());
    key
}

/// The keys of every run.
pub(super) fn all_runs() -> std::ops::RangeInclusive<Vec<u8>> {
    vec![RUN]..=vec![RUN + 1]
}

pub(super) fn encode_run(entries: &[Entry]) -> Vec<u8> {
    let mut run = Vec::with_capacity(entries.iter().map(Entry::encoded_len).sum());
    for entry in entries {
        // Actors are principal names, bounded far below 64 KiB by identity's limits.
        let actor_len = u16::try_from(entry.actor.len()).expect("an actor under 64 KiB");
        run.extend_from_slice(&entry.command_id);
        run.extend_from_slice(&entry.last_position.to_be_bytes());
        run.extend_from_slice(&actor_len.to_be_bytes());
        run.extend_from_slice(entry.actor.as_bytes());
    }
    run
}

/// The entries of a run, each as (id, last position, actor bytes), without copying them.
fn entries(run: &[u8]) -> impl Iterator<Item = Result<([u8; 16], u64, &[u8]), ()>> {
    let mut rest = run;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let entry = (|| {
            let (id, after) = rest.split_first_chunk::<16>()?;
            let (last, after) = after.split_first_chunk::<8>()?;
            let (actor_len, after) = after.split_first_chunk::<2>()?;
            let actor_len = usize::from(u16::from_be_bytes(*actor_len));
            let actor = after.get(..actor_len)?;
            rest = &after[actor_len..];
            Some((*id, u64::from_be_bytes(*last), actor))
        })();
        if entry.is_none() {
            rest = &[];
        }
        Some(entry.ok_or(()))
    })
}

fn cut_short(key: &[u8]) -> LogError {
    LogError::Corrupt {
        what: format!("the command index's run at key {key:02x?}"),
        reason: "an entry is cut short".to_owned(),
    }
}

pub(super) fn decode_run(key: &[u8], run: &[u8]) -> Result<Vec<Entry>, LogError> {
    entries(run)
        .map(|entry| {
            let (command_id, last_position, actor) = entry.map_err(|()| cut_short(key))?;
            Ok(Entry {
                command_id,
                actor: String::from_utf8_lossy(actor).into_owned(),
                last_position,
            })
        })
        .collect()
}

/// The last position of the command of `actor` with `command_id` in the run at `key`.
pub(super) fn find_in_run(
    key: &[u8],
    run: &[u8],
    command_id: &Uuid,
    actor: &str,
) -> Result<Option<u64>, LogError> {
    for entry in entries(run) {
        let (id, last_position, entry_actor) = entry.map_err(|()| cut_short(key))?;
        if id == *command_id.as_bytes() && entry_actor == actor.as_bytes() {
            return Ok(Some(last_position));
        }
    }
    Ok(None)
}

/// A run grown past [`RUN_BYTES`], as the runs to store. Entries added past its old end (ids
/// in order) fill runs left to right, so that the runs behind the appends stay full; otherwise
/// it is halved, as a B-tree splits a node, so that later entries in its range have room.
pub(super) fn split(entries: Vec<Entry>, grew_at_end: bool) -> Vec<Vec<Entry>> {
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

    fn entry(first: u8, actor: &str, last_position: u64) -> Entry {
        Entry {
            command_id: [first; 16],
            actor: actor.to_owned(),
            last_position,
        }
    }

    #[test]
    fn an_entry_is_found_for_its_id_and_actor_only() {
        let run = encode_run(&[entry(1, "tenant a", 7), entry(2, "tenant b", 9)]);
        assert_eq!(
            find_in_run(b"k", &run, &Uuid::from_bytes([1; 16]), "tenant a").unwrap(),
            Some(7)
        );
        assert_eq!(
            find_in_run(b"k", &run, &Uuid::from_bytes([2; 16]), "tenant b").unwrap(),
            Some(9)
        );
        assert_eq!(
            find_in_run(b"k", &run, &Uuid::from_bytes([1; 16]), "tenant b").unwrap(),
            None
        );
        assert_eq!(
            find_in_run(b"k", &run, &Uuid::from_bytes([3; 16]), "tenant a").unwrap(),
            None
        );
        assert_eq!(
            decode_run(b"k", &run).unwrap(),
            [entry(1, "tenant a", 7), entry(2, "tenant b", 9)]
        );
    }

    #[test]
    fn a_cut_short_run_is_corrupt_not_a_miss() {
        let run = encode_run(&[entry(1, "tenant a", 7)]);
        for len in 1..run.len() {
            let id = Uuid::from_bytes([2; 16]);
            let error = find_in_run(b"k", &run[..len], &id, "tenant a").unwrap_err();
            assert!(error.to_string().contains("cut short"), "{error}");
            assert!(decode_run(b"k", &run[..len]).is_err());
        }
    }

    #[test]
    fn keys_sort_as_entries_do() {
        let mut entries = [entry(2, "a", 1), entry(1, "b", 1), entry(1, "a", 1)];
        entries.sort();
        let keys: Vec<Vec<u8>> = entries.iter().map(Entry::key).collect();
        assert!(keys.is_sorted());
        assert!(all_runs().contains(&keys[0]));
    }

    #[test]
    fn a_run_grown_at_its_end_splits_into_full_runs_and_one_in_the_middle_into_halves() {
        let entries: Vec<Entry> = (0..200).map(|n| entry(n, "tenant a", 1)).collect();
        let at_end = split(entries.clone(), true);
        let sizes: Vec<usize> = at_end.iter().map(Vec::len).collect();
        assert_eq!(sizes, [120, 80]); // 34 bytes an entry: 120 fill 4,080 bytes
        let halves = split(entries.clone(), false);
        let sizes: Vec<usize> = halves.iter().map(Vec::len).collect();
        assert_eq!(sizes, [100, 100]);
        for runs in [at_end, halves] {
            assert_eq!(runs.concat(), entries);
        }
    }
}
