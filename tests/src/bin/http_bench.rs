//! HTTP latency of the first page of `visible-images` for a tenant that sees 10,000 images, over
//! a real socket on loopback (a new connection per request, as a simple client does).
//!
//! Run: `cargo run --release -p ims-tests --bin http-bench [-- REQUESTS]`

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ims_domain::{RegionId, SharingPolicy};
use ims_http::{serve_http, HttpState};
use ims_nats_server::free_port;
use ims_projection::synthetic::tenant_with_visible_images;
use ims_projector::RegionModels;

const VISIBLE_IMAGES: u64 = 10_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let requests: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5_000);
    let dir = tempfile::tempdir()?;
    let region = RegionId::parse("bench-1").unwrap();
    let models = RegionModels::open(dir.path(), region.clone(), &SharingPolicy::default())?;
    let log = tenant_with_visible_images(VISIBLE_IMAGES);
    for chunk in log.chunks(1000) {
        models.apply(chunk)?;
    }
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    // Authentication on, as deployed: every request carries the tenant's bearer token.
    let directory = ims_identity::Directory::open(dir.path())?;
    let tenant = ims_domain::TenantId::parse("tenant-0").unwrap();
    let (token, _, _) = directory.issue(ims_identity::Role::Tenant(tenant), "bench", 0)?;
    let token = token.reveal();
    let state = HttpState {
        regions: Arc::new(HashMap::from([(region, Arc::new(models))])),
        logs: Arc::new(HashMap::new()),
        stores: Arc::new(HashMap::new()),
        client: None,
        subjects: ims_wire::Subjects::default(),
        authenticator: ims_iam::Authenticator::Local(directory),
    };
    tokio::spawn(serve_http(addr, state, std::future::pending()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let path = "/v1/bench-1/tenants/tenant-0/images";
    let (status, page) = ims_tests::http_get_with(addr, path, Some(&token)).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(25));
    let all = ims_tests::http_get_with(addr, &format!("{path}?limit=1000"), Some(&token))
        .await
        .1;
    assert_eq!(all["items"].as_array().map(Vec::len), Some(1000));
    for _ in 0..200 {
        ims_tests::http_get_with(addr, path, Some(&token)).await; // warm-up
    }
    let mut latencies = ims_tests::latency::Latencies::default();
    for _ in 0..requests {
        let started = Instant::now();
        let (status, _) = ims_tests::http_get_with(addr, path, Some(&token)).await;
        latencies.record(started.elapsed());
        assert_eq!(status, 200);
    }
    println!("HTTP GET first page (25) of visible-images, tenant sees {VISIBLE_IMAGES} images, {requests} requests");
    println!(
        "p50 {:.3} ms   p99 {:.3} ms   max {:.3} ms   (target p99 < 2 ms)",
        latencies.quantile_ms(0.50),
        latencies.quantile_ms(0.99),
        latencies.max_ms()
    );
    Ok(())
}
