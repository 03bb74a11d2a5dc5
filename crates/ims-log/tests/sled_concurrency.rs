//! sled patch 7 (`crates/vendor/sled/PATCHES.md`): each database has its own concurrency
//! control. As released, one lock served every database in the process, so the log's atomic
//! batch waited for the read models' and the command index's readers and writers, and theirs for
//! it.

use std::sync::mpsc;
use std::time::Duration;

use sled::Transactional;

/// A transaction holds its database's write lock for as long as its closure runs; here the
/// closure waits for a batch on another database, which as released could not start until the
/// transaction ended.
#[test]
fn a_batch_on_one_database_does_not_wait_for_a_transaction_on_another() {
    let dir = tempfile::tempdir().unwrap();
    let held = sled::open(dir.path().join("held")).unwrap();
    let other = sled::open(dir.path().join("other")).unwrap();
    let (applied, was_applied) = mpsc::channel();
    let writer = std::thread::spawn(move || {
        let mut batch = sled::Batch::default();
        batch.insert("key", "value");
        other.apply_batch(batch).unwrap();
        let _ = applied.send(());
    });
    let waited: Result<bool, sled::transaction::TransactionError> = held.transaction(|tx| {
        tx.insert("inside", "the transaction")?;
        Ok(was_applied.recv_timeout(Duration::from_secs(10)).is_ok())
    });
    assert!(
        waited.unwrap(),
        "the other database's batch waited for this database's transaction"
    );
    writer.join().unwrap();
}

/// Transactions still exclude each other: threads moving a sum between two trees of one database
/// never see it torn, and every move commits. (sled refuses trees of two databases in one
/// transaction, as released.)
#[test]
fn transactions_on_one_database_still_exclude_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path().join("db")).unwrap();
    let (a, b) = (db.open_tree("a").unwrap(), db.open_tree("b").unwrap());
    a.insert("n", &100u64.to_be_bytes()).unwrap();
    b.insert("n", &0u64.to_be_bytes()).unwrap();
    let read =
        |value: Option<sled::IVec>| u64::from_be_bytes(value.unwrap().as_ref().try_into().unwrap());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (a, b) = (a.clone(), b.clone());
            std::thread::spawn(move || {
                for _ in 0..25 {
                    let result: Result<(), sled::transaction::TransactionError> = (&a, &b)
                        .transaction(|(a, b)| {
                            let (from, to) = (read(a.get("n")?), read(b.get("n")?));
                            assert_eq!(from + to, 100, "a transaction saw another half done");
                            a.insert("n", &(from - 1).to_be_bytes())?;
                            b.insert("n", &(to + 1).to_be_bytes())?;
                            Ok(())
                        });
                    result.unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(
        (read(a.get("n").unwrap()), read(b.get("n").unwrap())),
        (0, 100)
    );
    let other = sled::open(dir.path().join("other"))
        .unwrap()
        .open_tree("t")
        .unwrap();
    let across: Result<(), sled::transaction::TransactionError> =
        (&a, &other).transaction(|_| Ok(()));
    assert!(
        across.is_err(),
        "sled refuses a transaction over two databases"
    );
}
