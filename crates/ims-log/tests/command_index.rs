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
    let ids: Vec<Uuid> = (0..count).map(|_| Uuid::now_v7()).collect();
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
    let before = append_new(&open(&dir), 150);
    let after = {
        let log = open(&dir);
        let after = append_new(&log, 250);
        log.index_pending_commands().unwrap();
        after
    };
    {
        // The index as a crash could leave it (it is not flushed with the log): the batches of
        // the last appends lost, watermark and keys alike.
        let index =
            ims_log::open_sled(sled::Config::new().path(dir.path().join("log/commands"))).unwrap();
        for id in &after {
            let key = [&b"a"[..], id.as_bytes(), b"tenant t1"].concat();
            assert!(index.remove(key).unwrap().is_some());
        }
        index.insert(b"w", &150u64.to_be_bytes()).unwrap();
        index.flush().unwrap();
    }
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
        let key = [&b"a"[..], id.as_bytes(), b"tenant t1"].concat();
        assert!(index_db.get(key).unwrap().is_some(), "{id} not indexed");
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

/// The index's rows: `(key, value)` of every command key (`a`), read with the log closed.
fn index_rows(dir: &tempfile::TempDir) -> Vec<(sled::IVec, sled::IVec)> {
    let db = ims_log::open_sled(sled::Config::new().path(dir.path().join("log/commands"))).unwrap();
    db.scan_prefix(b"a").map(Result::unwrap).collect()
}

fn rewrite_index(dir: &tempfile::TempDir, rows: &[(sled::IVec, Vec<u8>)]) {
    let db = ims_log::open_sled(sled::Config::new().path(dir.path().join("log/commands"))).unwrap();
    for (key, value) in rows {
        db.insert(key, value.as_slice()).unwrap();
    }
    db.flush().unwrap();
}

#[test]
fn the_index_points_at_the_logs_records_and_entries_that_hold_the_record_still_answer() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    let ids = append_new(&log, 150);
    log.index_pending_commands().unwrap();
    let positions: Vec<u64> = ids
        .iter()
        .map(|id| {
            let stored = log.command("tenant t1", id).unwrap().unwrap();
            assert_eq!(stored.reply, command(*id, 1).reply);
            stored.last_position
        })
        .collect();
    drop(log);
    // A row is the command's last position, not its record with the reply.
    let rows = index_rows(&dir);
    assert_eq!(rows.len(), ids.len());
    let mut pointed: Vec<u64> = rows
        .iter()
        .map(|(_, value)| u64::from_be_bytes(value.as_ref().try_into().expect("8 bytes")))
        .collect();
    pointed.sort_unstable();
    assert_eq!(pointed, positions);

    // An index written before held the whole record in each row: still read as it is.
    let old_rows: Vec<(sled::IVec, Vec<u8>)> = rows
        .iter()
        .map(|(key, value)| {
            let last_position = u64::from_be_bytes(value.as_ref().try_into().unwrap());
            let old = StoredCommand {
                first_position: last_position,
                last_position,
                reply: b"{\"ok\":true,\"from\":\"the old index\"}".to_vec(),
                digest: Some([7; 32]),
            };
            (key.clone(), ims_log::encode(&old))
        })
        .collect();
    rewrite_index(&dir, &old_rows);
    let log = open(&dir);
    for id in &ids {
        let stored = log.command("tenant t1", id).unwrap().unwrap();
        assert_eq!(stored.reply, b"{\"ok\":true,\"from\":\"the old index\"}");
    }
    drop(log);

    // A row that points where the log holds no such record says so rather than answering (the
    // rows are in id order, and the last id's command is not in the first run).
    let (key, _) = rows.last().unwrap();
    rewrite_index(&dir, &[(key.clone(), 1u64.to_be_bytes().to_vec())]);
    let log = open(&dir);
    let found: Vec<_> = ids.iter().map(|id| log.command("tenant t1", id)).collect();
    let errors: Vec<String> = found
        .iter()
        .filter_map(|result| result.as_ref().err().map(ToString::to_string))
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("points at position 1"), "{}", errors[0]);
}
