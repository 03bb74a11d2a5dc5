//! Replicated appends: a follower that appends the groups a leader replicated holds the same
//! log (events, stream index, command records, snapshots), and refuses a group that does not
//! continue it; a group the replicated log refused is written nowhere.

use ims_log::*;
use uuid::Uuid;

fn command(id: Uuid, stream: &str, version: u64) -> NewCommand {
    NewCommand {
        digest: Some([7; 32]),
        command_id: Some(id),
        actor: "tenant t1".to_owned(),
        recorded_at_ms: 1_700_000_000_000,
        events: vec![NewEvent {
            stream: stream.to_owned(),
            stream_version: version,
            event_type: "test_event".to_owned(),
            schema_version: 1,
            payload: format!("{stream}@{version}").into_bytes(),
        }],
        reply: format!("{{\"ok\":true,\"v\":{version}}}").into_bytes(),
        snapshots: vec![(format!("tenant/{stream}").into_bytes(), vec![version as u8])],
    }
}

fn open(dir: &tempfile::TempDir, name: &str) -> EventLog {
    EventLog::open(dir.path().join(name), "eu-west-0").unwrap()
}

/// Appends `groups` groups of three commands to `leader`, sending each group through
/// `replicate`, which gives it the next stream sequence; returns the replicated records.
fn lead(leader: &EventLog, groups: u64) -> Vec<(GroupRecord, u64)> {
    let mut replicated = Vec::new();
    let mut sequence = leader.replicated_sequence().unwrap();
    for group in 0..groups {
        let commands: Vec<NewCommand> = (0..3)
            .map(|i| command(Uuid::now_v7(), &format!("image/{i}"), group + 1))
            .collect();
        let mut replicate = |record: &GroupRecord| {
            sequence += 1;
            replicated.push((GroupRecord::decode(&record.encode()).unwrap(), sequence));
            Ok(sequence)
        };
        leader
            .append_replicated(&commands, Some(&mut replicate))
            .unwrap();
    }
    replicated
}

#[test]
fn a_follower_appending_the_replicated_groups_holds_what_the_leader_holds() {
    let dir = tempfile::tempdir().unwrap();
    let (leader, follower) = (open(&dir, "leader"), open(&dir, "follower"));
    // 70 groups: streams cross a stream-index chunk (64 versions).
    let replicated = lead(&leader, 70);
    // The first 40 as a catching-up follower appends them, ten groups a batch; the rest one by
    // one.
    for chunk in replicated[..40].chunks(10) {
        let records: Vec<GroupRecord> = chunk.iter().map(|(record, _)| record.clone()).collect();
        let sequence = chunk.last().unwrap().1;
        assert_eq!(follower.append_groups(&records, sequence).unwrap(), 10);
    }
    for (record, sequence) in &replicated[40..] {
        assert!(follower.append_group(record, *sequence).unwrap());
    }
    // A redelivered group is skipped.
    let (last, sequence) = replicated.last().unwrap();
    assert!(!follower.append_group(last, *sequence).unwrap());

    assert_eq!(follower.head(), leader.head());
    assert_eq!(follower.replicated_sequence().unwrap(), 70);
    assert_eq!(
        follower.read_range(1, 1000).unwrap(),
        leader.read_range(1, 1000).unwrap()
    );
    assert_eq!(follower.verify(1..=210).unwrap(), Ok(()));
    for stream in ["image/0", "image/1", "image/2"] {
        assert_eq!(follower.stream_version(stream).unwrap(), 70);
        assert_eq!(
            follower.read_stream(stream).unwrap(),
            leader.read_stream(stream).unwrap()
        );
        let key = format!("tenant/{stream}").into_bytes();
        assert_eq!(follower.snapshot(&key).unwrap(), Some(vec![70]));
    }
    for (record, _) in &replicated {
        for command in &record.commands {
            let id = Uuid::from_bytes(command.command_id);
            assert_eq!(
                follower.command(&command.actor, &id).unwrap().as_ref(),
                Some(&command.stored)
            );
        }
    }
    // The follower, reopened, is a log like any other: it takes appends on from the head.
    drop(follower);
    let follower = open(&dir, "follower");
    let results = follower
        .append(&[command(Uuid::now_v7(), "image/0", 71)])
        .unwrap();
    assert!(matches!(
        results[0],
        Appended::New {
            first_position: 211,
            ..
        }
    ));
}

#[test]
fn a_group_that_does_not_continue_the_follower_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (leader, follower) = (open(&dir, "leader"), open(&dir, "follower"));
    let replicated = lead(&leader, 3);
    // The second group without the first: a gap.
    let error = follower
        .append_group(&replicated[1].0, replicated[1].1)
        .unwrap_err();
    assert!(
        matches!(error, LogError::Broken { position: 1, .. }),
        "{error}"
    );
    // A group whose event was altered: its hash no longer holds.
    let mut altered = replicated[0].0.clone();
    altered.envelopes[1].body.payload = b"rewritten".to_vec();
    let error = follower.append_group(&altered, 1).unwrap_err();
    assert!(error.to_string().contains("sequence 1"), "{error}");
    assert_eq!(follower.head_position(), 0);
    // The log is still usable: the real groups go in.
    for (record, sequence) in &replicated {
        follower.append_group(record, *sequence).unwrap();
    }
    assert_eq!(follower.head(), leader.head());
}

#[test]
fn a_group_the_replicated_log_refused_is_written_nowhere_and_the_log_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir, "leader");
    let id = Uuid::now_v7();
    let mut refuse = |_: &GroupRecord| -> Result<u64, LogError> {
        Err(LogError::NotReplicated {
            fenced: true,
            reason: "wrong last sequence".to_owned(),
        })
    };
    let error = log
        .append_replicated(&[command(id, "image/a", 1)], Some(&mut refuse))
        .unwrap_err();
    assert!(matches!(
        error,
        LogError::NotReplicated { fenced: true, .. }
    ));
    assert_eq!(log.head_position(), 0);
    assert_eq!(log.command("tenant t1", &id).unwrap(), None);
    assert_eq!(log.snapshot(b"tenant/image/a").unwrap(), None);
    // Not poisoned: the same command goes in once replicated.
    let mut accept = |_: &GroupRecord| -> Result<u64, LogError> { Ok(1) };
    let results = log
        .append_replicated(&[command(id, "image/a", 1)], Some(&mut accept))
        .unwrap();
    assert!(matches!(
        results.0[0],
        Appended::New {
            last_position: 1,
            ..
        }
    ));
    assert_eq!(log.replicated_sequence().unwrap(), 1);
}

/// Appends `stream`'s first event to `log` as a leader, replicating the group under `sequence`;
/// returns what the append got and the replicated group, if it wrote one.
fn create(log: &EventLog, stream: &str, sequence: u64) -> (Appended, Option<GroupRecord>) {
    let mut replicated = None;
    let mut replicate = |record: &GroupRecord| {
        replicated = Some(record.clone());
        Ok(sequence)
    };
    let (mut results, _) = log
        .append_replicated(&[command(Uuid::now_v7(), stream, 1)], Some(&mut replicate))
        .unwrap();
    (results.remove(0), replicated)
}

#[test]
fn a_stream_a_leader_created_is_not_created_again_by_the_node_that_took_over() {
    // New streams are known absent without a read when they sort past the last stream of their
    // kind that this log has seen. A node that led, followed, and leads again must count the
    // streams it followed in.
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(&dir, "a"), open(&dir, "b"));
    let (created, group) = create(&a, "image/0", 1);
    assert!(matches!(created, Appended::New { .. }));
    b.append_group(&group.unwrap(), 1).unwrap();
    // b takes over and creates a stream that sorts past a's last; a follows.
    let (created, group) = create(&b, "image/5", 2);
    assert!(matches!(created, Appended::New { .. }));
    a.append_group(&group.unwrap(), 2).unwrap();
    // a leads again: both streams exist there, whatever order they sort in.
    for stream in ["image/5", "image/0"] {
        let (refused, _) = create(&a, stream, 3);
        assert_eq!(
            refused,
            Appended::Conflict {
                stream: stream.to_owned(),
                expected_version: 0,
                actual_version: 1
            }
        );
    }
    let (created, _) = create(&a, "image/3", 3);
    assert!(matches!(created, Appended::New { .. }));
    // And after a restart.
    drop(a);
    let a = open(&dir, "a");
    for stream in ["image/3", "image/5", "image/0"] {
        assert!(matches!(create(&a, stream, 4).0, Appended::Conflict { .. }));
    }
    assert!(matches!(create(&a, "image/9", 4).0, Appended::New { .. }));
}
