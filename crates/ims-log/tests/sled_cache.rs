//! sled patches 9 and 10 (`crates/vendor/sled/PATCHES.md`): a scan of small rows stays within
//! the cache it was given. As released, the cache charged a page its size on disk, a fraction of
//! what its node holds in memory when rows are small, and the nodes read from disk held up to
//! twice the slots their keys and values needed: reading a 10M-event catalog (mostly rows of a
//! 28-byte key and a 1-byte value) with a 64 MiB cache grew the process by about 700 MB.

use std::path::Path;
use std::process::Command;

const ROWS: u32 = 400_000;
const CACHE_MIB: u64 = 8;
/// Set in the child that scans: the database is written by the parent, so that the memory the
/// writes freed (kept by the allocator for reuse) does not hide what the scan holds.
const SCAN_DIR_ENV: &str = "IMS_TEST_SLED_CACHE_SCAN_DIR";

fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Opens the database in `dir` with a small cache and reads every row; prints how much the
/// process grew.
fn scan(dir: &Path) {
    let db = ims_log::open_sled(
        sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_MIB << 20),
    )
    .unwrap();
    let before = resident_kib();
    let mut rows = 0;
    for entry in db.iter() {
        entry.unwrap();
        rows += 1;
    }
    assert_eq!(rows, ROWS);
    println!("grown_kib={}", resident_kib().saturating_sub(before));
}

#[test]
fn a_scan_of_small_rows_holds_about_the_cache_it_was_given() {
    if let Some(dir) = std::env::var_os(SCAN_DIR_ENV) {
        return scan(Path::new(&dir));
    }
    let dir = tempfile::tempdir().unwrap();
    {
        let db = ims_log::open_sled(sled::Config::new().path(dir.path())).unwrap();
        for chunk in (0..ROWS).collect::<Vec<_>>().chunks(10_000) {
            let mut batch = sled::Batch::default();
            for i in chunk {
                // Like the catalog's membership rows: a tenant, an image id, one byte.
                let key = format!("mtenant-{:04}/{:016x}", i % 1000, u64::from(*i) * 7919);
                batch.insert(key.as_bytes(), &[1u8][..]);
            }
            db.apply_batch(batch).unwrap();
        }
        db.flush().unwrap();
    }
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_scan_of_small_rows_holds_about_the_cache_it_was_given",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(SCAN_DIR_ENV, dir.path())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&child.stdout);
    assert!(child.status.success(), "the scan failed: {said}");
    let grown_mib = said
        .lines()
        .find_map(|line| line.split("grown_kib=").nth(1))
        .and_then(|kib| kib.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("the scan printed how much it grew: {said}"))
        / 1024;
    assert!(
        grown_mib < 2 * CACHE_MIB,
        "reading {ROWS} small rows through a {CACHE_MIB} MiB cache grew the process by \
         {grown_mib} MiB (less than twice the cache expected)"
    );
}
