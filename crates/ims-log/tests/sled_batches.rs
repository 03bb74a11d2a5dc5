//! sled patches 13 and 14 (`crates/vendor/sled/PATCHES.md`): a batch's writes that land in one
//! leaf are applied to one copy of it, and a leaf that mixes kinds of rows splits between them.
//! What a database holds must not change: after every batch, and after reopening, it equals a
//! map that took the same writes. (Patch 14's effect on the leaves is in `sled_leaves.rs`.)

use std::collections::BTreeMap;

use proptest::prelude::*;

mod common;
use common::rows;

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
        let mut expected = BTreeMap::new();
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
