//! Organization sharing (DESIGN.md section 13, Huawei's and AWS's), as given-when-then
//! sentences.

mod support;

use ims_domain::*;
use support::*;

const IMAGE: u128 = 1;

fn org(id: &str) -> OrganizationId {
    OrganizationId::parse(id).unwrap()
}

fn register_in(id: &str, organization: &str) -> (Actor, Command) {
    op(OperatorCommand::RegisterTenant {
        tenant: tenant(id),
        quota: None,
        organization: Some(org(organization)),
    })
}

fn share_with(tenants: &[&str], organizations: &[&str]) -> TenantCommand {
    TenantCommand::ShareImage {
        image_id: image_id(IMAGE),
        tenants: tenants.iter().map(|t| tenant(t)).collect(),
        organizations: organizations.iter().map(|o| org(o)).collect(),
    }
}

fn viewer<'s>(scenario: &'s Scenario, id: &str) -> Viewer<'s> {
    Viewer::of(&scenario.state.tenants[&tenant(id)])
}

/// t1's active image 1; t4 belongs to organization `acme-group`.
fn org_member() -> Scenario {
    owner_with_active_image().given([register_in("t4", "acme-group")])
}

#[test]
fn a_tenant_registered_in_an_organization_belongs_to_it() {
    let (events, state) = owner_with_active_image()
        .when(register_in("t4", "acme-group"))
        .then_ok();
    assert!(
        matches!(
            &events[..],
            [
                Event::TenantRegistered { .. },
                Event::TenantJoinedOrganization { .. }
            ]
        ),
        "{events:?}"
    );
    let joined = &state.tenants[&tenant("t4")];
    assert_eq!(joined.organization, Some(org("acme-group")));
    assert_eq!(joined.version, 2, "registered, then joined");
}

#[test]
fn a_share_with_an_organization_reaches_its_tenants_without_acceptance_and_no_one_else() {
    let scenario = org_member().given([by("t1", share_with(&[], &["acme-group"]))]);
    let image = scenario.image(image_id(IMAGE));
    assert_eq!(
        access(image, viewer(&scenario, "t4")),
        Some(Access::OrganizationShare)
    );
    assert_eq!(access(image, viewer(&scenario, "t2")), None);
    assert!(image.members.is_empty(), "no member to accept");
    let answer = usable(
        &region(),
        viewer(&scenario, "t4"),
        image_id(IMAGE),
        Some(image),
        Purpose::CreateEcs,
    );
    assert!(answer.allowed, "{}", answer.reason);
    assert_eq!(answer.access, Some(Access::OrganizationShare));
}

#[test]
fn a_tenant_registered_in_the_organization_after_the_share_sees_the_image() {
    let scenario = owner_with_active_image().given([
        by("t1", share_with(&[], &["acme-group"])),
        register_in("t9", "acme-group"),
    ]);
    assert_eq!(
        access(scenario.image(image_id(IMAGE)), viewer(&scenario, "t9")),
        Some(Access::OrganizationShare)
    );
}

#[test]
fn an_organization_counts_once_toward_the_128_members() {
    let others: Vec<String> = (0..127).map(|n| format!("m{n}")).collect();
    let scenario = owner_with_active_image()
        .given(others.iter().map(|t| register(t)))
        .given([
            register_in("t4", "acme-group"),
            register_in("t5", "acme-group"),
        ]);
    let names: Vec<&str> = others.iter().map(String::as_str).collect();
    // 127 tenants and one organization of two tenants: 128 members.
    let scenario = scenario.given([by("t1", share_with(&names, &["acme-group"]))]);
    let image = scenario.image(image_id(IMAGE));
    assert_eq!(image.members.len() + image.organizations.len(), 128);
    scenario
        .when(by("t1", share_with(&[], &["beta-group"])))
        .then_refused(ErrorCode::ShareLimitExceeded, "organizations, one each");
}

#[test]
fn the_seeds_sharing_rules_hold_for_organizations_too() {
    Scenario::new()
        .given([
            register("t1"),
            by(
                "t1",
                with_create(system_image("secret"), |create| {
                    create.encryption = Some(Encryption {
                        kms_key_id: "kms-1".into(),
                    });
                }),
            ),
            op(succeeded(image_id(IMAGE))),
        ])
        .when(by("t1", share_with(&[], &["acme-group"])))
        .then_refused(ErrorCode::EncryptedNotShareable, "encrypted");
    org_member()
        .when(by("t2", share_with(&[], &["acme-group"])))
        .then_refused(ErrorCode::Forbidden, "tenant t2");
    org_member()
        .when(by("t1", share_with(&[], &[])))
        .then_refused(ErrorCode::InvalidArgument, "organization");
}

#[test]
fn sharing_again_with_an_organization_records_nothing() {
    let (events, _) = org_member()
        .given([by("t1", share_with(&[], &["acme-group"]))])
        .when(by("t1", share_with(&[], &["acme-group"])))
        .then_ok();
    assert!(events.is_empty(), "{events:?}");
}

#[test]
fn unshare_ends_an_organizations_share_by_name_or_with_all() {
    let shared =
        || org_member().given([by("t1", share_with(&["t2"], &["acme-group", "beta-group"]))]);
    let (_, state) = shared()
        .when(by(
            "t1",
            TenantCommand::UnshareImage {
                image_id: image_id(IMAGE),
                tenants: Some(Vec::new()),
                organizations: vec![org("acme-group")],
            },
        ))
        .then_ok();
    let image = &state.images[&image_id(IMAGE)];
    assert_eq!(
        image.organizations.iter().collect::<Vec<_>>(),
        vec![&org("beta-group")]
    );
    assert!(image.members.contains_key(&tenant("t2")));
    assert_eq!(
        access(image, Viewer::of(&state.tenants[&tenant("t4")])),
        None
    );
    let (_, state) = shared()
        .when(by(
            "t1",
            TenantCommand::UnshareImage {
                image_id: image_id(IMAGE),
                tenants: None,
                organizations: Vec::new(),
            },
        ))
        .then_ok();
    let image = &state.images[&image_id(IMAGE)];
    assert!(image.organizations.is_empty() && image.members.is_empty());
}

#[test]
fn a_recycled_image_shared_with_an_organization_is_lost_to_it_until_restored() {
    let scenario = org_member().given([
        by("t1", share_with(&[], &["acme-group"])),
        purge(image_id(IMAGE)),
    ]);
    assert_eq!(
        access(scenario.image(image_id(IMAGE)), viewer(&scenario, "t4")),
        None
    );
    let scenario = scenario.given([by(
        "t1",
        TenantCommand::RestoreImage {
            image_id: image_id(IMAGE),
        },
    )]);
    assert_eq!(
        access(scenario.image(image_id(IMAGE)), viewer(&scenario, "t4")),
        Some(Access::OrganizationShare)
    );
}

#[test]
fn one_share_names_at_most_128_organizations() {
    let names: Vec<String> = (0..129).map(|n| format!("org-{n}")).collect();
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    org_member()
        .when(by("t1", share_with(&[], &all)))
        .then_refused(ErrorCode::InvalidArgument, "129 organizations named");
    let (_, state) = org_member()
        .when(by("t1", share_with(&[], &all[..128])))
        .then_ok();
    assert_eq!(state.images[&image_id(IMAGE)].organizations.len(), 128);
    org_member()
        .when(by(
            "t1",
            TenantCommand::UnshareImage {
                image_id: image_id(IMAGE),
                tenants: Some(Vec::new()),
                organizations: names.iter().map(|o| org(o)).collect(),
            },
        ))
        .then_refused(ErrorCode::InvalidArgument, "129 organizations named");
}
