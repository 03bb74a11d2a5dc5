//! Image families (DESIGN.md section 13, GCP's image families), as given-when-then sentences:
//! the domain records them; `latest` is a query of the catalog.

mod support;

use ims_domain::*;
use support::*;

const IMAGE: u128 = 1;

fn with_family(name: &str, family: &str) -> TenantCommand {
    with_create(system_image(name), |create| {
        create.family = Some(family.into());
    })
}

#[test]
fn an_image_created_in_a_family_records_it_in_an_event_of_its_own() {
    let (events, state) = owner_with_active_image()
        .when(by("t1", with_family("web-2", "web")))
        .then_ok();
    assert!(
        matches!(
            &events[..],
            [Event::ImageCreated(_), Event::FamilySet { family: Some(family), exclude_from_latest: false, .. }]
                if family == "web"
        ),
        "{events:?}"
    );
    let image = &state.images[&image_id(2)];
    assert_eq!(image.family.as_deref(), Some("web"));
    assert_eq!(image.version, 2);
}

#[test]
fn a_family_name_outside_the_charset_is_refused_by_name() {
    owner_with_active_image()
        .when(by("t1", with_family("web-2", "Web Servers")))
        .then_refused(ErrorCode::InvalidArgument, "\"Web Servers\"");
}

#[test]
fn update_image_moves_an_image_between_families_and_out_of_latest() {
    let update = |family: Option<&str>, exclude: Option<bool>| {
        TenantCommand::UpdateImage(Box::new(UpdateImage {
            image_id: image_id(IMAGE),
            name: None,
            description: None,
            tags: None,
            min_disk_gb: None,
            protected: None,
            family: family.map(str::to_owned),
            exclude_from_latest: exclude,
        }))
    };
    let (events, state) = owner_with_active_image()
        .when(by("t1", update(Some("web"), None)))
        .then_ok();
    assert!(
        matches!(&events[..], [Event::FamilySet { .. }]),
        "{events:?}"
    );
    assert_eq!(
        state.images[&image_id(IMAGE)].family.as_deref(),
        Some("web")
    );
    let (_, state) = owner_with_active_image()
        .given([by("t1", update(Some("web"), None))])
        .when(by("t1", update(None, Some(true))))
        .then_ok();
    let image = &state.images[&image_id(IMAGE)];
    assert_eq!(
        (image.family.as_deref(), image.exclude_from_latest),
        (Some("web"), true)
    );
    let (_, state) = owner_with_active_image()
        .given([by("t1", update(Some("web"), None))])
        .when(by("t1", update(Some(""), None)))
        .then_ok();
    assert_eq!(state.images[&image_id(IMAGE)].family, None);
    owner_with_active_image()
        .when(by("t1", update(None, None)))
        .then_refused(ErrorCode::InvalidArgument, "family");
}
