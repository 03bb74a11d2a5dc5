//! Audits on a log of 1M events, offline: the replay speed of `audit as-of` and `audit verify`,
//! then each audit command in a process of its own (this binary run again with `--one`), with
//! its time and its peak resident memory (VmHWM).
//!
//! Run: `cargo run --release -p ims-tests --bin audit-bench [-- EVENTS]`, or on a region that
//! `scale-bench EVENTS DATA_DIR` wrote (10M events take 20 GB and about ten minutes to write):
//! `audit-bench -- --data-dir DATA_DIR`, each audit in a process of its own alone; or
//! `IMS_TOKEN=<an auditor's credential> audit-bench -- --online NATS_URL EVENTS` against `imsd run`
//! on such a region: who-could-use answered by the service that holds the log open.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Instant;

use ims_audit::{
    history, replay, replay_from_snapshots, replay_with_state, verify_chain, who_could_use_offline,
    LogSource, Until,
};
use ims_domain::RegionId;
use ims_log::EventLog;
use ims_projection::synthetic::image_id;
use ims_projection::synthetic::tenant;
use ims_projection::synthetic::{append_to, mixed_log};
use ims_projection::{snapshot, Catalog};
use ims_projector::{snapshots_path, RegionModels};
use ims_wire::{Query, QueryParams};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("--one") => {
            let at = Region {
                dir: args[3].clone().into(),
                name: args[4].clone(),
            };
            return one(&args[2], &at, args[5].parse()?).await;
        }
        Some("--online") => return online(&args[2], &args[3]).await,
        Some("--data-dir") => {
            // A region written by scale-bench: its log and read models as imsd leaves them.
            let at = Region {
                dir: std::path::Path::new(&args[2]).join(SCALE_REGION),
                name: SCALE_REGION.to_owned(),
            };
            let events = EventLog::open(at.dir.join("log"), SCALE_REGION)?.head_position();
            println!("a region of {events} events written by scale-bench");
            // Not as-of from position 1: a replay of the whole region in memory (tens of GB).
            let kinds = ["who-could-use", "history", "as-of-snapshot", "verify"];
            return each_in_its_own_process(&at, events as usize, &kinds);
        }
        _ => {}
    }
    let events: usize = args
        .get(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir()?;
    let log = EventLog::open(dir.path().join("log"), "bench-1")?;
    let started = Instant::now();
    // The synthetic log's events, appended for real (the log seals its own chain).
    append_to(&log, &mixed_log(events, 1_000))?;
    println!(
        "wrote {events} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let source = LogSource::Offline(log.clone());
    let region = RegionId::parse("bench-1").unwrap();

    let started = Instant::now();
    let verified = verify_chain(&source, |_| {}).await?;
    let verify_rate = events as f64 / started.elapsed().as_secs_f64();
    assert_eq!(verified, Ok(events as u64));
    println!("audit verify (chain from position 1):      {verify_rate:>10.0} events/s");

    let started = Instant::now();
    let replayed =
        replay_with_state(&source, &region, Until::Position(events as u64), |_| {}).await?;
    let replay_rate = events as f64 / started.elapsed().as_secs_f64();
    assert_eq!(replayed.position, events as u64);
    println!("audit replay (read models and state):     {replay_rate:>10.0} events/s");
    let replay_seconds = events as f64 / replay_rate;

    // who-could-use from the image's stream, for images spread over the whole log, against the
    // replay the same answer used to need.
    let images = (events as u64 / 6).max(1);
    let samples = 200u64;
    let started = Instant::now();
    for n in 0..samples {
        let image = image_id(n * images / samples);
        let answer = who_could_use_offline(&log, image, Until::Position(events as u64))?;
        if n == 0 {
            assert_eq!(
                Some(answer),
                replayed.who_could_use(image),
                "the fast path disagrees"
            );
        }
    }
    let each_ms = started.elapsed().as_secs_f64() * 1000.0 / samples as f64;
    println!(
        "audit who-could-use (image stream):        {each_ms:>10.2} ms each ({samples} images; the replay it replaces: {:.0} ms, {:.0}x)",
        replay_seconds * 1000.0,
        replay_seconds * 1000.0 / each_ms
    );
    // The read models and their snapshots, written by the projector's own code with its
    // defaults (a delta every 100,000 events, a whole one at most once a minute).
    let started = Instant::now();
    let models = RegionModels::open(&dir.path().join("projections"), region, &Default::default())?;
    for position in (1..=events as u64).step_by(10_000) {
        models.apply(&log.read_range(position, 10_000)?)?;
    }
    let files = snapshot::list(
        &snapshots_path(&dir.path().join("projections")),
        &snapshot::model_name::<Catalog>(),
    )?;
    println!(
        "projected {events} events in {:.1} s; catalog snapshots at {:?} (whole ones: {:?})",
        started.elapsed().as_secs_f64(),
        files.iter().map(|f| f.position).collect::<Vec<_>>(),
        files
            .iter()
            .filter(|f| f.is_whole())
            .map(|f| f.position)
            .collect::<Vec<_>>()
    );
    drop((models, replayed, source, log));
    let at = Region {
        dir: dir.path().to_owned(),
        name: "bench-1".to_owned(),
    };
    let kinds = [
        "who-could-use",
        "history",
        "as-of",
        "as-of-snapshot",
        "verify",
    ];
    each_in_its_own_process(&at, events, &kinds)
}

/// who-could-use through `ims.v1.<region>.audit.who-could-use`, for 200 images spread over a
/// region scale-bench wrote: the round trip's percentiles, as an auditor sees them.
async fn online(url: &str, events: &str) -> anyhow::Result<()> {
    let events: u64 = events.parse()?;
    let token = std::env::var("IMS_TOKEN")
        .map_err(|_| anyhow::anyhow!("set IMS_TOKEN to an auditor's credential"))?;
    let client = ims_bus::connect(url, "audit-bench", &ims_bus::BusAuth::Token(token)).await?;
    let subjects = ims_wire::Subjects::new("ims");
    let region = RegionId::parse(SCALE_REGION)?;
    let position = events * 7 / 10 + 50_000 - 1;
    let mut took = hdrhistogram::Histogram::<u64>::new(3)?;
    let samples = 200u64;
    for n in 0..samples {
        let image = image_id(n * (events / 6) / samples);
        let started = Instant::now();
        let answer = ims_audit::who_could_use_online(
            &client,
            &subjects,
            &region,
            image,
            Until::Position(position),
        )
        .await?;
        took.record(started.elapsed().as_micros() as u64)?;
        anyhow::ensure!(answer["tenants"].is_array(), "no tenants in {answer}");
    }
    let ms = |quantile: f64| took.value_at_quantile(quantile) as f64 / 1000.0;
    println!(
        "who-could-use online at position {position}, {samples} images: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(0.5),
        ms(0.99),
        took.max() as f64 / 1000.0
    );
    Ok(())
}

/// The region scale-bench writes.
const SCALE_REGION: &str = "test-1";

/// Where the audits run: a region's folder (its `log` and `projections`) and its name.
struct Region {
    dir: std::path::PathBuf,
    name: String,
}

/// Runs each audit command in a fresh process on the log just written and prints its time and
/// peak resident memory.
fn each_in_its_own_process(at: &Region, events: usize, kinds: &[&str]) -> anyhow::Result<()> {
    println!("each audit in a process of its own (time, peak resident memory):");
    for kind in kinds {
        let output = std::process::Command::new(std::env::current_exe()?)
            .args(["--one", kind])
            .arg(&at.dir)
            .arg(&at.name)
            .arg(events.to_string())
            .output()?;
        let said = String::from_utf8_lossy(&output.stdout);
        anyhow::ensure!(
            output.status.success(),
            "{kind}: {said}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        println!("  {}", said.trim_end());
    }
    Ok(())
}

/// One audit command on the log in `dir`: prints what it did, how long it took and the
/// process's peak resident memory.
async fn one(kind: &str, at: &Region, events: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    // As imsctl opens it offline.
    let log = EventLog::open_with_cache(
        at.dir.join("log"),
        &at.name,
        ims_audit::OFFLINE_LOG_CACHE_BYTES,
    )?;
    let opened = started.elapsed();
    let source = LogSource::Offline(log.clone());
    let region = RegionId::parse(&at.name)?;
    let dir = &at.dir;
    // A position and an image away from both ends of the log, the same every run; the
    // position halfway between two of the projector's snapshots, the worst case for as-of.
    let position = events * 7 / 10 + 50_000 - 1;
    let image = image_id(events / 6 / 3);
    let started = Instant::now();
    let what = match kind {
        "who-could-use" => {
            let answer = who_could_use_offline(&log, image, Until::Position(position))?;
            format!(
                "who-could-use of one image at position {position}: {} tenants",
                answer["tenants"].as_array().map_or(0, Vec::len)
            )
        }
        "history" => {
            let items = history(&source, Some(image), None, |_| {}).await?;
            format!("history of one image: {} events", items.len())
        }
        "as-of" | "as-of-snapshot" => {
            let replayed = if kind == "as-of" {
                replay(&source, &region, Until::Position(position), |_| {}).await?
            } else {
                let snapshots = snapshots_path(&dir.join("projections"));
                replay_from_snapshots(
                    &source,
                    &region,
                    Until::Position(position),
                    &snapshots,
                    |_| {},
                )
                .await?
            };
            let params = QueryParams {
                limit: Some(25),
                ..QueryParams::default()
            };
            let page = replayed.query(&tenant(1), Query::VisibleImages, &params)?;
            format!(
                "{kind} at position {position}, visible-images of a tenant: {} items",
                page["items"].as_array().map_or(0, Vec::len)
            )
        }
        _ => {
            let verified = verify_chain(&source, |_| {}).await?;
            format!("verify of the chain: {verified:?}")
        }
    };
    let took = started.elapsed();
    println!(
        "{what:<72} {:>9.1} ms + opening the log {:>6.1} ms {:>7} MiB",
        took.as_secs_f64() * 1e3,
        opened.as_secs_f64() * 1e3,
        peak_resident_kib() / 1024
    );
    Ok(())
}

/// This process's peak resident memory (VmHWM), in KiB.
fn peak_resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
