//! `audit who-could-use` read from the image's own stream and the tenants' registrations equals
//! the answer of a full replay, on random logs and at every position (DESIGN.md section 7,
//! issue 18): the fast path may never disagree with the slow one.

use std::collections::HashMap;

use ims_audit::{replay_with_state, who_could_use_offline, LogSource, Until};
use ims_domain::{Event, ImageClass, Listing, OrganizationId, Owner, Price, RegionId};
use ims_log::{new_event, EventLog, NewCommand};
use ims_projection::synthetic::{created, image_id, tenant};
use proptest::prelude::*;

const TENANTS: u64 = 5;
const IMAGES: u64 = 4;

/// The events of random operations; meaningless ones (sharing an image that does not exist,
/// say) are left out, as `decide` would refuse them.
fn events(ops: &[(u8, u64, u64)]) -> Vec<Event> {
    let mut registered = std::collections::HashSet::new();
    let mut joined = std::collections::HashSet::new();
    let organization =
        |n: u64| OrganizationId::parse(["org-a", "org-b"][(n % 2) as usize]).unwrap();
    let mut created_images = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (n, &(kind, a, b)) in ops.iter().enumerate() {
        let (who, id) = (tenant(a % TENANTS), image_id(b % IMAGES));
        let at_ms = 1_700_000_000_000 + n as u64;
        let exists = created_images.contains(&(b % IMAGES));
        let event = match kind % 15 {
            0 if registered.insert(a % TENANTS) => Event::TenantRegistered {
                tenant: who,
                quota: 100,
            },
            1 | 2 if !exists => {
                created_images.insert(b % IMAGES);
                if kind % 10 == 1 {
                    created(id, Owner::Tenant(who), ImageClass::Private, at_ms)
                } else {
                    created(id, Owner::Platform, ImageClass::Public, at_ms)
                }
            }
            3 if exists => Event::ImageShared {
                image_id: id,
                tenants: vec![who],
                at_ms,
            },
            4 if exists => Event::ShareAccepted {
                image_id: id,
                tenant: who,
                at_ms,
            },
            5 if exists => Event::ShareRejected {
                image_id: id,
                tenant: who,
                at_ms,
            },
            6 if exists => Event::ImageUnshared {
                image_id: id,
                tenants: vec![who],
                at_ms,
            },
            7 if exists => Event::ListedOnMarketplace {
                image_id: id,
                listing: Listing {
                    publisher: "Acme".into(),
                    price: Price::Free,
                },
                at_ms,
            },
            8 if exists => Event::DelistedFromMarketplace {
                image_id: id,
                at_ms,
            },
            9 if exists => Event::ImageDeleted {
                image_id: id,
                at_ms,
            },
            10 if registered.contains(&(a % TENANTS)) && joined.insert(a % TENANTS) => {
                Event::TenantJoinedOrganization {
                    tenant: who,
                    organization: organization(b),
                }
            }
            11 if exists => Event::ImageSharedWithOrganizations {
                image_id: id,
                organizations: vec![organization(a)],
                at_ms,
            },
            12 if exists => Event::ImageUnsharedFromOrganizations {
                image_id: id,
                organizations: vec![organization(a)],
                at_ms,
            },
            13 if exists => Event::ImageRecycled {
                image_id: id,
                purge_at_ms: at_ms + 1_000,
                at_ms,
            },
            14 if exists => Event::ImageRestored {
                image_id: id,
                at_ms,
            },
            _ => continue,
        };
        out.push(event);
    }
    out
}

/// A real log on disk holding `events`, one command each.
fn log_of(events: &[Event], dir: &std::path::Path) -> EventLog {
    let log = EventLog::open(dir.join("log"), "test-1").unwrap();
    let mut versions: HashMap<String, u64> = HashMap::new();
    let commands: Vec<NewCommand> = events
        .iter()
        .enumerate()
        .map(|(n, event)| {
            let version = versions.entry(event.stream().to_string()).or_default();
            *version += 1;
            NewCommand {
                digest: None,
                command_id: None,
                actor: "operator".into(),
                recorded_at_ms: 1_700_000_000_000 + n as u64,
                events: vec![new_event(event, *version)],
                reply: Vec::new(),
                snapshots: Vec::new(),
            }
        })
        .collect();
    log.append(&commands).unwrap();
    log
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn from_the_streams_equals_a_full_replay_at_every_position(
        ops in prop::collection::vec((0u8..15, 0u64..8, 0u64..8), 1..60)
    ) {
        let events = events(&ops);
        let dir = tempfile::tempdir().unwrap();
        let log = log_of(&events, dir.path());
        let source = LogSource::Offline(log.clone());
        let region = RegionId::parse("test-1").unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        for position in 0..=events.len() as u64 + 1 {
            let replayed = runtime
                .block_on(replay_with_state(&source, &region, Until::Position(position), |_| {}))
                .unwrap();
            for n in 0..IMAGES {
                let fast = who_could_use_offline(&log, image_id(n), Until::Position(position)).unwrap();
                prop_assert_eq!(Some(fast), replayed.who_could_use(image_id(n)), "image {} at {}", n, position);
            }
            // By time too: event n was recorded at 1_700_000_000_000 + n.
            let at = Until::Time(1_700_000_000_000 + position.saturating_sub(1));
            let by_time = runtime.block_on(replay_with_state(&source, &region, at, |_| {})).unwrap();
            let at = Until::Time(1_700_000_000_000 + position.saturating_sub(1));
            prop_assert_eq!(
                Some(who_could_use_offline(&log, image_id(0), at).unwrap()),
                by_time.who_could_use(image_id(0))
            );
        }
    }
}
