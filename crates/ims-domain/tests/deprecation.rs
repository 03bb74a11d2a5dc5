//! Deprecation states, replacements and scheduled transitions (DESIGN.md section 13), as
//! given-when-then sentences.

mod support;

use ims_domain::*;
use support::*;

const IMAGE: u128 = 1;
const NEWER: u128 = 2;
const HOUR_MS: u64 = 3_600_000;

fn deprecation(
    image: u128,
    state: DeprecationState,
    replacement: Option<u128>,
    obsolete_at_ms: Option<u64>,
    delete_at_ms: Option<u64>,
) -> TenantCommand {
    TenantCommand::DeprecateImage(Box::new(DeprecateImage {
        image_id: image_id(image),
        state,
        replacement: replacement.map(image_id),
        obsolete_at_ms,
        delete_at_ms,
    }))
}

/// t1 owns image 1, shared with t2 (accepted), and image 2, not shared.
fn shared_image_and_a_newer_one() -> Scenario {
    owner_with_active_image().given([
        by("t1", system_image("web-v2")),
        op(succeeded(image_id(NEWER))),
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
    ])
}

/// The scenario above with image 2 shared with t2 and accepted too.
fn newer_one_shared_too() -> Scenario {
    shared_image_and_a_newer_one().given([
        by(
            "t1",
            TenantCommand::ShareImage {
                image_id: image_id(NEWER),
                tenants: vec![tenant("t2")],
                organizations: Vec::new(),
            },
        ),
        by(
            "t2",
            TenantCommand::AcceptShare {
                image_id: image_id(NEWER),
            },
        ),
    ])
}

fn usable_by(scenario: &Scenario, tenant_id: &str, image: u128) -> Usability {
    usable(
        &region(),
        Viewer::alone(&tenant(tenant_id)),
        image_id(image),
        Some(scenario.image(image_id(image))),
        Purpose::CreateEcs,
    )
}

#[test]
fn a_deprecated_image_stays_usable_with_a_warning_naming_its_replacement() {
    let scenario = newer_one_shared_too().given([by(
        "t1",
        deprecation(IMAGE, DeprecationState::Deprecated, Some(NEWER), None, None),
    )]);
    let answer = usable_by(&scenario, "t2", IMAGE);
    assert!(answer.allowed, "{}", answer.reason);
    let warning = answer.warning.expect("a warning");
    assert!(
        warning.contains("deprecated") && warning.contains(&image_id(NEWER).to_string()),
        "{warning}"
    );
    assert!(usable_by(&scenario, "t2", NEWER).warning.is_none());
}

#[test]
fn an_obsolete_image_is_refused_naming_its_replacement() {
    let scenario = newer_one_shared_too().given([by(
        "t1",
        deprecation(IMAGE, DeprecationState::Obsolete, Some(NEWER), None, None),
    )]);
    for tenant_id in ["t1", "t2"] {
        let answer = usable_by(&scenario, tenant_id, IMAGE);
        assert!(!answer.allowed);
        assert!(
            answer.reason.contains("obsolete")
                && answer.reason.contains(&image_id(NEWER).to_string()),
            "{}",
            answer.reason
        );
    }
}

#[test]
fn an_obsolete_image_without_replacement_says_none_was_named() {
    let scenario = shared_image_and_a_newer_one().given([by(
        "t1",
        deprecate(image_id(IMAGE), DeprecationState::Obsolete),
    )]);
    let answer = usable_by(&scenario, "t2", IMAGE);
    assert!(!answer.allowed);
    assert!(
        answer.reason.contains("no replacement"),
        "{}",
        answer.reason
    );
}

#[test]
fn state_active_takes_a_deprecation_back() {
    let (_, state) = newer_one_shared_too()
        .given([by(
            "t1",
            deprecation(IMAGE, DeprecationState::Obsolete, Some(NEWER), None, None),
        )])
        .when(by(
            "t1",
            deprecate(image_id(IMAGE), DeprecationState::Active),
        ))
        .then_ok();
    assert_eq!(
        state.images[&image_id(IMAGE)].deprecation,
        Deprecation::default()
    );
}

#[test]
fn the_same_deprecation_again_records_nothing() {
    let (events, _) = shared_image_and_a_newer_one()
        .given([by(
            "t1",
            deprecate(image_id(IMAGE), DeprecationState::Deprecated),
        )])
        .when(by(
            "t1",
            deprecate(image_id(IMAGE), DeprecationState::Deprecated),
        ))
        .then_ok();
    assert!(events.is_empty(), "{events:?}");
}

#[test]
fn only_the_owner_deprecates_a_private_image_and_only_the_operator_a_public_one() {
    shared_image_and_a_newer_one()
        .when(by(
            "t2",
            deprecate(image_id(IMAGE), DeprecationState::Deprecated),
        ))
        .then_refused(ErrorCode::Forbidden, "tenant t2");
    shared_image_and_a_newer_one()
        .when(op(deprecate(image_id(IMAGE), DeprecationState::Deprecated)))
        .then_refused(ErrorCode::Forbidden, "operator");
    let public = shared_image_and_a_newer_one().given([op(publish_public("ubuntu"))]);
    let public_id = public.next_image - 1;
    public
        .when(by(
            "t1",
            deprecate(image_id(public_id), DeprecationState::Deprecated),
        ))
        .then_refused(ErrorCode::Forbidden, "tenant t1");
}

#[test]
fn a_public_image_is_replaced_by_a_public_image_not_a_private_one() {
    // Images 3 and 4 are public.
    let scenario = || {
        shared_image_and_a_newer_one().given([
            op(publish_public("ubuntu")),
            op(publish_public("ubuntu-next")),
        ])
    };
    let (_, state) = scenario()
        .when(op(deprecation(
            3,
            DeprecationState::Deprecated,
            Some(4),
            None,
            None,
        )))
        .then_ok();
    assert_eq!(
        state.images[&image_id(3)].deprecation.replacement,
        Some(image_id(4))
    );
    scenario()
        .when(op(deprecation(
            3,
            DeprecationState::Deprecated,
            Some(NEWER),
            None,
            None,
        )))
        .then_refused(ErrorCode::InvalidArgument, "public or Marketplace");
}

#[test]
fn a_replacement_a_member_cannot_see_is_refused_naming_the_member() {
    shared_image_and_a_newer_one()
        .when(by(
            "t1",
            deprecation(IMAGE, DeprecationState::Deprecated, Some(NEWER), None, None),
        ))
        .then_refused(ErrorCode::InvalidArgument, "tenant t2");
}

#[test]
fn a_replacement_must_be_another_live_image_not_obsolete() {
    newer_one_shared_too()
        .when(by(
            "t1",
            deprecation(IMAGE, DeprecationState::Deprecated, Some(IMAGE), None, None),
        ))
        .then_refused(ErrorCode::InvalidArgument, "cannot replace itself");
    newer_one_shared_too()
        .when(by(
            "t1",
            deprecation(IMAGE, DeprecationState::Deprecated, Some(99), None, None),
        ))
        .then_refused(ErrorCode::NotFound, "replacement");
    newer_one_shared_too()
        .given([by(
            "t1",
            deprecate(image_id(NEWER), DeprecationState::Obsolete),
        )])
        .when(by(
            "t1",
            deprecation(IMAGE, DeprecationState::Deprecated, Some(NEWER), None, None),
        ))
        .then_refused(ErrorCode::InvalidState, "obsolete itself");
    newer_one_shared_too()
        .when(by(
            "t1",
            deprecation(IMAGE, DeprecationState::Active, Some(NEWER), None, None),
        ))
        .then_refused(
            ErrorCode::InvalidArgument,
            "active image has no replacement",
        );
}

#[test]
fn scheduled_times_lie_ahead_within_ten_years_the_deletion_not_first() {
    let now = Scenario::new().now_ms;
    let refused = |obsolete: Option<u64>, delete: Option<u64>, state, mentions: &str| {
        // Commands before `when` advance the clock by one millisecond each; `now` is a floor.
        shared_image_and_a_newer_one()
            .when(by("t1", deprecation(IMAGE, state, None, obsolete, delete)))
            .then_refused(ErrorCode::InvalidArgument, mentions);
    };
    refused(Some(now), None, DeprecationState::Deprecated, "obsolete_at");
    refused(None, Some(now), DeprecationState::Deprecated, "delete_at");
    refused(
        Some(now + 11 * 366 * 24 * HOUR_MS),
        None,
        DeprecationState::Active,
        "ten years",
    );
    refused(
        Some(now + 2 * HOUR_MS),
        Some(now + HOUR_MS),
        DeprecationState::Deprecated,
        "comes before obsolete_at",
    );
    refused(
        Some(now + HOUR_MS),
        None,
        DeprecationState::Obsolete,
        "already is",
    );
    let (_, state) = shared_image_and_a_newer_one()
        .when(by(
            "t1",
            deprecation(
                IMAGE,
                DeprecationState::Deprecated,
                None,
                Some(now + HOUR_MS),
                Some(now + HOUR_MS),
            ),
        ))
        .then_ok();
    let scheduled = &state.images[&image_id(IMAGE)].deprecation;
    assert_eq!(scheduled.obsolete_at_ms, Some(now + HOUR_MS));
    assert_eq!(scheduled.delete_at_ms, Some(now + HOUR_MS));
}

#[test]
fn a_protected_image_is_not_scheduled_for_deletion() {
    let now = Scenario::new().now_ms;
    shared_image_and_a_newer_one()
        .given([by("t1", protect(image_id(IMAGE)))])
        .when(by(
            "t1",
            deprecation(
                IMAGE,
                DeprecationState::Deprecated,
                None,
                None,
                Some(now + HOUR_MS),
            ),
        ))
        .then_refused(ErrorCode::Protected, "protected=false");
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

/// Image 1 deprecated, replaced by image 2, obsolete in one hour and deleted in two.
fn scheduled_image() -> (Scenario, u64, u64) {
    let scenario = newer_one_shared_too();
    let (obsolete, delete) = (scenario.now_ms + HOUR_MS, scenario.now_ms + 2 * HOUR_MS);
    let scenario = scenario.given([by(
        "t1",
        deprecation(
            IMAGE,
            DeprecationState::Deprecated,
            Some(NEWER),
            Some(obsolete),
            Some(delete),
        ),
    )]);
    (scenario, obsolete, delete)
}

#[test]
fn at_obsolete_at_the_scheduler_makes_the_image_obsolete_keeping_replacement_and_deletion() {
    let (mut scenario, obsolete, delete) = scheduled_image();
    scenario.now_ms = obsolete;
    let (events, state) = scenario
        .when(scheduled(Transition::Obsolete, obsolete))
        .then_ok();
    assert_eq!(events.len(), 1);
    assert_eq!(
        state.images[&image_id(IMAGE)].deprecation,
        Deprecation {
            state: DeprecationState::Obsolete,
            replacement: Some(image_id(NEWER)),
            obsolete_at_ms: None,
            delete_at_ms: Some(delete),
        }
    );
}

#[test]
fn at_delete_at_the_scheduler_moves_a_tenants_image_to_its_recycle_bin() {
    let (mut scenario, _, delete) = scheduled_image();
    scenario.now_ms = delete;
    let (_, state) = scenario
        .when(scheduled(Transition::Delete, delete))
        .then_ok();
    assert_eq!(state.images[&image_id(IMAGE)].status, ImageStatus::Recycled);
}

#[test]
fn a_transition_not_yet_due_or_no_longer_scheduled_is_refused() {
    let (scenario, obsolete, _) = scheduled_image();
    scenario
        .when(scheduled(Transition::Obsolete, obsolete))
        .then_refused(ErrorCode::InvalidState, "not due until");
    let (mut scenario, obsolete, _) = scheduled_image();
    scenario.now_ms = obsolete + 1;
    scenario
        .when(scheduled(Transition::Obsolete, obsolete - 1))
        .then_refused(ErrorCode::InvalidState, "schedule changed");
    // The owner took the deprecation back before it was due.
    let (scenario, obsolete, _) = scheduled_image();
    let mut scenario = scenario.given([by(
        "t1",
        deprecate(image_id(IMAGE), DeprecationState::Active),
    )]);
    scenario.now_ms = obsolete;
    scenario
        .when(scheduled(Transition::Obsolete, obsolete))
        .then_refused(ErrorCode::InvalidState, "schedule changed");
}

#[test]
fn a_scheduled_deletion_of_an_image_protected_since_is_refused() {
    let (scenario, _, delete) = scheduled_image();
    let mut scenario = scenario.given([by("t1", protect(image_id(IMAGE)))]);
    scenario.now_ms = delete;
    scenario
        .when(scheduled(Transition::Delete, delete))
        .then_refused(ErrorCode::Protected, "protected");
}

#[test]
fn only_the_scheduler_sends_transitions_and_it_sends_nothing_else() {
    let (mut scenario, obsolete, _) = scheduled_image();
    scenario.now_ms = obsolete;
    let transition = Command::Scheduled(ScheduledTransition {
        image_id: image_id(IMAGE),
        transition: Transition::Obsolete,
        due_ms: obsolete,
    });
    scenario
        .when((Actor::Tenant(tenant("t1")), transition.clone()))
        .then_refused(ErrorCode::Forbidden, "scheduler");
    let (scenario, _, _) = scheduled_image();
    scenario
        .when((Actor::Operator, transition))
        .then_refused(ErrorCode::Forbidden, "scheduler");
    let (scenario, _, _) = scheduled_image();
    scenario
        .when((
            Actor::Scheduler,
            TenantCommand::DeleteImage {
                image_id: image_id(IMAGE),
            }
            .into(),
        ))
        .then_refused(ErrorCode::Forbidden, "scheduler");
}

#[test]
fn the_first_releases_deprecated_flag_reads_as_a_state_without_replacement() {
    let mut state = shared_image_and_a_newer_one().state;
    evolve(
        &mut state,
        &Event::ImageDeprecated {
            image_id: image_id(IMAGE),
            deprecated: true,
            at_ms: 1,
        },
    );
    assert_eq!(
        state.images[&image_id(IMAGE)].deprecation,
        Deprecation {
            state: DeprecationState::Deprecated,
            ..Deprecation::default()
        }
    );
}

#[test]
fn a_schedule_may_reach_exactly_ten_years_ahead_and_no_further() {
    let scenario = shared_image_and_a_newer_one();
    let latest = scenario.now_ms + limits::SCHEDULE_AHEAD_MS_MAX;
    scenario
        .when(by(
            "t1",
            deprecation(
                IMAGE,
                DeprecationState::Deprecated,
                None,
                Some(latest),
                None,
            ),
        ))
        .then_ok();
    let scenario = shared_image_and_a_newer_one();
    let beyond = scenario.now_ms + limits::SCHEDULE_AHEAD_MS_MAX + 1;
    scenario
        .when(by(
            "t1",
            deprecation(
                IMAGE,
                DeprecationState::Deprecated,
                None,
                Some(beyond),
                None,
            ),
        ))
        .then_refused(ErrorCode::InvalidArgument, "ten years");
}

#[test]
fn a_replacement_must_reach_every_organization_the_image_is_shared_with() {
    let share_with_org = |image: u128| {
        by(
            "t1",
            TenantCommand::ShareImage {
                image_id: image_id(image),
                tenants: Vec::new(),
                organizations: vec![OrganizationId::parse("acme-group").unwrap()],
            },
        )
    };
    let scenario = || newer_one_shared_too().given([share_with_org(IMAGE)]);
    scenario()
        .when(by(
            "t1",
            deprecation(IMAGE, DeprecationState::Deprecated, Some(NEWER), None, None),
        ))
        .then_refused(ErrorCode::InvalidArgument, "organization acme-group");
    scenario()
        .given([share_with_org(NEWER)])
        .when(by(
            "t1",
            deprecation(IMAGE, DeprecationState::Deprecated, Some(NEWER), None, None),
        ))
        .then_ok();
}

#[test]
fn only_a_deprecated_or_obsolete_image_counts_as_deprecated_and_states_have_their_wire_names() {
    let scenario = shared_image_and_a_newer_one();
    assert!(!scenario.image(image_id(IMAGE)).is_deprecated());
    for (state, name, deprecated) in [
        (DeprecationState::Active, "active", false),
        (DeprecationState::Deprecated, "deprecated", true),
        (DeprecationState::Obsolete, "obsolete", true),
    ] {
        assert_eq!(state.as_str(), name);
        let (_, after) = shared_image_and_a_newer_one()
            .given([by(
                "t1",
                deprecate(image_id(IMAGE), DeprecationState::Obsolete),
            )])
            .when(by("t1", deprecate(image_id(IMAGE), state)))
            .then_ok();
        assert_eq!(
            after.images[&image_id(IMAGE)].is_deprecated(),
            deprecated,
            "{name}"
        );
    }
}
