//! Helpers of the tests of the vendored sled's patches.

use std::collections::BTreeMap;

/// Every row of a database, in key order.
pub fn rows(db: &sled::Db) -> BTreeMap<Vec<u8>, Vec<u8>> {
    db.iter()
        .map(|row| {
            let (key, value) = row.unwrap();
            (key.to_vec(), value.to_vec())
        })
        .collect()
}

/// Bytes of the newest snapshot file: about 20 bytes per page of the database.
#[allow(dead_code)] // Not every test file that includes this module reads snapshots.
pub fn snapshot_bytes(dir: &std::path::Path) -> u64 {
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
