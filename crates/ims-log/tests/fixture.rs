//! A log written by the first release must stay readable forever: this fixture was written by
//! schema version 1 and is checked in; every later release must decode it to the same events.

use std::path::{Path, PathBuf};

use ims_domain::*;
use ims_log::*;

const WRITE_ENV: &str = "IMS_WRITE_FIXTURE";

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1-log")
}

fn expected_events() -> Vec<Event> {
    let t1 = TenantId::parse("t1").unwrap();
    let t2 = TenantId::parse("t2").unwrap();
    let image = ImageId::parse("0192f0c1-7a3e-7c2b-9d4e-1a2b3c4d5e6f").unwrap();
    vec![
        Event::TenantRegistered {
            tenant: t1.clone(),
            quota: 100,
        },
        Event::TenantRegistered {
            tenant: t2.clone(),
            quota: 5,
        },
        Event::ImageCreated(Box::new(NewImage {
            id: image,
            region: RegionId::parse("eu-west-0").unwrap(),
            owner: Owner::Tenant(t1.clone()),
            name: "web-2026".into(),
            class: ImageClass::Private,
            disk: DiskKind::System,
            source: Source::Ecs {
                instance_id: "ecs-42".into(),
                data_disk_ids: vec![],
            },
            os: Some(Os {
                platform: "ubuntu".into(),
                version: "22.04".into(),
                arch: "x86_64".into(),
            }),
            min_disk_gb: 40,
            size_bytes: None,
            checksum_sha256: None,
            encryption: None,
            tags: [("env".to_string(), "prod".to_string())]
                .into_iter()
                .collect(),
            description: "fixture".into(),
            protected: false,
            status: ImageStatus::Queued,
            at_ms: 1_700_000_000_000,
        })),
        Event::BuildSucceeded {
            image_id: image,
            size_bytes: 1 << 30,
            checksum_sha256: "ab".repeat(32),
            at_ms: 1_700_000_000_001,
        },
        Event::ImageShared {
            image_id: image,
            tenants: vec![t2.clone()],
            at_ms: 1_700_000_000_002,
        },
        Event::ShareAccepted {
            image_id: image,
            tenant: t2,
            at_ms: 1_700_000_000_003,
        },
        Event::ListedOnMarketplace {
            image_id: image,
            listing: Listing {
                publisher: "Acme".into(),
                price: Price::PerHour {
                    amount_minor: 120,
                    currency: Currency(*b"USD"),
                },
            },
            at_ms: 1_700_000_000_004,
        },
    ]
}

/// Writes the fixture. Run once, by hand, when the first release is cut:
/// `IMS_WRITE_FIXTURE=1 cargo test -p ims-log --test fixture -- --ignored write_fixture`
#[test]
#[ignore = "writes the checked-in fixture; run by hand only"]
fn write_fixture() {
    if std::env::var(WRITE_ENV).is_err() {
        return;
    }
    let _ = std::fs::remove_dir_all(fixture_dir());
    let log = EventLog::open(fixture_dir(), "eu-west-0").unwrap();
    let mut versions = std::collections::HashMap::new();
    for event in expected_events() {
        let version = versions.entry(event.stream()).or_insert(0);
        *version += 1;
        let command = NewCommand {
            digest: None,
            command_id: None,
            actor: "operator".into(),
            recorded_at_ms: 1_700_000_000_000,
            events: vec![new_event(&event, *version)],
            reply: vec![],
            snapshots: vec![],
        };
        log.append(&[command]).unwrap();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn the_first_releases_log_still_reads_and_verifies() {
    // Opening writes to sled's files, so read a copy and leave the fixture as it was committed.
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture_dir(), dir.path());
    let log = EventLog::open(dir.path(), "eu-west-0").unwrap();
    let expected = expected_events();
    assert_eq!(log.head_position(), expected.len() as u64);
    assert_eq!(log.verify(1..=log.head_position()).unwrap(), Ok(()));
    let envelopes: Vec<Envelope> = log.iter_from(1).collect::<Result<_, _>>().unwrap();
    let events: Vec<Event> = envelopes.iter().map(|e| decode_event(e).unwrap()).collect();
    assert_eq!(events, expected);
    assert!(envelopes.iter().all(|e| e.body.schema_version == 1));
    // The first release's stream index (a key per event) was converted on open.
    let image_stream = "image/0192f0c1-7a3e-7c2b-9d4e-1a2b3c4d5e6f";
    assert_eq!(log.stream_version(image_stream).unwrap(), 5);
    let stream: Vec<u64> = log
        .read_stream(image_stream)
        .unwrap()
        .iter()
        .map(|e| e.position())
        .collect();
    assert_eq!(stream, vec![3, 4, 5, 6, 7]);
    assert_eq!(log.stream_version("tenant/t2").unwrap(), 1);
}

#[test]
fn appends_after_the_first_releases_events_read_back_with_them() {
    // The first release stored one event per key; later appends store a record per append.
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture_dir(), dir.path());
    let log = EventLog::open(dir.path(), "eu-west-0").unwrap();
    let t3 = TenantId::parse("t3").unwrap();
    let more: Vec<NewCommand> = (0..3u32)
        .map(|n| NewCommand {
            digest: None,
            command_id: None,
            actor: "operator".into(),
            recorded_at_ms: 1_700_000_000_100,
            events: vec![new_event(
                &Event::QuotaSet {
                    tenant: t3.clone(),
                    quota: n,
                },
                u64::from(n) + 1,
            )],
            reply: vec![],
            snapshots: vec![],
        })
        .collect();
    log.append(&more).unwrap();
    drop(log);
    let log = EventLog::open(dir.path(), "eu-west-0").unwrap();
    let old = expected_events().len() as u64;
    assert_eq!(log.head_position(), old + 3);
    assert_eq!(log.verify(1..=old + 3).unwrap(), Ok(()));
    let positions: Vec<u64> = log
        .iter_from(old - 1)
        .map(|e| e.unwrap().position())
        .collect();
    assert_eq!(positions, (old - 1..=old + 3).collect::<Vec<_>>());
    assert_eq!(log.read_stream("tenant/t3").unwrap().len(), 3);
}
