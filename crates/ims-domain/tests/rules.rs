//! One test per rule of DESIGN.md section 2 and per error code, as given-when-then sentences.

mod support;

use ims_domain::*;
use support::*;

const IMAGE: u128 = 1;

fn share(tenants: &[&str]) -> TenantCommand {
    TenantCommand::ShareImage {
        image_id: image_id(IMAGE),
        tenants: tenants.iter().map(|t| tenant(t)).collect(),
        organizations: Vec::new(),
    }
}

// Rule 1: only the owner changes its image.

#[test]
fn another_tenant_cannot_update_delete_share_copy_or_list_an_image() {
    let attempts = [
        TenantCommand::UpdateImage(Box::new(UpdateImage {
            image_id: image_id(IMAGE),
            name: Some("x".into()),
            description: None,
            tags: None,
            min_disk_gb: None,
            protected: None,
            family: None,
            exclude_from_latest: None,
        })),
        TenantCommand::DeleteImage {
            image_id: image_id(IMAGE),
        },
        share(&["t3"]),
        TenantCommand::UnshareImage {
            image_id: image_id(IMAGE),
            tenants: None,
            organizations: Vec::new(),
        },
        TenantCommand::CopyImage {
            image_id: image_id(IMAGE),
            target_region: RegionId::parse("us-east-1").unwrap(),
            name: None,
        },
        TenantCommand::ListOnMarketplace {
            image_id: image_id(IMAGE),
            publisher: "x".into(),
            price: Price::Free,
        },
    ];
    for attempt in attempts {
        owner_with_active_image()
            .when(by("t2", attempt))
            .then_refused(ErrorCode::Forbidden, "tenant t2");
    }
}

#[test]
fn a_tenant_cannot_send_operator_commands() {
    owner_with_active_image()
        .when(by(
            "t1",
            OperatorCommand::SetQuota {
                tenant: tenant("t1"),
                quota: 500,
            },
        ))
        .then_refused(ErrorCode::Forbidden, "set-quota");
}

#[test]
fn the_operator_cannot_delete_a_tenants_private_image() {
    owner_with_active_image()
        .when(op(TenantCommand::DeleteImage {
            image_id: image_id(IMAGE),
        }))
        .then_refused(ErrorCode::Forbidden, "operator");
}

// Rule 2: sharing.

#[test]
fn sharing_an_active_private_image_makes_the_targets_pending_members() {
    let (events, state) = owner_with_active_image()
        .when(by("t1", share(&["t2", "t3"])))
        .then_ok();
    assert_eq!(events.len(), 1);
    let members = &state.images[&image_id(IMAGE)].members;
    assert_eq!(members.get(&tenant("t2")), Some(&MemberStatus::Pending));
    assert_eq!(members.get(&tenant("t3")), Some(&MemberStatus::Pending));
}

#[test]
fn nobody_can_share_a_public_image_a_tenant_does_not_own_it_and_the_operator_does_not_share() {
    let scenario = || {
        owner_with_active_image().given([op(OperatorCommand::PublishPublicImage(Box::new(
            PublishPublicImage {
                name: "ubuntu-22.04".into(),
                disk: DiskKind::System,
                os: os(),
                min_disk_gb: 10,
                size_bytes: 1,
                checksum_sha256: "b".repeat(64),
                tags: Default::default(),
                description: String::new(),
                family: None,
            },
        )))])
    };
    let share_public = || TenantCommand::ShareImage {
        image_id: image_id(2),
        tenants: vec![tenant("t2")],
        organizations: Vec::new(),
    };
    scenario()
        .when(by("t1", share_public()))
        .then_refused(ErrorCode::Forbidden, "tenant t1");
    scenario()
        .when(op(share_public()))
        .then_refused(ErrorCode::Forbidden, "share-image");
}

#[test]
fn sharing_a_marketplace_image_is_refused_as_not_shareable() {
    owner_with_active_image()
        .given([by(
            "t1",
            TenantCommand::ListOnMarketplace {
                image_id: image_id(IMAGE),
                publisher: "Acme".into(),
                price: Price::Free,
            },
        )])
        .when(by("t1", share(&["t2"])))
        .then_refused(ErrorCode::NotShareable, "Marketplace");
}

#[test]
fn sharing_an_image_that_is_not_active_is_refused() {
    Scenario::new()
        .given([
            register("t1"),
            register("t2"),
            by("t1", system_image("web")),
        ])
        .when(by("t1", share(&["t2"])))
        .then_refused(ErrorCode::InvalidState, "queued");
}

#[test]
fn sharing_an_encrypted_image_is_refused() {
    Scenario::new()
        .given([
            register("t1"),
            register("t2"),
            by(
                "t1",
                with_create(system_image("web"), |c| {
                    c.encryption = Some(Encryption {
                        kms_key_id: "kms-7".into(),
                    })
                }),
            ),
            op(succeeded(image_id(IMAGE))),
        ])
        .when(by("t1", share(&["t2"])))
        .then_refused(ErrorCode::EncryptedNotShareable, "kms-7");
}

#[test]
fn sharing_a_full_ecs_image_is_refused() {
    Scenario::new()
        .given([
            register("t1"),
            register("t2"),
            by(
                "t1",
                with_create(system_image("web"), |c| c.disk = DiskKind::FullEcs),
            ),
            op(succeeded(image_id(IMAGE))),
        ])
        .when(by("t1", share(&["t2"])))
        .then_refused(ErrorCode::FullEcsNotShareable, "full-ECS");
}

#[test]
fn sharing_with_a_tenant_not_registered_in_the_region_is_refused_naming_it() {
    let error = owner_with_active_image()
        .when(by("t1", share(&["t2", "ghost", "nobody"])))
        .then_refused(ErrorCode::UnknownTenant, "ghost, nobody");
    assert!(error.message.contains("within a region only"));
}

#[test]
fn sharing_with_the_owner_itself_is_refused() {
    owner_with_active_image()
        .when(by("t1", share(&["t1"])))
        .then_refused(ErrorCode::InvalidArgument, "t1");
}

#[test]
fn sharing_with_nobody_is_refused() {
    owner_with_active_image()
        .when(by("t1", share(&[])))
        .then_refused(ErrorCode::InvalidArgument, "tenants");
}

#[test]
fn the_129th_member_is_refused_and_the_128th_accepted() {
    let mut scenario = owner_with_active_image();
    let names: Vec<String> = (0..129).map(|i| format!("m{i}")).collect();
    for name in &names {
        scenario = scenario.given([register(name)]);
    }
    let first: Vec<&str> = names[..128].iter().map(String::as_str).collect();
    let scenario = scenario.given([by("t1", share(&first))]);
    assert_eq!(scenario.image(image_id(IMAGE)).members.len(), 128);
    scenario
        .when(by("t1", share(&["m128"])))
        .then_refused(ErrorCode::ShareLimitExceeded, "at most 128");
}

#[test]
fn rejected_members_count_towards_the_share_limit() {
    let mut scenario = owner_with_active_image();
    scenario.policy.members_per_image_max = 2;
    scenario
        .given([
            by("t1", share(&["t2"])),
            by(
                "t2",
                TenantCommand::RejectShare {
                    image_id: image_id(IMAGE),
                },
            ),
        ])
        .given([register("t4")])
        .given([by("t1", share(&["t3"]))])
        .when(by("t1", share(&["t4"])))
        .then_refused(ErrorCode::ShareLimitExceeded, "at most 2");
}

#[test]
fn sharing_again_with_existing_members_records_nothing_new() {
    let (events, _) = owner_with_active_image()
        .given([by("t1", share(&["t2"]))])
        .when(by("t1", share(&["t2", "t3"])))
        .then_ok();
    assert_eq!(
        events,
        vec![Event::ImageShared {
            image_id: image_id(IMAGE),
            tenants: vec![tenant("t3")],
            at_ms: match &events[0] {
                Event::ImageShared { at_ms, .. } => *at_ms,
                _ => 0,
            }
        }]
    );
    let (events, _) = owner_with_active_image()
        .given([by("t1", share(&["t2"]))])
        .when(by("t1", share(&["t2"])))
        .then_ok();
    assert!(events.is_empty());
}

// Rule 3: members accept or reject.

#[test]
fn a_member_accepts_a_pending_share_and_then_can_use_the_image() {
    let (_, state) = owner_with_active_image()
        .given([by("t1", share(&["t2"]))])
        .when(by(
            "t2",
            TenantCommand::AcceptShare {
                image_id: image_id(IMAGE),
            },
        ))
        .then_ok();
    let image = &state.images[&image_id(IMAGE)];
    assert_eq!(image.members[&tenant("t2")], MemberStatus::Accepted);
    assert_eq!(
        access(image, Viewer::alone(&tenant("t2"))),
        Some(Access::SharedAccepted)
    );
}

#[test]
fn a_member_can_accept_after_rejecting_and_reject_after_accepting() {
    let scenario = owner_with_active_image().given([
        by("t1", share(&["t2"])),
        by(
            "t2",
            TenantCommand::RejectShare {
                image_id: image_id(IMAGE),
            },
        ),
        by(
            "t2",
            TenantCommand::AcceptShare {
                image_id: image_id(IMAGE),
            },
        ),
    ]);
    assert_eq!(
        scenario.image(image_id(IMAGE)).members[&tenant("t2")],
        MemberStatus::Accepted
    );
    let (_, state) = scenario
        .when(by(
            "t2",
            TenantCommand::RejectShare {
                image_id: image_id(IMAGE),
            },
        ))
        .then_ok();
    assert_eq!(
        state.images[&image_id(IMAGE)].members[&tenant("t2")],
        MemberStatus::Rejected
    );
}

#[test]
fn a_tenant_that_is_not_a_member_cannot_accept_or_reject() {
    owner_with_active_image()
        .when(by(
            "t3",
            TenantCommand::AcceptShare {
                image_id: image_id(IMAGE),
            },
        ))
        .then_refused(ErrorCode::NotAMember, "t3");
    owner_with_active_image()
        .when(by(
            "t3",
            TenantCommand::RejectShare {
                image_id: image_id(IMAGE),
            },
        ))
        .then_refused(ErrorCode::NotAMember, "t3");
}

#[test]
fn a_pending_or_rejected_share_does_not_make_the_image_visible() {
    let scenario = owner_with_active_image().given([by("t1", share(&["t2"]))]);
    assert_eq!(
        access(
            scenario.image(image_id(IMAGE)),
            Viewer::alone(&tenant("t2"))
        ),
        None
    );
    let scenario = scenario.given([by(
        "t2",
        TenantCommand::RejectShare {
            image_id: image_id(IMAGE),
        },
    )]);
    assert_eq!(
        access(
            scenario.image(image_id(IMAGE)),
            Viewer::alone(&tenant("t2"))
        ),
        None
    );
}

// Rule 4: the owner stops sharing or deletes at any time.

#[test]
fn the_owner_stops_sharing_with_some_tenants_or_all() {
    let scenario = owner_with_active_image().given([
        by("t1", share(&["t2", "t3"])),
        by(
            "t2",
            TenantCommand::AcceptShare {
                image_id: image_id(IMAGE),
            },
        ),
    ]);
    let (_, state) = scenario
        .when(by(
            "t1",
            TenantCommand::UnshareImage {
                image_id: image_id(IMAGE),
                tenants: Some(vec![tenant("t2")]),
                organizations: Vec::new(),
            },
        ))
        .then_ok();
    let image = &state.images[&image_id(IMAGE)];
    assert!(!image.members.contains_key(&tenant("t2")));
    assert!(image.members.contains_key(&tenant("t3")));
    let (_, state) = owner_with_active_image()
        .given([by("t1", share(&["t2", "t3"]))])
        .when(by(
            "t1",
            TenantCommand::UnshareImage {
                image_id: image_id(IMAGE),
                tenants: None,
                organizations: Vec::new(),
            },
        ))
        .then_ok();
    assert!(state.images[&image_id(IMAGE)].members.is_empty());
}

#[test]
fn purging_a_shared_image_from_the_recycle_bin_ends_every_share_and_frees_quota() {
    let scenario = owner_with_active_image().given([
        by("t1", share(&["t2"])),
        by(
            "t2",
            TenantCommand::AcceptShare {
                image_id: image_id(IMAGE),
            },
        ),
        // The first delete recycles; the second, in the bin, purges.
        by(
            "t1",
            TenantCommand::DeleteImage {
                image_id: image_id(IMAGE),
            },
        ),
    ]);
    assert_eq!(
        scenario.state.tenants[&tenant("t1")].owned_private_images,
        1
    );
    let (_, state) = scenario
        .when(by(
            "t1",
            TenantCommand::DeleteImage {
                image_id: image_id(IMAGE),
            },
        ))
        .then_ok();
    let image = &state.images[&image_id(IMAGE)];
    assert_eq!(image.status, ImageStatus::Deleted);
    assert!(image.members.is_empty());
    assert_eq!(access(image, Viewer::alone(&tenant("t2"))), None);
    assert_eq!(state.tenants[&tenant("t1")].owned_private_images, 0);
}

#[test]
fn a_deleted_image_cannot_be_changed_any_more() {
    owner_with_active_image()
        .given([purge(image_id(IMAGE)), purge(image_id(IMAGE))])
        .when(by("t1", share(&["t2"])))
        .then_refused(ErrorCode::NotFound, "deleted");
}

// Rule 5: protection.

#[test]
fn a_protected_image_cannot_be_deleted() {
    Scenario::new()
        .given([
            register("t1"),
            by(
                "t1",
                with_create(system_image("web"), |c| c.protected = true),
            ),
        ])
        .when(by(
            "t1",
            TenantCommand::DeleteImage {
                image_id: image_id(IMAGE),
            },
        ))
        .then_refused(ErrorCode::Protected, "protected=false");
}

// Rule 6: quota.

#[test]
fn a_tenant_cannot_own_more_private_images_than_its_quota() {
    Scenario::new()
        .given([
            op(OperatorCommand::RegisterTenant {
                tenant: tenant("t1"),
                quota: Some(2),
                organization: None,
            }),
            by("t1", system_image("a")),
            by("t1", system_image("b")),
        ])
        .when(by("t1", system_image("c")))
        .then_refused(ErrorCode::QuotaExceeded, "quota is 2");
}

#[test]
fn the_default_quota_is_100_and_the_operator_can_raise_it() {
    let scenario = Scenario::new().given([register("t1")]);
    assert_eq!(scenario.state.tenants[&tenant("t1")].quota, 100);
    let (_, state) = scenario
        .when(op(OperatorCommand::SetQuota {
            tenant: tenant("t1"),
            quota: 300,
        }))
        .then_ok();
    assert_eq!(state.tenants[&tenant("t1")].quota, 300);
}

#[test]
fn an_unregistered_tenant_cannot_create_images() {
    Scenario::new()
        .when(by("t9", system_image("a")))
        .then_refused(ErrorCode::UnknownTenant, "t9");
}

#[test]
fn registering_a_tenant_twice_is_refused() {
    Scenario::new()
        .given([register("t1")])
        .when(register("t1"))
        .then_refused(ErrorCode::InvalidState, "set-quota");
}

// Rule 7: public images.

fn publish() -> (Actor, Command) {
    op(publish_public("ubuntu-22.04"))
}

#[test]
fn a_published_public_image_is_active_at_once_and_visible_to_every_tenant() {
    let (_, state) = Scenario::new()
        .given([register("t1")])
        .when(publish())
        .then_ok();
    let image = &state.images[&image_id(IMAGE)];
    assert_eq!(image.status, ImageStatus::Active);
    assert_eq!(image.owner, Owner::Platform);
    assert_eq!(
        access(image, Viewer::alone(&tenant("t1"))),
        Some(Access::Public)
    );
    assert_eq!(
        access(image, Viewer::alone(&tenant("anyone"))),
        Some(Access::Public)
    );
}

#[test]
fn the_operator_deprecates_and_deletes_public_images_but_not_private_ones() {
    let scenario = owner_with_active_image().given([publish()]);
    let (_, state) = scenario
        .when(op(deprecate(image_id(2), DeprecationState::Deprecated)))
        .then_ok();
    assert!(state.images[&image_id(2)].is_deprecated());
    owner_with_active_image()
        .when(op(deprecate(image_id(IMAGE), DeprecationState::Deprecated)))
        .then_refused(ErrorCode::Forbidden, "operator does not own");
    let (_, state) = owner_with_active_image()
        .given([publish()])
        .when(op(TenantCommand::DeleteImage {
            image_id: image_id(2),
        }))
        .then_ok();
    assert_eq!(state.images[&image_id(2)].status, ImageStatus::Deleted);
}

#[test]
fn a_deprecated_public_image_is_still_usable() {
    let scenario = owner_with_active_image().given([
        publish(),
        op(deprecate(image_id(2), DeprecationState::Deprecated)),
    ]);
    let answer = usable(
        &region(),
        Viewer::alone(&tenant("t2")),
        image_id(2),
        Some(scenario.image(image_id(2))),
        Purpose::CreateEcs,
    );
    assert!(answer.allowed, "{}", answer.reason);
}

// Rule 8: Marketplace.

fn paid() -> Price {
    Price::PerHour {
        amount_minor: 120,
        currency: Currency(*b"USD"),
    }
}

#[test]
fn a_listed_image_is_visible_to_every_tenant_until_delisted() {
    let scenario = owner_with_active_image().given([by(
        "t1",
        TenantCommand::ListOnMarketplace {
            image_id: image_id(IMAGE),
            publisher: "Acme".into(),
            price: paid(),
        },
    )]);
    assert_eq!(
        access(
            scenario.image(image_id(IMAGE)),
            Viewer::alone(&tenant("t3"))
        ),
        Some(Access::Marketplace)
    );
    let (_, state) = scenario
        .when(by(
            "t1",
            TenantCommand::DelistFromMarketplace {
                image_id: image_id(IMAGE),
            },
        ))
        .then_ok();
    assert_eq!(
        access(
            &state.images[&image_id(IMAGE)],
            Viewer::alone(&tenant("t3"))
        ),
        None
    );
}

#[test]
fn an_encrypted_or_shared_or_inactive_image_cannot_be_listed() {
    let list = || {
        by(
            "t1",
            TenantCommand::ListOnMarketplace {
                image_id: image_id(IMAGE),
                publisher: "Acme".into(),
                price: Price::Free,
            },
        )
    };
    Scenario::new()
        .given([
            register("t1"),
            by(
                "t1",
                with_create(system_image("web"), |c| {
                    c.encryption = Some(Encryption {
                        kms_key_id: "k".into(),
                    })
                }),
            ),
            op(succeeded(image_id(IMAGE))),
        ])
        .when(list())
        .then_refused(ErrorCode::EncryptedNotShareable, "encrypted");
    owner_with_active_image()
        .given([by("t1", share(&["t2"]))])
        .when(list())
        .then_refused(ErrorCode::InvalidState, "unshare-image");
    Scenario::new()
        .given([register("t1"), by("t1", system_image("web"))])
        .when(list())
        .then_refused(ErrorCode::InvalidState, "queued");
}

#[test]
fn a_bad_price_is_refused_naming_it() {
    owner_with_active_image()
        .when(by(
            "t1",
            TenantCommand::ListOnMarketplace {
                image_id: image_id(IMAGE),
                publisher: "Acme".into(),
                price: Price::PerHour {
                    amount_minor: 5,
                    currency: Currency(*b"usd"),
                },
            },
        ))
        .then_refused(ErrorCode::InvalidArgument, "usd");
}

#[test]
fn usage_of_a_paid_marketplace_image_is_charged_to_the_user() {
    let scenario = owner_with_active_image().given([by(
        "t1",
        TenantCommand::ListOnMarketplace {
            image_id: image_id(IMAGE),
            publisher: "Acme".into(),
            price: paid(),
        },
    )]);
    let (events, state) = scenario
        .when(op(OperatorCommand::RecordUsage {
            image_id: image_id(IMAGE),
            tenant: tenant("t2"),
            hours: 3,
        }))
        .then_ok();
    assert!(matches!(
        &events[0],
        Event::UsageRecorded {
            charge_minor: 360,
            ..
        }
    ));
    assert_eq!(state.tenants[&tenant("t2")].charges_minor["USD"], 360);
    let answer = usable(
        &region(),
        Viewer::alone(&tenant("t2")),
        image_id(IMAGE),
        Some(&state.images[&image_id(IMAGE)]),
        Purpose::CreateEcs,
    );
    assert!(answer.allowed);
    assert_eq!(answer.price, Some(paid()));
}

#[test]
fn usage_of_an_image_not_on_the_marketplace_is_refused() {
    owner_with_active_image()
        .when(op(OperatorCommand::RecordUsage {
            image_id: image_id(IMAGE),
            tenant: tenant("t2"),
            hours: 3,
        }))
        .then_refused(ErrorCode::InvalidState, "Marketplace");
}

// Rule 9: copy across regions.

#[test]
fn a_copy_is_requested_in_the_source_region_with_the_new_images_id() {
    let (events, state) = owner_with_active_image()
        .when(by(
            "t1",
            TenantCommand::CopyImage {
                image_id: image_id(IMAGE),
                target_region: RegionId::parse("us-east-1").unwrap(),
                name: None,
            },
        ))
        .then_ok();
    assert!(
        matches!(&events[0], Event::CopyRequested { copy_image_id, .. } if *copy_image_id == image_id(2))
    );
    assert_eq!(
        state.images[&image_id(IMAGE)].copies[0].status,
        CopyStatus::Requested
    );
}

#[test]
fn copying_an_encrypted_image_is_refused() {
    Scenario::new()
        .given([
            register("t1"),
            by(
                "t1",
                with_create(system_image("web"), |c| {
                    c.encryption = Some(Encryption {
                        kms_key_id: "kms-1".into(),
                    })
                }),
            ),
            op(succeeded(image_id(IMAGE))),
        ])
        .when(by(
            "t1",
            TenantCommand::CopyImage {
                image_id: image_id(IMAGE),
                target_region: RegionId::parse("us-east-1").unwrap(),
                name: None,
            },
        ))
        .then_refused(ErrorCode::EncryptedNotCopyable, "kms-1");
}

#[test]
fn copying_to_the_images_own_region_is_refused() {
    owner_with_active_image()
        .when(by(
            "t1",
            TenantCommand::CopyImage {
                image_id: image_id(IMAGE),
                target_region: region(),
                name: None,
            },
        ))
        .then_refused(ErrorCode::InvalidArgument, REGION);
}

fn receive(owner: &str) -> (Actor, Command) {
    op(OperatorCommand::ReceiveCopy(Box::new(ReceiveCopy {
        copy_image_id: image_id(77),
        owner: tenant(owner),
        source_region: RegionId::parse("us-east-1").unwrap(),
        source_image_id: image_id(5),
        name: "web".into(),
        disk: DiskKind::System,
        os: os(),
        min_disk_gb: 40,
        tags: Default::default(),
        description: String::new(),
    })))
}

#[test]
fn the_target_region_creates_the_copy_as_a_private_image_with_its_lineage() {
    let (_, state) = Scenario::new()
        .given([register("t1")])
        .when(receive("t1"))
        .then_ok();
    let copy = &state.images[&image_id(77)];
    assert_eq!(copy.owner, Owner::Tenant(tenant("t1")));
    assert_eq!(copy.class, ImageClass::Private);
    assert_eq!(copy.status, ImageStatus::Saving);
    assert_eq!(
        copy.source,
        Source::Copy {
            region: RegionId::parse("us-east-1").unwrap(),
            image_id: image_id(5)
        }
    );
    let answer = usable(
        &region(),
        Viewer::alone(&tenant("t1")),
        image_id(77),
        Some(copy),
        Purpose::CreateEcs,
    );
    assert!(!answer.allowed && answer.reason.contains("being copied"));
}

#[test]
fn a_copy_for_a_tenant_not_registered_in_the_target_region_is_refused() {
    Scenario::new()
        .when(receive("t1"))
        .then_refused(ErrorCode::UnknownTenant, "t1");
}

#[test]
fn the_source_records_how_its_copy_went_once() {
    let scenario = owner_with_active_image().given([by(
        "t1",
        TenantCommand::CopyImage {
            image_id: image_id(IMAGE),
            target_region: RegionId::parse("us-east-1").unwrap(),
            name: None,
        },
    )]);
    let outcome = OperatorCommand::RecordCopyOutcome {
        image_id: image_id(IMAGE),
        copy_image_id: image_id(2),
        outcome: CopyOutcome::Failed {
            reason: "unknown_tenant".into(),
        },
    };
    let (events, state) = scenario.when(op(outcome.clone())).then_ok();
    assert_eq!(events.len(), 1);
    assert!(matches!(
        state.images[&image_id(IMAGE)].copies[0].status,
        CopyStatus::Failed { .. }
    ));
    let mut again = Scenario::new();
    again.state = state;
    let (events, _) = again.when(op(outcome)).then_ok();
    assert!(events.is_empty(), "a redelivered outcome records nothing");
}

// Rule 10: usable.

#[test]
fn an_image_of_another_region_must_be_copied_first() {
    let answer = usable(
        &region(),
        Viewer::alone(&tenant("t1")),
        image_id(9),
        None,
        Purpose::CreateEcs,
    );
    assert!(!answer.allowed && answer.reason.contains("copy-image"));
}

#[test]
fn an_image_of_another_tenant_must_be_shared_and_accepted_first() {
    let scenario = owner_with_active_image();
    let answer = usable(
        &region(),
        Viewer::alone(&tenant("t2")),
        image_id(IMAGE),
        Some(scenario.image(image_id(IMAGE))),
        Purpose::CreateEcs,
    );
    assert!(!answer.allowed && answer.reason.contains("shared"));
    let scenario = scenario.given([by("t1", share(&["t2"]))]);
    let answer = usable(
        &region(),
        Viewer::alone(&tenant("t2")),
        image_id(IMAGE),
        Some(scenario.image(image_id(IMAGE))),
        Purpose::CreateEcs,
    );
    assert!(!answer.allowed && answer.reason.contains("accept-share"));
}

#[test]
fn a_file_image_must_finish_importing_first() {
    let scenario = Scenario::new().given([
        register("t1"),
        by(
            "t1",
            with_create(system_image("web"), |c| {
                c.source = CreateSource::File {
                    url: "obs://b/web.qcow2".into(),
                    format: FileFormat::Qcow2,
                }
            }),
        ),
    ]);
    let answer = usable(
        &region(),
        Viewer::alone(&tenant("t1")),
        image_id(IMAGE),
        Some(scenario.image(image_id(IMAGE))),
        Purpose::CreateEcs,
    );
    assert!(!answer.allowed && answer.reason.contains("imported"));
}

#[test]
fn a_data_disk_image_only_creates_evs_disks() {
    let scenario = Scenario::new().given([
        register("t1"),
        by(
            "t1",
            with_create(system_image("data"), |c| {
                c.disk = DiskKind::Data;
                c.os = None
            }),
        ),
        op(succeeded(image_id(IMAGE))),
    ]);
    let image = scenario.image(image_id(IMAGE));
    assert!(
        usable(
            &region(),
            Viewer::alone(&tenant("t1")),
            image_id(IMAGE),
            Some(image),
            Purpose::CreateEvs
        )
        .allowed
    );
    assert!(
        !usable(
            &region(),
            Viewer::alone(&tenant("t1")),
            image_id(IMAGE),
            Some(image),
            Purpose::CreateEcs
        )
        .allowed
    );
    assert!(
        !usable(
            &region(),
            Viewer::alone(&tenant("t1")),
            image_id(IMAGE),
            Some(image),
            Purpose::ChangeOs
        )
        .allowed
    );
}

#[test]
fn a_system_image_creates_and_reimages_ecss_but_not_evs_disks() {
    let scenario = owner_with_active_image();
    let image = scenario.image(image_id(IMAGE));
    assert!(
        usable(
            &region(),
            Viewer::alone(&tenant("t1")),
            image_id(IMAGE),
            Some(image),
            Purpose::CreateEcs
        )
        .allowed
    );
    assert!(
        usable(
            &region(),
            Viewer::alone(&tenant("t1")),
            image_id(IMAGE),
            Some(image),
            Purpose::ChangeOs
        )
        .allowed
    );
    assert!(
        !usable(
            &region(),
            Viewer::alone(&tenant("t1")),
            image_id(IMAGE),
            Some(image),
            Purpose::CreateEvs
        )
        .allowed
    );
}

// Validation and the remaining codes.

#[test]
fn a_bad_name_is_refused_naming_it_and_what_is_accepted() {
    for bad in ["", " lead", "trail ", "semi;colon", &"n".repeat(129)] {
        let error = Scenario::new()
            .given([register("t1")])
            .when(by("t1", system_image(bad)))
            .then_refused(ErrorCode::InvalidArgument, "expected 1 to 128");
        assert!(error.message.contains(&format!("{bad:?}")));
    }
}

#[test]
fn a_system_image_needs_an_os_and_a_data_image_has_none() {
    Scenario::new()
        .given([register("t1")])
        .when(by("t1", with_create(system_image("w"), |c| c.os = None)))
        .then_refused(ErrorCode::InvalidArgument, "os is missing");
    Scenario::new()
        .given([register("t1")])
        .when(by(
            "t1",
            with_create(system_image("w"), |c| c.disk = DiskKind::Data),
        ))
        .then_refused(ErrorCode::InvalidArgument, "no os");
}

#[test]
fn too_many_or_too_long_tags_and_a_bad_min_disk_are_refused() {
    let many = (0..11)
        .map(|i| (format!("k{i}"), "v".to_string()))
        .collect();
    Scenario::new()
        .given([register("t1")])
        .when(by("t1", with_create(system_image("w"), |c| c.tags = many)))
        .then_refused(ErrorCode::InvalidArgument, "at most 10 tags");
    let long = [("k".repeat(37), "v".to_string())].into_iter().collect();
    Scenario::new()
        .given([register("t1")])
        .when(by("t1", with_create(system_image("w"), |c| c.tags = long)))
        .then_refused(ErrorCode::InvalidArgument, "1 to 36");
    Scenario::new()
        .given([register("t1")])
        .when(by(
            "t1",
            with_create(system_image("w"), |c| c.min_disk_gb = 0),
        ))
        .then_refused(ErrorCode::InvalidArgument, "1 to 1024");
}

#[test]
fn a_stale_expected_version_is_a_conflict() {
    let mut scenario = owner_with_active_image();
    scenario.expected_version = Some(1);
    scenario
        .when(by("t1", share(&["t2"])))
        .then_refused(ErrorCode::Conflict, "version 2");
}

#[test]
fn an_unknown_image_is_not_found() {
    Scenario::new()
        .given([register("t1")])
        .when(by(
            "t1",
            TenantCommand::DeleteImage {
                image_id: image_id(42),
            },
        ))
        .then_refused(ErrorCode::NotFound, "does not exist");
}

#[test]
fn a_build_is_reported_only_for_a_queued_or_saving_image() {
    owner_with_active_image()
        .when(op(succeeded(image_id(IMAGE))))
        .then_refused(ErrorCode::InvalidState, "active");
    let (_, state) = Scenario::new()
        .given([
            register("t1"),
            by("t1", system_image("w")),
            op(OperatorCommand::ReportBuild {
                image_id: image_id(IMAGE),
                outcome: BuildOutcome::Started,
                checksum_sha256: None,
                file: None,
                reason: None,
            }),
        ])
        .when(op(OperatorCommand::ReportBuild {
            image_id: image_id(IMAGE),
            outcome: BuildOutcome::Failed,
            checksum_sha256: None,
            file: None,
            reason: None,
        }))
        .then_ok();
    assert_eq!(state.images[&image_id(IMAGE)].status, ImageStatus::Killed);
}

#[test]
fn every_error_code_has_a_distinct_wire_name() {
    let names: std::collections::BTreeSet<&str> =
        ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(names.len(), ErrorCode::ALL.len());
}

// Bounds (DESIGN.md section 11): every field has a named maximum, and money never wraps.

#[test]
fn an_instance_id_of_60_kb_is_refused_naming_the_field_and_its_limit_without_repeating_it() {
    let huge = "i".repeat(60_000);
    let error = Scenario::new()
        .given([register("t1")])
        .when(by(
            "t1",
            with_create(system_image("web"), |c| {
                c.source = CreateSource::Ecs {
                    instance_id: huge.clone(),
                    data_disk_ids: vec![],
                }
            }),
        ))
        .then_refused(ErrorCode::InvalidArgument, "source.ecs.instance_id");
    assert!(error
        .message
        .contains(&limits::INSTANCE_ID_CHARS_MAX.to_string()));
    assert!(error.message.len() < 300, "{}", error.message.len());
}

#[test]
fn every_open_field_of_create_image_has_a_maximum() {
    let long = |n: usize| "x".repeat(n + 1);
    type Change = Box<dyn Fn(&mut CreateImage)>;
    let cases: Vec<(Change, &str)> = vec![
        (
            Box::new(move |c: &mut CreateImage| {
                c.source = CreateSource::Ecs {
                    instance_id: "ecs-1".into(),
                    data_disk_ids: vec!["d".into(); limits::DATA_DISKS_MAX + 1],
                }
            }),
            "data_disk_ids",
        ),
        (
            Box::new(move |c: &mut CreateImage| {
                c.source = CreateSource::Ecs {
                    instance_id: "ecs-1".into(),
                    data_disk_ids: vec![long(limits::DATA_DISK_ID_CHARS_MAX)],
                }
            }),
            "data_disk_ids[]",
        ),
        (
            Box::new(move |c: &mut CreateImage| {
                c.disk = DiskKind::Data;
                c.os = None;
                c.source = CreateSource::File {
                    url: long(limits::URL_CHARS_MAX),
                    format: FileFormat::Qcow2,
                }
            }),
            "source.file.url",
        ),
        (
            Box::new(move |c: &mut CreateImage| {
                c.encryption = Some(Encryption {
                    kms_key_id: long(limits::KMS_KEY_ID_CHARS_MAX),
                })
            }),
            "encryption.kms_key_id",
        ),
        (
            Box::new(move |c: &mut CreateImage| {
                c.os.as_mut().unwrap().version = long(limits::OS_FIELD_CHARS_MAX)
            }),
            "os.version",
        ),
        (
            Box::new(move |c: &mut CreateImage| {
                c.source = CreateSource::Ecs {
                    instance_id: "ecs 1".into(),
                    data_disk_ids: vec![],
                }
            }),
            "printable ASCII",
        ),
    ];
    for (change, field) in cases {
        Scenario::new()
            .given([register("t1")])
            .when(by("t1", with_create(system_image("web"), change)))
            .then_refused(ErrorCode::InvalidArgument, field);
    }
}

#[test]
fn a_share_naming_more_tenants_than_an_image_may_have_members_is_refused() {
    let many: Vec<String> = (0..=limits::SHARE_TARGETS_MAX)
        .map(|i| format!("t{i}"))
        .collect();
    let names: Vec<&str> = many.iter().map(String::as_str).collect();
    owner_with_active_image()
        .when(by("t1", share(&names)))
        .then_refused(ErrorCode::InvalidArgument, "at most 128");
}

#[test]
fn a_price_above_the_maximum_is_refused() {
    owner_with_active_image()
        .when(by(
            "t1",
            TenantCommand::ListOnMarketplace {
                image_id: image_id(IMAGE),
                publisher: "Acme".into(),
                price: Price::PerHour {
                    amount_minor: u64::MAX,
                    currency: Currency(*b"USD"),
                },
            },
        ))
        .then_refused(ErrorCode::InvalidArgument, "1000000000");
}

#[test]
fn usage_hours_above_the_maximum_are_refused() {
    owner_with_active_image()
        .given([by(
            "t1",
            TenantCommand::ListOnMarketplace {
                image_id: image_id(IMAGE),
                publisher: "Acme".into(),
                price: paid(),
            },
        )])
        .when(op(OperatorCommand::RecordUsage {
            image_id: image_id(IMAGE),
            tenant: tenant("t2"),
            hours: limits::USAGE_HOURS_MAX + 1,
        }))
        .then_refused(ErrorCode::InvalidArgument, "8784");
}

#[test]
fn a_charge_that_would_overflow_the_tenants_total_is_refused_and_nothing_wraps() {
    let max_price = Price::PerHour {
        amount_minor: limits::PRICE_MINOR_PER_HOUR_MAX,
        currency: Currency(*b"USD"),
    };
    let mut scenario = owner_with_active_image().given([by(
        "t1",
        TenantCommand::ListOnMarketplace {
            image_id: image_id(IMAGE),
            publisher: "Acme".into(),
            price: max_price,
        },
    )]);
    // Bring t2's total within one charge of the limit, as a long history would.
    let charge = limits::PRICE_MINOR_PER_HOUR_MAX * u64::from(limits::USAGE_HOURS_MAX);
    scenario
        .state
        .tenants
        .get_mut(&tenant("t2"))
        .unwrap()
        .charges_minor
        .insert("USD".into(), u64::MAX - charge + 1);
    scenario
        .when(op(OperatorCommand::RecordUsage {
            image_id: image_id(IMAGE),
            tenant: tenant("t2"),
            hours: limits::USAGE_HOURS_MAX,
        }))
        .then_refused(ErrorCode::InvalidArgument, "total");
}

#[test]
fn a_copy_failure_reason_above_the_maximum_is_refused() {
    let mut scenario = owner_with_active_image().given([by(
        "t1",
        TenantCommand::CopyImage {
            image_id: image_id(IMAGE),
            target_region: RegionId::parse("us-east-1").unwrap(),
            name: None,
        },
    )]);
    let copy = image_id(2);
    assert!(scenario.state.images[&image_id(IMAGE)]
        .copies
        .iter()
        .any(|c| c.copy_image_id == copy));
    scenario.expected_version = None;
    scenario
        .when(op(OperatorCommand::RecordCopyOutcome {
            image_id: image_id(IMAGE),
            copy_image_id: copy,
            outcome: CopyOutcome::Failed {
                reason: "r".repeat(limits::FAILURE_REASON_CHARS_MAX + 1),
            },
        }))
        .then_refused(ErrorCode::InvalidArgument, "outcome.reason");
}

// Imports (DESIGN.md section 14): the worker's findings and its reasons.

#[test]
fn a_succeeded_import_records_the_files_sha512_format_and_virtual_size() {
    let scenario = Scenario::new().given([register("t1"), by("t1", system_image("web"))]);
    let (events, state) = scenario
        .when(op(OperatorCommand::ReportBuild {
            image_id: image_id(1),
            outcome: BuildOutcome::Succeeded { size_bytes: 4096 },
            checksum_sha256: Some("a".repeat(64)),
            file: Some(FileFacts {
                sha512: "B".repeat(128),
                detected_format: FileFormat::Qcow2,
                virtual_size: Some(1 << 30),
            }),
            reason: None,
        }))
        .then_ok();
    assert_eq!(events.len(), 2, "{events:?}");
    let image = &state.images[&image_id(1)];
    assert_eq!(image.status, ImageStatus::Active);
    let file = image.file.as_ref().unwrap();
    assert_eq!(
        (file.sha512.as_str(), file.virtual_size),
        ("b".repeat(128).as_str(), Some(1 << 30))
    );
}

#[test]
fn a_failed_import_records_the_reason_the_owner_sees() {
    let scenario = Scenario::new().given([register("t1"), by("t1", system_image("web"))]);
    let (events, state) = scenario
        .when(op(OperatorCommand::ReportBuild {
            image_id: image_id(1),
            outcome: BuildOutcome::Failed,
            checksum_sha256: None,
            file: None,
            reason: Some("the qcow2 image has a backing file".into()),
        }))
        .then_ok();
    assert!(
        matches!(events[0], Event::BuildFailedBecause { .. }),
        "{events:?}"
    );
    let image = &state.images[&image_id(1)];
    assert_eq!(image.status, ImageStatus::Killed);
    assert_eq!(
        image.failure_reason.as_deref(),
        Some("the qcow2 image has a backing file")
    );
}

#[test]
fn file_facts_with_a_malformed_sha512_or_without_success_are_refused() {
    let facts = |sha512: String| {
        Some(FileFacts {
            sha512,
            detected_format: FileFormat::Raw,
            virtual_size: None,
        })
    };
    let scenario = || Scenario::new().given([register("t1"), by("t1", system_image("web"))]);
    scenario()
        .when(op(OperatorCommand::ReportBuild {
            image_id: image_id(1),
            outcome: BuildOutcome::Succeeded { size_bytes: 1 },
            checksum_sha256: Some("a".repeat(64)),
            file: facts("xyz".into()),
            reason: None,
        }))
        .then_refused(ErrorCode::InvalidArgument, "128 hex digits");
    scenario()
        .when(op(OperatorCommand::ReportBuild {
            image_id: image_id(1),
            outcome: BuildOutcome::Failed,
            checksum_sha256: None,
            file: facts("a".repeat(128)),
            reason: None,
        }))
        .then_refused(ErrorCode::InvalidArgument, "succeeded build only");
}

// Lifecycle: the last launch of an image (DESIGN.md section 13).

#[test]
fn a_launch_by_the_owner_sets_last_launched_at_and_moves_the_version_not_the_update_time() {
    let scenario = owner_with_active_image();
    let before = scenario.image(image_id(IMAGE)).clone();
    let now = scenario.now_ms;
    let (events, state) = scenario
        .when(op(OperatorCommand::RecordLaunch {
            image_id: image_id(IMAGE),
            tenant: tenant("t1"),
        }))
        .then_ok();
    assert_eq!(
        events,
        vec![Event::ImageLaunched {
            image_id: image_id(IMAGE),
            tenant: tenant("t1"),
            at_ms: now
        }]
    );
    let after = &state.images[&image_id(IMAGE)];
    assert_eq!(after.last_launched_at, Some(now));
    assert_eq!(after.version, before.version + 1);
    assert_eq!(after.updated_at_ms, before.updated_at_ms);
}

#[test]
fn a_launch_by_a_tenant_with_an_accepted_share_counts_and_one_without_is_refused() {
    let scenario = owner_with_active_image().given([
        by(
            "t1",
            TenantCommand::ShareImage {
                image_id: image_id(IMAGE),
                tenants: vec![tenant("t2"), tenant("t3")],
                organizations: Vec::new(),
            },
        ),
        by(
            "t2",
            TenantCommand::AcceptShare {
                image_id: image_id(IMAGE),
            },
        ),
    ]);
    let (events, _) = scenario
        .when(op(OperatorCommand::RecordLaunch {
            image_id: image_id(IMAGE),
            tenant: tenant("t2"),
        }))
        .then_ok();
    assert_eq!(events.len(), 1);
    // t3 has not accepted: it cannot have launched from the image, and nothing is recorded.
    owner_with_active_image()
        .given([by(
            "t1",
            TenantCommand::ShareImage {
                image_id: image_id(IMAGE),
                tenants: vec![tenant("t3")],
                organizations: Vec::new(),
            },
        )])
        .when(op(OperatorCommand::RecordLaunch {
            image_id: image_id(IMAGE),
            tenant: tenant("t3"),
        }))
        .then_refused(ErrorCode::Forbidden, "accept");
}

#[test]
fn a_launch_of_an_unknown_deleted_or_unbuilt_image_or_by_an_unknown_tenant_is_refused() {
    owner_with_active_image()
        .when(op(OperatorCommand::RecordLaunch {
            image_id: image_id(99),
            tenant: tenant("t1"),
        }))
        .then_refused(ErrorCode::NotFound, "does not exist");
    owner_with_active_image()
        .given([purge(image_id(IMAGE)), purge(image_id(IMAGE))])
        .when(op(OperatorCommand::RecordLaunch {
            image_id: image_id(IMAGE),
            tenant: tenant("t1"),
        }))
        .then_refused(ErrorCode::NotFound, "deleted");
    Scenario::new()
        .given([register("t1"), by("t1", system_image("web"))])
        .when(op(OperatorCommand::RecordLaunch {
            image_id: image_id(IMAGE),
            tenant: tenant("t1"),
        }))
        .then_refused(ErrorCode::Forbidden, "queued");
    owner_with_active_image()
        .when(op(OperatorCommand::RecordLaunch {
            image_id: image_id(IMAGE),
            tenant: tenant("nobody"),
        }))
        .then_refused(ErrorCode::UnknownTenant, "nobody");
}

#[test]
fn launches_within_an_hour_of_the_last_recorded_one_record_nothing() {
    let mut scenario = owner_with_active_image().given([op(OperatorCommand::RecordLaunch {
        image_id: image_id(IMAGE),
        tenant: tenant("t1"),
    })]);
    let first = scenario.image(image_id(IMAGE)).last_launched_at.unwrap();
    scenario.now_ms = first + 60 * 60 * 1000 - 1;
    let (events, _) = scenario
        .when(op(OperatorCommand::RecordLaunch {
            image_id: image_id(IMAGE),
            tenant: tenant("t1"),
        }))
        .then_ok();
    assert!(events.is_empty(), "{events:?}");
    let mut scenario = owner_with_active_image().given([op(OperatorCommand::RecordLaunch {
        image_id: image_id(IMAGE),
        tenant: tenant("t1"),
    })]);
    scenario.now_ms = first + 60 * 60 * 1000;
    let (events, state) = scenario
        .when(op(OperatorCommand::RecordLaunch {
            image_id: image_id(IMAGE),
            tenant: tenant("t1"),
        }))
        .then_ok();
    assert_eq!(events.len(), 1);
    assert_eq!(
        state.images[&image_id(IMAGE)].last_launched_at,
        Some(first + 60 * 60 * 1000)
    );
}

#[test]
fn only_the_operator_records_launches() {
    owner_with_active_image()
        .when(by(
            "t1",
            OperatorCommand::RecordLaunch {
                image_id: image_id(IMAGE),
                tenant: tenant("t1"),
            },
        ))
        .then_refused(ErrorCode::Forbidden, "operator");
}
