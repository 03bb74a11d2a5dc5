//! Every limit at its edge: the largest accepted value passes and one past it is refused, and
//! each guard is shown to do work on both sides. Written against the mutants that survived
//! `cargo mutants -p ims-domain` (issue 13): `>` turned into `>=`, checks replaced by `Ok(())`,
//! the version guard replaced by `true`, `&&` turned into `||`, counters' `+=` turned into `*=`
//! or `-=`, and arms of `usable` deleted.

mod support;

use std::collections::BTreeMap;

use ims_domain::*;
use support::*;

const IMAGE: u128 = 1;

fn update(change: impl FnOnce(&mut UpdateImage)) -> TenantCommand {
    let mut update = UpdateImage {
        image_id: image_id(IMAGE),
        name: None,
        description: None,
        tags: None,
        min_disk_gb: None,
        protected: None,
        family: None,
        exclude_from_latest: None,
    };
    change(&mut update);
    TenantCommand::UpdateImage(Box::new(update))
}

/// `update` by the owner is accepted.
#[track_caller]
fn accepted(change: impl FnOnce(&mut UpdateImage)) {
    owner_with_active_image()
        .when(by("t1", update(change)))
        .then_ok();
}

/// `update` by the owner is refused as an invalid argument naming `mentions`.
#[track_caller]
fn refused(change: impl FnOnce(&mut UpdateImage), mentions: &str) {
    owner_with_active_image()
        .when(by("t1", update(change)))
        .then_refused(ErrorCode::InvalidArgument, mentions);
}

fn tags(count: usize, key_chars: usize, value_chars: usize) -> BTreeMap<String, String> {
    (0..count)
        .map(|n| {
            let key = format!("{n:0>width$}", width = key_chars);
            (key, "v".repeat(value_chars))
        })
        .collect()
}

#[test]
fn a_name_of_the_most_characters_is_accepted_and_one_more_is_refused() {
    let max = SharingPolicy::default().name_chars_max;
    accepted(|u| u.name = Some("n".repeat(max)));
    refused(|u| u.name = Some("n".repeat(max + 1)), "name");
}

#[test]
fn a_description_of_the_most_characters_is_accepted_and_one_more_is_refused() {
    let max = SharingPolicy::default().description_chars_max;
    accepted(|u| u.description = Some("d".repeat(max)));
    refused(
        |u| u.description = Some("d".repeat(max + 1)),
        &format!("at most {max}"),
    );
}

#[test]
fn tags_at_their_limits_are_accepted_and_one_past_any_limit_is_refused() {
    let policy = SharingPolicy::default();
    let (count, key, value) = (
        policy.tags_max,
        policy.tag_key_chars_max,
        policy.tag_value_chars_max,
    );
    accepted(|u| u.tags = Some(tags(count, key, value)));
    refused(|u| u.tags = Some(tags(count + 1, 4, 1)), "at most");
    refused(|u| u.tags = Some(tags(1, key + 1, 1)), "tag key");
    refused(|u| u.tags = Some(tags(1, 4, value + 1)), "longer than");
}

#[test]
fn min_disk_from_one_to_the_maximum_is_accepted_and_outside_is_refused() {
    let max = SharingPolicy::default().min_disk_gb_max;
    accepted(|u| u.min_disk_gb = Some(1));
    accepted(|u| u.min_disk_gb = Some(max));
    refused(|u| u.min_disk_gb = Some(0), "min_disk_gb 0");
    refused(|u| u.min_disk_gb = Some(max + 1), "out of range");
}

#[test]
fn an_update_of_any_single_field_is_a_change_and_one_of_none_is_refused() {
    accepted(|u| u.name = Some("renamed".into()));
    accepted(|u| u.description = Some("about".into()));
    accepted(|u| u.tags = Some(tags(1, 3, 3)));
    accepted(|u| u.min_disk_gb = Some(50));
    accepted(|u| u.protected = Some(true));
    refused(|_| {}, "changes nothing");
}

#[test]
fn the_expected_version_passes_when_it_is_the_images_version() {
    let mut scenario = owner_with_active_image();
    let version = scenario.image(image_id(IMAGE)).version;
    scenario.expected_version = Some(version);
    scenario
        .when(by("t1", update(|u| u.protected = Some(true))))
        .then_ok();
    let mut scenario = owner_with_active_image();
    scenario.expected_version = Some(version + 1);
    scenario
        .when(by("t1", update(|u| u.protected = Some(true))))
        .then_refused(ErrorCode::Conflict, "expected_version");
}

#[test]
fn a_quota_up_to_the_maximum_is_accepted_and_one_more_is_refused() {
    let max = SharingPolicy::default().quota_max;
    let (_, state) = owner_with_active_image()
        .when(op(OperatorCommand::SetQuota {
            tenant: tenant("t1"),
            quota: max,
        }))
        .then_ok();
    assert_eq!(state.tenants[&tenant("t1")].quota, max);
    owner_with_active_image()
        .when(op(OperatorCommand::SetQuota {
            tenant: tenant("t1"),
            quota: max + 1,
        }))
        .then_refused(ErrorCode::InvalidArgument, "too large");
    Scenario::new()
        .when(op(OperatorCommand::RegisterTenant {
            tenant: tenant("t9"),
            quota: Some(max + 1),
            organization: None,
        }))
        .then_refused(ErrorCode::InvalidArgument, "too large");
}

#[test]
fn a_build_report_needs_a_sha256_of_64_and_a_sha512_of_128_hex_digits() {
    let report = |checksum: String| {
        op(OperatorCommand::ReportBuild {
            image_id: image_id(1),
            outcome: BuildOutcome::Succeeded {
                size_bytes: 1 << 30,
            },
            checksum_sha256: Some(checksum),
            file: None,
            reason: None,
        })
    };
    let queued = || Scenario::new().given([register("t1"), by("t1", system_image("web"))]);
    queued().when(report("0f".repeat(32))).then_ok();
    let with_sha512 = |sha512: String| {
        op(OperatorCommand::ReportBuild {
            image_id: image_id(1),
            outcome: BuildOutcome::Succeeded {
                size_bytes: 1 << 30,
            },
            checksum_sha256: Some("0f".repeat(32)),
            file: Some(FileFacts {
                sha512,
                detected_format: FileFormat::Qcow2,
                virtual_size: None,
            }),
            reason: None,
        })
    };
    queued().when(with_sha512("ab".repeat(64))).then_ok();
    queued()
        .when(with_sha512("ab".repeat(63)))
        .then_refused(ErrorCode::InvalidArgument, "128 hex digits");
    queued()
        .when(with_sha512("zz".repeat(64)))
        .then_refused(ErrorCode::InvalidArgument, "128 hex digits");
    queued()
        .when(report("a".repeat(63)))
        .then_refused(ErrorCode::InvalidArgument, "64 hex digits");
    queued()
        .when(report("g".repeat(64)))
        .then_refused(ErrorCode::InvalidArgument, "64 hex digits");
}

#[test]
fn a_marketplace_price_from_one_minor_unit_to_the_maximum_is_accepted() {
    let list = |amount_minor: u64| {
        by(
            "t1",
            TenantCommand::ListOnMarketplace {
                image_id: image_id(IMAGE),
                publisher: "Acme".into(),
                price: Price::PerHour {
                    amount_minor,
                    currency: Currency(*b"USD"),
                },
            },
        )
    };
    owner_with_active_image().when(list(1)).then_ok();
    owner_with_active_image()
        .when(list(limits::PRICE_MINOR_PER_HOUR_MAX))
        .then_ok();
    owner_with_active_image()
        .when(list(0))
        .then_refused(ErrorCode::InvalidArgument, "amount_minor 0");
    owner_with_active_image()
        .when(list(limits::PRICE_MINOR_PER_HOUR_MAX + 1))
        .then_refused(ErrorCode::InvalidArgument, "out of range");
}

#[test]
fn versions_and_owned_counts_grow_by_exactly_one_per_event() {
    let scenario = Scenario::new().given([register("t1")]);
    let tenant_version = scenario.state.tenants[&tenant("t1")].version;
    let scenario = scenario.given([op(OperatorCommand::SetQuota {
        tenant: tenant("t1"),
        quota: 7,
    })]);
    assert_eq!(
        scenario.state.tenants[&tenant("t1")].version,
        tenant_version + 1
    );
    let scenario = scenario.given([
        by("t1", system_image("one")),
        by("t1", system_image("two")),
        by("t1", system_image("three")),
    ]);
    assert_eq!(
        scenario.state.tenants[&tenant("t1")].owned_private_images,
        3
    );
    let version = scenario.image(image_id(1)).version;
    let scenario = scenario.given([op(succeeded(image_id(1)))]);
    assert_eq!(scenario.image(image_id(1)).version, version + 1);
}

#[test]
fn usable_names_a_rejected_share_and_a_disk_kind_that_does_not_fit_the_purpose() {
    let scenario = owner_with_active_image().given([
        by(
            "t1",
            TenantCommand::ShareImage {
                image_id: image_id(IMAGE),
                tenants: vec![tenant("t2")],
                organizations: Vec::new(),
            },
        ),
        by(
            "t2",
            TenantCommand::RejectShare {
                image_id: image_id(IMAGE),
            },
        ),
    ]);
    let image = scenario.image(image_id(IMAGE));
    let answer = usable(
        &region(),
        Viewer::alone(&tenant("t2")),
        image_id(IMAGE),
        Some(image),
        Purpose::CreateEcs,
    );
    assert!(!answer.allowed);
    assert!(
        answer.reason.contains("rejected the share"),
        "{}",
        answer.reason
    );

    let answer = usable(
        &region(),
        Viewer::alone(&tenant("t1")),
        image_id(IMAGE),
        Some(image),
        Purpose::CreateEvs,
    );
    assert!(!answer.allowed);
    assert!(answer.reason.contains("not EVS disks"), "{}", answer.reason);

    let data = Scenario::new().given([
        register("t1"),
        by(
            "t1",
            with_create(system_image("data"), |c| {
                c.disk = DiskKind::Data;
                c.os = None;
            }),
        ),
        op(succeeded(image_id(1))),
    ]);
    let image = data.image(image_id(1));
    for (purpose, allowed) in [
        (Purpose::CreateEvs, true),
        (Purpose::CreateEcs, false),
        (Purpose::ChangeOs, false),
    ] {
        let answer = usable(
            &region(),
            Viewer::alone(&tenant("t1")),
            image_id(1),
            Some(image),
            purpose,
        );
        assert_eq!(answer.allowed, allowed, "{purpose:?}: {}", answer.reason);
        if !allowed {
            assert!(
                answer.reason.contains("data disk image"),
                "{}",
                answer.reason
            );
        }
    }
}

#[test]
fn an_ecs_image_takes_up_to_the_most_data_disks_and_not_one_more() {
    let with_disks = |count: usize| {
        by(
            "t1",
            with_create(system_image("full"), |c| {
                c.source = CreateSource::Ecs {
                    instance_id: "ecs-42".into(),
                    data_disk_ids: (0..count).map(|n| format!("disk-{n}")).collect(),
                };
            }),
        )
    };
    let registered = || Scenario::new().given([register("t1")]);
    registered()
        .when(with_disks(limits::DATA_DISKS_MAX))
        .then_ok();
    registered()
        .when(with_disks(limits::DATA_DISKS_MAX + 1))
        .then_refused(ErrorCode::InvalidArgument, "data_disk_ids names");
}

#[test]
fn a_file_or_upload_makes_system_and_data_images_but_never_a_full_ecs_image() {
    let sources = [
        CreateSource::Upload {
            format: FileFormat::Qcow2,
        },
        CreateSource::File {
            url: "file:///srv/images/a.qcow2".into(),
            format: FileFormat::Qcow2,
        },
    ];
    for source in sources {
        for (disk, os, allowed) in [
            (DiskKind::System, os(), true),
            (DiskKind::Data, None, true),
            (DiskKind::FullEcs, os(), false),
        ] {
            let create = by(
                "t1",
                with_create(system_image("from-file"), |c| {
                    c.source = source.clone();
                    c.disk = disk;
                    c.os = os;
                }),
            );
            let then = Scenario::new().given([register("t1")]).when(create);
            if allowed {
                then.then_ok();
            } else {
                then.then_refused(ErrorCode::InvalidArgument, "made from an ECS");
            }
        }
    }
}

#[test]
fn usage_counts_as_a_change_of_the_tenant() {
    let scenario = owner_with_active_image().given([by(
        "t1",
        TenantCommand::ListOnMarketplace {
            image_id: image_id(IMAGE),
            publisher: "Acme".into(),
            price: Price::PerHour {
                amount_minor: 5,
                currency: Currency(*b"EUR"),
            },
        },
    )]);
    let version = scenario.state.tenants[&tenant("t2")].version;
    let (_, state) = scenario
        .when(op(OperatorCommand::RecordUsage {
            image_id: image_id(IMAGE),
            tenant: tenant("t2"),
            hours: 2,
        }))
        .then_ok();
    assert_eq!(state.tenants[&tenant("t2")].version, version + 1);
}

#[test]
fn deleting_a_listed_image_hides_it_while_recycled_and_delists_it_once_purged() {
    let scenario = owner_with_active_image().given([
        by(
            "t1",
            TenantCommand::ListOnMarketplace {
                image_id: image_id(IMAGE),
                publisher: "Acme".into(),
                price: Price::Free,
            },
        ),
        purge(image_id(IMAGE)),
    ]);
    assert_eq!(
        access(
            scenario.image(image_id(IMAGE)),
            Viewer::alone(&tenant("t3"))
        ),
        None
    );
    let (_, state) = scenario.when(purge(image_id(IMAGE))).then_ok();
    let image = &state.images[&image_id(IMAGE)];
    assert_eq!(image.class, ImageClass::Private);
    assert_eq!(image.listing, None);
    assert_eq!(access(image, Viewer::alone(&tenant("t3"))), None);
}

#[test]
fn usable_says_through_what_and_for_which_purpose_in_words() {
    let scenario = owner_with_active_image().given([
        by(
            "t1",
            TenantCommand::ShareImage {
                image_id: image_id(IMAGE),
                tenants: vec![tenant("t2")],
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
    let image = scenario.image(image_id(IMAGE));
    let through = |who: &str| {
        usable(
            &region(),
            Viewer::alone(&tenant(who)),
            image_id(IMAGE),
            Some(image),
            Purpose::ChangeOs,
        )
        .reason
    };
    assert_eq!(through("t1"), "usable through owner");
    assert_eq!(through("t2"), "usable through accepted_share");
    let data = Scenario::new().given([
        register("t1"),
        by(
            "t1",
            with_create(system_image("data"), |c| {
                c.disk = DiskKind::Data;
                c.os = None;
            }),
        ),
        op(succeeded(image_id(1))),
    ]);
    let answer = usable(
        &region(),
        Viewer::alone(&tenant("t1")),
        image_id(1),
        Some(data.image(image_id(1))),
        Purpose::ChangeOs,
    );
    assert!(
        answer.reason.ends_with("not change_os"),
        "{}",
        answer.reason
    );
    assert_eq!(Purpose::CreateEcs.as_str(), "create_ecs");
    assert_eq!(Purpose::CreateEvs.as_str(), "create_evs");
    assert_eq!(Access::Public.as_str(), "public");
    assert_eq!(Access::Marketplace.as_str(), "marketplace");
}

#[test]
fn free_text_up_to_its_limit_is_accepted_and_a_refusal_shows_only_the_start_of_a_long_value() {
    let list = |publisher: String| {
        by(
            "t1",
            TenantCommand::ListOnMarketplace {
                image_id: image_id(IMAGE),
                publisher,
                price: Price::Free,
            },
        )
    };
    let max = limits::PUBLISHER_CHARS_MAX;
    owner_with_active_image()
        .when(list("p".repeat(max)))
        .then_ok();
    let long = format!("{}{}", "q".repeat(40), "z".repeat(max));
    let refused = owner_with_active_image()
        .when(list(long.clone()))
        .then_refused(ErrorCode::InvalidArgument, "publisher");
    assert!(
        refused.message.contains(&format!("{:?}…", "q".repeat(40))),
        "{}",
        refused.message
    );
    assert!(!refused.message.contains('z'), "{}", refused.message);

    // A short bad value is shown whole, quoted.
    let refused = Scenario::new()
        .given([register("t1")])
        .when(by(
            "t1",
            with_create(system_image("web"), |c| {
                c.source = CreateSource::Ecs {
                    instance_id: "ecs 42".into(),
                    data_disk_ids: vec![],
                };
            }),
        ))
        .then_refused(ErrorCode::InvalidArgument, "instance_id");
    assert!(
        refused.message.contains("\"ecs 42\""),
        "{}",
        refused.message
    );
}

#[test]
fn an_identifier_of_the_most_characters_is_accepted_and_one_more_is_refused() {
    let create = |instance_id: String| {
        by(
            "t1",
            with_create(system_image("web"), |c| {
                c.source = CreateSource::Ecs {
                    instance_id,
                    data_disk_ids: vec![],
                };
            }),
        )
    };
    let max = limits::INSTANCE_ID_CHARS_MAX;
    let registered = || Scenario::new().given([register("t1")]);
    registered().when(create("i".repeat(max))).then_ok();
    registered()
        .when(create("i".repeat(max + 1)))
        .then_refused(ErrorCode::InvalidArgument, "instance_id");
}

#[test]
fn file_formats_parse_by_their_wire_names_and_an_unknown_one_lists_them() {
    for format in FileFormat::ALL {
        assert_eq!(parse_file_format(format.as_str()).unwrap(), format);
    }
    let error = parse_file_format("qcow3").unwrap_err();
    assert!(
        error.message.contains("\"qcow3\"") && error.message.contains("qcow2, "),
        "{}",
        error.message
    );
}
