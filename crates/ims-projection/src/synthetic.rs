//! Synthetic event logs for benchmarks and load tests: a realistic mix of image lifecycles
//! (create, build, share, accept, update, some deletes), sealed into a valid hash chain.

use std::collections::BTreeMap;

use ims_domain::*;
use ims_log::{new_event, Envelope, EnvelopeBody, EventLog, LogError, NewCommand, NewEvent};

/// Seals domain events into envelopes from position 1 on, with stream versions counted per stream.
pub fn seal(events: Vec<Event>) -> Vec<Envelope> {
    let mut versions: std::collections::HashMap<StreamId, u64> = std::collections::HashMap::new();
    let mut envelopes: Vec<Envelope> = Vec::with_capacity(events.len());
    for event in events {
        let version = versions.entry(event.stream()).or_insert(0);
        *version += 1;
        let new = new_event(&event, *version);
        let prev = envelopes.last().map_or([0; 32], |e| e.hash);
        let position = envelopes.len() as u64 + 1;
        let body = EnvelopeBody {
            position,
            event_id: (position as u128).to_be_bytes(),
            stream: new.stream,
            stream_version: *version,
            command_id: None,
            actor: "operator".to_owned(),
            region: "bench-1".to_owned(),
            recorded_at_ms: 1_700_000_000_000 + position,
            event_type: new.event_type,
            schema_version: new.schema_version,
            payload: new.payload,
        };
        envelopes.push(Envelope::seal(body, prev));
    }
    envelopes
}

/// The id of synthetic image `n`.
pub fn image_id(n: u64) -> ImageId {
    let mut bytes = [0u8; 16];
    bytes[0] = 1; // sorts after the zero ids tests use
    bytes[8..].copy_from_slice(&n.to_be_bytes());
    ImageId::from_bytes(bytes)
}

pub fn tenant(n: u64) -> TenantId {
    TenantId::parse(&format!("tenant-{n}")).expect("a valid tenant id")
}

/// The creation of image `id` (a system image from an ECS; active at once when public).
pub fn created(id: ImageId, owner: Owner, class: ImageClass, at_ms: u64) -> Event {
    Event::ImageCreated(Box::new(NewImage {
        id,
        region: RegionId::parse("bench-1").expect("valid"),
        owner,
        name: format!("image-{}", at_ms % 1000),
        class,
        disk: DiskKind::System,
        source: Source::Ecs {
            instance_id: "ecs-1".into(),
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
        tags: BTreeMap::from([("env".to_owned(), "prod".to_owned())]),
        description: String::new(),
        protected: false,
        status: if class == ImageClass::Public {
            ImageStatus::Active
        } else {
            ImageStatus::Queued
        },
        at_ms,
    }))
}

/// The registrations of `tenants` tenants, each with room for a million images.
pub fn registrations(tenants: u64) -> Vec<Event> {
    (0..tenants)
        .map(|t| Event::TenantRegistered {
            tenant: tenant(t),
            quota: 1_000_000,
        })
        .collect()
}

/// The events of private image `n` of [`mixed_log`]: created, built, shared with two other
/// tenants, accepted by one, updated, launched by its owner if `n % 3 == 0`, and deleted if
/// `n % 10 == 9`; all on the image's stream.
pub fn image_lifecycle(n: u64, tenants: u64) -> Vec<Event> {
    let id = image_id(n);
    let owner = tenant(n % tenants);
    let (a, b) = (tenant((n + 1) % tenants), tenant((n + 2) % tenants));
    let at_ms = 1_700_000_000_000 + n;
    let mut events = vec![
        created(id, Owner::Tenant(owner), ImageClass::Private, at_ms),
        Event::BuildSucceeded {
            image_id: id,
            size_bytes: 1 << 30,
            checksum_sha256: "ab".repeat(32),
            at_ms,
        },
        Event::ImageShared {
            image_id: id,
            tenants: vec![a.clone(), b],
            at_ms,
        },
        Event::ShareAccepted {
            image_id: id,
            tenant: a,
            at_ms,
        },
        Event::ImageUpdated(Box::new(ImageUpdated {
            image_id: id,
            name: None,
            description: Some("updated".into()),
            tags: None,
            min_disk_gb: None,
            protected: None,
            at_ms,
        })),
    ];
    if n % 3 == 0 {
        events.push(Event::ImageLaunched {
            image_id: id,
            tenant: tenant(n % tenants),
            at_ms,
        });
    }
    if n % 10 == 9 {
        events.push(Event::ImageDeleted {
            image_id: id,
            at_ms,
        });
    }
    events
}

/// About `events` events over `tenants` tenants: the registrations, then image lifecycles
/// ([`image_lifecycle`]) until the count is reached.
pub fn mixed_log(events: usize, tenants: u64) -> Vec<Envelope> {
    let mut out = Vec::with_capacity(events + 8);
    out.extend(registrations(tenants));
    let mut n = 0u64;
    while out.len() < events {
        out.extend(image_lifecycle(n, tenants));
        n += 1;
    }
    out.truncate(events);
    seal(out)
}

/// A log in which tenant `tenant(0)` sees exactly `visible` images: half public, half its own.
pub fn tenant_with_visible_images(visible: u64) -> Vec<Envelope> {
    let mut out = vec![Event::TenantRegistered {
        tenant: tenant(0),
        quota: 1_000_000,
    }];
    for n in 0..visible {
        let id = image_id(n);
        let at_ms = 1_700_000_000_000 + n;
        if n % 2 == 0 {
            out.push(created(id, Owner::Platform, ImageClass::Public, at_ms));
        } else {
            out.push(created(
                id,
                Owner::Tenant(tenant(0)),
                ImageClass::Private,
                at_ms,
            ));
            out.push(Event::BuildSucceeded {
                image_id: id,
                size_bytes: 1,
                checksum_sha256: "ab".repeat(32),
                at_ms,
            });
        }
    }
    seal(out)
}

/// Appends `envelopes` (a synthetic log's) to `log` as commands of one event each, in groups of
/// 4096: the log seals its own chain, so benchmarks and tests get a real log of them.
pub fn append_to(log: &EventLog, envelopes: &[Envelope]) -> Result<(), LogError> {
    for chunk in envelopes.chunks(4096) {
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
    Ok(())
}
