//! The projector runtime against a real NATS: it catches up on a long log, resumes after kill -9
//! without skipping or double-applying, and fills a lost live message from log.read.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ims_cli::runtime::Roles;
use ims_domain::{RegionId, SharingPolicy};
use ims_log::{Envelope, EventLog};
use ims_projection::{Catalog, ReadModel, UsageLedger};
use ims_projector::{projections_path, run_projector, RegionModels};
use ims_tests::serde_json::json;
use ims_tests::{Client, Service, REGION};
use ims_wire::subjects::POSITION_HEADER;
use ims_wire::Subjects;
use ims_writer::serve_commands;
use ims_writer::spawn_writer;

/// Every event of the region's log, read over NATS.
async fn whole_log(client: &Client) -> Vec<Envelope> {
    let mut envelopes = Vec::new();
    loop {
        let batch = client.read_log(envelopes.len() as u64 + 1, 1000).await;
        if batch.envelopes.is_empty() {
            return envelopes;
        }
        envelopes.extend(batch.envelopes);
    }
}

/// Asserts that the read models on disk under `dir` equal a rebuild of `log`, byte for byte.
fn assert_equals_rebuild(dir: &std::path::Path, log: &[Envelope]) {
    let catalog = ReadModel::open(dir, Catalog).unwrap();
    let usage = ReadModel::open(dir, UsageLedger).unwrap();
    let mut rebuilt_catalog = ReadModel::in_memory(Catalog);
    let mut rebuilt_usage = ReadModel::in_memory(UsageLedger);
    rebuilt_catalog.apply(log).unwrap();
    rebuilt_usage.apply(log).unwrap();
    assert_eq!(catalog.checkpoint(), log.len() as u64);
    assert!(
        catalog.store().entries().unwrap() == rebuilt_catalog.store().entries().unwrap(),
        "the catalog differs from a rebuild"
    );
    assert!(
        usage.store().entries().unwrap() == rebuilt_usage.store().entries().unwrap(),
        "the usage ledger differs from a rebuild"
    );
}

/// Writes about `count` events with 64 concurrent clients: creates of data images by 8 tenants.
async fn write_events(client: &Client, count: usize) {
    for t in 0..8 {
        client
            .op(
                "register-tenant",
                json!({"tenant": format!("bulk-{t}"), "quota": 1_000_000}),
            )
            .await;
    }
    let mut tasks = Vec::new();
    for worker in 0..64 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..count / 64 {
                let reply = client
                    .command(&format!("bulk-{}", worker % 8), "create-image", json!({"name": "bulk", "disk": "data", "min_disk_gb": 1, "source": {"file": {"url": "obs://b/x.raw", "format": "raw"}}}))
                    .await;
                assert_eq!(reply["ok"], true, "{reply}");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

fn start_projector(nats_url: &str, data_dir: &std::path::Path) -> ims_tests::KilledOnDrop {
    // Its log goes to a file beside its data, so that a failure can show what it said.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data_dir.join("imsd.stderr"))
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_imsd-under-test"))
        .args(["project", "--nats-url", nats_url, "--regions", REGION])
        .args(["--snapshot-every", "1000"])
        .arg("--data-dir")
        .arg(data_dir)
        .args([
            "--http-addr",
            &format!("127.0.0.1:{}", ims_nats_server::free_port().unwrap()),
        ])
        .env("RUST_LOG", "info,async_nats=warn")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    ims_tests::KilledOnDrop(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_started_after_10000_events_catches_up_and_resumes_after_kill_9() {
    // Proves catch-up on a long log, and exactly-once application across SIGKILLs mid-stream.
    let service = Service::start_with(
        Roles {
            command: true,
            project: false,
            http: false,
            identity: true,
        },
        &[REGION],
    )
    .await;
    write_events(&service.client, 10_048).await;
    let head = service.client.head().await;
    assert!(head >= 10_000, "only {head} events");
    let projector_dir = tempfile::tempdir().unwrap();
    ims_tests::share_nats_keys(service.data_dir(), projector_dir.path());
    for round in 0..3u64 {
        let mut projector = start_projector(&service.nats.url(), projector_dir.path());
        tokio::time::sleep(Duration::from_millis(60 + 70 * round)).await;
        projector.kill().unwrap(); // SIGKILL, most likely mid catch-up
        projector.wait().unwrap();
    }
    let mut projector = start_projector(&service.nats.url(), projector_dir.path());
    // `stale` means "retry" (each answer waits 2 s for the position), and so does no answer
    // while the fresh process starts: a client keeps asking, and so does this test, for as
    // long as a loaded CI machine may need. A projector that never catches up still fails it.
    let connection = service.client.tenant_connection("bulk-0").await;
    let subject = format!("ims.v1.{REGION}.q.bulk-0.visible-images");
    let body = json!({"limit": 1, "min_position": head}).to_string();
    let started = std::time::Instant::now();
    let answer = loop {
        let asked = tokio::time::timeout(
            Duration::from_secs(5),
            connection.request(subject.clone(), Bytes::from(body.clone())),
        )
        .await;
        let answer: ims_tests::serde_json::Value = match asked {
            Ok(Ok(message)) => ims_tests::serde_json::from_slice(&message.payload).unwrap(),
            Ok(Err(_)) | Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                json!({"error": {"code": "no answer"}})
            }
        };
        let retry = matches!(
            answer["error"]["code"].as_str(),
            Some("stale" | "no answer")
        );
        if !retry || started.elapsed() > Duration::from_secs(60) {
            break answer;
        }
    };
    assert_eq!(
        answer["position"].as_u64(),
        Some(head),
        "{answer}; the projector {:?} said:\n{}",
        projector.try_wait(),
        std::fs::read_to_string(projector_dir.path().join("imsd.stderr")).unwrap_or_default()
    );
    projector.terminate();
    let status = projector.wait().unwrap();
    assert!(
        status.success(),
        "imsd project exits 0 on SIGTERM, got {status}"
    );
    let log = whole_log(&service.client).await;
    let projections = projections_path(projector_dir.path(), &RegionId::parse(REGION).unwrap());
    assert_equals_rebuild(&projections, &log);
    // `--snapshot-every 1000`: the catch-ups crossed 1,000 events, so snapshots were written
    // (one a minute at most), whole ones only, however the kills fell.
    let snapshots = ims_projector::snapshots_path(&projections);
    let models = [
        ims_projection::snapshot::model_name::<Catalog>(),
        ims_projection::snapshot::model_name::<UsageLedger>(),
    ];
    for model in &models {
        let written = ims_projection::snapshot::list(&snapshots, model).unwrap();
        assert!(
            !written.is_empty(),
            "no {model} snapshot in {}",
            snapshots.display()
        );
        for file in written {
            let reader = ims_projection::snapshot::FileReader::open(&file.path).unwrap();
            assert_eq!((reader.position, reader.base), (file.position, file.base));
            assert!(
                reader.rows().all(|row| row.is_ok()),
                "{}",
                file.path.display()
            );
        }
    }
}

/// What a test that runs a region's parts by hand needs: a data dir, a secured NATS (kept for
/// as long as the test runs), the service's own connection to it, and the region's log.
async fn parts_by_hand() -> (
    tempfile::TempDir,
    ims_nats_server::NatsServer,
    Client,
    EventLog,
) {
    let data = tempfile::tempdir().unwrap();
    let nats = ims_tests::secured_nats(data.path());
    let client = Client::connect_as_service(&nats.url(), REGION, data.path()).await;
    let log = EventLog::open(data.path().join("log"), REGION).unwrap();
    (data, nats, client, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_live_event_is_filled_from_log_read() {
    // Proves gap filling: the publisher "loses" position 3, the projector still applies it once.
    const LOST: u64 = 3;
    let (data, _nats, client, log) = parts_by_hand().await;
    let region = RegionId::parse(REGION).unwrap();
    let subjects = Subjects::default();
    let (published_tx, mut published_rx) = tokio::sync::mpsc::channel::<Vec<Envelope>>(64);
    let (writer, _thread) = spawn_writer(
        region.clone(),
        log.clone(),
        SharingPolicy::default(),
        published_tx,
    );
    tokio::spawn(serve_commands(
        client.nats.clone(),
        subjects.clone(),
        region.clone(),
        writer,
        log,
        None,
        std::future::pending(),
    ));
    let relay = client.nats.clone();
    let events_subject = subjects.events(&region);
    tokio::spawn(async move {
        while let Some(batch) = published_rx.recv().await {
            for envelope in batch.into_iter().filter(|e| e.position() != LOST) {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(POSITION_HEADER, envelope.position().to_string().as_str());
                relay
                    .publish_with_headers(
                        events_subject.clone(),
                        headers,
                        Bytes::from(envelope.encode()),
                    )
                    .await
                    .unwrap();
            }
        }
    });
    client.wait_ready().await;
    let models = Arc::new(
        RegionModels::open(
            &data.path().join("projections"),
            region.clone(),
            &SharingPolicy::default(),
        )
        .unwrap(),
    );
    tokio::spawn(run_projector(
        client.nats.clone(),
        subjects,
        models.clone(),
        std::future::pending(),
    ));
    let wait_for = |position: u64| {
        let models = models.clone();
        async move {
            let started = Instant::now();
            while models.position() < position {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "stuck at {} waiting for {position}",
                    models.position()
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    client.register(&["t1"]).await;
    wait_for(1).await;
    client.register(&["t2"]).await;
    // Position 3 (the creation) is lost on its way; 4 and 5 arrive live.
    let image = client.active_image("t1", json!({})).await;
    let shared = client
        .command(
            "t1",
            "share-image",
            json!({"image_id": image, "tenants": ["t2"]}),
        )
        .await;
    assert_eq!(shared["position"], 5, "{shared}");
    wait_for(5).await;
    let tenant = ims_domain::TenantId::parse("t1").unwrap();
    let view = models
        .query(
            &tenant,
            ims_wire::Query::Image,
            &ims_projection::queries::QueryParams {
                image_id: Some(image.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let ims_wire::views::Answer::Image(view) = view else {
        panic!("the image query answered {view:?}");
    };
    assert_eq!(
        (view.status.as_str(), view.version),
        ("active", 3),
        "{view:?}"
    );
    assert_eq!(whole_log(&client).await.len(), 5);
    drop(models);
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_read_that_a_dead_leader_took_with_it_is_asked_again_within_seconds() {
    // A leader killed with a projector's log.read in hand never answers it; the projector asks
    // again after its timeout, and until then it applies nothing. Here a stand-in for the log's
    // endpoint takes the first request and drops it, then answers the rest.
    let (data, _nats, client, log) = parts_by_hand().await;
    let region = RegionId::parse(REGION).unwrap();
    let subjects = Subjects::default();
    for tenant in ["t1", "t2", "t3"] {
        let event = ims_domain::Event::TenantRegistered {
            tenant: ims_domain::TenantId::parse(tenant).unwrap(),
            quota: 10,
        };
        log.append(&[ims_log::NewCommand {
            digest: None,
            command_id: None,
            actor: "operator".into(),
            recorded_at_ms: 1_700_000_000_000,
            events: vec![ims_log::new_event(&event, 1)],
            reply: b"{}".to_vec(),
            snapshots: vec![],
        }])
        .unwrap();
    }
    let mut requests = client
        .nats
        .subscribe(subjects.log_read(&region))
        .await
        .unwrap();
    client.nats.flush().await.unwrap();
    let responder = client.nats.clone();
    tokio::spawn(async move {
        let _dropped = futures::StreamExt::next(&mut requests).await;
        while let Some(request) = futures::StreamExt::next(&mut requests).await {
            let answer = ims_bus::read_log(&log, &request.payload, 1 << 20).unwrap();
            responder
                .publish(request.reply.unwrap(), answer)
                .await
                .unwrap();
        }
    });
    let models = Arc::new(
        RegionModels::open(
            &data.path().join("projections"),
            region,
            &SharingPolicy::default(),
        )
        .unwrap(),
    );
    let started = Instant::now();
    tokio::spawn(run_projector(
        client.nats.clone(),
        subjects,
        models.clone(),
        std::future::pending(),
    ));
    // Seconds, not the 10 s it was: queries with min_position answer `stale` meanwhile.
    while models.position() < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "the projector had not asked again 6 s after its log.read was lost"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    assert!(
        took >= ims_projector::LOG_READ_TIMEOUT,
        "the first log.read was answered after all ({took:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_event_that_breaks_the_hash_chain_is_refused_and_the_model_equals_a_rebuild() {
    // Proves the projector's chain check: an event at the next position whose prev_hash is not
    // the last applied hash is refused (and counted), and the real event applies in its place.
    let mut service = Service::start().await;
    let ims = &service.client;
    ims.register(&["t1"]).await;
    let genuine = ims.read_log(1, 1).await.envelopes.remove(0);
    let mut body = genuine.body.clone();
    body.position = 2;
    body.actor = "forger".into();
    let forged = Envelope::seal(body, [7; 32]);
    // Only the service may publish events; the forgery comes from inside that boundary.
    let service_side =
        Client::connect_as_service(&service.nats.url(), REGION, service.data_dir()).await;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(POSITION_HEADER, "2");
    service_side
        .nats
        .publish_with_headers(
            Subjects::default().events(&RegionId::parse(REGION).unwrap()),
            headers,
            Bytes::from(forged.encode()),
        )
        .await
        .unwrap();
    service_side.nats.flush().await.unwrap();
    let started = Instant::now();
    loop {
        let (_, metrics) = ims_tests::http_get(service.http_addr, "/metrics").await;
        if metrics
            .as_str()
            .unwrap_or("")
            .contains("ims_projection_chain_breaks_total")
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the forged event was not refused: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    ims.register(&["t2"]).await;
    let visible = ims.visible_ids("t2", 2).await;
    assert!(visible.is_empty(), "{visible:?}");
    let log = whole_log(ims).await;
    assert_eq!(log.len(), 2);
    service.stop().await;
    let dir = projections_path(service.data_dir(), &RegionId::parse(REGION).unwrap());
    assert_equals_rebuild(&dir, &log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_projector_catches_up_over_events_near_the_size_bound_and_pages_fit_nats() {
    // Proves that log.read and query pages are cut by bytes: 120 events of about 10 KB each
    // (1.2 MB, more than one NATS message may carry) are caught up by a new projector, which
    // is not ready before it has them all, and visible-images pages over NATS stay under the
    // server's max_payload and continue with next_marker.
    let service = Service::start_with(
        Roles {
            command: true,
            project: false,
            http: false,
            identity: true,
        },
        &[REGION],
    )
    .await;
    let ims = &service.client;
    let reply = ims
        .op("register-tenant", json!({"tenant": "big", "quota": 1000}))
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    let wide = |n: usize| "𝕏".repeat(n);
    let tags: serde_json::Map<String, serde_json::Value> = (0..10)
        .map(|i| (format!("{i}{}", wide(35)), json!(wide(43))))
        .collect();
    for n in 0..120 {
        let reply = ims
            .command(
                "big",
                "create-image",
                json!({"name": format!("big {n}"), "disk": "data", "min_disk_gb": 1,
                       "source": {"file": {"url": "a".repeat(2048), "format": "raw"}},
                       "description": wide(1024), "tags": tags}),
            )
            .await;
        assert_eq!(reply["ok"], true, "{reply}");
    }
    let head = ims.head().await;
    let projector_dir = tempfile::tempdir().unwrap();
    ims_tests::share_nats_keys(service.data_dir(), projector_dir.path());
    let http: std::net::SocketAddr = format!("127.0.0.1:{}", ims_nats_server::free_port().unwrap())
        .parse()
        .unwrap();
    let _projector = ims_tests::KilledOnDrop(
        Command::new(env!("CARGO_BIN_EXE_imsd-under-test"))
            .args([
                "http",
                "--nats-url",
                &service.nats.url(),
                "--regions",
                REGION,
            ])
            .arg("--data-dir")
            .arg(projector_dir.path())
            .args(["--http-addr", &http.to_string()])
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    loop {
        if tokio::net::TcpStream::connect(http).await.is_ok() {
            let (status, _) = ims_tests::http_get(http, "/readyz").await;
            if status == 200 {
                break;
            }
            assert_eq!(status, 503);
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the projector never got ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Ready means caught up: the very first page already answers at the head.
    let (mut ids, mut marker, mut pages) = (Vec::new(), None::<String>, 0);
    loop {
        let page = ims
            .query(
                "big",
                "visible-images",
                json!({"limit": 1000, "marker": marker}),
            )
            .await;
        assert!(page["items"].is_array(), "{page}");
        if pages == 0 {
            assert!(
                page["position"].as_u64().unwrap() >= head,
                "ready before caught up: {page}"
            );
        }
        pages += 1;
        ids.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].clone()),
        );
        match page["next_marker"].as_str() {
            Some(next) => marker = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(ids.len(), 120);
    assert!(
        pages > 1,
        "a page of 120 large images should have been cut by bytes"
    );
}
