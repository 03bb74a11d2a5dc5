//! Guarantees of DESIGN.md section 7 under failure: an acknowledged command survives kill -9 of
//! imsd, nothing refused is ever in the log, and a NATS restart needs no imsd restart.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ims_tests::serde_json::{json, Value};
use ims_tests::{code, Client, Service, REGION};

fn start_imsd(nats_url: &str, data_dir: &std::path::Path) -> ims_tests::KilledOnDrop {
    ims_tests::spawn_imsd(
        env!("CARGO_BIN_EXE_imsd-under-test"),
        "run",
        nats_url,
        data_dir,
        REGION,
    )
}

/// `imsd run` whose stderr the test reads (errors only), with `IMS_FAILPOINTS` armed.
fn start_imsd_reporting(
    nats_url: &str,
    data_dir: &std::path::Path,
    http: std::net::SocketAddr,
    failpoints: &str,
) -> ims_tests::KilledOnDrop {
    ims_tests::KilledOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_imsd-under-test"))
            .args(["run", "--nats-url", nats_url, "--regions", REGION])
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--http-addr", &http.to_string()])
            .env("RUST_LOG", "error")
            .env("IMS_FAILPOINTS", failpoints)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

fn free_http_addr() -> std::net::SocketAddr {
    format!("127.0.0.1:{}", ims_nats_server::free_port().unwrap())
        .parse()
        .unwrap()
}

/// Waits (at most 20 s, else fails with `still_running`) for imsd to exit by itself; its exit
/// status and what it wrote to stderr.
async fn exit_of(
    imsd: &mut ims_tests::KilledOnDrop,
    still_running: &str,
) -> (std::process::ExitStatus, String) {
    let started = Instant::now();
    let status = loop {
        if let Some(status) = imsd.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{still_running}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(imsd.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    (status, stderr)
}

fn create_body(command_id: uuid::Uuid, valid: bool) -> Value {
    json!({"command_id": command_id.to_string(), "name": "load", "disk": "data",
           "source": {"file": {"url": "obs://bucket/load.raw", "format": "raw"}},
           "min_disk_gb": if valid { 10 } else { 0 }})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_answered_ok_survives_kill_9_and_nothing_refused_is_in_the_log() {
    // Proves durability before acknowledgement under concurrent load and an abrupt crash.
    let data = tempfile::tempdir().unwrap();
    let nats = ims_tests::secured_nats(data.path());
    let mut imsd = start_imsd(&nats.url(), data.path());
    let client = Client::connect(&nats.url(), REGION, data.path()).await;
    client.wait_ready().await;
    let tenants: Vec<String> = (0..8).map(|i| format!("load-{i}")).collect();
    let names: Vec<&str> = tenants.iter().map(String::as_str).collect();
    client.register_with_quota(&names, 1_000_000).await;

    let answered_ok = Arc::new(Mutex::new(HashSet::new()));
    let answered_error = Arc::new(Mutex::new(HashSet::new()));
    // The load runs until a while after the kill; the kill comes once enough commands were
    // acknowledged, however slow the machine (a fixed time gave too few on a loaded CI).
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for worker in 0..32 {
        let tenant = tenants[worker % tenants.len()].clone();
        let connection = client.tenant_connection(&tenant).await;
        let (ok, error) = (answered_ok.clone(), answered_error.clone());
        let stop = stop.clone();
        load.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let id = uuid::Uuid::now_v7();
                let valid = n % 5 != 0;
                let subject = format!("ims.v1.{REGION}.cmd.{tenant}.create-image");
                let payload = ims_tests::serde_json::to_vec(&create_body(id, valid)).unwrap();
                let sent = tokio::time::timeout(
                    Duration::from_secs(2),
                    connection.request(subject, payload.into()),
                )
                .await;
                let Ok(Ok(message)) = sent else { continue }; // lost with the crash: neither
                let reply: Value = ims_tests::serde_json::from_slice(&message.payload).unwrap();
                if reply["ok"] == true {
                    ok.lock().unwrap().insert(id);
                } else {
                    assert_eq!(code(&reply), "invalid_argument", "{reply}");
                    error.lock().unwrap().insert(id);
                }
            }
        }));
    }
    let started = Instant::now();
    while answered_ok.lock().unwrap().len() < 200 && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    imsd.kill().unwrap(); // SIGKILL, mid-load
    imsd.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }

    let mut imsd = start_imsd(&nats.url(), data.path());
    client.wait_ready().await;
    let mut in_log = HashSet::new();
    let mut from = 1;
    loop {
        let batch = client.read_log(from, 1000).await;
        for envelope in &batch.envelopes {
            assert_eq!(envelope.position(), from, "positions are contiguous");
            from += 1;
            if let Some(id) = envelope.body.command_id {
                in_log.insert(uuid::Uuid::from_bytes(id));
            }
        }
        if batch.envelopes.is_empty() || from > batch.head {
            break;
        }
    }
    let ok = answered_ok.lock().unwrap().clone();
    let refused = answered_error.lock().unwrap().clone();
    assert!(
        ok.len() > 50,
        "the load produced only {} acknowledged commands",
        ok.len()
    );
    let missing: Vec<_> = ok.difference(&in_log).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged commands are missing after kill -9",
        missing.len()
    );
    assert!(
        refused.intersection(&in_log).next().is_none(),
        "a refused command is in the log"
    );
    imsd.kill().unwrap();
    imsd.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imsd_serves_again_after_nats_restarts_without_being_restarted() {
    // Proves that the service reconnects to NATS by itself and re-subscribes its endpoints.
    let mut service = Service::start().await;
    service.client.register(&["t1"]).await;
    service.nats.restart().unwrap();
    let started = Instant::now();
    loop {
        let subject = format!("ims.v1.{REGION}.op.register-tenant");
        let sent = tokio::time::timeout(
            Duration::from_secs(1),
            service
                .client
                .nats
                .request(subject, br#"{"tenant":"t2"}"#.to_vec().into()),
        )
        .await;
        if let Ok(Ok(message)) = sent {
            let reply: Value = ims_tests::serde_json::from_slice(&message.payload).unwrap();
            assert_eq!(reply["ok"], true, "{reply}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "imsd did not serve again within 20 s of the NATS restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let image = service.client.active_image("t1", json!({})).await;
    assert!(!image.is_empty());
    service.stop().await;
}

/// Every command id in the log of `client`'s region, read from position 1.
async fn command_ids_in_log(client: &Client) -> Vec<uuid::Uuid> {
    let mut ids = Vec::new();
    let mut from = 1;
    loop {
        let batch = client.read_log(from, 1000).await;
        for envelope in &batch.envelopes {
            assert_eq!(envelope.position(), from, "positions are contiguous");
            from += 1;
            if let Some(id) = envelope.body.command_id {
                ids.push(uuid::Uuid::from_bytes(id));
            }
        }
        if batch.envelopes.is_empty() || from > batch.head {
            return ids;
        }
    }
}

/// What a run of imsd with an armed failpoint left: its data and NATS server, a client, the
/// ids of the commands answered ok and of those answered `unavailable` or not at all (outcome
/// unknown).
struct StoppedByFailpoint {
    data: tempfile::TempDir,
    nats: ims_nats_server::NatsServer,
    client: Client,
    ok: Vec<uuid::Uuid>,
    unknown: Vec<uuid::Uuid>,
}

/// Runs imsd with `failpoints` armed and sends it create-image commands, one at a time, until
/// it stops; checks that it stopped non-zero with one clear line and that no reply said
/// "nothing was recorded" for an outcome it could not know.
async fn load_until_a_failpoint_stops_imsd(failpoints: &str) -> StoppedByFailpoint {
    let data = tempfile::tempdir().unwrap();
    let nats = ims_tests::secured_nats(data.path());
    let mut imsd = start_imsd_reporting(&nats.url(), data.path(), free_http_addr(), failpoints);
    let client = Client::connect(&nats.url(), REGION, data.path()).await;
    client.wait_ready().await;
    let reply = client
        .op("register-tenant", json!({"tenant": "load"}))
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    let connection = client.tenant_connection("load").await;
    let (mut ok, mut unknown) = (Vec::new(), Vec::new());
    let started = Instant::now();
    while imsd.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "imsd did not stop"
        );
        let id = uuid::Uuid::now_v7();
        let subject = format!("ims.v1.{REGION}.cmd.load.create-image");
        let payload = ims_tests::serde_json::to_vec(&create_body(id, true)).unwrap();
        let sent = tokio::time::timeout(
            Duration::from_secs(2),
            connection.request(subject, payload.into()),
        )
        .await;
        let Ok(Ok(message)) = sent else {
            // No answer (imsd stopped with the request in flight): its outcome is unknown too.
            unknown.push(id);
            continue;
        };
        let reply: Value = ims_tests::serde_json::from_slice(&message.payload).unwrap();
        if reply["ok"] == true {
            ok.push(id);
        } else {
            assert_eq!(code(&reply), "unavailable", "{reply}");
            let message = reply["error"]["message"].as_str().unwrap();
            assert!(!message.contains("nothing was recorded"), "{message}");
            unknown.push(id);
        }
    }
    let (status, stderr) = exit_of(&mut imsd, "imsd did not stop").await;
    assert!(
        !status.success(),
        "imsd exited {status} after the failure ({failpoints})"
    );
    assert!(stderr.contains("could not be written"), "{stderr}");
    assert!(
        !ok.is_empty(),
        "nothing was acknowledged before the failure"
    );
    StoppedByFailpoint {
        data,
        nats,
        client,
        ok,
        unknown,
    }
}

/// The command ids in the log, each checked to be there once.
async fn command_ids_in_log_once(client: &Client) -> HashSet<uuid::Uuid> {
    let in_log = command_ids_in_log(client).await;
    let distinct: HashSet<_> = in_log.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        in_log.len(),
        "a command id was applied twice"
    );
    distinct
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_stops_imsd_non_zero_and_nothing_answered_ok_is_lost() {
    // Proves fail-stop: an injected fsync failure ends the process with a non-zero exit and one
    // clear line, no command is answered ok that is not durable, and a restart recovers.
    let stopped = load_until_a_failpoint_stops_imsd("fsync-fails-after=30").await;
    let (client, ok) = (&stopped.client, &stopped.ok);
    let _imsd = start_imsd(&stopped.nats.url(), stopped.data.path());
    client.wait_ready().await;
    let distinct = command_ids_in_log_once(client).await;
    let missing = ok.iter().filter(|id| !distinct.contains(id)).count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} acknowledged commands were lost ({} unknown)",
        ok.len(),
        stopped.unknown.len()
    );
    let created = client
        .command(
            "load",
            "create-image",
            create_body(uuid::Uuid::now_v7(), true),
        )
        .await;
    assert_eq!(
        created["ok"], true,
        "the restarted service takes commands: {created}"
    );
}

/// A tenant's create-image commands published without waiting, each answered on an inbox of
/// its own.
struct Unawaited {
    connection: async_nats::Client,
    subject: String,
    inbox: String,
    replies: async_nats::Subscriber,
}

impl Unawaited {
    async fn open(client: &Client, tenant: &str) -> Self {
        let connection = client.tenant_connection(tenant).await;
        let inbox = format!("{}.{tenant}", connection.new_inbox());
        let replies = connection.subscribe(format!("{inbox}.*")).await.unwrap();
        connection.flush().await.unwrap();
        Self {
            subject: format!("ims.v1.{REGION}.cmd.{tenant}.create-image"),
            connection,
            inbox,
            replies,
        }
    }

    /// Publishes command `n` (a valid create-image with a fresh command id).
    async fn send(&self, n: usize) {
        let payload =
            ims_tests::serde_json::to_vec(&create_body(uuid::Uuid::now_v7(), true)).unwrap();
        self.connection
            .publish_with_reply(
                self.subject.clone(),
                format!("{}.{n}", self.inbox),
                payload.into(),
            )
            .await
            .unwrap();
    }

    async fn flush(&self) {
        self.connection.flush().await.unwrap();
    }

    /// The next reply, or `None` when none comes within `wait`.
    async fn next_reply(&mut self, wait: Duration) -> Option<Value> {
        let message = tokio::time::timeout(wait, futures::StreamExt::next(&mut self.replies))
            .await
            .ok()??;
        Some(ims_tests::serde_json::from_slice(&message.payload).unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_queued_behind_a_failed_fsync_are_each_answered_unavailable() {
    // Every fsync 1.5 s slow, and every one after the set-up's four (the credentials the client
    // issues in the identity log, the tenant's registration) fails: a burst's first batch fails
    // while the rest of the burst waits in the writer's queue. The writer stops with them
    // queued; each must still be answered "unavailable" (retry with the same command_id), none
    // left to time out. (With 500 ms, a loaded CI machine once sent the last 36 of the burst
    // after the endpoint had closed.)
    let data = tempfile::tempdir().unwrap();
    let nats = ims_tests::secured_nats(data.path());
    let mut imsd = start_imsd_reporting(
        &nats.url(),
        data.path(),
        free_http_addr(),
        "fsync-delay-ms=1500,fsync-fails-after=4",
    );
    let client = Client::connect(&nats.url(), REGION, data.path()).await;
    client.wait_ready().await;
    let reply = client
        .op("register-tenant", json!({"tenant": "burst"}))
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    let mut burst = Unawaited::open(&client, "burst").await;
    const BURST: usize = 100;
    for n in 0..BURST {
        burst.send(n).await;
        if n == 0 {
            // The first is taken into a batch of its own, whose fsync is slow, then fails; the
            // rest queue behind it.
            burst.flush().await;
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }
    burst.flush().await;
    let mut messages = Vec::new();
    while messages.len() < BURST {
        let Some(reply) = burst.next_reply(Duration::from_secs(10)).await else {
            break;
        };
        assert_eq!(code(&reply), "unavailable", "{reply}");
        messages.push(reply["error"]["message"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        messages.len(),
        BURST,
        "every command of the burst is answered"
    );
    let queued = messages
        .iter()
        .filter(|m| m.contains("stopped before answering; retry with the same command_id"))
        .count();
    assert!(
        queued > 0 && queued < BURST,
        "some were in the failed batch, the rest queued behind it: {messages:?}"
    );
    let (status, _) = exit_of(&mut imsd, "imsd did not stop").await;
    assert!(!status.success(), "imsd exited {status} after the failure");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imsd_stopping_answers_every_command_and_log_read_that_reached_it() {
    // A SIGTERM while log.reads and commands wait in imsd's NATS subscriptions: each is still
    // answered (commands taken and written), none left to its requester's timeout. A leader
    // that dropped them left a standby's projector waiting 10 s on its log.read (CI).
    let data = tempfile::tempdir().unwrap();
    let nats = ims_tests::secured_nats(data.path());
    let mut imsd = start_imsd_reporting(&nats.url(), data.path(), free_http_addr(), "");
    let client = Client::connect(&nats.url(), REGION, data.path()).await;
    client.wait_ready().await;
    client.register_with_quota(&["burst"], 10_000).await;
    // A log of 2,000 events: each full log.read then takes a while, and the reads queue.
    let mut burst = Unawaited::open(&client, "burst").await;
    for round in 0..4 {
        for n in 0..500 {
            burst.send(round * 500 + n).await;
        }
        burst.flush().await;
        for _ in 0..500 {
            let reply = burst.next_reply(Duration::from_secs(20)).await.unwrap();
            assert_eq!(reply["ok"], true, "{reply}");
        }
    }

    let auditor = client.auditor_connection().await;
    let inbox = auditor.new_inbox();
    let mut read_replies = auditor.subscribe(format!("{inbox}.*")).await.unwrap();
    auditor.flush().await.unwrap();
    let read =
        ims_tests::serde_json::to_vec(&ims_bus::LogReadRequest { from: 1, max: 1000 }).unwrap();
    const READS: usize = 200;
    const COMMANDS: usize = 100;
    for n in 0..READS {
        let subject = client.subjects.log_read(&client.region);
        auditor
            .publish_with_reply(subject, format!("{inbox}.{n}"), read.clone().into())
            .await
            .unwrap();
        if n % 2 == 0 {
            burst.send(2000 + n).await;
        }
    }
    auditor.flush().await.unwrap();
    burst.flush().await;
    // Delivered to imsd's connection, most still waiting to be taken.
    tokio::time::sleep(Duration::from_millis(100)).await;
    imsd.terminate();

    let mut reads = 0;
    while reads < READS {
        let next = tokio::time::timeout(
            Duration::from_secs(5),
            futures::StreamExt::next(&mut read_replies),
        );
        let Ok(Some(reply)) = next.await else { break };
        let batch: ims_log::LogBatch =
            ims_log::decode(&reply.payload, || "a log.read reply".into())
                .unwrap_or_else(|e| panic!("log.read answered {reply:?}: {e}"));
        assert!(!batch.envelopes.is_empty());
        reads += 1;
    }
    let mut commands = 0;
    while let Some(reply) = burst.next_reply(Duration::from_secs(5)).await {
        assert_eq!(reply["ok"], true, "{reply}");
        commands += 1;
    }
    assert_eq!(
        (reads, commands),
        (READS, COMMANDS),
        "every log.read and command that reached imsd before its SIGTERM is answered"
    );
    let (status, stderr) = exit_of(&mut imsd, "imsd did not stop after SIGTERM").await;
    assert!(status.success(), "imsd exited {status}: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imsd_stops_on_sigterm_while_nats_is_down() {
    // At shutdown each role unsubscribes its endpoints and answers what they hold; none may
    // wait for the server to confirm, which a NATS that is down never does, nor for a request
    // nobody will answer to time out (the log.reads of the projector, the copy saga and the
    // import worker: seconds each).
    let data = tempfile::tempdir().unwrap();
    let mut nats = ims_tests::secured_nats(data.path());
    let mut imsd = start_imsd_reporting(&nats.url(), data.path(), free_http_addr(), "");
    let client = Client::connect(&nats.url(), REGION, data.path()).await;
    client.wait_ready().await;
    nats.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let signalled = Instant::now();
    imsd.terminate();
    let (status, stderr) = exit_of(&mut imsd, "imsd did not stop on SIGTERM with NATS down").await;
    assert!(status.success(), "imsd exited {status}: {stderr}");
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "imsd took {:?} to stop",
        signalled.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_command_index_write_stops_imsd_and_every_retry_after_a_restart_is_applied_once() {
    // The command index is written after the group is durable and answered, so a failure there
    // leaves commands answered ok in the log that the index does not hold. After the restart the
    // index is rebuilt from the log's command records: a retry of each command, answered ok or
    // not answered at all, gets ok, and none is appended twice.
    let stopped = load_until_a_failpoint_stops_imsd("index-fails-after=30").await;
    // The group whose index write failed is durable (answered ok, or stopped before its answer
    // went out) and the index on disk lacks it: the retries below must find it in the log.
    let index_path = ims_cli::runtime::log_path(
        stopped.data.path(),
        &ims_domain::RegionId::parse(REGION).unwrap(),
    )
    .join("commands");
    let index = ims_log::open_sled(sled::Config::new().path(index_path)).unwrap();
    let not_indexed = stopped.ok.iter().chain(&stopped.unknown).filter(|id| {
        ims_log::indexed_position(&index, "tenant load", id)
            .unwrap()
            .is_none()
    });
    assert!(
        not_indexed.count() > 0,
        "every command sent was indexed: the failure did not leave a durable group unindexed"
    );
    drop(index);
    let client = &stopped.client;
    let _imsd = start_imsd(&stopped.nats.url(), stopped.data.path());
    client.wait_ready().await;
    for id in stopped.unknown.iter().chain(&stopped.ok) {
        let retried = client
            .command("load", "create-image", create_body(*id, true))
            .await;
        assert_eq!(retried["ok"], true, "the retry of {id}: {retried}");
    }
    let distinct = command_ids_in_log_once(client).await;
    for id in stopped.unknown.iter().chain(&stopped.ok) {
        assert!(distinct.contains(id), "{id} is not in the log");
    }
}

fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib / 1024
}

/// What the flood test lets imsd grow by, besides what it commits: the connection's burst of
/// 20,000 messages and the commands in flight.
const FLOOD_IN_FLIGHT_MIB_MAX: u64 = 96;

/// What each accepted image may add: sled keeps the pages it writes (log and read models) in
/// its cache, about 12 KiB per image in the debug build (measured: 101 MiB before, 219-261 MiB
/// after 11,000-15,500 images). Rejected commands add nothing, so this is not a flood's cost.
const FLOOD_KIB_PER_ACCEPTED_IMAGE: u64 = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_20000_unanswered_commands_keeps_memory_bounded_and_service_responsive() {
    // Proves the in-flight bound: commands published without waiting are answered or refused
    // `unavailable` at once, resident memory stays under a stated bound, and a normal command
    // is answered within 2 s afterwards. The disk is made slow (each fsync 50 ms longer, at most
    // 256 commands per batch: about 5,000 commands/s) so that the flood outruns the writer
    // however fast the endpoint reads it.
    let data = tempfile::tempdir().unwrap();
    let nats = ims_tests::secured_nats(data.path());
    let imsd = start_imsd_reporting(
        &nats.url(),
        data.path(),
        free_http_addr(),
        "fsync-delay-ms=50",
    );
    let client = Client::connect(&nats.url(), REGION, data.path()).await;
    client.wait_ready().await;
    let reply = client
        .op(
            "register-tenant",
            json!({"tenant": "flood", "quota": 1_000_000}),
        )
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    let mut flood = Unawaited::open(&client, "flood").await;
    let before = rss_mib(imsd.id());
    for n in 0..20_000 {
        flood.send(n).await;
    }
    flood.flush().await;
    let (mut ok, mut overloaded, mut peak) = (0, 0, before);
    let started = Instant::now();
    while ok + overloaded < 20_000 && started.elapsed() < Duration::from_secs(60) {
        let Some(reply) = flood.next_reply(Duration::from_secs(5)).await else {
            break;
        };
        match code(&reply) {
            "" => ok += 1,
            "unavailable" => overloaded += 1,
            other => panic!("unexpected {other}: {reply}"),
        }
        if (ok + overloaded) % 1000 == 0 {
            peak = peak.max(rss_mib(imsd.id()));
        }
    }
    peak = peak.max(rss_mib(imsd.id()));
    println!(
        "flood: {ok} ok, {overloaded} overloaded, rss {before} MiB before, {peak} MiB at most"
    );
    assert!(
        ok + overloaded > 19_000,
        "only {} of 20,000 answered",
        ok + overloaded
    );
    let allowed = before + FLOOD_IN_FLIGHT_MIB_MAX + ok * FLOOD_KIB_PER_ACCEPTED_IMAGE / 1024;
    assert!(
        peak < allowed,
        "imsd grew to {peak} MiB, over {allowed} MiB for {ok} accepted images"
    );
    // Published faster than the slow disk lets them be written, some must meet the bound.
    assert!(
        overloaded > 0,
        "no command was refused: nothing bounds the commands in flight"
    );
    let started = Instant::now();
    let created = client
        .command(
            "flood",
            "create-image",
            create_body(uuid::Uuid::now_v7(), true),
        )
        .await;
    assert_eq!(created["ok"], true, "{created}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a normal command took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_projector_stops_imsd_non_zero_and_readiness_never_says_ready_after() {
    // Proves fail-stop for the read side: a projector that panics takes the process down
    // (a supervisor restarts it) instead of leaving a ready-looking service with stale models.
    let data = tempfile::tempdir().unwrap();
    let nats = ims_tests::secured_nats(data.path());
    let http = free_http_addr();
    let mut imsd = start_imsd_reporting(&nats.url(), data.path(), http, "projector-panic-at=3");
    let client = Client::connect(&nats.url(), REGION, data.path()).await;
    client.wait_ready().await;
    client.register(&["t1", "t2", "t3"]).await;
    let (status, stderr) = exit_of(&mut imsd, "imsd kept running").await;
    assert!(!status.success(), "imsd exited {status}");
    // Nothing is left to answer ready: a supervisor sees the exit and restarts it.
    assert!(tokio::net::TcpStream::connect(http).await.is_err());
    assert!(stderr.contains("panicked"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_models_ahead_of_their_log_stop_the_start_naming_both_positions() {
    // Proves no silent rollback: models at position 3 over a log whose head is 0 (a restored
    // or swapped log) are refused, not served.
    let mut service = Service::start().await;
    service.client.register(&["t1", "t2", "t3"]).await;
    let visible = service.client.visible_ids("t1", 3).await;
    assert!(visible.is_empty());
    service.stop().await;
    std::fs::remove_dir_all(ims_cli::runtime::log_path(
        service.data_dir(),
        &ims_domain::RegionId::parse(REGION).unwrap(),
    ))
    .unwrap();
    let mut imsd = start_imsd_reporting(
        &service.nats.url(),
        service.data_dir(),
        free_http_addr(),
        "",
    );
    let (status, stderr) = exit_of(&mut imsd, "imsd served models ahead of its log").await;
    assert!(!status.success(), "imsd exited {status}");
    assert!(
        stderr.contains("position 3") && stderr.contains("head 0"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_event_the_read_models_cannot_apply_stops_imsd_naming_it() {
    // An event of a type this release does not know (written by a newer one, or by hand): the
    // projector cannot pass it, however often it retries. imsd stops and says which event, rather
    // than answer /readyz "catching up" for ever with nothing logged.
    let data = tempfile::tempdir().unwrap();
    {
        let log = ims_log::EventLog::open(data.path().join(REGION).join("log"), REGION).unwrap();
        let id = uuid::Uuid::now_v7();
        log.append(&[ims_log::NewCommand {
            digest: None,
            command_id: Some(id),
            actor: "operator".to_owned(),
            recorded_at_ms: 1_700_000_000_000,
            events: vec![ims_log::NewEvent {
                stream: format!("image/{id}"),
                stream_version: 1,
                event_type: "image_teleported".to_owned(),
                schema_version: 1,
                payload: b"from a newer release".to_vec(),
            }],
            reply: b"{\"ok\":true}".to_vec(),
            snapshots: vec![],
        }])
        .unwrap();
    }
    let nats = ims_tests::secured_nats(data.path());
    let mut imsd = start_imsd_reporting(&nats.url(), data.path(), free_http_addr(), "");
    let (status, stderr) = exit_of(&mut imsd, "imsd did not stop on the event").await;
    assert!(!status.success(), "imsd exited {status}");
    assert!(
        stderr.contains("cannot apply the log")
            && stderr.contains("position 1")
            && stderr.contains("image_teleported"),
        "{stderr}"
    );
}
