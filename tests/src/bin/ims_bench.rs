//! Command throughput of ims against a bare NATS request-reply echo, in one run on loopback, with
//! 64 concurrent clients each. Every ims answer is durable (appended, flushed and fdatasync'd).
//! Authentication is on in both phases: each client is a tenant with its own credential and
//! connection, and the echo answers on the service's own (nkey) connection, as imsd does.
//!
//! Run: `cargo run --release -p ims-tests --bin ims-bench [-- SECONDS [CONNECTIONS]]`

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use ims_tests::latency::Latencies;
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
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
    let config = Config {
        nats_url: nats.url(),
        data_dir: data.path().to_path_buf(),
        regions: vec![ims_domain::RegionId::parse(region).unwrap()],
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
    };
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

    // Phase 2: ims commands, create-image and share/unshare, 64 clients, each with an image of
    // its own, on the tenants of the connections.
    let setup = &ims;
    setup.register(&["bench-partner"]).await;
    for connection in 0..connections {
        let tenant = tenant_of(connection);
        let reply = setup
            .op(
                "register-tenant",
                json!({"tenant": tenant, "quota": 1_000_000}),
            )
            .await;
        assert_eq!(reply["ok"], true, "{reply}");
    }
    let mut images = Vec::new();
    for client in 0..CLIENTS {
        images.push(setup.active_image(&tenant_of(client), json!({})).await);
    }
    let ims_client = ims.clone();
    let ims_figures = load(duration, move |client, iteration| {
        let ims = ims_client.clone();
        let tenant = tenant_of(client);
        let image = images[client].clone();
        async move {
            let reply = match iteration % 4 {
                0 | 2 => {
                    let body = json!({"name": "bench", "disk": "data", "min_disk_gb": 10,
                        "source": {"file": {"url": "obs://bench/disk.raw", "format": "raw"}}});
                    ims.command(&tenant, "create-image", body).await
                }
                1 => {
                    ims.command(
                        &tenant,
                        "share-image",
                        json!({"image_id": image, "tenants": ["bench-partner"]}),
                    )
                    .await
                }
                _ => {
                    ims.command(
                        &tenant,
                        "unshare-image",
                        json!({"image_id": image, "tenants": ["bench-partner"]}),
                    )
                    .await
                }
            };
            assert_eq!(reply["ok"], true, "{reply}");
        }
    })
    .await;

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
        "ratio ims / echo: {:.2} (target >= 0.5)",
        ims_figures.requests_per_second / echo_figures.requests_per_second
    );
    let _ = stop.send(());
    service.await??;
    Ok(())
}
