//! Read model snapshots (issue 18): an audit as of a past position started from the nearest
//! chain of snapshots (a whole one and the deltas on it) equals one replayed from position 1; a
//! damaged snapshot is refused, not trusted; the projector writes a delta every N events, a whole
//! one when the chain is long and the last whole one old enough, and keeps the newest few.

use ims_audit::{replay, replay_from_snapshots, LogSource, Replayed, Until};
use ims_domain::RegionId;
use ims_log::EventLog;
use ims_projection::snapshot::{self, FileReader, SnapshotFile};
use ims_projection::synthetic::{append_to, mixed_log, tenant};
use ims_projection::{Catalog, UsageLedger};
use ims_projector::{snapshots_path, RegionModels, SnapshotPolicy, DELTAS_PER_WHOLE};
use ims_wire::{Query, QueryParams};
use proptest::prelude::*;
use std::time::Duration;

const EVENTS: usize = 3_000;

/// A real log of `EVENTS` mixed events (images, shares, listings, usage of 20 tenants).
fn log_in(dir: &std::path::Path) -> EventLog {
    let log = EventLog::open(dir.join("log"), "test-1").unwrap();
    append_to(&log, &mixed_log(EVENTS, 20)).unwrap();
    log
}

fn region() -> RegionId {
    RegionId::parse("test-1").unwrap()
}

/// Folds `log` into read models under `projections` as the projector does, in batches of
/// `batch`, with `policy`.
fn project(log: &EventLog, projections: &std::path::Path, policy: SnapshotPolicy, batch: usize) {
    let models = RegionModels::open(projections, region(), &Default::default()).unwrap();
    models.set_snapshot_policy(policy);
    for chunk in log.read_range(1, EVENTS).unwrap().chunks(batch) {
        models.apply(chunk).unwrap();
    }
}

/// Writes whole snapshots of both models of `replayed` into `dir`.
fn snapshot_of(replayed: &Replayed, dir: &std::path::Path) {
    snapshot::write_whole(
        dir,
        &snapshot::model_name::<Catalog>(),
        replayed.catalog.store(),
    )
    .unwrap();
    snapshot::write_whole(
        dir,
        &snapshot::model_name::<UsageLedger>(),
        replayed.usage.store(),
    )
    .unwrap();
}

fn same(a: &Replayed, b: &Replayed) -> bool {
    a.position == b.position
        && a.catalog.store().entries().unwrap() == b.catalog.store().entries().unwrap()
        && a.usage.store().entries().unwrap() == b.usage.store().entries().unwrap()
}

fn positions_and_bases(files: &[SnapshotFile]) -> Vec<(u64, u64)> {
    files.iter().map(|f| (f.position, f.base)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Snapshots as the projector writes them (deltas, and whole ones when `whole_often`), then
    /// as-of at random positions: the models read through the chain plus the replayed tail are
    /// byte for byte the models replayed from position 1, and so is a query's answer.
    #[test]
    fn as_of_from_snapshots_equals_as_of_from_position_1(
        every in 50u64..700,
        batch in 1usize..400,
        whole_often in any::<bool>(),
        asked in proptest::collection::vec(1u64..EVENTS as u64 + 50, 3),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let log = log_in(dir.path());
        let projections = dir.path().join("projections");
        let gap = if whole_often { Duration::ZERO } else { Duration::from_secs(3600) };
        project(&log, &projections, SnapshotPolicy::new(every, gap), batch);
        let source = LogSource::Offline(log);
        let snapshots = snapshots_path(&projections);
        for position in asked {
            let asked = Until::Position(position);
            let from_snapshots = runtime
                .block_on(replay_from_snapshots(&source, &region(), asked, &snapshots, |_| {}))
                .unwrap();
            let from_start = runtime.block_on(replay(&source, &region(), asked, |_| {})).unwrap();
            prop_assert!(same(&from_snapshots, &from_start), "as of {:?}, snapshots every {}", asked, every);
            let params = QueryParams { limit: Some(1000), include_deprecated: Some(true), ..Default::default() };
            prop_assert_eq!(
                from_snapshots.query(&tenant(3), Query::VisibleImages, &params).unwrap(),
                from_start.query(&tenant(3), Query::VisibleImages, &params).unwrap()
            );
        }
    }
}

#[tokio::test]
async fn a_moment_before_every_snapshot_replays_from_position_1() {
    let dir = tempfile::tempdir().unwrap();
    let source = LogSource::Offline(log_in(dir.path()));
    let snapshots = dir.path().join("snapshots");
    let late = replay(&source, &region(), Until::Position(2_000), |_| {})
        .await
        .unwrap();
    snapshot_of(&late, &snapshots);
    let early = replay_from_snapshots(&source, &region(), Until::Position(500), &snapshots, |_| {})
        .await
        .unwrap();
    let from_start = replay(&source, &region(), Until::Position(500), |_| {})
        .await
        .unwrap();
    assert!(same(&early, &from_start));
}

/// Flips one byte of the newest catalog snapshot at `offset_from_end` bytes before its end.
fn damage(snapshots: &std::path::Path, offset_from_end: usize) -> std::path::PathBuf {
    let path = snapshot::list(snapshots, &snapshot::model_name::<Catalog>())
        .unwrap()
        .pop()
        .unwrap()
        .path;
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - offset_from_end;
    bytes[at] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    path
}

#[tokio::test]
async fn a_snapshot_with_a_damaged_index_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let source = LogSource::Offline(log_in(dir.path()));
    let snapshots = dir.path().join("snapshots");
    let at = replay(&source, &region(), Until::Position(1_000), |_| {})
        .await
        .unwrap();
    snapshot_of(&at, &snapshots);
    // The footer is 56 bytes; just before it lies the index.
    let path = damage(&snapshots, 60);
    let error = replay_from_snapshots(
        &source,
        &region(),
        Until::Position(1_500),
        &snapshots,
        |_| {},
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("checksum") && error.contains(&path.display().to_string()),
        "{error}"
    );
}

#[tokio::test]
async fn a_damaged_block_is_refused_when_read_naming_the_file_and_the_block() {
    let dir = tempfile::tempdir().unwrap();
    let source = LogSource::Offline(log_in(dir.path()));
    let snapshots = dir.path().join("snapshots");
    let at = replay(&source, &region(), Until::Position(3_000), |_| {})
        .await
        .unwrap();
    snapshot_of(&at, &snapshots);
    let size = std::fs::metadata(
        snapshot::list(&snapshots, &snapshot::model_name::<Catalog>()).unwrap()[0]
            .path
            .clone(),
    )
    .unwrap()
    .len() as usize;
    // Past the 24 bytes of header: inside the first block.
    let path = damage(&snapshots, size - 30);
    let reader = FileReader::open(&path).unwrap();
    let error = reader.rows().find_map(Result::err).unwrap().to_string();
    assert!(
        error.contains("checksum does not match at block 0")
            && error.contains(&path.display().to_string()),
        "{error}"
    );
    // An as-of that reads the model through it fails rather than answer from damaged rows.
    let error = match replay_from_snapshots(
        &source,
        &region(),
        Until::Position(3_000),
        &snapshots,
        |_| {},
    )
    .await
    {
        Err(error) => error.to_string(),
        Ok(replayed) => replayed.catalog.store().entries().unwrap_err().to_string(),
    };
    assert!(
        error.contains("checksum does not match at block 0"),
        "{error}"
    );
}

#[test]
fn a_projector_writes_a_delta_every_n_events_and_no_whole_one_sooner_than_the_gap() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_in(dir.path());
    let projections = dir.path().join("projections");
    project(
        &log,
        &projections,
        SnapshotPolicy::new(250, Duration::from_secs(3600)),
        100,
    );
    for model in [
        snapshot::model_name::<Catalog>(),
        snapshot::model_name::<UsageLedger>(),
    ] {
        let files = snapshot::list(&snapshots_path(&projections), &model).unwrap();
        // 3,000 events in batches of 100 cross a multiple of 250 twelve times: the first
        // snapshot is whole (base 0), each later one a delta on the one before.
        let expected: Vec<u64> = vec![
            300, 500, 800, 1_000, 1_300, 1_500, 1_800, 2_000, 2_300, 2_500, 2_800, 3_000,
        ];
        let bases: Vec<u64> = std::iter::once(0).chain(expected.iter().copied()).collect();
        assert_eq!(
            positions_and_bases(&files),
            expected.iter().copied().zip(bases).collect::<Vec<_>>(),
            "{model}"
        );
    }
}

#[test]
fn a_long_chain_gets_a_whole_snapshot_when_the_gap_allows() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_in(dir.path());
    let projections = dir.path().join("projections");
    project(
        &log,
        &projections,
        SnapshotPolicy::new(100, Duration::ZERO),
        100,
    );
    let files = snapshot::list(
        &snapshots_path(&projections),
        &snapshot::model_name::<Catalog>(),
    )
    .unwrap();
    let wholes: Vec<u64> = files
        .iter()
        .filter(|f| f.is_whole())
        .map(|f| f.position)
        .collect();
    // A whole one, DELTAS_PER_WHOLE deltas on it, then a whole one again.
    let period = (DELTAS_PER_WHOLE as u64 + 1) * 100;
    assert_eq!(wholes, vec![100, 100 + period]);
    assert_eq!(files.len(), EVENTS / 100);
}

#[test]
fn a_restarted_projector_writes_a_whole_snapshot_unless_it_stopped_at_its_last_one() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_in(dir.path());
    let projections = dir.path().join("projections");
    let policy = SnapshotPolicy::new(1_000, Duration::from_secs(3600));
    let envelopes = log.read_range(1, EVENTS).unwrap();
    let run = |range: std::ops::Range<usize>| {
        let models = RegionModels::open(&projections, region(), &Default::default()).unwrap();
        models.set_snapshot_policy(policy);
        for chunk in envelopes[range].chunks(100) {
            models.apply(chunk).unwrap();
        }
    };
    // Stops at 1,000, where it wrote a snapshot: the next one can be a delta on it. Then stops
    // at 2,500, what changed since 2,000 forgotten: the next one must be whole.
    run(0..1_000);
    run(1_000..2_500);
    run(2_500..EVENTS);
    let files = snapshot::list(
        &snapshots_path(&projections),
        &snapshot::model_name::<Catalog>(),
    )
    .unwrap();
    assert_eq!(
        positions_and_bases(&files),
        vec![(1_000, 0), (2_000, 1_000), (3_000, 0)]
    );
}

#[test]
fn the_newest_eight_whole_snapshots_are_kept_with_the_deltas_after_them() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_in(dir.path());
    let projections = dir.path().join("projections");
    // Every 100 events, a whole one after each 16 deltas: wholes at 100, 1,800 and so on.
    // With 8 kept, a region that saw nine has dropped the first and its deltas.
    let models = RegionModels::open(&projections, region(), &Default::default()).unwrap();
    models.set_snapshot_policy(SnapshotPolicy::new(10, Duration::ZERO));
    let envelopes = log.read_range(1, EVENTS).unwrap();
    for chunk in envelopes.chunks(10) {
        models.apply(chunk).unwrap();
    }
    let files = snapshot::list(
        &snapshots_path(&projections),
        &snapshot::model_name::<Catalog>(),
    )
    .unwrap();
    let wholes: Vec<u64> = files
        .iter()
        .filter(|f| f.is_whole())
        .map(|f| f.position)
        .collect();
    let period = (DELTAS_PER_WHOLE as u64 + 1) * 10;
    let first_kept = (EVENTS as u64 - 10) / period * period + 10 - 7 * period;
    assert_eq!(wholes.len(), 8);
    assert_eq!(wholes[0], first_kept);
    assert_eq!(
        files[0].position, first_kept,
        "nothing older than the oldest whole one kept"
    );
    assert_eq!(files.last().unwrap().position, EVENTS as u64);
    // Each file reads whole and holds its model at its position.
    for file in &files {
        let reader = FileReader::open(&file.path).unwrap();
        assert_eq!((reader.position, reader.base), (file.position, file.base));
        assert!(reader.rows().all(|row| row.is_ok()));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    /// A rebuild that spills to files past a few rows in memory (and merges them past eight)
    /// is byte for byte the rebuild held in memory, in batches of any size, and so is it once
    /// settled into one file.
    #[test]
    fn a_rebuild_spilled_to_disk_equals_one_in_memory(
        overlay_max in 1usize..400,
        batch in 1usize..500,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let log = log_in(dir.path());
        let scratch = dir.path().join("scratch");
        std::fs::create_dir_all(&scratch).unwrap();
        let mut spilled = ims_projection::ReadModel::spilling(Catalog, scratch.clone(), overlay_max);
        let mut in_memory = ims_projection::ReadModel::in_memory(Catalog);
        for chunk in log.read_range(1, EVENTS).unwrap().chunks(batch) {
            spilled.apply(chunk).unwrap();
            in_memory.apply(chunk).unwrap();
        }
        prop_assert_eq!(spilled.store().entries().unwrap(), in_memory.store().entries().unwrap());
        let files = std::fs::read_dir(&scratch).unwrap().count();
        prop_assert!((1..=9).contains(&files), "{} files in the scratch folder", files);
        // Settled (what verify does before it reads the live model): one file, the same rows.
        spilled.settle().unwrap();
        prop_assert_eq!(spilled.store().entries().unwrap(), in_memory.store().entries().unwrap());
        let files = std::fs::read_dir(&scratch).unwrap().count();
        prop_assert_eq!(files, 1, "files in the scratch folder once settled");
    }
}

#[tokio::test]
async fn a_truncated_snapshot_is_refused_and_a_chain_missing_a_delta_is_passed_over() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_in(dir.path());
    let projections = dir.path().join("projections");
    project(
        &log,
        &projections,
        SnapshotPolicy::new(500, Duration::from_secs(3600)),
        100,
    );
    let snapshots = snapshots_path(&projections);
    let files = snapshot::list(&snapshots, &snapshot::model_name::<Catalog>()).unwrap();
    assert_eq!(
        positions_and_bases(&files)[..3],
        [(500, 0), (1_000, 500), (1_500, 1_000)]
    );
    let source = LogSource::Offline(log);
    // A delta gone from the middle of the chain: as-of past it starts from the newest complete
    // chain before the gap (the file at 1,000), never from files that skip the missing rows.
    std::fs::remove_file(&files[2].path).unwrap();
    for position in [1_700, 2_600] {
        let asked = Until::Position(position);
        let from_snapshots = replay_from_snapshots(&source, &region(), asked, &snapshots, |_| {})
            .await
            .unwrap();
        let from_start = replay(&source, &region(), asked, |_| {}).await.unwrap();
        assert!(same(&from_snapshots, &from_start), "as of {position}");
    }
    // A file cut short (a disk that lost its end) is refused by name, not read.
    let cut = &files[1].path;
    let bytes = std::fs::read(cut).unwrap();
    std::fs::write(cut, &bytes[..bytes.len() / 2]).unwrap();
    let error = replay_from_snapshots(
        &source,
        &region(),
        Until::Position(1_200),
        &snapshots,
        |_| {},
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        error.contains(&cut.display().to_string()) && error.contains("cut short"),
        "{error}"
    );
}
