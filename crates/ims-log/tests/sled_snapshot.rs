//! sled patches 8 and 11 (`crates/vendor/sled/PATCHES.md`): opening a database reads its
//! snapshot's page table into a vector that never grows, reads the segment headers on a thread
//! of their own while it reads the snapshot, and installs the pages on another while the log
//! starts. A database with every kind of page the table records (pages with fragments not yet
//! consolidated, pages freed by merges), and one written across many segments after its
//! snapshot, are reopened and must hold exactly what was written.

use std::collections::BTreeMap;

fn open(dir: &std::path::Path) -> sled::Db {
    ims_log::open_sled(sled::Config::new().path(dir)).unwrap()
}

fn contents(db: &sled::Db) -> BTreeMap<Vec<u8>, Vec<u8>> {
    db.iter()
        .map(|entry| {
            let (key, value) = entry.unwrap();
            (key.to_vec(), value.to_vec())
        })
        .collect()
}

#[test]
fn a_database_reopened_from_its_snapshot_holds_exactly_what_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = BTreeMap::new();
    {
        let db = open(dir.path());
        for i in 0..20_000u32 {
            let value = vec![(i % 251) as u8; (i % 300) as usize];
            db.insert(i.to_be_bytes(), value.clone()).unwrap();
            expected.insert(i.to_be_bytes().to_vec(), value);
        }
        // Emptied leaves are merged into their neighbours and their pages freed.
        for i in 5_000..15_000u32 {
            db.remove(i.to_be_bytes()).unwrap();
            expected.remove(&i.to_be_bytes()[..]);
        }
        // Updates are fragments appended to a page until it is consolidated.
        for i in (1..20_000u32)
            .step_by(7)
            .filter(|i| !(5_000..15_000).contains(i))
        {
            db.insert(i.to_be_bytes(), b"updated".to_vec()).unwrap();
            expected.insert(i.to_be_bytes().to_vec(), b"updated".to_vec());
        }
        db.flush().unwrap();
    }
    // The first reopen writes a snapshot of the whole page table; the next ones start from it.
    for _ in 0..3 {
        let db = open(dir.path());
        assert_eq!(contents(&db), expected);
        db.insert(
            &b"touched"[..],
            &b"so that the next open advances the snapshot"[..],
        )
        .unwrap();
        expected.insert(
            b"touched".to_vec(),
            b"so that the next open advances the snapshot".to_vec(),
        );
        db.flush().unwrap();
    }
    let snapshots = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|entry| {
            let name = entry.as_ref().unwrap().file_name();
            let name = name.to_string_lossy();
            name.starts_with("snap.") && !name.ends_with(".generating")
        })
        .count();
    assert_eq!(snapshots, 1, "the reopens started from no snapshot");
}

#[test]
fn a_database_written_across_many_segments_after_its_snapshot_reopens_with_all_of_it() {
    // Each open writes a snapshot of what it recovered; what is written after it (here about 40
    // segments of 512 KiB each time, some of them segments freed by the removals and reused) is
    // found again by reading the segment headers and replaying those past the snapshot.
    let dir = tempfile::tempdir().unwrap();
    let mut expected = BTreeMap::new();
    for round in 0..4u32 {
        let db = open(dir.path());
        assert_eq!(contents(&db), expected, "round {round}");
        for i in 0..4_000u32 {
            let key = (round * 4_000 + i).to_be_bytes();
            let value = vec![(i % 251) as u8; 5_000];
            db.insert(key, value.clone()).unwrap();
            expected.insert(key.to_vec(), value);
        }
        for i in (0..4_000u32).step_by(3) {
            let key = (round * 4_000 + i).to_be_bytes();
            db.remove(key).unwrap();
            expected.remove(&key[..]);
        }
        db.flush().unwrap();
    }
    assert_eq!(contents(&open(dir.path())), expected);
}
