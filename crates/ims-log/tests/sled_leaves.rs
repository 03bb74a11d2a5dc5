//! sled patch 12 (`crates/vendor/sled/PATCHES.md`): a leaf of small rows grows past sled's 16 keys
//! (to 64 keys or 4 KiB of keys and values), so a database of small rows holds a fraction of the
//! pages, and opening it, which reads and installs every page, does a fraction of the work.
//! Patch 14: a leaf that mixes kinds of rows splits between them, so small rows appended before
//! large ones get leaves of their own. Patch 16: a leaf appended to in key order splits near its
//! end, so such rows fill their leaves.

use std::collections::BTreeMap;

mod common;
use common::{rows, snapshot_bytes};

#[test]
fn a_database_of_small_rows_in_random_order_holds_them_in_few_pages() {
    let bytes = snapshot_bytes_after(|db, expected| {
        // Rows like the stream index's: a 45-byte key in random order, a short value.
        for n in 0..60_000u64 {
            let id = n.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes();
            let key = [b"S image/".as_slice(), &id, &[0; 29]].concat();
            let value = n.to_be_bytes().to_vec();
            db.insert(&key, value.clone()).unwrap();
            expected.insert(key, value);
        }
    });
    assert!(bytes < SNAPSHOT_BYTES_BOUND, "a snapshot of {bytes} bytes");
}

/// Between the snapshot of the release's leaves and the patched ones. Calibrated: 247,638 bytes
/// with the release's leaves, 82,333 with the patch.
const SNAPSHOT_BYTES_BOUND: u64 = 150_000;

#[test]
fn small_rows_appended_before_large_ones_get_leaves_of_their_own() {
    let bytes = snapshot_bytes_after(|db, expected| {
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
    });
    assert!(
        bytes < APPENDED_SNAPSHOT_BYTES_BOUND,
        "a snapshot of {bytes} bytes"
    );
}

/// Between the snapshot with leaves split in their middle and with patch 14. Calibrated: 10,811
/// bytes split in the middle, 3,176 with the patch.
const APPENDED_SNAPSHOT_BYTES_BOUND: u64 = 6_000;

#[test]
fn rows_appended_in_key_order_fill_their_leaves() {
    // The command index's layout: rows appended in key order in batches, too large for small
    // leaves (patch 12), each batch with the watermark, a key of another kind after them all.
    // Split in the middle, each leaf the appends left behind stayed half full.
    let bytes = snapshot_bytes_after(|db, expected| {
        append_in_key_order(db, expected, (b'a', b"w"), 80, 250, 300);
    });
    assert!(
        bytes < IN_ORDER_SNAPSHOT_BYTES_BOUND,
        "a snapshot of {bytes} bytes"
    );
}

/// Appends `batches` batches of `rows` rows of `len` bytes, keys `kind` + a counter, each batch
/// ending with the row `last` (another kind), as the log's appends do.
fn append_in_key_order(
    db: &sled::Db,
    expected: &mut BTreeMap<Vec<u8>, Vec<u8>>,
    (kind, last): (u8, &[u8]),
    batches: u64,
    rows: u64,
    len: usize,
) {
    for group in 0..batches {
        let mut batch = sled::Batch::default();
        for n in group * rows..(group + 1) * rows {
            let key = [&[kind][..], &n.to_be_bytes()].concat();
            batch.insert(key.as_slice(), vec![7u8; len]);
            expected.insert(key, vec![7u8; len]);
        }
        batch.insert(last, &group.to_be_bytes());
        expected.insert(last.to_vec(), group.to_be_bytes().to_vec());
        db.apply_batch(batch).unwrap();
    }
}

/// Between the snapshot with leaves split in their middle and with patch 16. Calibrated: 38,099
/// bytes split in the middle (nine rows to a leaf), 26,528 with the patch (thirteen).
const IN_ORDER_SNAPSHOT_BYTES_BOUND: u64 = 32_000;

/// Writes a database with `write`, which notes in the map what it wrote; reopens it, which
/// writes a snapshot of every page; checks that it holds exactly what was written; and returns
/// the bytes of that snapshot (about 20 a page).
fn snapshot_bytes_after(write: impl FnOnce(&sled::Db, &mut BTreeMap<Vec<u8>, Vec<u8>>)) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = BTreeMap::new();
    {
        let db = ims_log::open_sled(sled::Config::new().path(dir.path())).unwrap();
        write(&db, &mut expected);
        db.flush().unwrap();
    }
    let db = ims_log::open_sled(sled::Config::new().path(dir.path())).unwrap();
    assert_eq!(rows(&db), expected);
    snapshot_bytes(dir.path())
}

#[test]
fn large_rows_appended_in_key_order_fill_their_leaves_too() {
    // The event records' layout: rows of 4 KiB appended in key order, about twenty an append,
    // each with the head after them.
    let bytes = snapshot_bytes_after(|db, expected| {
        append_in_key_order(db, expected, (b'e', b"h"), 40, 20, 4096);
    });
    assert!(
        bytes < LARGE_IN_ORDER_SNAPSHOT_BYTES_BOUND,
        "a snapshot of {bytes} bytes"
    );
}

/// Between the snapshot with leaves of large rows split in their middle and near their end
/// (patch 16). Calibrated: 1,579 bytes split in the middle, 1,158 near the end.
const LARGE_IN_ORDER_SNAPSHOT_BYTES_BOUND: u64 = 1_370;
