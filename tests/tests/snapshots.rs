//! Read model snapshots (issue 18): an audit as of a past position started from the nearest
//! snapshot equals one replayed from position 1; a damaged snapshot is refused, not trusted; the
//! projector writes them every N events and keeps the newest few.

use ims_audit::{replay, replay_from_snapshots, LogSource, Replayed, Until};
use ims_domain::RegionId;
use ims_log::EventLog;
use ims_projection::synthetic::{append_to, mixed_log, tenant};
use ims_projection::{snapshot, Catalog, Fold, UsageLedger};
use ims_projector::{snapshots_path, RegionModels, SnapshotPolicy};
use ims_wire::{Query, QueryParams};
use proptest::prelude::*;

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

/// Writes snapshots of both models of `replayed` into `dir`.
fn snapshot_of(replayed: &Replayed, dir: &std::path::Path) {
    snapshot::write(dir, Catalog::NAME, replayed.catalog.store()).unwrap();
    snapshot::write(dir, UsageLedger::NAME, replayed.usage.store()).unwrap();
}

fn same(a: &Replayed, b: &Replayed) -> bool {
    a.position == b.position
        && a.catalog.store().entries().unwrap() == b.catalog.store().entries().unwrap()
        && a.usage.store().entries().unwrap() == b.usage.store().entries().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn as_of_from_a_snapshot_equals_as_of_from_position_1(
        taken_at in 1u64..EVENTS as u64,
        later in 0u64..1_000,
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let log = log_in(dir.path());
        let source = LogSource::Offline(log);
        let snapshots = dir.path().join("snapshots");
        let at = runtime
            .block_on(replay(&source, &region(), Until::Position(taken_at), |_| {}))
            .unwrap();
        snapshot_of(&at, &snapshots);
        let asked = Until::Position(taken_at + later);
        let from_snapshot = runtime
            .block_on(replay_from_snapshots(&source, &region(), asked, &snapshots, |_| {}))
            .unwrap();
        let from_start = runtime.block_on(replay(&source, &region(), asked, |_| {})).unwrap();
        prop_assert!(same(&from_snapshot, &from_start), "as of {:?} from a snapshot at {}", asked, taken_at);
        let params = QueryParams { limit: Some(1000), include_deprecated: Some(true), ..Default::default() };
        prop_assert_eq!(
            from_snapshot.query(&tenant(3), Query::VisibleImages, &params).unwrap(),
            from_start.query(&tenant(3), Query::VisibleImages, &params).unwrap()
        );
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

#[tokio::test]
async fn a_damaged_snapshot_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let source = LogSource::Offline(log_in(dir.path()));
    let snapshots = dir.path().join("snapshots");
    let at = replay(&source, &region(), Until::Position(1_000), |_| {})
        .await
        .unwrap();
    snapshot_of(&at, &snapshots);
    let (_, path) = snapshot::nearest(&snapshots, Catalog::NAME, 1_000)
        .unwrap()
        .unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&path, bytes).unwrap();
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

#[test]
fn a_projector_catching_up_writes_no_snapshot_sooner_than_the_gap_after_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_in(dir.path());
    let projections = dir.path().join("projections");
    let models = RegionModels::open(&projections, region(), &Default::default()).unwrap();
    models.set_snapshot_policy(SnapshotPolicy::new(
        250,
        std::time::Duration::from_secs(3600),
    ));
    for batch in log.read_range(1, EVENTS).unwrap().chunks(100) {
        models.apply(batch).unwrap();
    }
    let kept = snapshot::list(&snapshots_path(&projections), Catalog::NAME).unwrap();
    let positions: Vec<u64> = kept.iter().map(|(position, _)| *position).collect();
    assert_eq!(
        positions,
        vec![300],
        "only the first crossing, then the gap holds"
    );
}

#[test]
fn the_projector_snapshots_every_n_events_and_keeps_the_newest_eight() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_in(dir.path());
    let projections = dir.path().join("projections");
    let models = RegionModels::open(&projections, region(), &Default::default()).unwrap();
    models.set_snapshot_policy(SnapshotPolicy::new(250, std::time::Duration::ZERO));
    let envelopes = log.read_range(1, EVENTS).unwrap();
    for batch in envelopes.chunks(100) {
        models.apply(batch).unwrap();
    }
    let snapshots = snapshots_path(&projections);
    for model in [Catalog::NAME, UsageLedger::NAME] {
        let kept = snapshot::list(&snapshots, model).unwrap();
        // 3,000 events in batches of 100 cross a multiple of 250 twelve times; the newest 8 stay.
        let positions: Vec<u64> = kept.iter().map(|(position, _)| *position).collect();
        assert_eq!(
            positions,
            vec![1_300, 1_500, 1_800, 2_000, 2_300, 2_500, 2_800, 3_000],
            "{model}"
        );
        // Each holds its model at that checkpoint.
        let (position, rows) = snapshot::read(&kept[7].1).unwrap();
        assert_eq!(position, 3_000);
        assert!(!rows.is_empty());
    }
}
