//! Durable append and scan throughput of the event log, each next to raw sled doing the same work
//! in the same run, with the ratio. Run: `cargo bench -p ims-log --bench log_throughput`.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Instant;

use ims_domain::{Event, ImageId, TenantId};
use ims_log::*;

/// Events written per measurement; enough for a steady rate, small enough for a 2-core machine.
const EVENTS_PER_RUN: u64 = 40_000;

fn sample_event(n: u64) -> Event {
    let mut bytes = [0u8; 16];
    bytes[8..].copy_from_slice(&n.to_be_bytes());
    Event::ImageShared {
        image_id: ImageId::from_bytes(bytes),
        tenants: vec![
            TenantId::parse("tenant-b").unwrap(),
            TenantId::parse("tenant-c").unwrap(),
        ],
        at_ms: 1_700_000_000_000 + n,
    }
}

fn command(n: u64) -> NewCommand {
    NewCommand {
        digest: None,
        command_id: Some(uuid::Uuid::now_v7()),
        actor: "tenant tenant-a".into(),
        recorded_at_ms: 1_700_000_000_000,
        events: vec![new_event(&sample_event(n), 1)],
        reply: b"{\"ok\":true,\"image_id\":\"0192f0c1-7a3e-7c2b-9d4e-1a2b3c4d5e6f\",\"version\":1}"
            .to_vec(),
        snapshots: vec![],
    }
}

fn log_appends(group: u64, total: u64) -> (f64, EventLog, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(dir.path().join("log"), "bench-1").unwrap();
    // The commands are built before the clock starts, as raw sled's values are: only the log's
    // own work is timed.
    let groups: Vec<Vec<NewCommand>> = (0..total / group)
        .map(|g| (g * group..(g + 1) * group).map(command).collect())
        .collect();
    let started = Instant::now();
    for commands in &groups {
        log.append(commands).unwrap();
    }
    // The last group's command index too (each append writes the group before's).
    log.index_pending_commands().unwrap();
    (total as f64 / started.elapsed().as_secs_f64(), log, dir)
}

/// Raw sled: `total` values of `value_len` bytes, 256 per flush, each value with
/// `index_keys_per_value` extra small keys (the log writes two: stream index and command index).
fn raw_sled_inserts(
    value_len: usize,
    total: u64,
    index_keys_per_value: u8,
) -> (f64, sled::Db, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path().join("raw")).unwrap();
    let value = ims_log::encode(&vec![0x5a_u8; value_len - 8]);
    let started = Instant::now();
    let mut n = 0u64;
    while n < total {
        for i in n..n + 256 {
            db.insert(i.to_be_bytes(), value.clone()).unwrap();
            for index in 0..index_keys_per_value {
                let mut key = [index + 1; 17];
                key[1..9].copy_from_slice(&i.to_be_bytes());
                db.insert(key, &i.to_be_bytes()[..]).unwrap();
            }
        }
        db.flush().unwrap();
        n += 256;
    }
    (total as f64 / started.elapsed().as_secs_f64(), db, dir)
}

/// Rounds of each measurement; the medians are printed. Raw sled and the log alternate, so that
/// a noisy neighbour or a busy disk slows both rather than skewing the ratio.
const ROUNDS: usize = 5;

fn median(mut rates: Vec<f64>) -> f64 {
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

fn raw_scan(db: &sled::Db) -> f64 {
    let started = Instant::now();
    let mut scanned = 0u64;
    for item in db.iter() {
        let (_, value) = item.unwrap();
        let decoded: Vec<u8> = ims_log::decode(&value, || "raw".into()).unwrap();
        scanned += u64::from(!decoded.is_empty());
    }
    scanned as f64 / started.elapsed().as_secs_f64()
}

fn log_scan(log: &EventLog) -> f64 {
    let started = Instant::now();
    let mut scanned = 0u64;
    for envelope in log.iter_from(1) {
        decode_event(&envelope.unwrap()).unwrap();
        scanned += 1;
    }
    scanned as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let envelope_len = {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(dir.path(), "bench-1").unwrap();
        log.append(&[command(0)]).unwrap();
        log.read_range(1, 1).unwrap()[0].encode().len()
    };
    println!(
        "event log benchmark: {EVENTS_PER_RUN} events of {envelope_len} bytes per run, median of {ROUNDS} rounds"
    );
    let (mut raw, mut raw_indexed, mut logged) = (Vec::new(), Vec::new(), Vec::new());
    let (mut raw_scans, mut log_scans) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let (rate, raw_db, _raw_dir) = raw_sled_inserts(envelope_len, EVENTS_PER_RUN, 0);
        raw.push(rate);
        raw_indexed.push(raw_sled_inserts(envelope_len, EVENTS_PER_RUN, 2).0);
        let (rate, log, _log_dir) = log_appends(256, EVENTS_PER_RUN);
        logged.push(rate);
        raw_scans.push(raw_scan(&raw_db));
        log_scans.push(log_scan(&log));
    }
    let (raw, raw_indexed, logged) = (median(raw), median(raw_indexed), median(logged));
    println!("raw sled: insert 256 values then one flush      {raw:>12.0} values/s");
    println!(
        "raw sled: same, plus 2 index keys per value     {raw_indexed:>12.0} values/s  ({:.2} of plain raw sled)",
        raw_indexed / raw
    );
    for group in [1u64, 16] {
        let total = EVENTS_PER_RUN / if group == 1 { 20 } else { 1 };
        let rate = log_appends(group, total).0;
        println!("log: durable appends, groups of {group:>3}            {rate:>12.0} events/s  (one fsync per group)");
    }
    println!(
        "log: durable appends, groups of 256            {logged:>12.0} events/s  ({:.2} of raw sled, {:.2} of raw sled with the same keys)",
        logged / raw,
        logged / raw_indexed
    );
    let (raw_scan_rate, log_scan_rate) = (median(raw_scans), median(log_scans));
    println!("raw sled: scan and decode                        {raw_scan_rate:>12.0} values/s");
    println!(
        "log: scan and decode (envelope + event)          {log_scan_rate:>12.0} events/s  ({:.2} of raw sled)",
        log_scan_rate / raw_scan_rate
    );
}
