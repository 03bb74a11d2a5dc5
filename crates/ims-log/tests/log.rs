//! The event log's promises: what is appended reads back, positions have no gaps, the chain
//! verifies, retries append nothing, stale versions conflict, tampering is found.

use ims_log::*;
use proptest::prelude::*;
use uuid::Uuid;

fn command(id: Option<Uuid>, events: &[(&str, u64)]) -> NewCommand {
    NewCommand {
        digest: None,
        command_id: id,
        actor: "tenant t1".to_owned(),
        recorded_at_ms: 1_700_000_000_000,
        events: events
            .iter()
            .map(|(stream, version)| NewEvent {
                stream: (*stream).to_owned(),
                stream_version: *version,
                event_type: "test_event".to_owned(),
                schema_version: 1,
                payload: format!("{stream}@{version}").into_bytes(),
            })
            .collect(),
        reply: b"{\"ok\":true}".to_vec(),
        snapshots: vec![],
    }
}

fn open(dir: &tempfile::TempDir) -> EventLog {
    EventLog::open(dir.path().join("log"), "eu-west-0").unwrap()
}

#[test]
fn a_retried_command_id_appends_nothing_and_returns_the_first_result_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let id = Uuid::now_v7();
    let first = {
        let log = open(&dir);
        let results = log
            .append(&[command(Some(id), &[("image/a", 1), ("image/a", 2)])])
            .unwrap();
        let Appended::New {
            first_position,
            last_position,
            ..
        } = results[0]
        else {
            panic!("{results:?}")
        };
        assert_eq!((first_position, last_position), (1, 2));
        // Within the same group, too.
        let again = log
            .append(&[
                command(Some(id), &[("image/a", 3)]),
                command(Some(id), &[("image/a", 3)]),
            ])
            .unwrap();
        assert!(
            again.iter().all(|r| matches!(r, Appended::Duplicate(_))),
            "{again:?}"
        );
        log.head()
    };
    let log = open(&dir);
    assert_eq!(log.head(), first);
    let results = log.append(&[command(Some(id), &[("image/a", 3)])]).unwrap();
    assert_eq!(
        results,
        vec![Appended::Duplicate(StoredCommand {
            first_position: 1,
            last_position: 2,
            reply: b"{\"ok\":true}".to_vec(),
            digest: None,
        })]
    );
    assert_eq!(log.head_position(), 2);
}

#[test]
fn the_same_command_id_from_another_actor_is_a_new_command() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    let id = Uuid::now_v7();
    let mut acme = command(Some(id), &[("image/a", 1)]);
    acme.actor = "tenant acme".into();
    acme.digest = Some([1; 32]);
    let mut evil = command(Some(id), &[("image/b", 1)]);
    evil.actor = "tenant evil".into();
    let results = log.append(&[acme, evil]).unwrap();
    assert!(
        results.iter().all(|r| matches!(r, Appended::New { .. })),
        "{results:?}"
    );
    assert_eq!(
        log.command("tenant acme", &id).unwrap().unwrap().digest,
        Some([1; 32])
    );
    assert_eq!(
        log.command("tenant evil", &id)
            .unwrap()
            .unwrap()
            .first_position,
        2
    );
    assert_eq!(log.command("tenant nobody", &id).unwrap(), None);
}

#[test]
fn a_stale_stream_version_conflicts_and_writes_nothing_of_that_command() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    log.append(&[command(None, &[("image/a", 1)])]).unwrap();
    let results = log
        .append(&[
            command(None, &[("image/b", 1)]),
            command(None, &[("image/a", 1)]),
            command(None, &[("image/a", 2)]),
        ])
        .unwrap();
    assert!(matches!(
        results[0],
        Appended::New {
            first_position: 2,
            ..
        }
    ));
    assert_eq!(
        results[1],
        Appended::Conflict {
            stream: "image/a".into(),
            expected_version: 0,
            actual_version: 1
        }
    );
    assert!(matches!(
        results[2],
        Appended::New {
            first_position: 3,
            ..
        }
    ));
    assert_eq!(log.stream_version("image/a").unwrap(), 2);
    assert_eq!(
        log.read_stream("image/a")
            .unwrap()
            .iter()
            .map(|e| e.position())
            .collect::<Vec<_>>(),
        vec![1, 3]
    );
}

#[test]
fn long_streams_keep_their_order_and_versions_across_index_chunks_and_restarts() {
    // The stream index keeps 64 positions per key: cross those boundaries in uneven groups, with
    // another stream interleaved, and check versions, order and conflicts at the boundaries.
    let dir = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    {
        let log = open(&dir);
        let mut version = 0u64;
        for size in [1usize, 62, 1, 2, 63, 64, 7] {
            let mut group = Vec::new();
            for _ in 0..size {
                version += 1;
                group.push(command(
                    None,
                    &[("image/long", version), ("image/other", version)],
                ));
            }
            for appended in log.append(&group).unwrap() {
                let Appended::New { first_position, .. } = appended else {
                    panic!("not appended: {appended:?}");
                };
                expected.push(first_position);
            }
        }
        assert_eq!(log.stream_version("image/long").unwrap(), 200);
        for stale in [63, 64, 128] {
            let refused = log
                .append(&[command(None, &[("image/long", stale + 1)])])
                .unwrap();
            assert_eq!(
                refused[0],
                Appended::Conflict {
                    stream: "image/long".into(),
                    expected_version: stale,
                    actual_version: 200
                }
            );
        }
    }
    let log = open(&dir);
    assert_eq!(log.stream_version("image/long").unwrap(), 200);
    let read: Vec<(u64, u64)> = log
        .read_stream("image/long")
        .unwrap()
        .iter()
        .map(|e| (e.body.stream_version, e.position()))
        .collect();
    assert_eq!(read, (1..=200).zip(expected).collect::<Vec<_>>());
    assert_eq!(log.read_stream("image/other").unwrap().len(), 200);
}

#[test]
fn a_changed_byte_in_a_stored_event_is_found_by_verify_at_its_position() {
    let dir = tempfile::tempdir().unwrap();
    {
        // More events than the tail check of `open` covers, so that the log opens and only a
        // full verify finds the damage.
        let log = open(&dir);
        let total = TAIL_CHECK_EVENTS + 100;
        let commands: Vec<NewCommand> = (1..=total)
            .map(|v| command(None, &[("image/a", v)]))
            .collect();
        for group in commands.chunks(256) {
            log.append(group).unwrap();
        }
    }
    {
        // Tamper with the stored bytes of position 13 behind the log's back: it sits inside the
        // first record of the first append, stored under the position of its last event.
        let db = ims_log::open_sled(sled::Config::new().path(dir.path().join("log"))).unwrap();
        let mut from = vec![b'e'];
        from.extend_from_slice(&13u64.to_be_bytes());
        let (key, value) = db.range(from..).next().unwrap().unwrap();
        let last = u64::from_be_bytes(key[1..].try_into().unwrap());
        assert!(last > 13, "position 13 is inside a record");
        let mut envelopes = decode_record(&value, last).unwrap();
        let thirteenth = envelopes.iter_mut().find(|e| e.position() == 13).unwrap();
        thirteenth.body.payload[0] ^= 0x01;
        db.insert(&key, encode_record(&envelopes)).unwrap();
        db.flush().unwrap();
    }
    let log = open(&dir);
    let broken = log.verify(1..=log.head_position()).unwrap().unwrap_err();
    assert_eq!(broken.position, 13, "{broken:?}");
    assert!(log.verify(1..=12).unwrap().is_ok());
}

#[test]
fn an_append_of_256_events_is_stored_in_records_of_at_most_4_kib_and_reads_back_whole() {
    // Records of whole appends made sled store their leaf pages as blobs it never evicts, so a
    // scan of the log kept everything it read (see `RECORD_BYTES`).
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    let commands: Vec<NewCommand> = (1..=256)
        .map(|version| {
            let mut command = command(None, &[("image/a", version)]);
            command.events[0].payload = vec![b'x'; 400];
            command
        })
        .collect();
    log.append(&commands).unwrap();
    let read = log.read_range(1, 1000).unwrap();
    assert_eq!(read.len(), 256);
    assert!(read
        .iter()
        .enumerate()
        .all(|(i, e)| e.position() == i as u64 + 1));
    drop(read);
    drop(log);
    let db = ims_log::open_sled(sled::Config::new().path(dir.path().join("log"))).unwrap();
    let sizes: Vec<usize> = db
        .scan_prefix(b"e")
        .map(|item| item.unwrap().1.len())
        .collect();
    assert!(sizes.len() > 20, "{} records", sizes.len());
    assert!(sizes.iter().all(|size| *size <= 4096), "{sizes:?}");
}

#[test]
fn leaf_pages_of_full_records_stay_under_sleds_blob_size() {
    // sled stores a page over 128 KiB as a file of its own under `blobs/`, which its cache never
    // evicts: a scan would keep every such page it read. 4,096 events of 1 KiB fill hundreds of
    // records, and leaves of up to 17 of them, each written whole at least once.
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    for group in 0..16u64 {
        let commands: Vec<NewCommand> = (1..=256)
            .map(|version| {
                let mut command = command(None, &[("image/a", group * 256 + version)]);
                command.events[0].payload = vec![b'x'; 1000];
                command
            })
            .collect();
        log.append(&commands).unwrap();
    }
    drop(log);
    let blobs: Vec<_> = std::fs::read_dir(dir.path().join("log/blobs"))
        .map(|entries| entries.map(|entry| entry.unwrap().path()).collect())
        .unwrap_or_default();
    assert!(blobs.is_empty(), "pages stored as blobs: {blobs:?}");
    assert_eq!(open(&dir).read_range(1, 5000).unwrap().len(), 4096);
}

#[test]
fn a_record_that_no_longer_decodes_is_reported_at_its_first_position() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(&dir);
        let commands: Vec<NewCommand> = (1..=TAIL_CHECK_EVENTS + 30)
            .map(|v| command(None, &[("image/a", v)]))
            .collect();
        for group in commands.chunks(10) {
            log.append(group).unwrap();
        }
    }
    let first_cut;
    {
        // Cut the record that ends at position 20 short, behind the log's back.
        let db = ims_log::open_sled(sled::Config::new().path(dir.path().join("log"))).unwrap();
        let key = [&[b'e'][..], &20u64.to_be_bytes()].concat();
        let bytes = db.get(&key).unwrap().unwrap();
        first_cut = decode_record(&bytes, 20).unwrap()[0].position();
        db.insert(&key, &bytes[..bytes.len() / 2]).unwrap();
        db.flush().unwrap();
    }
    let log = open(&dir);
    let broken = log.verify(1..=log.head_position()).unwrap().unwrap_err();
    assert_eq!(broken.position, first_cut, "{broken:?}");
    assert!(log.verify(1..=first_cut - 1).unwrap().is_ok());
    // A range after it needs the hash of position 20 to start from, which is lost with it.
    let broken = log.verify(21..=log.head_position()).unwrap().unwrap_err();
    assert_eq!(broken.position, 20, "{broken:?}");
    assert!(log.verify(31..=log.head_position()).unwrap().is_ok());
}

#[test]
fn opening_a_log_whose_tail_was_tampered_with_fails_naming_the_position() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(&dir);
        for version in 1..=5 {
            log.append(&[command(None, &[("image/a", version)])])
                .unwrap();
        }
    }
    {
        let db = ims_log::open_sled(sled::Config::new().path(dir.path().join("log"))).unwrap();
        let mut key = vec![b'e'];
        key.extend_from_slice(&4u64.to_be_bytes());
        db.remove(&key).unwrap();
        db.flush().unwrap();
    }
    let error = EventLog::open(dir.path().join("log"), "eu-west-0").unwrap_err();
    assert!(
        matches!(error, LogError::Broken { position: 4, .. }),
        "{error}"
    );
}

#[test]
fn snapshots_are_written_with_their_command() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    let mut with_snapshot = command(None, &[("image/a", 1)]);
    with_snapshot
        .snapshots
        .push((b"image/a".to_vec(), b"state".to_vec()));
    log.append(&[with_snapshot]).unwrap();
    assert_eq!(log.snapshot(b"image/a").unwrap(), Some(b"state".to_vec()));
}

/// A command of `count` events on `stream`, at the versions after those in `versions`.
fn next_events(
    versions: &mut std::collections::HashMap<String, u64>,
    stream: &str,
    count: usize,
    id: Option<Uuid>,
) -> NewCommand {
    let version = versions.entry(stream.to_owned()).or_insert(0);
    let events: Vec<(&str, u64)> = (0..count)
        .map(|_| {
            *version += 1;
            (stream, *version)
        })
        .collect();
    command(id, &events)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn any_sequence_of_appends_reads_back_identical_contiguous_and_chained(
        groups in prop::collection::vec(prop::collection::vec((0u8..4, 1usize..4, any::<bool>()), 1..6), 1..10)
    ) {
        let dir = tempfile::tempdir().unwrap();
        let log = open(&dir);
        let mut versions = std::collections::HashMap::new();
        let mut written = Vec::new();
        for group in groups {
            let commands: Vec<NewCommand> = group
                .iter()
                .map(|(stream, count, with_id)| {
                    let id = with_id.then(Uuid::now_v7);
                    next_events(&mut versions, &format!("image/{stream}"), *count, id)
                })
                .collect();
            for result in log.append(&commands).unwrap() {
                let Appended::New { envelopes, .. } = result else { panic!("{result:?}") };
                written.extend(envelopes);
            }
        }
        let read: Vec<Envelope> = log.iter_from(1).collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(&read, &written);
        for (index, envelope) in read.iter().enumerate() {
            prop_assert_eq!(envelope.position(), index as u64 + 1);
        }
        prop_assert!(log.verify(1..=log.head_position()).unwrap().is_ok());
        drop(log);
        let reopened = open(&dir);
        let again: Vec<Envelope> = reopened.iter_from(1).collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(again, written);
    }

    #[test]
    fn every_stream_reads_back_its_events_whether_born_in_order_or_not(
        groups in prop::collection::vec(prop::collection::vec((0u16..300, 1usize..3), 1..40), 1..8)
    ) {
        // Streams with one event are births packed into runs (`log/streams`); names here come
        // in no order, and streams gain second events in later appends.
        let dir = tempfile::tempdir().unwrap();
        let log = open(&dir);
        let mut versions = std::collections::HashMap::new();
        let mut written: std::collections::BTreeMap<String, Vec<Envelope>> = Default::default();
        for group in groups {
            let commands: Vec<NewCommand> = group
                .iter()
                .map(|(stream, count)| {
                    let stream = format!("image/{:05}", (u32::from(*stream) * 7_919) % 300);
                    next_events(&mut versions, &stream, *count, None)
                })
                .collect();
            for result in log.append(&commands).unwrap() {
                let Appended::New { envelopes, .. } = result else { panic!("{result:?}") };
                for envelope in envelopes {
                    written.entry(envelope.body.stream.clone()).or_default().push(envelope);
                }
            }
        }
        let check = |log: &EventLog| -> Result<(), TestCaseError> {
            for (stream, envelopes) in &written {
                prop_assert_eq!(&log.read_stream(stream).unwrap(), envelopes);
                prop_assert_eq!(log.stream_version(stream).unwrap(), envelopes.len() as u64);
                // A stream that exists cannot be created again.
                let again = log.append(&[command(None, &[(stream.as_str(), 1)])]).unwrap();
                let is_conflict = matches!(again[0], Appended::Conflict { .. });
                prop_assert!(is_conflict, "{} created twice", stream);
            }
            let starts: Vec<(String, u64)> = written
                .iter()
                .map(|(stream, envelopes)| (stream.clone(), envelopes[0].position()))
                .collect();
            prop_assert_eq!(log.stream_starts("image/").unwrap(), starts);
            prop_assert_eq!(log.stream_version("image/99999").unwrap(), 0);
            prop_assert!(log.read_stream("image/99999").unwrap().is_empty());
            Ok(())
        };
        check(&log)?;
        drop(log);
        check(&open(&dir))?;
    }
}
