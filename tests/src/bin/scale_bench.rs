//! A big region, served (DESIGN.md section 7): 10M events about 2M images, on disk the way the
//! writer and the projectors leave them, then `imsd run` started on it. Prints how long it takes
//! to be ready, to answer queries and a command, and its resident memory (target: ready in
//! seconds, under 1 GiB).
//!
//! Run: `cargo run --release -p ims-tests --bin scale-bench [-- EVENTS [DATA_DIR]]`. It needs
//! about 2 GB of disk per million events: under `target/`, removed at the end, or in DATA_DIR,
//! kept, and used again as it is by the next run given the same DATA_DIR.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use ims_cli::runtime::log_path;
use ims_domain::{evolve, RegionId, SharingPolicy, State, StreamId};
use ims_log::{new_event, Appended, EventLog, NewCommand};
use ims_nats_server::free_port;
use ims_projection::synthetic::{image_id, image_lifecycle, registrations, tenant};
use ims_projector::{projections_path, RegionModels};
use ims_tests::{http_get, http_get_with, Client, REGION};
use serde_json::json;

/// Set in the child that runs `imsd`: the bench starts itself as the service, so that the
/// service's memory is measured alone.
const SERVE_ENV: &str = "IMS_SCALE_BENCH_SERVE";

const TENANTS: u64 = 1_000;

/// Commands per append: the writer's largest group.
const GROUP_COMMANDS: usize = 256;

fn main() -> anyhow::Result<std::process::ExitCode> {
    if std::env::var_os(SERVE_ENV).is_some() {
        return Ok(ims_cli::imsd::main());
    }
    let events: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000_000);
    let kept = std::env::args().nth(2).map(std::path::PathBuf::from);
    tokio::runtime::Runtime::new()?.block_on(bench(events, kept))?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// Writes the region: every event appended for real (records, indexes, chain), the tenants'
/// snapshots with the last command, as the writer does; and
/// the read models folded from the appended envelopes, as the projector does.
fn build(data: &std::path::Path, events: u64) -> anyhow::Result<u64> {
    let region = RegionId::parse(REGION)?;
    let log_dir = log_path(data, &region);
    std::fs::create_dir_all(&log_dir)?;
    let log = EventLog::open(&log_dir, REGION)?;
    let models = RegionModels::open(
        &projections_path(data, &region),
        region,
        &SharingPolicy::default(),
    )?;
    let mut state = State::default();
    let mut group: Vec<NewCommand> = Vec::with_capacity(GROUP_COMMANDS);
    let mut written = 0u64;
    let mut images = 0u64;
    let started = Instant::now();
    let flush = |group: &mut Vec<NewCommand>, written: &mut u64| -> anyhow::Result<()> {
        let mut envelopes = Vec::new();
        for appended in log.append(group)? {
            match appended {
                Appended::New { envelopes: new, .. } => envelopes.extend(new),
                other => anyhow::bail!("a synthetic command was not appended: {other:?}"),
            }
        }
        models.apply(&envelopes)?;
        *written += envelopes.len() as u64;
        group.clear();
        if *written % 1_000_000 < GROUP_COMMANDS as u64 {
            println!(
                "  {written:>10} events written ({:.0} s)",
                started.elapsed().as_secs_f64()
            );
        }
        Ok(())
    };
    let command = |event: &ims_domain::Event, version: u64| NewCommand {
        digest: None,
        command_id: Some(uuid::Uuid::now_v7()),
        actor: "operator".to_owned(),
        recorded_at_ms: 1_700_000_000_000,
        events: vec![new_event(event, version)],
        reply: Vec::new(),
        snapshots: Vec::new(),
    };
    for event in registrations(TENANTS) {
        evolve(&mut state, &event);
        group.push(command(&event, 1));
    }
    while written + (group.len() as u64) < events {
        let lifecycle = image_lifecycle(images, TENANTS);
        for (version, event) in (1..).zip(&lifecycle) {
            evolve(&mut state, event);
            group.push(command(event, version));
        }
        // The writer folds an image from its stream when it needs it; only tenants have snapshots.
        state.images.remove(&image_id(images));
        images += 1;
        if group.len() >= GROUP_COMMANDS {
            flush(&mut group, &mut written)?;
        }
    }
    for (id, tenant) in &state.tenants {
        let snapshots = &mut group.last_mut().expect("commands left").snapshots;
        snapshots.push((
            StreamId::Tenant(id.clone()).to_string().into_bytes(),
            ims_log::encode(tenant),
        ));
    }
    flush(&mut group, &mut written)?;
    println!(
        "built {written} events about {images} images for {TENANTS} tenants in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(images)
}

fn size_on_disk(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path).map_or(0, |entries| {
        entries
            .flatten()
            .map(|entry| match entry.file_type() {
                Ok(kind) if kind.is_dir() => size_on_disk(&entry.path()),
                _ => entry.metadata().map_or(0, |m| m.len()),
            })
            .sum()
    })
}

/// `VmRSS` and `VmHWM` (peak) of a process, in MiB.
fn memory_mib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse::<u64>().ok())
            .map_or(0, |kib| kib / 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn bench(events: u64, kept: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    std::fs::create_dir_all("target")?;
    let temporary = tempfile::tempdir_in("target")?;
    let data = kept.as_deref().unwrap_or(temporary.path());
    let images = if data.join(REGION).exists() {
        println!("scale benchmark: the region kept in {}", data.display());
        let log = EventLog::open(log_path(data, &RegionId::parse(REGION)?), REGION)?;
        // Every image's lifecycle starts with its creation: count the creations.
        let created = log
            .iter_from(1)
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.body.event_type == "image_created")
            })
            .count() as u64;
        println!("  {} events about {created} images", log.head_position());
        created
    } else {
        println!("scale benchmark: {events} events, {TENANTS} tenants");
        tokio::task::block_in_place(|| build(data, events))?
    };
    println!(
        "on disk: {:.2} GB (log {:.2} GB)",
        size_on_disk(data) as f64 / 1e9,
        size_on_disk(&data.join(REGION).join("log")) as f64 / 1e9
    );

    let nats = ims_tests::secured_nats(data);
    let http: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let started = Instant::now();
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .arg("run")
        .env(SERVE_ENV, "1")
        .env("IMS_NATS_URL", nats.url())
        .env("IMS_DATA_DIR", data)
        .env("IMS_REGIONS", REGION)
        .env("IMS_HTTP_ADDR", http.to_string())
        .env("RUST_LOG", "warn")
        .spawn()?;
    loop {
        // Ask only once the port is open: the helper treats a refused connection as a bug.
        if tokio::net::TcpStream::connect(http).await.is_ok() {
            if let Ok((200, _)) =
                tokio::time::timeout(Duration::from_secs(1), http_get(http, "/readyz")).await
            {
                break;
            }
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "imsd was not ready in 2 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "imsd ready (/readyz 200) {:.2} s after start; resident memory {} MiB",
        started.elapsed().as_secs_f64(),
        memory_mib(child.id()).0
    );

    let client = Client::connect(&nats.url(), REGION, data).await;
    // The operator reads any tenant's paths over HTTP.
    let token = ims_tests::operator_token(data).await;
    let owner = tenant(7);
    let started = Instant::now();
    let path = format!("/v1/{REGION}/tenants/{owner}/images");
    let (status, page) = http_get_with(http, &path, Some(&token)).await;
    anyhow::ensure!(status == 200, "visible-images answered {status}: {page}");
    println!(
        "first page of visible-images of {owner} over HTTP: {} items in {:.1} ms",
        page["items"].as_array().map_or(0, Vec::len),
        started.elapsed().as_secs_f64() * 1e3
    );
    // A command on an image written by the build: the writer folds it from its stream first.
    let old_image = image_id(7).to_string();
    let started = Instant::now();
    let reply = client
        .command(
            owner.as_str(),
            "update-image",
            json!({"image_id": old_image, "description": "touched after a restart"}),
        )
        .await;
    anyhow::ensure!(reply["ok"] == true, "update-image: {reply}");
    println!(
        "first command (update of an image from the build) answered in {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    for n in 0..200 {
        let t = tenant(n % TENANTS);
        let (status, _) = http_get_with(
            http,
            &format!("/v1/{REGION}/tenants/{t}/images"),
            Some(&token),
        )
        .await;
        anyhow::ensure!(status == 200);
        let id = image_id(n * 97 % images);
        http_get_with(
            http,
            &format!("/v1/{REGION}/tenants/{t}/images/{id}"),
            Some(&token),
        )
        .await;
    }
    let (rss, peak) = memory_mib(child.id());
    println!(
        "imsd resident memory after 400 queries and a command: {rss} MiB (peak {peak} MiB; target < 1024 MiB)"
    );
    child.kill()?;
    child.wait()?;
    Ok(())
}
