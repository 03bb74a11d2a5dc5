//! The command index lives beside the log and is derived from the command records the log holds:
//! lost or behind, it is rebuilt, and a retry still gets its first reply.

use ims_log::*;
use uuid::Uuid;

fn command(id: Uuid, version: u64) -> NewCommand {
    NewCommand {
        digest: Some([7; 32]),
        command_id: Some(id),
        actor: "tenant t1".to_owned(),
        recorded_at_ms: 1_700_000_000_000,
        events: vec![NewEvent {
            stream: format!("image/{id}"),
            stream_version: version,
            event_type: "test_event".to_owned(),
            schema_version: 1,
            payload: b"payload".to_vec(),
        }],
        reply: format!("{{\"ok\":true,\"id\":\"{id}\"}}").into_bytes(),
        snapshots: vec![],
    }
}

fn open(dir: &tempfile::TempDir) -> EventLog {
    EventLog::open(dir.path().join("log"), "eu-west-0").unwrap()
}

/// Appends `count` new commands in groups of 100; returns their ids.
fn append_new(log: &EventLog, count: usize) -> Vec<Uuid> {
    append_ids(log, (0..count).map(|_| Uuid::now_v7()).collect())
}

/// Appends a new command for each of `ids` in groups of 100; returns them.
fn append_ids(log: &EventLog, ids: Vec<Uuid>) -> Vec<Uuid> {
    let commands: Vec<NewCommand> = ids.iter().map(|id| command(*id, 1)).collect();
    for group in commands.chunks(100) {
        let results = log.append(group).unwrap();
        assert!(results.iter().all(|r| matches!(r, Appended::New { .. })));
    }
    ids
}

/// Retries every id: each must be a duplicate with its own reply, and nothing appended.
fn assert_retries_are_duplicates(log: &EventLog, ids: &[Uuid]) {
    let head = log.head_position();
    let retries: Vec<NewCommand> = ids.iter().map(|id| command(*id, 1)).collect();
    for (id, result) in ids.iter().zip(log.append(&retries).unwrap()) {
        let Appended::Duplicate(stored) = result else {
            panic!("command {id} was appended again: {result:?}")
        };
        assert_eq!(stored.reply, command(*id, 1).reply);
        assert_eq!(stored.digest, Some([7; 32]));
    }
    assert_eq!(log.head_position(), head, "a retry appended events");
}

#[test]
fn a_deleted_command_index_is_rebuilt_from_the_logs_records() {
    let dir = tempfile::tempdir().unwrap();
    let ids = append_new(&open(&dir), 300);
    std::fs::remove_dir_all(dir.path().join("log/commands")).unwrap();
    let log = open(&dir);
    assert_retries_are_duplicates(&log, &ids);
    drop(log);
    // The log itself holds the records, not a key per command.
    let db = ims_log::open_sled(sled::Config::new().path(dir.path().join("log"))).unwrap();
    assert_eq!(db.scan_prefix(b"a").count(), 0, "command keys in the log");
    assert!(
        db.scan_prefix(b"p").count() > 0,
        "no command records in the log"
    );
}

#[test]
fn a_deleted_index_of_more_commands_than_one_catch_up_batch_is_rebuilt_whole() {
    let dir = tempfile::tempdir().unwrap();
    let ids = append_new(&open(&dir), 25_000);
    std::fs::remove_dir_all(dir.path().join("log/commands")).unwrap();
    assert_retries_are_duplicates(&open(&dir), &ids);
}

#[test]
fn an_index_that_lost_its_last_batches_in_a_crash_catches_up_on_first_use() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let log = open(&dir);
        let before = append_new(&log, 150);
        log.index_pending_commands().unwrap();
        before
    };
    copy_dir(
        &dir.path().join("log/commands"),
        &dir.path().join("index as of 150"),
    );
    let after = {
        let log = open(&dir);
        let after = append_new(&log, 250);
        log.index_pending_commands().unwrap();
        after
    };
    // The index as a crash could leave it (it is not flushed with the log): the batches of the
    // last appends lost, watermark and runs alike.
    let index_dir = dir.path().join("log/commands");
    std::fs::remove_dir_all(&index_dir).unwrap();
    copy_dir(&dir.path().join("index as of 150"), &index_dir);
    let index = ims_log::open_sled(sled::Config::new().path(&index_dir)).unwrap();
    assert!(indexed_position(&index, "tenant t1", &before[149])
        .unwrap()
        .is_some());
    assert!(indexed_position(&index, "tenant t1", &after[0])
        .unwrap()
        .is_none());
    drop(index);
    let log = open(&dir);
    assert_retries_are_duplicates(&log, &after);
    assert_retries_are_duplicates(&log, &before);
    // And new commands still go in.
    append_new(&log, 10);
}

#[test]
fn a_group_answered_before_its_commands_are_indexed_is_still_found_by_a_retry() {
    // The writer answers a group, then writes its command index; a retry in between, or after a
    // crash in between, must still be a duplicate.
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    let ids = append_new(&log, 40);
    let index = |log: &EventLog, id: &Uuid| log.command("tenant t1", id).unwrap();
    assert!(index(&log, &ids[0]).is_some(), "not found before indexing");
    assert!(index(&log, &ids[0]).is_some_and(|s| s.reply == command(ids[0], 1).reply));
    assert!(
        log.command("tenant t2", &ids[0]).unwrap().is_none(),
        "found for another actor"
    );
    drop(log); // a crash before the index write: the records are in the log only
    let log = open(&dir);
    assert_retries_are_duplicates(&log, &ids);
    let more = append_new(&log, 40);
    log.index_pending_commands().unwrap();
    log.index_pending_commands().unwrap(); // nothing left: a no-op
    assert_retries_are_duplicates(&log, &more);
    drop(log);
    let index_db =
        ims_log::open_sled(sled::Config::new().path(dir.path().join("log/commands"))).unwrap();
    for id in ids.iter().chain(&more) {
        let indexed = indexed_position(&index_db, "tenant t1", id).unwrap();
        assert!(indexed.is_some(), "{id} not indexed");
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

#[test]
fn command_records_that_a_log_kept_in_itself_are_still_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let id = Uuid::now_v7();
    let stored = StoredCommand {
        first_position: 1,
        last_position: 1,
        reply: b"{\"ok\":true}".to_vec(),
        digest: Some([7; 32]),
    };
    {
        let log = open(&dir);
        append_new(&log, 1);
        drop(log);
        // As releases before the index moved out wrote it: `a` + id + actor, in the log.
        let db = ims_log::open_sled(sled::Config::new().path(dir.path().join("log"))).unwrap();
        let key = [&b"a"[..], id.as_bytes(), b"tenant t1"].concat();
        db.insert(key, ims_log::encode(&stored)).unwrap();
        db.flush().unwrap();
    }
    let log = open(&dir);
    assert_eq!(log.command("tenant t1", &id).unwrap(), Some(stored));
    assert_eq!(log.command("tenant t2", &id).unwrap(), None);
}

/// The index's rows with `prefix` (`b`: its runs; `a`: the row per command of releases before),
/// read with the log closed.
fn index_rows(dir: &tempfile::TempDir, prefix: &[u8]) -> Vec<(sled::IVec, sled::IVec)> {
    let db = ims_log::open_sled(sled::Config::new().path(dir.path().join("log/commands"))).unwrap();
    db.scan_prefix(prefix).map(Result::unwrap).collect()
}

/// Replaces the index's runs with `rows`, as releases before runs wrote them.
fn rewrite_index(dir: &tempfile::TempDir, rows: &[(Vec<u8>, Vec<u8>)]) {
    let db = ims_log::open_sled(sled::Config::new().path(dir.path().join("log/commands"))).unwrap();
    for run in db.scan_prefix(b"b") {
        db.remove(run.unwrap().0).unwrap();
    }
    for (key, value) in rows {
        db.insert(key, value.as_slice()).unwrap();
    }
    db.flush().unwrap();
}

/// Ids in no order, as clients that make UUIDs v4 send them.
fn unordered_ids(count: u128) -> Vec<Uuid> {
    (1..=count)
        .map(|n| Uuid::from_u128(n.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)))
        .collect()
}

#[test]
fn the_index_packs_ordered_ids_into_a_few_runs_and_finds_ids_in_no_order_too() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    let ordered = append_new(&log, 1_000);
    log.index_pending_commands().unwrap();
    // Ids in no order go into the runs written before, splitting them.
    let unordered = append_ids(&log, unordered_ids(1_000));
    log.index_pending_commands().unwrap();
    let positions: Vec<u64> = ordered
        .iter()
        .chain(&unordered)
        .map(|id| {
            let stored = log.command("tenant t1", id).unwrap().unwrap();
            assert_eq!(stored.reply, command(*id, 1).reply);
            stored.last_position
        })
        .collect();
    assert_eq!(positions, (1..=2_000).collect::<Vec<u64>>());
    assert_eq!(log.command("tenant t2", &ordered[0]).unwrap(), None);
    assert_eq!(log.command("tenant t1", &Uuid::now_v7()).unwrap(), None);
    drop(log);
    // 2,000 entries of 35 bytes (70 KB) in runs of at most 4 KiB, not a row each.
    let runs = index_rows(&dir, b"b");
    assert!((18..=60).contains(&runs.len()), "{} runs", runs.len());
    assert!(runs.iter().all(|(_, run)| run.len() <= 4_096));
    assert!(index_rows(&dir, b"a").is_empty());
    let log = open(&dir);
    assert_retries_are_duplicates(&log, &unordered);
    assert_retries_are_duplicates(&log, &ordered);
}

#[test]
fn rows_of_the_releases_before_runs_still_answer_and_a_row_pointing_elsewhere_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    let ids = append_new(&log, 150);
    log.index_pending_commands().unwrap();
    let positions: Vec<u64> = ids
        .iter()
        .map(|id| log.command("tenant t1", id).unwrap().unwrap().last_position)
        .collect();
    drop(log);
    let key = |id: &Uuid| [&b"a"[..], id.as_bytes(), b"tenant t1"].concat();

    // A row per command pointing at the command's last position.
    let pointers: Vec<(Vec<u8>, Vec<u8>)> = ids
        .iter()
        .zip(&positions)
        .map(|(id, last)| (key(id), last.to_be_bytes().to_vec()))
        .collect();
    rewrite_index(&dir, &pointers);
    let log = open(&dir);
    assert_retries_are_duplicates(&log, &ids);
    drop(log);

    // Before the pointers, a row per command held the whole record.
    let records: Vec<(Vec<u8>, Vec<u8>)> = ids
        .iter()
        .zip(&positions)
        .map(|(id, &last_position)| {
            let old = StoredCommand {
                first_position: last_position,
                last_position,
                reply: b"{\"ok\":true,\"from\":\"the old index\"}".to_vec(),
                digest: Some([7; 32]),
            };
            (key(id), ims_log::encode(&old))
        })
        .collect();
    rewrite_index(&dir, &records);
    let log = open(&dir);
    for id in &ids {
        let stored = log.command("tenant t1", id).unwrap().unwrap();
        assert_eq!(stored.reply, b"{\"ok\":true,\"from\":\"the old index\"}");
    }
    drop(log);

    // A row that points where the log holds no such record says so rather than answering (the
    // last id's command is not in the first run of records).
    rewrite_index(&dir, &[(key(&ids[149]), 1u64.to_be_bytes().to_vec())]);
    let log = open(&dir);
    let errors: Vec<String> = ids
        .iter()
        .filter_map(|id| log.command("tenant t1", id).err().map(|e| e.to_string()))
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("points at position 1"), "{}", errors[0]);
}

#[test]
fn appends_write_the_index_once_enough_commands_are_pending_and_a_crash_loses_none() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    // Groups of 100: the append after the one that passes the due count writes them all.
    let groups = INDEX_DUE_COMMANDS / 100 + 2;
    let ids = append_new(&log, groups * 100);
    drop(log); // a crash: the last group's records were never indexed
    let index_db =
        ims_log::open_sled(sled::Config::new().path(dir.path().join("log/commands"))).unwrap();
    let indexed = ids
        .iter()
        .filter(|id| {
            indexed_position(&index_db, "tenant t1", id)
                .unwrap()
                .is_some()
        })
        .count();
    assert_eq!(indexed, (groups - 1) * 100);
    drop(index_db);
    assert_retries_are_duplicates(&open(&dir), &ids);
}
