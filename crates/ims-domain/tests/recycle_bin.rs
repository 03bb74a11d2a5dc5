//! The recycle bin (DESIGN.md section 13, AWS's Recycle Bin), as given-when-then sentences.

mod support;

use ims_domain::*;
use support::*;

const IMAGE: u128 = 1;
const DAY_MS: u64 = 86_400_000;

fn delete() -> TenantCommand {
    TenantCommand::DeleteImage {
        image_id: image_id(IMAGE),
    }
}

fn restore() -> TenantCommand {
    TenantCommand::RestoreImage {
        image_id: image_id(IMAGE),
    }
}

/// t1's image 1 shared with t2 (accepted) and t3 (pending).
fn shared_image() -> Scenario {
    owner_with_active_image().given([
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
    ])
}

/// [`shared_image`] in t1's recycle bin, and the time it went there.
fn recycled() -> (Scenario, u64) {
    let scenario = shared_image();
    let at = scenario.now_ms;
    (scenario.given([by("t1", delete())]), at)
}

fn usable_by(scenario: &Scenario, tenant_id: &str) -> Usability {
    usable(
        &region(),
        Viewer::alone(&tenant(tenant_id)),
        image_id(IMAGE),
        Some(scenario.image(image_id(IMAGE))),
        Purpose::CreateEcs,
    )
}

#[test]
fn a_tenants_delete_moves_the_image_to_its_recycle_bin_for_seven_days() {
    let scenario = shared_image();
    let at = scenario.now_ms;
    let (events, state) = scenario.when(by("t1", delete())).then_ok();
    assert_eq!(
        events,
        vec![Event::ImageRecycled {
            image_id: image_id(IMAGE),
            purge_at_ms: at + 7 * DAY_MS,
            at_ms: at,
        }]
    );
    let image = &state.images[&image_id(IMAGE)];
    assert_eq!(image.status, ImageStatus::Recycled);
    assert_eq!(
        image.scheduled(),
        vec![(at + 7 * DAY_MS, Transition::Purge)]
    );
    // It still counts toward the quota.
    assert_eq!(state.tenants[&tenant("t1")].owned_private_images, 1);
}

#[test]
fn while_recycled_members_lose_the_image_and_its_owner_must_restore_it_first() {
    let (scenario, _) = recycled();
    let image = scenario.image(image_id(IMAGE));
    assert_eq!(access(image, Viewer::alone(&tenant("t2"))), None);
    assert_eq!(
        access(image, Viewer::alone(&tenant("t1"))),
        Some(Access::Owner)
    );
    let member = usable_by(&scenario, "t2");
    assert!(
        !member.allowed && member.reason.contains("does not exist"),
        "{}",
        member.reason
    );
    let owner = usable_by(&scenario, "t1");
    assert!(
        !owner.allowed && owner.reason.contains("restore-image"),
        "{}",
        owner.reason
    );
    scenario
        .when(by(
            "t2",
            TenantCommand::RejectShare {
                image_id: image_id(IMAGE),
            },
        ))
        .then_refused(ErrorCode::NotFound, "was deleted");
    let (scenario, _) = recycled();
    scenario
        .when(by(
            "t1",
            TenantCommand::ShareImage {
                image_id: image_id(IMAGE),
                tenants: vec![tenant("t3")],
                organizations: Vec::new(),
            },
        ))
        .then_refused(ErrorCode::InvalidState, "restore it first");
}

#[test]
fn a_recycled_image_still_counts_toward_the_quota() {
    let (scenario, _) = recycled();
    scenario
        .given([op(OperatorCommand::SetQuota {
            tenant: tenant("t1"),
            quota: 1,
        })])
        .when(by("t1", system_image("another")))
        .then_refused(ErrorCode::QuotaExceeded, "t1");
}

#[test]
fn restore_brings_the_image_back_with_its_members_and_their_statuses() {
    let (scenario, _) = recycled();
    let (_, state) = scenario.when(by("t1", restore())).then_ok();
    let image = &state.images[&image_id(IMAGE)];
    assert_eq!(image.status, ImageStatus::Active);
    assert_eq!(image.recycled, None);
    assert_eq!(
        image.members.get(&tenant("t2")),
        Some(&MemberStatus::Accepted)
    );
    assert_eq!(
        image.members.get(&tenant("t3")),
        Some(&MemberStatus::Pending)
    );
    assert_eq!(
        access(image, Viewer::alone(&tenant("t2"))),
        Some(Access::SharedAccepted)
    );
}

#[test]
fn restore_is_refused_after_the_purge_time_for_an_image_not_in_the_bin_and_for_others() {
    let (mut scenario, at) = recycled();
    scenario.now_ms = at + 7 * DAY_MS;
    scenario
        .when(by("t1", restore()))
        .then_refused(ErrorCode::InvalidState, "can no longer be restored");
    owner_with_active_image()
        .when(by("t1", restore()))
        .then_refused(ErrorCode::InvalidState, "not in the recycle bin");
    let (scenario, _) = recycled();
    scenario
        .when(by("t2", restore()))
        .then_refused(ErrorCode::NotFound, "was deleted");
}

#[test]
fn deleting_an_image_in_the_bin_purges_it_and_frees_the_quota() {
    let (scenario, _) = recycled();
    let (events, state) = scenario.when(by("t1", delete())).then_ok();
    assert!(
        matches!(events[..], [Event::ImageDeleted { .. }]),
        "{events:?}"
    );
    assert_eq!(state.images[&image_id(IMAGE)].status, ImageStatus::Deleted);
    assert_eq!(state.tenants[&tenant("t1")].owned_private_images, 0);
}

#[test]
fn set_retention_changes_how_long_later_deletes_stay_in_the_bin() {
    let scenario = shared_image().given([op(OperatorCommand::SetRetention {
        tenant: tenant("t1"),
        days: 30,
    })]);
    let set = &scenario.state.tenants[&tenant("t1")];
    assert_eq!(set.retention_days, Some(30));
    assert_eq!(
        set.version,
        shared_image().state.tenants[&tenant("t1")].version + 1,
        "set-retention moves the tenant's version by one"
    );
    let at = scenario.now_ms;
    let (_, state) = scenario.when(by("t1", delete())).then_ok();
    assert_eq!(
        state.images[&image_id(IMAGE)]
            .recycled
            .map(|r| r.purge_at_ms),
        Some(at + 30 * DAY_MS)
    );
    for days in [0, 366] {
        shared_image()
            .when(op(OperatorCommand::SetRetention {
                tenant: tenant("t1"),
                days,
            }))
            .then_refused(ErrorCode::InvalidArgument, "1 to 365");
    }
    shared_image()
        .when(op(OperatorCommand::SetRetention {
            tenant: tenant("nobody"),
            days: 30,
        }))
        .then_refused(ErrorCode::UnknownTenant, "nobody");
    shared_image()
        .when(by(
            "t1",
            OperatorCommand::SetRetention {
                tenant: tenant("t1"),
                days: 30,
            },
        ))
        .then_refused(ErrorCode::Forbidden, "set-retention");
}

fn scheduled(transition: Transition, due_ms: u64) -> (Actor, Command) {
    (
        Actor::Scheduler,
        Command::Scheduled(ScheduledTransition {
            image_id: image_id(IMAGE),
            transition,
            due_ms,
        }),
    )
}

#[test]
fn at_its_purge_time_the_scheduler_deletes_the_image_for_good() {
    let (mut scenario, at) = recycled();
    let purge_at = at + 7 * DAY_MS;
    scenario.now_ms = purge_at - 1;
    let mut scenario = match scenario.run(scheduled(Transition::Purge, purge_at)) {
        Err(error) if error.message.contains("not due until") => scenario,
        other => panic!("purged early: {other:?}"),
    };
    scenario.now_ms = purge_at;
    let (_, state) = scenario
        .when(scheduled(Transition::Purge, purge_at))
        .then_ok();
    assert_eq!(state.images[&image_id(IMAGE)].status, ImageStatus::Deleted);
    // A restored image has no purge scheduled any more.
    let (scenario, at) = recycled();
    let mut scenario = scenario.given([by("t1", restore())]);
    scenario.now_ms = at + 7 * DAY_MS;
    scenario
        .when(scheduled(Transition::Purge, at + 7 * DAY_MS))
        .then_refused(ErrorCode::InvalidState, "schedule changed");
}

#[test]
fn a_scheduled_deletion_recycles_a_tenants_image_and_deletes_a_public_one() {
    let scenario = shared_image();
    let delete_at = scenario.now_ms + DAY_MS;
    let deprecation = |image: u128| {
        TenantCommand::DeprecateImage(Box::new(DeprecateImage {
            image_id: image_id(image),
            state: DeprecationState::Deprecated,
            replacement: None,
            obsolete_at_ms: None,
            delete_at_ms: Some(delete_at),
        }))
    };
    let mut scenario = scenario.given([
        by("t1", deprecation(IMAGE)),
        op(publish_public("ubuntu")),
        op(deprecation(2)),
    ]);
    scenario.now_ms = delete_at;
    let scenario = scenario.given([
        scheduled(Transition::Delete, delete_at),
        (
            Actor::Scheduler,
            Command::Scheduled(ScheduledTransition {
                image_id: image_id(2),
                transition: Transition::Delete,
                due_ms: delete_at,
            }),
        ),
    ]);
    assert_eq!(
        scenario.image(image_id(IMAGE)).status,
        ImageStatus::Recycled
    );
    assert_eq!(scenario.image(image_id(2)).status, ImageStatus::Deleted);
}

#[test]
fn the_operator_deletes_a_public_image_outright() {
    let (_, state) = owner_with_active_image()
        .given([op(publish_public("ubuntu"))])
        .when(op(TenantCommand::DeleteImage {
            image_id: image_id(2),
        }))
        .then_ok();
    assert_eq!(state.images[&image_id(2)].status, ImageStatus::Deleted);
}

#[test]
fn a_build_that_ends_while_its_image_is_recycled_shows_once_restored() {
    let scenario = Scenario::new().given([
        register("t1"),
        by("t1", system_image("web")),
        by("t1", delete()),
    ]);
    assert_eq!(
        scenario
            .image(image_id(IMAGE))
            .recycled
            .map(|r| r.restores_to),
        Some(ImageStatus::Queued)
    );
    let (_, state) = scenario
        .given([op(succeeded(image_id(IMAGE)))])
        .when(by("t1", restore()))
        .then_ok();
    assert_eq!(state.images[&image_id(IMAGE)].status, ImageStatus::Active);
}
