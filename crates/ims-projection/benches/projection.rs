//! Rebuild speed of the read models from a log, in memory and into sled.
//! Run: `cargo bench -p ims-projection --bench projection`

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Instant;

use ims_projection::synthetic::mixed_log;
use ims_projection::{Catalog, ReadModel};

/// Events applied per batch: what a catch-up applies per `log.read`-sized chunk, times ten.
const BATCH_EVENTS: usize = 10_000;

fn main() {
    let total = 1_000_000;
    let started = Instant::now();
    let log = mixed_log(total, 1_000);
    println!(
        "generated and sealed {total} events in {:.2} s",
        started.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let mut decoded = 0usize;
    for envelope in &log {
        decoded += usize::from(ims_log::decode_event(envelope).is_ok());
    }
    let decode_rate = decoded as f64 / started.elapsed().as_secs_f64();
    println!("decode events alone (the floor of any rebuild): {decode_rate:>12.0} events/s");

    // The median of three rebuilds: one run on a shared 2-core machine varies by a fifth.
    let mut rates: Vec<f64> = (0..3)
        .map(|_| {
            let started = Instant::now();
            let mut memory = ReadModel::in_memory_for(Catalog, total as u64);
            for chunk in log.chunks(BATCH_EVENTS) {
                memory.apply(chunk).unwrap();
            }
            total as f64 / started.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    let memory_rate = rates[1];
    println!("rebuild visible-images (catalog) in memory:   {memory_rate:>12.0} events/s (median of 3; target >= 1,000,000)");

    if std::env::args().any(|a| a == "--memory-only") {
        return;
    }
    let sled_events = 200_000;
    let dir = tempfile::tempdir().unwrap();
    let mut on_disk = ReadModel::open(dir.path(), Catalog).unwrap();
    let started = Instant::now();
    for chunk in log[..sled_events].chunks(BATCH_EVENTS) {
        on_disk.apply(chunk).unwrap();
    }
    let sled_rate = sled_events as f64 / started.elapsed().as_secs_f64();
    println!("rebuild visible-images (catalog) into sled:   {sled_rate:>12.0} events/s ({sled_events} events)");
}
