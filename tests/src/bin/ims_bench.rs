//! Command throughput of ims against a bare NATS request-reply echo, in one run on loopback, with
//! 64 concurrent clients each. Every ims answer is durable (appended, flushed and fdatasync'd).
//! Authentication is on in both phases: each client is a tenant with its own credential and
//! connection, and the echo answers on the service's own (nkey) connection, as imsd does.
//!
//! Run: `cargo run --release -p ims-tests --bin ims-bench [-- SECONDS [CONNECTIONS]
//! [--replication] [--whole-service]]`; the runtime has `IMS_BENCH_WORKERS` worker threads (default 2, what imsd
//! gets on two cores). `--replication` adds a phase on a cluster of three nats-servers with the
//! region's log replicated to a JetStream stream of three copies, next to the single node.
//! `--whole-service` adds a phase on imsd with every role (projectors and HTTP too) and clients
//! that give each command a `command_id`, as retry-safe clients do, with its stage breakdown.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use ims_tests::latency::Latencies;
use ims_tests::stages::{StageFigures, StageRecorder};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use ims_cli::runtime::{run, Config, Roles};
use ims_nats_server::free_port;
use ims_tests::Client;
use serde_json::json;

/// Concurrent clients in each phase, as the issue asks.
const CLIENTS: usize = 64;
/// NATS connections the clients share by default, one tenant each (a console or gateway
/// multiplexes its users like this). The second argument changes it, up to one per client.
const CONNECTIONS: usize = 4;

struct Figures {
    requests_per_second: f64,
    latencies: Latencies,
}

/// Runs `CLIENTS` loops of `step(client_index, iteration)` for `duration`; returns the figures.
async fn load<F, Fut>(duration: Duration, step: F) -> Figures
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let step = Arc::new(step);
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let step = step.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Latencies::default();
            let mut iteration = 0;
            while Instant::now() < deadline {
                let sent = Instant::now();
                step(client, iteration).await;
                latencies.record(sent.elapsed());
                iteration += 1;
            }
            latencies
        }));
    }
    let mut latencies = Latencies::default();
    for task in tasks {
        latencies.add(&task.await.unwrap());
    }
    Figures {
        requests_per_second: latencies.count() as f64 / started.elapsed().as_secs_f64(),
        latencies,
    }
}

fn main() -> anyhow::Result<()> {
    let workers: usize = std::env::var("IMS_BENCH_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?
        .block_on(bench())
}

async fn bench() -> anyhow::Result<()> {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let duration = Duration::from_secs(seconds);
    let connections: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(CONNECTIONS)
        .clamp(1, CLIENTS);
    let tenant_of = move |client: usize| format!("bench-{}", client % connections);
    let data = tempfile::tempdir()?;
    let nats = ims_tests::secured_nats(data.path());
    let region = ims_tests::REGION;
    let config = service_config(nats.url(), data.path())?;
    // The service's own histograms, read in process: where a command's time goes.
    let stages = StageRecorder::install();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = tokio::spawn(run(config, async move {
        let _ = stopped.await;
    }));
    let ims = Client::connect(&nats.url(), region, data.path()).await;
    ims.wait_ready().await;
    let mut tenant_connections = Vec::new();
    for connection in 0..connections {
        tenant_connections.push(ims.tenant_connection(&tenant_of(connection)).await);
    }

    // Phase 1: a bare echo responder, the ceiling of request-reply on this machine, on a subject
    // each tenant may publish to.
    let responder = Client::connect_as_service(&nats.url(), region, data.path())
        .await
        .nats;
    let mut echo = responder.subscribe("ims.v1.bench-echo.q.*.echo").await?;
    responder.flush().await?; // the subscription is on the server before anyone asks
    tokio::spawn(async move {
        while let Some(message) = echo.next().await {
            if let Some(reply) = message.reply {
                let _ = responder.publish(reply, message.payload).await;
            }
        }
    });
    let payload = Bytes::from(vec![b'x'; 300]);
    // Every connection reaches the responder before the clock starts (a fresh connection may
    // still be completing its auth callout).
    for (connection, nats) in tenant_connections.iter().enumerate() {
        let subject = format!("ims.v1.bench-echo.q.{}.echo", tenant_of(connection));
        let started = Instant::now();
        while nats
            .request(subject.clone(), payload.clone())
            .await
            .is_err()
        {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(10),
                "no echo on {subject}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let echo_connections = tenant_connections.clone();
    let echo_figures = load(duration, move |client, _| {
        let nats = echo_connections[client % connections].clone();
        let payload = payload.clone();
        async move {
            let subject = format!("ims.v1.bench-echo.q.{}.echo", tenant_of(client));
            nats.request(subject, payload).await.expect("echo");
        }
    })
    .await;

    // Phase 2: ims commands on the same connections.
    let ims_figures = ims_load(
        &ims,
        tenant_connections,
        connections,
        duration,
        Some(&stages),
        false,
    )
    .await;
    let _ = stop.send(());
    service.await??;
    drop(nats);

    println!(
        "ims command benchmark: {CLIENTS} concurrent clients on {connections} authenticated \
         connections, {seconds} s per phase, loopback NATS"
    );
    for (name, f) in [
        ("bare NATS echo", &echo_figures),
        ("ims create/share (durable)", &ims_figures),
    ] {
        println!(
            "{name:<28} {:>10.0} req/s   p50 {:>8.3} ms   p99 {:>8.3} ms",
            f.requests_per_second,
            f.latencies.quantile_ms(0.50),
            f.latencies.quantile_ms(0.99)
        );
    }
    println!(
        "ratio ims / echo: {:.2} (target >= 0.5); ims p99 {:.3} ms (target < 5 ms)",
        ims_figures.requests_per_second / echo_figures.requests_per_second,
        ims_figures.latencies.quantile_ms(0.99)
    );
    print_stages(&stages, duration, &ims_figures.latencies);
    if std::env::args().any(|arg| arg == "--whole-service") {
        let whole = whole_service_phase(duration, connections, &stages).await?;
        println!(
            "{:<28} {:>10.0} req/s   p50 {:>8.3} ms   p99 {:>8.3} ms   ({:.2} of the echo)",
            "ims whole service, ids",
            whole.requests_per_second,
            whole.latencies.quantile_ms(0.50),
            whole.latencies.quantile_ms(0.99),
            whole.requests_per_second / echo_figures.requests_per_second,
        );
        print_stages(&stages, duration, &whole.latencies);
    }
    if std::env::args().any(|arg| arg == "--replication") {
        let replicated = replicated_phase(duration, connections).await?;
        println!(
            "{:<28} {:>10.0} req/s   p50 {:>8.3} ms   p99 {:>8.3} ms",
            "ims replicated (3 servers)",
            replicated.requests_per_second,
            replicated.latencies.quantile_ms(0.50),
            replicated.latencies.quantile_ms(0.99)
        );
        println!(
            "ratio replicated / single node: {:.2} (target >= 0.4); replicated p99 {:.3} ms \
             (target < 20 ms)",
            replicated.requests_per_second / ims_figures.requests_per_second,
            replicated.latencies.quantile_ms(0.99)
        );
    }
    Ok(())
}

/// The config of the benchmark's service: the command and identity roles of one region.
fn service_config(nats_url: String, data_dir: &std::path::Path) -> anyhow::Result<Config> {
    Ok(Config {
        nats_url,
        data_dir: data_dir.to_path_buf(),
        regions: vec![ims_domain::RegionId::parse(ims_tests::REGION).unwrap()],
        http_addr: format!("127.0.0.1:{}", free_port()?).parse()?,
        subjects: ims_wire::Subjects::default(),
        roles: Roles {
            command: true,
            project: false,
            http: false,
            identity: true,
        },
        policy: ims_domain::SharingPolicy::default(),
        insecure_no_auth: false,
        import_sources: Default::default(),
        store: Default::default(),
        snapshot_every: 0,
        replication: None,
    })
}

/// The ims load: create-image and share/unshare from `CLIENTS` clients, each with an image of
/// its own, on the tenants of `connections` connections.
async fn ims_load(
    ims: &Client,
    tenant_connections: Vec<async_nats::Client>,
    connections: usize,
    duration: Duration,
    stages: Option<&StageRecorder>,
    command_ids: bool,
) -> Figures {
    let tenant_of = move |client: usize| format!("bench-{}", client % connections);
    let region = ims_tests::REGION;
    ims.register(&["bench-partner"]).await;
    let tenants: Vec<String> = (0..connections).map(tenant_of).collect();
    let tenants: Vec<&str> = tenants.iter().map(String::as_str).collect();
    ims.register_with_quota(&tenants, 1_000_000).await;
    let mut images = Vec::new();
    for client in 0..CLIENTS {
        images.push(ims.active_image(&tenant_of(client), json!({})).await);
    }
    // The same connections as the echo, held by each client: nothing shared on the client side
    // but the connection, as for the echo.
    let ims_client = ims.clone();
    if let Some(stages) = stages {
        stages.reset(); // the set-up above is not part of the phase
    }
    load(duration, move |client, iteration| {
        let ims = ims_client.clone();
        let connection = tenant_connections[client % connections].clone();
        let tenant = tenant_of(client);
        let image = images[client].clone();
        async move {
            let (command, mut body) = match iteration % 4 {
                0 | 2 => (
                    "create-image",
                    json!({"name": "bench", "disk": "data", "min_disk_gb": 10,
                        "source": {"file": {"url": "obs://bench/disk.raw", "format": "raw"}}}),
                ),
                1 => (
                    "share-image",
                    json!({"image_id": image, "tenants": ["bench-partner"]}),
                ),
                _ => (
                    "unshare-image",
                    json!({"image_id": image, "tenants": ["bench-partner"]}),
                ),
            };
            if command_ids {
                body["command_id"] = json!(uuid::Uuid::now_v7());
            }
            let subject = format!("ims.v1.{region}.cmd.{tenant}.{command}");
            let reply = ims
                .request_on(&connection, subject, serde_json::to_vec(&body).unwrap())
                .await;
            assert_eq!(reply["ok"], true, "{reply}");
        }
    })
    .await
}

/// The same load on a region replicated to a JetStream stream of three copies, on a cluster of
/// three nats-servers on this machine (DESIGN.md section 12).
async fn replicated_phase(duration: Duration, connections: usize) -> anyhow::Result<Figures> {
    let data = tempfile::tempdir()?;
    let keys = ims_identity::setup::NatsKeys::load_or_create(data.path())?;
    let servers = ims_tests::replication::start_jetstream_servers(data.path(), &keys, 3);
    let urls = servers
        .iter()
        .map(|server| server.url())
        .collect::<Vec<_>>()
        .join(",");
    let mut config = service_config(urls.clone(), data.path())?;
    config.replication = Some(ims_cli::runtime::Replication {
        replicas: 3,
        standby: false,
        node: "bench".to_owned(),
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = tokio::spawn(run(config, async move {
        let _ = stopped.await;
    }));
    let ims = Client::connect(&urls, ims_tests::REGION, data.path()).await;
    ims.wait_ready().await;
    let mut tenant_connections = Vec::new();
    for connection in 0..connections {
        let tenant = format!("bench-{connection}");
        tenant_connections.push(ims.tenant_connection(&tenant).await);
    }
    let figures = ims_load(&ims, tenant_connections, connections, duration, None, false).await;
    let _ = stop.send(());
    service.await??;
    Ok(figures)
}

/// The same load with a `command_id` on every command, on imsd with every role: the projectors
/// fold each batch's events into the read models beside the writer, as in production.
async fn whole_service_phase(
    duration: Duration,
    connections: usize,
    stages: &StageRecorder,
) -> anyhow::Result<Figures> {
    let data = tempfile::tempdir()?;
    let nats = ims_tests::secured_nats(data.path());
    let mut config = service_config(nats.url(), data.path())?;
    config.roles = Roles {
        command: true,
        project: true,
        http: true,
        identity: true,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = tokio::spawn(run(config, async move {
        let _ = stopped.await;
    }));
    let ims = Client::connect(&nats.url(), ims_tests::REGION, data.path()).await;
    ims.wait_ready().await;
    let mut tenant_connections = Vec::new();
    for connection in 0..connections {
        let tenant = format!("bench-{connection}");
        tenant_connections.push(ims.tenant_connection(&tenant).await);
    }
    let figures = ims_load(
        &ims,
        tenant_connections,
        connections,
        duration,
        Some(stages),
        true,
    )
    .await;
    let _ = stop.send(());
    service.await??;
    Ok(figures)
}

/// The stage breakdown of the ims phase, from the service's own histograms recorded in process
/// ([`StageRecorder`]) over exactly that phase.
fn print_stages(recorder: &StageRecorder, phase: Duration, client: &Latencies) {
    let batch = recorder
        .figures("ims_writer_batch_commands", "")
        .unwrap_or_default();
    println!(
        "writer batches: {:.0} per second, {:.1} commands each on average (p50 {:.0}, max {:.0})",
        batch.count as f64 / phase.as_secs_f64(),
        batch.mean,
        batch.p50,
        batch.max
    );
    println!(
        "{:<36} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "stage (ims phase), ms", "count", "mean", "p50", "p99", "p99.9", "max"
    );
    let endpoint = "ims_endpoint_stage_seconds";
    let writer = "ims_writer_stage_seconds";
    let rows = [
        (endpoint, "parse", "endpoint: parse"),
        (writer, "queue_wait", "writer: queue wait"),
        (writer, "decide", "writer: decide (per command)"),
        (writer, "seal", "log: encode, hash, batch"),
        (writer, "apply", "log: sled apply_batch"),
        (writer, "flush", "log: sled flush"),
        (writer, "fsync", "log: fdatasync"),
        (writer, "reply", "writer: replies handed over"),
        (writer, "batch", "writer: whole batch, decide to replies"),
        (writer, "index", "log: command index (after replies)"),
        (writer, "woken", "endpoint: responder woken by its batch"),
        (endpoint, "respond", "endpoint: reply sent"),
        (
            endpoint,
            "in_service",
            "in service (received to reply sent)",
        ),
    ];
    let row = |label: &str, f: StageFigures| {
        println!(
            "{label:<36} {:>8} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
            f.count,
            f.mean * 1e3,
            f.p50 * 1e3,
            f.p99 * 1e3,
            f.p999 * 1e3,
            f.max * 1e3
        );
    };
    for (metric, stage, label) in rows {
        row(label, recorder.figures(metric, stage).unwrap_or_default());
    }
    row(
        "client: round trip",
        StageFigures {
            count: client.count(),
            mean: client.mean_ms() / 1e3,
            p50: client.quantile_ms(0.5) / 1e3,
            p99: client.quantile_ms(0.99) / 1e3,
            p999: client.quantile_ms(0.999) / 1e3,
            max: client.max_ms() / 1e3,
        },
    );
    let in_service = recorder.figures(endpoint, "in_service").unwrap_or_default();
    println!(
        "NATS hops and client (round trip less in service, mean): {:.3} ms",
        client.mean_ms() - in_service.mean * 1e3
    );
}
