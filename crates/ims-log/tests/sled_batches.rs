//! sled patches 13 and 14 (`crates/vendor/sled/PATCHES.md`): a batch's writes that land in one
//! leaf are applied to one copy of it, and a leaf that mixes kinds of rows splits between them.
//! What a database holds must not change: after every batch, and after reopening, it equals a
//! map that took the same writes.

use std::collections::BTreeMap;

use proptest::prelude::*;

type Rows = BTreeMap<Vec<u8>, Vec<u8>>;

fn rows(db: &sled::Db) -> Rows {
    db.iter()
        .map(|row| {
            let (key, value) = row.unwrap();
            (key.to_vec(), value.to_vec())
        })
        .collect()
}

/// A write of a batch: a key of one of a few kinds (its first byte), some in order and some not,
/// and a value from empty to larger than a leaf of small rows holds, or a removal.
fn write() -> impl Strategy<Value = (Vec<u8>, Option<Vec<u8>>)> {
    let key = (
        prop::sample::select(vec![b'S', b'a', b'e', b'p']),
        0u16..600,
    )
        .prop_map(|(kind, n)| [&[kind][..], &n.to_be_bytes()].concat());
    let value = prop_oneof![
        8 => (0usize..200).prop_map(|len| vec![7u8; len]),
        1 => Just(vec![9u8; 5000]),
    ];
    (key, prop::option::weighted(0.85, value))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn batches_leave_the_database_as_a_map_given_the_same_writes_would(
        batches in prop::collection::vec(prop::collection::vec(write(), 1..400), 1..12)
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut expected = Rows::new();
        {
            let db = ims_log::open_sled(sled::Config::new().path(dir.path())).unwrap();
            for writes in &batches {
                let mut batch = sled::Batch::default();
                for (key, value) in writes {
                    match value {
                        Some(value) => {
                            batch.insert(key.as_slice(), value.as_slice());
                            expected.insert(key.clone(), value.clone());
                        }
                        None => {
                            batch.remove(key.as_slice());
                            expected.remove(key);
                        }
                    }
                }
                db.apply_batch(batch).unwrap();
                prop_assert_eq!(&rows(&db), &expected);
            }
            db.flush().unwrap();
        }
        let db = ims_log::open_sled(sled::Config::new().path(dir.path())).unwrap();
        prop_assert_eq!(&rows(&db), &expected);
    }
}

/// Bytes of the newest snapshot file: about 20 bytes per page of the database.
fn snapshot_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            name.starts_with("snap.") && !name.ends_with(".generating")
        })
        .map(|entry| entry.metadata().unwrap().len())
        .max()
        .expect("a snapshot")
}

#[test]
fn small_rows_appended_before_large_ones_get_leaves_of_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = Rows::new();
    {
        let db = ims_log::open_sled(sled::Config::new().path(dir.path())).unwrap();
        // The log's layout: large event records under `e`, and before them the stream index,
        // whose rows (`S` keys, short values) new streams append in key order. Split in its
        // middle, the leaf that holds the last `S` rows and the five records (fewer than half
        // of its 17 keys) kept the records and a few `S` rows, took the next rows, and split
        // again every nine: the index sat nine rows to a leaf.
        for position in 1..=5u64 {
            let key = [&b"e"[..], &position.to_be_bytes()].concat();
            db.insert(&key, vec![1u8; 4000]).unwrap();
            expected.insert(key, vec![1u8; 4000]);
        }
        for group in 0..100u64 {
            let mut batch = sled::Batch::default();
            for n in group * 64..(group + 1) * 64 {
                let key = [&b"S image/"[..], &n.to_be_bytes(), &[0; 4]].concat();
                batch.insert(key.as_slice(), &n.to_be_bytes());
                expected.insert(key, n.to_be_bytes().to_vec());
            }
            db.apply_batch(batch).unwrap();
        }
        db.flush().unwrap();
    }
    // Reopening writes a snapshot of every page.
    let db = ims_log::open_sled(sled::Config::new().path(dir.path())).unwrap();
    assert_eq!(rows(&db), expected);
    let bytes = snapshot_bytes(dir.path());
    assert!(bytes < SNAPSHOT_BYTES_BOUND, "a snapshot of {bytes} bytes");
}

/// Between the snapshot with leaves split in their middle and with patch 14. Calibrated: 10,811
/// bytes split in the middle, 3,176 with the patch.
const SNAPSHOT_BYTES_BOUND: u64 = 6_000;
