//! sled patch 12 (`crates/vendor/sled/PATCHES.md`): a leaf of small rows grows past sled's 16 keys
//! (to 64 keys or 4 KiB of keys and values), so a database of small rows holds a fraction of the
//! pages, and opening it, which reads and installs every page, does a fraction of the work.

use std::collections::BTreeMap;

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
fn a_database_of_small_rows_in_random_order_holds_them_in_few_pages() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = BTreeMap::new();
    {
        let db = ims_log::open_sled(sled::Config::new().path(dir.path())).unwrap();
        // Rows like the stream index's: a 45-byte key in random order, a short value.
        for n in 0..60_000u64 {
            let id = n.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes();
            let key = [b"S image/".as_slice(), &id, &[0; 29]].concat();
            let value = n.to_be_bytes().to_vec();
            db.insert(&key, value.clone()).unwrap();
            expected.insert(key, value);
        }
        db.flush().unwrap();
    }
    // Reopening writes a snapshot of every page.
    let db = ims_log::open_sled(sled::Config::new().path(dir.path())).unwrap();
    let rows: BTreeMap<Vec<u8>, Vec<u8>> = db
        .iter()
        .map(|row| {
            let (key, value) = row.unwrap();
            (key.to_vec(), value.to_vec())
        })
        .collect();
    assert_eq!(rows, expected);
    let bytes = snapshot_bytes(dir.path());
    assert!(bytes < SNAPSHOT_BYTES_BOUND, "a snapshot of {bytes} bytes");
}

/// Between the snapshot of the release's leaves and the patched ones. Calibrated: 247,638 bytes
/// with the release's leaves, 82,333 with the patch.
const SNAPSHOT_BYTES_BOUND: u64 = 150_000;
