//! sled patch 8 (`crates/vendor/sled/PATCHES.md`): opening a database reads its snapshot's page
//! table into vectors of exactly their length. A database with every kind of page the table
//! records (pages with fragments not yet consolidated, pages freed by merges) is reopened from its
//! snapshot and must hold exactly what was written.

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
