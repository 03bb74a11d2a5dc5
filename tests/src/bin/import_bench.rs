//! Import of a large raw file from a local path (size cap, SHA-256, SHA-512, the format
//! inspector, staging) against `cp` of the same file on the same disk, in the same run. Prints
//! both rates, the ratio and the import's resident memory growth.
//!
//! Run: `cargo run --release -p ims-tests --bin import-bench [-- GIB]` (default 2 GiB).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::Write;
use std::time::Instant;

use ims_import::{import_file, Imported};

/// Resident and peak resident memory of this process, in MiB.
fn memory_mib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
            / 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn main() -> anyhow::Result<()> {
    let gib: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let bytes = gib << 30;
    // On the same disk as the build, not a tmpfs: the comparison is about this disk.
    std::fs::create_dir_all("target")?;
    let dir = tempfile::tempdir_in("target")?;
    let source = dir.path().join("source.raw");
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&source)?);
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut chunk = vec![0u8; 1 << 20];
        for _ in 0..(bytes >> 20) {
            for word in chunk.chunks_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                word.copy_from_slice(&state.to_le_bytes());
            }
            file.write_all(&chunk)?;
        }
        file.flush()?;
    }
    let rate = |seconds: f64| bytes as f64 / seconds / (1 << 20) as f64;

    let started = Instant::now();
    let status = std::process::Command::new("cp")
        .arg(&source)
        .arg(dir.path().join("copy.raw"))
        .status()?;
    anyhow::ensure!(status.success(), "cp failed");
    // cp returns before its pages reach the disk; the import syncs its staging file, so cp
    // gets the same: a sync of the copy before the clock stops.
    std::fs::File::open(dir.path().join("copy.raw"))?.sync_all()?;
    let cp_seconds = started.elapsed().as_secs_f64();
    std::fs::remove_file(dir.path().join("copy.raw"))?;

    let (rss_before, _) = memory_mib();
    let started = Instant::now();
    let imported = import_file(&source, "raw", &dir.path().join("staging.raw"))?;
    let import_seconds = started.elapsed().as_secs_f64();
    let (rss_after, peak) = memory_mib();
    anyhow::ensure!(
        matches!(imported, Imported::Built { size_bytes, .. } if size_bytes == bytes),
        "the import did not build: {imported:?}"
    );

    println!("import of a {gib} GiB raw file from a local path, same disk, same run");
    println!(
        "cp (and fsync)                           {:>8.0} MiB/s",
        rate(cp_seconds)
    );
    println!(
        "import (cap, SHA-256, SHA-512, inspector) {:>7.0} MiB/s",
        rate(import_seconds)
    );
    println!(
        "ratio import / cp: {:.2} (target >= 0.5)",
        cp_seconds / import_seconds
    );
    println!(
        "resident memory: {rss_before} MiB before, {rss_after} MiB after, {peak} MiB peak (growth {} MiB; target < 64)",
        rss_after.saturating_sub(rss_before)
    );
    Ok(())
}
