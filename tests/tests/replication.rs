//! Replicated durability and failover (DESIGN.md section 12), with real nats-servers running
//! JetStream and imsd nodes as child processes: a standby takes over from a killed leader
//! without losing an acknowledged command, a fenced writer commits nothing, a follower that was
//! down catches up, and a cluster keeps serving when one of its servers dies.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ims_bus::{LeaseDeadline, LogReadError, LogSource};
use ims_log::{EventLog, GroupRecord, LogError, NewCommand, NewEvent};
use ims_replication::ReplicatedLog;
use ims_tests::replication::{Deployment, Node};
use ims_tests::serde_json::{json, Value};
use ims_tests::{code, Client, REGION};
use uuid::Uuid;

const IMSD: &str = env!("CARGO_BIN_EXE_imsd-under-test");
const IMSCTL: &str = env!("CARGO_BIN_EXE_imsctl-under-test");

/// Commands answered `ok`: their id, the position of their last event, and when.
type Acknowledged = Arc<Mutex<HashMap<Uuid, (u64, Instant)>>>;

/// Clients that create images as fast as they are answered, each retrying its command with the
/// same command id until it is answered: through a leader's death and a standby's takeover.
struct Load {
    acknowledged: Acknowledged,
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    async fn start(client: &Client, tenants: &[String], workers: usize) -> Self {
        let acknowledged: Acknowledged = Default::default();
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for worker in 0..workers {
            let tenant = tenants[worker % tenants.len()].clone();
            let connection = client.tenant_connection(&tenant).await;
            let (acknowledged, stop) = (acknowledged.clone(), stop.clone());
            handles.push(tokio::spawn(async move {
                let subject = format!("ims.v1.{REGION}.cmd.{tenant}.create-image");
                'commands: while !stop.load(Ordering::Relaxed) {
                    let id = Uuid::now_v7();
                    let payload = ims_tests::serde_json::to_vec(&json!({
                        "command_id": id.to_string(), "name": "load", "disk": "data",
                        "source": {"file": {"url": "obs://bucket/load.raw", "format": "raw"}},
                        "min_disk_gb": 10}))
                    .unwrap();
                    loop {
                        if stop.load(Ordering::Relaxed) {
                            break 'commands;
                        }
                        let sent = tokio::time::timeout(
                            Duration::from_secs(2),
                            connection.request(subject.clone(), payload.clone().into()),
                        )
                        .await;
                        // No answer: no leader yet, or it died with the command in hand.
                        let Ok(Ok(message)) = sent else {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        };
                        let reply: Value =
                            ims_tests::serde_json::from_slice(&message.payload).unwrap();
                        if reply["ok"] == true {
                            let position = reply["position"].as_u64().expect("a position");
                            acknowledged
                                .lock()
                                .unwrap()
                                .insert(id, (position, Instant::now()));
                            continue 'commands;
                        }
                        assert_eq!(code(&reply), "unavailable", "{reply}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }));
        }
        Self {
            acknowledged,
            stop,
            workers: handles,
        }
    }

    /// Waits until `count` commands were acknowledged after `since`; returns when the first was.
    async fn wait_acknowledged(&self, since: Instant, count: usize) -> Instant {
        let started = Instant::now();
        loop {
            let after: Vec<Instant> = self
                .acknowledged
                .lock()
                .unwrap()
                .values()
                .map(|(_, at)| *at)
                .filter(|at| *at > since)
                .collect();
            if after.len() >= count {
                return after.into_iter().min().unwrap();
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "only {} commands acknowledged in 60 s",
                after.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The position and time of every answer so far.
    fn answered(&self) -> Vec<(u64, Instant)> {
        self.acknowledged
            .lock()
            .unwrap()
            .values()
            .copied()
            .collect()
    }

    async fn stop(self) -> HashMap<Uuid, u64> {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers {
            worker.await.unwrap();
        }
        let acknowledged = self.acknowledged.lock().unwrap();
        acknowledged
            .iter()
            .map(|(id, (position, _))| (*id, *position))
            .collect()
    }
}

async fn register_load_tenants(client: &Client) -> Vec<String> {
    let tenants: Vec<String> = (0..8).map(|i| format!("load-{i}")).collect();
    let names: Vec<&str> = tenants.iter().map(String::as_str).collect();
    client.register_with_quota(&names, 1_000_000).await;
    tenants
}

/// The command id of each position of the log the leader serves, checking that positions are
/// contiguous from 1.
async fn command_ids_by_position(client: &Client) -> Vec<Option<Uuid>> {
    let mut ids = Vec::new();
    loop {
        let from = ids.len() as u64 + 1;
        let batch = client.read_log(from, 1000).await;
        for envelope in &batch.envelopes {
            assert_eq!(envelope.position(), ids.len() as u64 + 1, "contiguous");
            ids.push(envelope.body.command_id.map(Uuid::from_bytes));
        }
        if batch.envelopes.is_empty() || ids.len() as u64 >= batch.head {
            return ids;
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The first position of the log recorded after `ms` (milliseconds since the epoch).
async fn first_position_recorded_after(client: &Client, ms: u64) -> u64 {
    let mut from = 1;
    loop {
        let batch = client.read_log(from, 1000).await;
        if let Some(envelope) = batch
            .envelopes
            .iter()
            .find(|envelope| envelope.body.recorded_at_ms > ms)
        {
            return envelope.position();
        }
        assert!(
            !batch.envelopes.is_empty(),
            "nothing recorded after the kill"
        );
        from = batch.envelopes.last().unwrap().position() + 1;
    }
}

/// `imsctl audit --data-dir <node's> ARGS` on a stopped node: its standard output.
fn audit_offline(node: &Node, args: &[&str]) -> Vec<u8> {
    let output = std::process::Command::new(IMSCTL)
        .args(["--region", REGION, "audit", "--data-dir"])
        .arg(node.data.path())
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "imsctl audit {args:?} on node {}: {}",
        node.name,
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Two stopped nodes' logs hold the same events, the chain verifying on both.
fn assert_same_logs(a: &Node, b: &Node) {
    let (a, b) = (a.log(), b.log());
    assert_eq!(a.head(), b.head(), "the logs end at the same event");
    let head = a.head_position();
    assert_eq!(a.verify(1..=head).unwrap(), Ok(()));
    assert_eq!(b.verify(1..=head).unwrap(), Ok(()));
    let mut from = 1;
    while from <= head {
        let (left, right) = (
            a.read_range(from, 5000).unwrap(),
            b.read_range(from, 5000).unwrap(),
        );
        assert_eq!(left, right, "the logs differ from position {from}");
        from += left.len() as u64;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_within_10_s_of_a_kill_9_under_load_and_loses_nothing_answered_ok() {
    let deployment = Deployment::start(IMSD, 1).await;
    let (mut a, client) = deployment.start_leader(1, &[]).await;
    let mut b = deployment.start_standby(1, &[]);
    let tenants = register_load_tenants(&client).await;

    let load = Load::start(&client, &tenants, 32).await;
    load.wait_acknowledged(Instant::now() - Duration::from_secs(600), 300)
        .await;
    let killed_at = Instant::now();
    let killed_ms = now_ms();
    a.kill();
    load.wait_acknowledged(killed_at, 300).await;
    let answered = load.answered();
    let acknowledged = load.stop().await;
    assert_eq!(deployment.lease_holder().await.as_deref(), Some("b"));
    // The takeover: from the kill to the first answer to a command the new leader decided (the
    // first position recorded after the kill; answers a sent just before it died come sooner).
    let first_of_b = first_position_recorded_after(&client, killed_ms).await;
    let takeover = answered
        .iter()
        .filter(|(position, _)| *position >= first_of_b)
        .map(|(_, at)| *at - killed_at)
        .min()
        .expect("answers from the new leader");
    assert!(
        takeover < Duration::from_secs(10),
        "the standby answered its first command {takeover:?} after the leader's kill -9"
    );

    // Every acknowledged command is in the new leader's log, at the position it was told, once.
    let by_position = command_ids_by_position(&client).await;
    for (id, position) in &acknowledged {
        assert_eq!(
            by_position.get(*position as usize - 1).copied().flatten(),
            Some(*id),
            "command {id}, answered ok at position {position}, is not there"
        );
    }
    let mut seen = std::collections::HashSet::new();
    for id in by_position.iter().flatten() {
        assert!(seen.insert(*id), "command {id} was appended twice");
    }

    // The old leader comes back as a follower and catches up with the new one.
    a.start();
    a.wait_position(by_position.len() as u64).await;
    assert_eq!(deployment.lease_holder().await.as_deref(), Some("b"));
    a.stop();
    b.stop();
    assert_same_logs(&a, &b);
    // An auditor gets the same answers from either node.
    for node in [&a, &b] {
        audit_offline(node, &["verify"]);
    }
    assert_eq!(
        audit_offline(&a, &["export"]),
        audit_offline(&b, &["export"]),
        "the exports of the two nodes differ"
    );
    eprintln!(
        "takeover after kill -9: {takeover:?}; {} commands acknowledged; log of {} events",
        acknowledged.len(),
        by_position.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_paused_past_its_lease_commits_and_answers_nothing_once_another_leads_and_follows_it(
) {
    let deployment = Deployment::start(IMSD, 1).await;
    let (mut a, client) = deployment.start_leader(1, &[]).await;
    let mut b = deployment.start_standby(1, &[]);
    let tenants = register_load_tenants(&client).await;
    let load = Load::start(&client, &tenants, 16).await;
    load.wait_acknowledged(Instant::now() - Duration::from_secs(600), 100)
        .await;

    // a freezes with its lease, its subscriptions and commands in hand; b takes over.
    a.signal("STOP");
    deployment.wait_leader("b").await;
    load.wait_acknowledged(Instant::now(), 100).await;
    // Reads of the log queue up on a's socket too (its endpoint is still subscribed). Once
    // awake, a must not answer them from its stale log (it refuses them, or steps down first
    // and drops them): a reader whose checkpoint is past that head would take the answer for
    // another log and stop, as b's import worker once did.
    let b_head = load.answered().iter().map(|(position, _)| *position).max();
    let region = ims_domain::RegionId::parse(REGION).unwrap();
    let auditor = client.auditor_connection().await;
    let reads: Vec<_> = (0..24)
        .map(|_| {
            let reader = LogSource::online(auditor.clone(), &Default::default(), &region)
                .with_timeout(Duration::from_secs(10));
            tokio::spawn(async move { reader.batch(1, 1).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // a wakes up still believing it leads: what it had in hand is fenced by the stream, its
    // lease renewal fails, and it follows b.
    a.signal("CONT");
    let woke = Instant::now();
    for read in reads {
        match read.await.unwrap() {
            Ok(batch) => assert!(
                Some(batch.head) >= b_head,
                "log.read answered head {} after b had acknowledged position {b_head:?}",
                batch.head
            ),
            Err(LogReadError::Refused { code, .. }) => assert_eq!(code, "unavailable"),
            Err(LogReadError::Timeout { .. }) => {}
            Err(error) => panic!("log.read failed: {error}"),
        }
    }
    load.wait_acknowledged(woke, 100).await;
    while a.gauge("ims_replication_leader").await != 0.0 {
        assert!(woke.elapsed() < Duration::from_secs(40), "a still leads");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let acknowledged = load.stop().await;
    assert_eq!(deployment.lease_holder().await.as_deref(), Some("b"));

    let by_position = command_ids_by_position(&client).await;
    for (id, position) in &acknowledged {
        assert_eq!(
            by_position.get(*position as usize - 1).copied().flatten(),
            Some(*id),
            "command {id}, answered ok at position {position}, is not there"
        );
    }
    a.wait_position(by_position.len() as u64).await;
    a.stop();
    b.stop();
    assert_same_logs(&a, &b);
}

/// A leader's endpoints answer only while its lease lasts by its own clock: once it lapses,
/// commands, `log.read` and who-could-use are refused `unavailable`, so that the client asks
/// again and reaches the node that leads now, instead of being answered from a log that node
/// may have moved past.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_lease_lapsed_refuses_commands_log_reads_and_audits() {
    let data = tempfile::tempdir().unwrap();
    let nats = ims_tests::secured_nats(data.path());
    let client = Client::connect_as_service(&nats.url(), REGION, data.path()).await;
    let region = ims_domain::RegionId::parse(REGION).unwrap();
    let subjects = ims_wire::Subjects::default();
    let log = EventLog::open(data.path().join("log"), REGION).unwrap();
    let (published_tx, _published_rx) = tokio::sync::mpsc::channel(64);
    let (writer, _thread) = ims_writer::spawn_writer(
        region.clone(),
        log.clone(),
        Default::default(),
        published_tx,
    );
    let lease = LeaseDeadline::lapsed();
    lease.hold_until(Instant::now() + Duration::from_secs(600));
    tokio::spawn(ims_writer::serve_commands(
        client.nats.clone(),
        subjects.clone(),
        region.clone(),
        writer,
        log.clone(),
        Some(lease.clone()),
        std::future::pending(),
    ));
    tokio::spawn(ims_audit::serve_audits(
        client.nats.clone(),
        subjects.clone(),
        region.clone(),
        log,
        Some(lease.clone()),
        std::future::pending(),
    ));
    client.wait_ready().await;
    client.register(&["owner"]).await;
    let create = || {
        client.command(
            "owner",
            "create-image",
            json!({"name": "web", "disk": "data", "min_disk_gb": 10,
                   "source": {"file": {"url": "obs://bucket/web.raw", "format": "raw"}}}),
        )
    };
    let created = create().await;
    assert_eq!(created["ok"], true, "{created}");
    let who_could_use = || async {
        let request = json!({"image_id": created["image_id"], "position": 1});
        let answer = client
            .nats
            .request(
                subjects.audit(&region, "who-could-use"),
                ims_tests::serde_json::to_vec(&request).unwrap().into(),
            )
            .await
            .unwrap();
        ims_tests::serde_json::from_slice::<Value>(&answer.payload).unwrap()
    };
    let reader = LogSource::online(client.auditor_connection().await, &subjects, &region);
    assert!(reader.batch(1, 1).await.is_ok());
    assert_eq!(code(&who_could_use().await), "");

    lease.end();
    let refused = create().await;
    assert_eq!(code(&refused), "unavailable", "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("lease"),
        "{refused}"
    );
    match reader.batch(1, 1).await {
        Err(LogReadError::Refused { code, .. }) => assert_eq!(code, "unavailable"),
        other => panic!("log.read with a lapsed lease: {other:?}"),
    }
    assert_eq!(code(&who_could_use().await), "unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_does_not_import_again_what_the_old_one_imported() {
    let deployment = Deployment::start(IMSD, 1).await;
    let import_root = tempfile::tempdir().unwrap();
    let disk = import_root.path().join("disk.raw");
    std::fs::write(&disk, vec![0u8; 4 << 20]).unwrap();
    let root = import_root.path().to_str().unwrap();
    let (mut a, client) = deployment.start_leader(1, &["--import-root", root]).await;
    let b = deployment.start_standby(1, &["--import-root", root]);
    client.register(&["owner"]).await;
    let imported = |node: &Node, id: &str| {
        node.data
            .path()
            .join(REGION)
            .join("store/images")
            .join(id)
            .is_file()
    };
    let create = || async {
        let reply = client
            .command(
                "owner",
                "create-image",
                json!({"name": "imported", "disk": "data", "min_disk_gb": 1,
                       "source": {"file": {"url": format!("file://{}", disk.display()),
                                           "format": "raw"}}}),
            )
            .await;
        assert_eq!(reply["ok"], true, "{reply}");
        let id = reply["image_id"].as_str().unwrap().to_owned();
        let started = Instant::now();
        loop {
            let view = client
                .query("owner", "image", json!({"image_id": id}))
                .await;
            if view["status"] == "active" {
                return id;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "{view}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let first = create().await;
    assert!(imported(&a, &first));

    a.kill();
    deployment.wait_leader("b").await;
    // b's import worker reads the log from position 1: by the time it has imported an image
    // created now, it has passed the first one, whose report the log already holds.
    let second = create().await;
    assert!(imported(&b, &second));
    assert!(
        !imported(&b, &first),
        "the new leader imported again an image the old one had imported and reported"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_operators_and_auditors_can_neither_write_the_replicated_log_nor_use_jetstream() {
    let deployment = Deployment::start(IMSD, 1).await;
    let (_a, client) = deployment.start_leader(1, &[]).await;
    client.register(&["mallory"]).await;
    let region = ims_domain::RegionId::parse(REGION).unwrap();
    let replicated = deployment.replicated_log().await;
    let before = replicated.last_sequence().await.unwrap();
    assert!(before > 0);

    let tenant = client.tenant_connection("mallory").await;
    let auditor = client.auditor_connection().await;
    let subject = ims_wire::Subjects::default().log_groups(&region);
    for (who, connection) in [
        ("tenant", &tenant),
        ("operator", &client.nats),
        ("auditor", &auditor),
    ] {
        // A forged group on the stream's subject is dropped by the server's permissions.
        connection
            .publish(subject.clone(), b"forged".to_vec().into())
            .await
            .unwrap();
        connection.flush().await.unwrap();
        // JetStream's API does not answer them.
        let asked = tokio::time::timeout(
            Duration::from_secs(2),
            connection.request(
                format!("$JS.API.STREAM.INFO.{}", replicated.stream()),
                Vec::new().into(),
            ),
        )
        .await;
        assert!(
            !matches!(asked, Ok(Ok(_))),
            "the {who} reached JetStream's API"
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        replicated.last_sequence().await.unwrap(),
        before,
        "a forged group reached the stream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_disk_fails_after_the_stream_acked_stops_and_comes_back_with_the_group() {
    let deployment = Deployment::start(IMSD, 1).await;
    let mut a = deployment.node("a", 1, false);
    // The 41st group's fdatasync fails: the stream has the group, a's disk does not.
    a.env = vec![("IMS_FAILPOINTS".into(), "fsync-fails-after=40".into())];
    a.start();
    deployment.wait_leader("a").await;
    let client = deployment.operator().await;
    client.wait_ready().await;
    let mut b = deployment.start_standby(1, &[]);
    let tenants = register_load_tenants(&client).await;
    let load = Load::start(&client, &tenants, 16).await;
    // a stops by itself (fail-stop); b takes over and the load goes on.
    let started = Instant::now();
    while !a.exited() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "a never failed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    deployment.wait_leader("b").await;
    load.wait_acknowledged(Instant::now(), 100).await;
    let acknowledged = load.stop().await;
    let by_position = command_ids_by_position(&client).await;
    for (id, position) in &acknowledged {
        assert_eq!(
            by_position.get(*position as usize - 1).copied().flatten(),
            Some(*id),
            "command {id}, answered ok at position {position}, is not there"
        );
    }
    // a, restarted on its disk, takes from the stream the group it had not written.
    a.env.clear();
    a.start();
    a.wait_position(by_position.len() as u64).await;
    a.stop();
    b.stop();
    assert_same_logs(&a, &b);
}

/// Two logs end at the same event and hold the same events, hashes included.
fn assert_same_events(a: &EventLog, b: &EventLog) {
    assert_eq!(a.head(), b.head(), "the logs end at the same event");
    let all = usize::try_from(a.head_position()).unwrap();
    assert_eq!(a.read_range(1, all).unwrap(), b.read_range(1, all).unwrap());
}

fn command(stream: &str, version: u64) -> NewCommand {
    NewCommand {
        command_id: Some(Uuid::now_v7()),
        actor: "tenant t1".to_owned(),
        recorded_at_ms: 1_700_000_000_000,
        events: vec![NewEvent {
            stream: stream.to_owned(),
            stream_version: version,
            event_type: "test_event".to_owned(),
            schema_version: 1,
            payload: vec![version as u8],
        }],
        digest: None,
        reply: b"{\"ok\":true}".to_vec(),
        snapshots: vec![],
    }
}

/// Appends `commands` to `log` through `replicated`, expecting the stream at `expected_last`.
async fn append(
    replicated: &ReplicatedLog,
    log: &EventLog,
    commands: Vec<NewCommand>,
    expected_last: u64,
) -> Result<u64, LogError> {
    let (replicated, log) = (replicated.clone(), log.clone());
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut sequence = 0;
        let mut replicate = |record: &GroupRecord| {
            sequence = runtime.block_on(replicated.publish(record, expected_last))?;
            Ok(sequence)
        };
        log.append_replicated(&commands, Some(&mut replicate))
            .map(|_| sequence)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_writers_that_both_believe_they_lead_only_one_commits_and_the_other_is_fenced() {
    let deployment = Deployment::start(IMSD, 1).await;
    let replicated = deployment.replicated_log().await;
    let dir = tempfile::tempdir().unwrap();
    let first = EventLog::open(dir.path().join("first"), REGION).unwrap();
    let second = EventLog::open(dir.path().join("second"), REGION).unwrap();

    // Both at the stream's end (empty), both writing position 1: the first to publish commits.
    let sequence = append(&replicated, &first, vec![command("image/a", 1)], 0)
        .await
        .unwrap();
    let fenced = append(&replicated, &second, vec![command("image/b", 1)], 0).await;
    assert!(
        matches!(fenced, Err(LogError::NotReplicated { fenced: true, .. })),
        "{fenced:?}"
    );
    assert_eq!(second.head_position(), 0, "the fenced writer wrote nothing");

    // The fenced one catches up and leads; the first, with its stale expectation, is fenced.
    assert_eq!(replicated.catch_up(&second).await.unwrap(), sequence);
    assert_eq!(second.head(), first.head());
    let next = append(&replicated, &second, vec![command("image/b", 1)], sequence)
        .await
        .unwrap();
    let stale = append(&replicated, &first, vec![command("image/c", 1)], sequence).await;
    assert!(
        matches!(stale, Err(LogError::NotReplicated { fenced: true, .. })),
        "{stale:?}"
    );
    // A writer that expects an older end than the stream's is fenced too, at any position.
    let older = append(&replicated, &first, vec![command("image/d", 1)], 0).await;
    assert!(
        matches!(older, Err(LogError::NotReplicated { fenced: true, .. })),
        "{older:?}"
    );
    assert_eq!(first.head_position(), 1);
    assert_eq!(replicated.catch_up(&first).await.unwrap(), next);
    assert_same_events(&first, &second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_larger_than_a_message_is_split_and_a_follower_puts_it_together() {
    let deployment = Deployment::start(IMSD, 1).await;
    let replicated = deployment.replicated_log().await;
    let dir = tempfile::tempdir().unwrap();
    let leader = EventLog::open(dir.path().join("leader"), REGION).unwrap();
    // A snapshot of 2.5 MiB: the group takes three messages of at most 1 MiB.
    let mut big = command("image/a", 1);
    big.snapshots = vec![(b"tenant/t1".to_vec(), vec![7u8; 5 << 19])];
    let last = append(&replicated, &leader, vec![big, command("image/b", 1)], 0)
        .await
        .unwrap();
    assert_eq!(last, 3, "three parts");
    let last = append(&replicated, &leader, vec![command("image/a", 2)], last)
        .await
        .unwrap();

    let follower = EventLog::open(dir.path().join("follower"), REGION).unwrap();
    assert_eq!(replicated.catch_up(&follower).await.unwrap(), last);
    assert_same_events(&follower, &leader);
    assert_eq!(follower.replicated_sequence().unwrap(), 4);
    assert_eq!(
        follower.snapshot(b"tenant/t1").unwrap().map(|s| s.len()),
        Some(5 << 19)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_written_before_replication_was_turned_on_is_refused_with_the_reason() {
    let deployment = Deployment::start(IMSD, 1).await;
    let replicated = deployment.replicated_log().await;
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(dir.path().join("log"), REGION).unwrap();
    log.append(&[command("image/a", 1)]).unwrap();
    let error = replicated.catch_up(&log).await.unwrap_err().to_string();
    assert!(
        error.contains("holds 1 events that stream IMS_LOG_test-1 did not give it"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_was_down_for_10000_events_catches_up_and_serves() {
    let deployment = Deployment::start(IMSD, 1).await;
    let (mut a, client) = deployment.start_leader(1, &[]).await;
    let mut b = deployment.start_standby(1, &[]);
    let tenants = register_load_tenants(&client).await;
    b.wait_position(client.head().await).await;
    b.kill();

    let before = client.head().await;
    let load = Load::start(&client, &tenants, 32).await;
    while client.head().await < before + 10_000 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    load.stop().await;
    let head = client.head().await;

    let started = Instant::now();
    b.start();
    b.wait_position(head).await;
    let caught_up = started.elapsed();
    // It serves: once the leader steps down, commands and queries.
    a.stop();
    deployment.wait_leader("b").await;
    let reply = client
        .command(
            "load-0",
            "create-image",
            json!({"name": "after", "disk": "data",
                   "source": {"file": {"url": "obs://bucket/after.raw", "format": "raw"}},
                   "min_disk_gb": 10}),
        )
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["position"].as_u64(), Some(head + 1), "{reply}");
    let images = client
        .query(
            "load-0",
            "visible-images",
            json!({"min_position": head + 1, "limit": 1}),
        )
        .await;
    assert!(images["position"].as_u64() > Some(head), "{images}");
    assert_eq!(
        images["items"].as_array().map(Vec::len),
        Some(1),
        "{images}"
    );
    eprintln!(
        "a follower down for {} events caught up in {caught_up:?}",
        head - before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_go_on_when_one_of_three_nats_servers_dies_under_load_and_nothing_is_lost() {
    let mut deployment = Deployment::start(IMSD, 3).await;
    let (mut a, client) = deployment.start_leader(3, &[]).await;
    let mut b = deployment.start_standby(3, &[]);
    let tenants = register_load_tenants(&client).await;

    let load = Load::start(&client, &tenants, 32).await;
    load.wait_acknowledged(Instant::now() - Duration::from_secs(600), 200)
        .await;
    let killed_at = Instant::now();
    deployment.servers[1].stop(); // SIGKILL of one of the three
    let first_after = load.wait_acknowledged(killed_at, 200).await;
    let acknowledged = load.stop().await;

    let by_position = command_ids_by_position(&client).await;
    for (id, position) in &acknowledged {
        assert_eq!(
            by_position.get(*position as usize - 1).copied().flatten(),
            Some(*id),
            "command {id}, answered ok at position {position}, is not there"
        );
    }
    let mut seen = std::collections::HashSet::new();
    for id in by_position.iter().flatten() {
        assert!(seen.insert(*id), "command {id} was appended twice");
    }
    // Both nodes hold the whole log.
    let leader = deployment.any_leader().await;
    let follower = if leader == "a" { &b } else { &a };
    follower.wait_position(by_position.len() as u64).await;
    a.stop();
    b.stop();
    assert_same_logs(&a, &b);
    eprintln!(
        "one NATS server of three killed: commands answered again {:?} after; {} acknowledged",
        first_after.saturating_duration_since(killed_at),
        acknowledged.len()
    );
}
