//! What each event does to the image it is about, as given-when-then sentences: a command's
//! events, folded by `evolve`, leave the image as the command asked, one version later.

mod support;

use std::collections::BTreeMap;

use ims_domain::*;
use support::*;

#[test]
fn an_update_changes_every_field_it_names_and_bumps_the_version() {
    let scenario = owner_with_active_image();
    let before = scenario.image(image_id(1)).clone();
    let tags = BTreeMap::from([("env".to_owned(), "prod".to_owned())]);
    let (_, after) = scenario
        .when(by(
            "t1",
            TenantCommand::UpdateImage(Box::new(UpdateImage {
                image_id: image_id(1),
                name: Some("web-2".into()),
                description: Some("the second".into()),
                tags: Some(tags.clone()),
                min_disk_gb: Some(80),
                protected: Some(true),
                family: None,
                exclude_from_latest: None,
            })),
        ))
        .then_ok();
    let image = &after.images[&image_id(1)];
    assert_eq!(image.name, "web-2");
    assert_eq!(image.description, "the second");
    assert_eq!(image.tags, tags);
    assert_eq!(image.min_disk_gb, 80);
    assert!(image.protected);
    assert_eq!(image.version, before.version + 1);
    assert!(image.updated_at_ms > before.updated_at_ms);
}

#[test]
fn a_started_build_makes_a_queued_image_saving() {
    let scenario = Scenario::new().given([register("t1"), by("t1", system_image("web"))]);
    let before = scenario.image(image_id(1)).clone();
    assert_eq!(before.status, ImageStatus::Queued);
    let (_, after) = scenario
        .when(op(OperatorCommand::ReportBuild {
            image_id: image_id(1),
            outcome: BuildOutcome::Started,
            checksum_sha256: None,
            file: None,
            reason: None,
        }))
        .then_ok();
    let image = &after.images[&image_id(1)];
    assert_eq!(image.status, ImageStatus::Saving);
    assert_eq!(image.version, before.version + 1);
}
