//! A read model folded live, in whatever batches events happen to arrive, is byte-for-byte the
//! model rebuilt from position 1; replays and duplicates change nothing; a gap stops the batch.

use std::collections::BTreeMap;

use ims_domain::*;
use ims_log::{new_event, Envelope, EnvelopeBody};
use ims_projection::queries::{answer, Models, QueryParams};
use ims_projection::{Catalog, Fold, ReadModel, UsageLedger};
use proptest::prelude::*;

const TENANTS: [&str; 4] = ["t0", "t1", "t2", "t3"];

fn cmd(actor: Actor, command: impl Into<Command>) -> (Actor, Command) {
    (actor, command.into())
}

fn tenant(i: usize) -> TenantId {
    TenantId::parse(TENANTS[i % TENANTS.len()]).unwrap()
}

/// The clock of the random logs at position 0.
const CLOCK_MS: u64 = 1_700_000_000_000;

fn organization() -> OrganizationId {
    OrganizationId::parse("org-odd").unwrap()
}

fn image(n: u8) -> ImageId {
    let mut bytes = [0u8; 16];
    bytes[15] = n;
    ImageId::from_bytes(bytes)
}

/// Random commands, decided and folded like the writer does; returns the events as envelopes.
fn run_commands(commands: &[(u8, usize, u8, usize)]) -> Vec<Envelope> {
    let policy = SharingPolicy {
        members_per_image_max: 3,
        ..SharingPolicy::default()
    };
    let region = RegionId::parse("test-1").unwrap();
    let mut state = State::default();
    let mut envelopes: Vec<Envelope> = Vec::new();
    let mut next_image = 1u8;
    let mut all: Vec<(Actor, Command)> = (0..TENANTS.len())
        .map(|i| {
            cmd(
                Actor::Operator,
                OperatorCommand::RegisterTenant {
                    tenant: tenant(i),
                    quota: None,
                    // Half the tenants in one organization, which shares reach.
                    organization: (i % 2 == 1).then(organization),
                },
            )
        })
        .collect();
    for (kind, actor, target, other) in commands {
        let me = Actor::Tenant(tenant(*actor));
        let id = image(1 + target % 6);
        let command = match kind % 16 {
            0 | 1 => cmd(
                me,
                TenantCommand::CreateImage(Box::new(CreateImage {
                    name: "img".into(),
                    disk: DiskKind::System,
                    source: CreateSource::Ecs {
                        instance_id: "ecs".into(),
                        data_disk_ids: vec![],
                    },
                    os: Some(Os {
                        platform: "ubuntu".into(),
                        version: "22.04".into(),
                        arch: "x86_64".into(),
                    }),
                    min_disk_gb: 10,
                    encryption: None,
                    tags: BTreeMap::new(),
                    description: String::new(),
                    protected: false,
                    // Families of the images every tenant sees too (see the publish below).
                    family: (target % 3 != 0).then(|| "web".to_owned()),
                    exclude_from_latest: target % 5 == 0,
                })),
            ),
            2 => cmd(
                Actor::Operator,
                OperatorCommand::ReportBuild {
                    image_id: id,
                    outcome: BuildOutcome::Succeeded { size_bytes: 1 },
                    checksum_sha256: Some("a".repeat(64)),
                    file: Some(FileFacts {
                        sha512: "b".repeat(128),
                        detected_format: FileFormat::Qcow2,
                        virtual_size: Some(1 << 30),
                    }),
                    reason: None,
                },
            ),
            3 => cmd(
                Actor::Operator,
                match target % 2 {
                    0 => OperatorCommand::ReportBuild {
                        image_id: id,
                        outcome: BuildOutcome::Succeeded { size_bytes: 1 },
                        checksum_sha256: Some("a".repeat(64)),
                        file: None,
                        reason: None,
                    },
                    _ => OperatorCommand::ReportBuild {
                        image_id: id,
                        outcome: BuildOutcome::Failed,
                        checksum_sha256: None,
                        file: None,
                        reason: Some("the qcow2 image has a backing file".into()),
                    },
                },
            ),
            4 => cmd(
                me,
                TenantCommand::ShareImage {
                    image_id: id,
                    tenants: vec![tenant(*other)],
                    organizations: (target % 2 == 1).then(organization).into_iter().collect(),
                },
            ),
            5 => cmd(me, TenantCommand::AcceptShare { image_id: id }),
            6 => cmd(me, TenantCommand::RejectShare { image_id: id }),
            7 => cmd(
                me,
                TenantCommand::UnshareImage {
                    image_id: id,
                    tenants: (target % 2 == 1).then(Vec::new),
                    organizations: vec![organization()],
                },
            ),
            8 => cmd(me, TenantCommand::DeleteImage { image_id: id }),
            9 => cmd(
                me,
                TenantCommand::ListOnMarketplace {
                    image_id: id,
                    publisher: "p".into(),
                    price: Price::PerHour {
                        amount_minor: 5,
                        currency: Currency(*b"EUR"),
                    },
                },
            ),
            10 => cmd(
                Actor::Operator,
                OperatorCommand::RecordUsage {
                    image_id: id,
                    tenant: tenant(*other),
                    hours: 2,
                },
            ),
            11 => cmd(
                Actor::Operator,
                OperatorCommand::RecordLaunch {
                    image_id: id,
                    tenant: tenant(if target % 2 == 0 { *actor } else { *other }),
                },
            ),
            // Deprecations, some with transitions scheduled; kind 13 carries them out (its due
            // time is the image's, and the clock jumps to it: see below).
            // The owner's, or the operator's of a public image.
            12 => cmd(
                if target % 4 == 0 { Actor::Operator } else { me },
                TenantCommand::DeprecateImage(Box::new(DeprecateImage {
                    image_id: id,
                    state: [
                        DeprecationState::Active,
                        DeprecationState::Deprecated,
                        DeprecationState::Obsolete,
                    ][*other % 3],
                    replacement: (*other % 3 != 0 && target % 2 == 1)
                        .then(|| image(1 + (target / 7) % 6)),
                    obsolete_at_ms: (*other % 3 != 2).then_some(CLOCK_MS + 1_000),
                    delete_at_ms: (target % 2 == 0).then_some(CLOCK_MS + 2_000),
                })),
            ),
            13 => cmd(
                Actor::Scheduler,
                Command::Scheduled(ScheduledTransition {
                    image_id: id,
                    transition: [Transition::Obsolete, Transition::Delete, Transition::Purge]
                        [*other % 3],
                    due_ms: 0,
                }),
            ),
            14 => cmd(me, TenantCommand::RestoreImage { image_id: id }),
            _ => cmd(
                Actor::Operator,
                OperatorCommand::PublishPublicImage(Box::new(PublishPublicImage {
                    name: "pub".into(),
                    disk: DiskKind::System,
                    os: Some(Os {
                        platform: "debian".into(),
                        version: "12".into(),
                        arch: "x86_64".into(),
                    }),
                    min_disk_gb: 1,
                    size_bytes: 1,
                    checksum_sha256: "b".repeat(64),
                    tags: BTreeMap::new(),
                    description: String::new(),
                    family: Some("web".into()),
                })),
            ),
        };
        all.push(command);
    }
    let mut clock = CLOCK_MS;
    for (actor, mut command) in all {
        clock += 1;
        // The scheduler sends what the image has scheduled, when it is due: the clock jumps.
        if let Command::Scheduled(scheduled) = &mut command {
            let due = state.images.get(&scheduled.image_id).and_then(|image| {
                image
                    .scheduled()
                    .into_iter()
                    .find(|(_, transition)| *transition == scheduled.transition)
                    .map(|(due, _)| due)
            });
            if let Some(due) = due {
                scheduled.due_ms = due;
                clock = clock.max(due);
            }
        }
        let context = Context {
            actor: actor.clone(),
            region: region.clone(),
            now_ms: clock,
            new_image_id: image(next_image),
            expected_version: None,
            policy: &policy,
        };
        let Ok(events) = decide(&state, &command, &context) else {
            continue;
        };
        for event in events {
            if matches!(event, Event::ImageCreated(_)) {
                next_image += 1;
            }
            evolve(&mut state, &event);
            let version = match event.stream() {
                StreamId::Image(id) => state.images[&id].version,
                StreamId::Tenant(id) => state.tenants[&id].version,
            };
            let new = new_event(&event, version);
            let prev = envelopes.last().map_or([0; 32], |e| e.hash);
            let body = EnvelopeBody {
                position: envelopes.len() as u64 + 1,
                event_id: [1; 16],
                stream: new.stream,
                stream_version: version,
                command_id: None,
                actor: actor.to_string(),
                region: region.to_string(),
                recorded_at_ms: context.now_ms,
                event_type: new.event_type,
                schema_version: new.schema_version,
                payload: new.payload,
            };
            envelopes.push(Envelope::seal(body, prev));
        }
    }
    envelopes
}

fn any_commands() -> impl Strategy<Value = Vec<(u8, usize, u8, usize)>> {
    prop::collection::vec((any::<u8>(), 0usize..4, any::<u8>(), 0usize..4), 1..120)
}

#[test]
fn a_model_lives_in_a_folder_named_after_its_layout_so_a_new_layout_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    let envelopes = run_commands(&[(0, 0, 0, 0), (0, 1, 1, 0)]);
    {
        let mut catalog = ReadModel::open(dir.path(), Catalog).unwrap();
        catalog.apply(&envelopes).unwrap();
    }
    let current = dir
        .path()
        .join(format!("catalog.v{}", <Catalog as Fold>::LAYOUT));
    assert!(current.is_dir());
    // A model of another layout in the same place is not read: this one starts at position 0.
    std::fs::rename(&current, dir.path().join("catalog.v1")).unwrap();
    let catalog = ReadModel::open(dir.path(), Catalog).unwrap();
    assert_eq!(catalog.checkpoint(), 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn live_models_equal_a_rebuild_from_position_1_byte_for_byte(
        commands in any_commands(),
        chunks in prop::collection::vec(1usize..8, 1..40),
        replay_every in 2usize..6,
    ) {
        let envelopes = run_commands(&commands);
        let dir = tempfile::tempdir().unwrap();
        let mut live_catalog = ReadModel::open(dir.path(), Catalog).unwrap();
        let mut live_usage = ReadModel::open(dir.path(), UsageLedger).unwrap();
        // Live: events arrive in uneven batches, some batches are delivered twice.
        let mut at = 0;
        let mut round = 0;
        while at < envelopes.len() {
            let size = chunks[round % chunks.len()];
            let end = (at + size).min(envelopes.len());
            let replay_from = if round % replay_every == 0 { at.saturating_sub(3) } else { at };
            live_catalog.apply(&envelopes[replay_from..end]).unwrap();
            live_usage.apply(&envelopes[replay_from..end]).unwrap();
            at = end;
            round += 1;
        }
        let mut rebuilt_catalog = ReadModel::in_memory(Catalog);
        let mut rebuilt_usage = ReadModel::in_memory(UsageLedger);
        rebuilt_catalog.apply(&envelopes).unwrap();
        rebuilt_usage.apply(&envelopes).unwrap();
        prop_assert_eq!(live_catalog.store().entries().unwrap(), rebuilt_catalog.store().entries().unwrap());
        prop_assert_eq!(live_usage.store().entries().unwrap(), rebuilt_usage.store().entries().unwrap());
        prop_assert_eq!(live_catalog.checkpoint(), envelopes.len() as u64);
    }

    #[test]
    fn the_indexes_hold_exactly_the_entries_of_the_images_they_index(commands in any_commands()) {
        // The fold updates only the entries an event can change; computed from scratch for every
        // image, the entries must be the same.
        let envelopes = run_commands(&commands);
        let mut catalog = ReadModel::in_memory(Catalog);
        catalog.apply(&envelopes).unwrap();
        let entries = catalog.store().entries().unwrap();
        let mut expected: Vec<(Vec<u8>, Vec<u8>)> = entries
            .iter()
            .filter(|(key, _)| key[0] == b'i')
            .flat_map(|(_, value)| {
                let image: Image = ims_log::decode(value, || "image".into()).unwrap();
                ims_projection::catalog::all_index_entries(&image)
            })
            .collect();
        expected.sort();
        let indexed: Vec<(Vec<u8>, Vec<u8>)> = entries
            .into_iter()
            .filter(|(key, _)| matches!(key[0], b'v' | b'g' | b'm' | b'b' | b'l' | b'L' | b'O' | b'N'))
            .collect();
        prop_assert_eq!(indexed, expected);
    }

    #[test]
    fn pagination_returns_every_visible_image_exactly_once_and_the_domain_agrees(commands in any_commands(), limit in 1usize..5) {
        let envelopes = run_commands(&commands);
        let mut catalog = ReadModel::in_memory(Catalog);
        let usage = ReadModel::in_memory(UsageLedger);
        catalog.apply(&envelopes).unwrap();
        let region = RegionId::parse("test-1").unwrap();
        let models = Models { region: &region, catalog: catalog.store(), usage: usage.store(), position: catalog.checkpoint(), members_limit: 3, reply_bytes_max: usize::MAX };
        let mut domain_state = State::default();
        for envelope in &envelopes {
            evolve(&mut domain_state, &ims_log::decode_event(envelope).unwrap());
        }
        for t in 0..TENANTS.len() {
            let all = answer(&models, &tenant(t), ims_wire::Query::VisibleImages, &QueryParams { limit: Some(1000), include_deprecated: Some(true), ..Default::default() }).unwrap().to_value();
            let expected: Vec<String> = all["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_owned()).collect();
            let mut paged = Vec::new();
            let mut marker = None;
            loop {
                let page = answer(&models, &tenant(t), ims_wire::Query::VisibleImages, &QueryParams { limit: Some(limit), marker: marker.clone(), include_deprecated: Some(true), ..Default::default() }).unwrap().to_value();
                paged.extend(page["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_owned()));
                match page["next_marker"].as_str() {
                    Some(next) => marker = Some(next.to_owned()),
                    None => break,
                }
            }
            prop_assert_eq!(&paged, &expected);
            let unique: std::collections::BTreeSet<&String> = paged.iter().collect();
            prop_assert_eq!(unique.len(), paged.len());
            // And the whole list is what the domain says the tenant sees, worked out from the
            // domain's own state rather than from the read model: its own images, accepted
            // shares and its organization's, public and Marketplace images, none deleted or in
            // a recycle bin.
            let viewer = Viewer::of(&domain_state.tenants[&tenant(t)]);
            let sees: std::collections::BTreeSet<String> = domain_state
                .images
                .values()
                .filter(|i| !matches!(i.status, ImageStatus::Deleted | ImageStatus::Recycled))
                .filter(|i| {
                    i.is_owned_by(&tenant(t))
                        || i.members.get(&tenant(t)) == Some(&MemberStatus::Accepted)
                        || matches!(i.class, ImageClass::Public | ImageClass::Marketplace)
                        || viewer.organization.is_some_and(|o| i.organizations.contains(o))
                })
                .map(|i| i.id.to_string())
                .collect();
            prop_assert_eq!(unique.into_iter().cloned().collect::<std::collections::BTreeSet<_>>(), sees);
            // `latest` of the family is the newest such image that is active, neither deprecated
            // nor excluded, as the domain's state says.
            let newest = domain_state
                .images
                .values()
                .filter(|i| i.family.as_deref() == Some("web") && i.status == ImageStatus::Active)
                .filter(|i| !i.is_deprecated() && !i.exclude_from_latest)
                .filter(|i| access(i, Viewer::of(&domain_state.tenants[&tenant(t)])).is_some())
                .map(|i| i.id.to_string())
                .max();
            let latest = answer(&models, &tenant(t), ims_wire::Query::Latest, &QueryParams { family: Some("web".into()), ..Default::default() })
                .ok()
                .map(|a| a.to_value()["id"].as_str().unwrap().to_owned());
            prop_assert_eq!(latest, newest);
        }
    }
}

#[test]
fn a_gap_stops_the_batch_at_the_first_missing_position() {
    let envelopes = run_commands(&[(0, 0, 0, 1), (2, 0, 0, 0), (4, 0, 0, 1)]);
    assert!(envelopes.len() >= 6);
    let mut catalog = ReadModel::in_memory(Catalog);
    let mut with_gap = envelopes[..2].to_vec();
    with_gap.extend_from_slice(&envelopes[3..]);
    let applied = catalog.apply(&with_gap).unwrap();
    assert_eq!(applied.gap_at, Some(3));
    assert_eq!(catalog.checkpoint(), 2);
    catalog.apply(&envelopes[2..]).unwrap();
    assert_eq!(catalog.checkpoint(), envelopes.len() as u64);
}
