//! Replay speed of `audit as-of` and `audit verify` on a log of 1M events, offline.
//!
//! Run: `cargo run --release -p ims-tests --bin audit-bench [-- EVENTS]`

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Instant;

use ims_audit::{replay, verify_chain, who_could_use_offline, LogSource, Until};
use ims_domain::RegionId;
use ims_log::{EventLog, NewCommand, NewEvent};
use ims_projection::synthetic::image_id;
use ims_projection::synthetic::mixed_log;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let events: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir()?;
    let log = EventLog::open(dir.path().join("log"), "bench-1")?;
    let started = Instant::now();
    // The synthetic log's events, appended for real (the log seals its own chain).
    for chunk in mixed_log(events, 1_000).chunks(4096) {
        let commands: Vec<NewCommand> = chunk
            .iter()
            .map(|e| NewCommand {
                digest: None,
                command_id: None,
                actor: e.body.actor.clone(),
                recorded_at_ms: e.body.recorded_at_ms,
                events: vec![NewEvent {
                    stream: e.body.stream.clone(),
                    stream_version: e.body.stream_version,
                    event_type: e.body.event_type.clone(),
                    schema_version: e.body.schema_version,
                    payload: e.body.payload.clone(),
                }],
                reply: Vec::new(),
                snapshots: Vec::new(),
            })
            .collect();
        log.append(&commands)?;
    }
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
    let replayed = replay(&source, &region, Until::Position(events as u64), |_| {}).await?;
    let replay_rate = events as f64 / started.elapsed().as_secs_f64();
    assert_eq!(replayed.position, events as u64);
    println!("audit as-of (replay into read models):     {replay_rate:>10.0} events/s");
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
                answer,
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
    Ok(())
}
