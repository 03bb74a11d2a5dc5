//! Property tests: random command sequences from random actors never break the invariants of the
//! sharing rules, whatever `decide` accepts or refuses.

mod support;

use ims_domain::*;
use proptest::prelude::*;
use support::*;

const TENANTS: [&str; 5] = ["t0", "t1", "t2", "t3", "t4"];

fn any_tenant() -> impl Strategy<Value = String> {
    prop::sample::select(TENANTS.to_vec()).prop_map(str::to_owned)
}

fn any_image() -> impl Strategy<Value = ImageId> {
    (1u128..8).prop_map(image_id)
}

fn tenant_actor() -> impl Strategy<Value = Actor> {
    any_tenant().prop_map(|t| Actor::Tenant(tenant(&t)))
}

fn any_command() -> impl Strategy<Value = (Actor, Command)> {
    prop_oneof![
        any_tenant().prop_map(|t| register(&t)),
        (any_tenant(), 0u32..4).prop_map(|(t, q)| op(OperatorCommand::SetQuota {
            tenant: tenant(&t),
            quota: q
        })),
        (any_tenant(), any::<bool>(), any::<bool>(), 0u8..3).prop_map(
            |(t, encrypted, protected, disk)| {
                by(
                    &t,
                    with_create(system_image("img"), |c| {
                        c.encryption = encrypted.then(|| Encryption {
                            kms_key_id: "k".into(),
                        });
                        c.protected = protected;
                        c.disk =
                            [DiskKind::System, DiskKind::Data, DiskKind::FullEcs][disk as usize];
                        if c.disk == DiskKind::Data {
                            c.os = None;
                        }
                    }),
                )
            }
        ),
        any_image().prop_map(|i| op(succeeded(i))),
        any_image().prop_map(|i| op(OperatorCommand::PublishPublicImage(Box::new(
            PublishPublicImage {
                name: format!("pub-{}", i.as_bytes()[15]),
                disk: DiskKind::System,
                os: os(),
                min_disk_gb: 1,
                size_bytes: 1,
                checksum_sha256: "c".repeat(64),
                tags: Default::default(),
                description: String::new(),
                family: None,
            }
        )))),
        (
            tenant_actor(),
            any_image(),
            prop::collection::vec(any_tenant(), 0..4)
        )
            .prop_map(|(a, i, ts)| {
                (
                    a,
                    TenantCommand::ShareImage {
                        image_id: i,
                        tenants: ts.iter().map(|t| tenant(t)).collect(),
                        organizations: Vec::new(),
                    }
                    .into(),
                )
            }),
        (
            tenant_actor(),
            any_image(),
            prop::option::of(prop::collection::vec(any_tenant(), 1..3))
        )
            .prop_map(|(a, i, ts)| {
                (
                    a,
                    TenantCommand::UnshareImage {
                        image_id: i,
                        tenants: ts.map(|ts| ts.iter().map(|t| tenant(t)).collect()),
                        organizations: Vec::new(),
                    }
                    .into(),
                )
            }),
        (tenant_actor(), any_image())
            .prop_map(|(a, i)| (a, TenantCommand::AcceptShare { image_id: i }.into())),
        (tenant_actor(), any_image())
            .prop_map(|(a, i)| (a, TenantCommand::RejectShare { image_id: i }.into())),
        (tenant_actor(), any_image())
            .prop_map(|(a, i)| (a, TenantCommand::DeleteImage { image_id: i }.into())),
        any_image().prop_map(|i| op(TenantCommand::DeleteImage { image_id: i })),
        (tenant_actor(), any_image()).prop_map(|(a, i)| (
            a,
            TenantCommand::ListOnMarketplace {
                image_id: i,
                publisher: "p".into(),
                price: Price::Free
            }
            .into()
        )),
        (tenant_actor(), any_image()).prop_map(|(a, i)| (
            a,
            TenantCommand::DelistFromMarketplace { image_id: i }.into()
        )),
        (tenant_actor(), any_image()).prop_map(|(a, i)| (
            a,
            TenantCommand::UpdateImage(Box::new(UpdateImage {
                image_id: i,
                name: None,
                description: None,
                tags: None,
                min_disk_gb: None,
                protected: Some(false),
                family: None,
                exclude_from_latest: None,
            }))
            .into()
        )),
    ]
}

fn check_invariants(state: &State, policy: &SharingPolicy) -> Result<(), TestCaseError> {
    for image in state.images.values() {
        prop_assert!(image.members.len() <= policy.members_per_image_max);
        if !image.members.is_empty() {
            prop_assert_ne!(image.status, ImageStatus::Deleted);
            prop_assert!(image.encryption.is_none());
            prop_assert_ne!(image.disk, DiskKind::FullEcs);
            prop_assert_eq!(image.class, ImageClass::Private);
        }
        if let Some(owner) = image.owner.tenant() {
            prop_assert!(
                !image.members.contains_key(owner),
                "an owner is never its own member"
            );
        }
    }
    for tenant in state.tenants.values() {
        let owned = state
            .images
            .values()
            .filter(|i| {
                i.is_owned_by(&tenant.id)
                    && i.status != ImageStatus::Deleted
                    && i.class != ImageClass::Public
            })
            .count() as u32;
        prop_assert_eq!(
            owned,
            tenant.owned_private_images,
            "the quota counter matches the images"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_command_sequences_never_break_the_invariants(commands in prop::collection::vec(any_command(), 1..80)) {
        let mut scenario = Scenario::new();
        scenario.policy.members_per_image_max = 3;
        for command in commands {
            let before = scenario.state.clone();
            let quotas: Vec<(TenantId, u32, u32)> = before.tenants.values().map(|t| (t.id.clone(), t.quota, t.owned_private_images)).collect();
            let created = matches!(command.1, Command::Tenant(TenantCommand::CreateImage(_)));
            let actor = command.0.clone();
            match scenario.run(command) {
                Ok(events) => {
                    // Versions increase by exactly one per event on each stream.
                    for (id, image) in &scenario.state.images {
                        let before_version = before.images.get(id).map_or(0, |i| i.version);
                        let on_stream = events.iter().filter(|e| e.stream() == StreamId::Image(*id)).count() as u64;
                        prop_assert_eq!(image.version, before_version + on_stream);
                    }
                    // A creation never takes a tenant past its quota.
                    if created {
                        if let Actor::Tenant(t) = actor {
                            let (_, quota, owned_before) = quotas.iter().find(|(id, _, _)| *id == t).cloned().unwrap();
                            prop_assert!(owned_before < quota);
                            prop_assert!(scenario.state.tenants[&t].owned_private_images <= quota);
                        }
                    }
                }
                Err(_) => prop_assert_eq!(&before, &scenario.state),
            }
            check_invariants(&scenario.state, &scenario.policy)?;
        }
    }
}
