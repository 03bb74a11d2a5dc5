//! Images: create, update, delete, builds and public images.

use crate::limits::*;
use crate::{
    BuildOutcome, CreateImage, CreateSource, DiskKind, DomainError, ErrorCode, Event, FileFacts,
    ImageClass, ImageId, ImageStatus, ImageUpdated, NewImage, Owner, PublishPublicImage, Source,
    State, UpdateImage,
};

use super::guards::*;
use super::validation::*;
use super::Context;

pub(super) fn create_image(
    state: &State,
    create: &CreateImage,
    context: &Context,
) -> Result<Vec<Event>, DomainError> {
    let owner = sending_tenant(context, "create-image")?;
    let tenant = registered(state, owner, context)?;
    check_name(&create.name, context.policy)?;
    check_os(create.disk, create.os.as_ref())?;
    check_min_disk(create.min_disk_gb, context.policy)?;
    check_tags(&create.tags, context.policy)?;
    check_description(&create.description, context.policy)?;
    let source = checked_source(create)?;
    if let Some(encryption) = &create.encryption {
        check_ascii_id(
            "encryption.kms_key_id",
            &encryption.kms_key_id,
            KMS_KEY_ID_CHARS_MAX,
        )?;
    }
    if let Some(family) = &create.family {
        check_family(family)?;
    }
    check_quota_room(tenant, context)?;
    let created = Event::ImageCreated(Box::new(NewImage {
        id: context.new_image_id,
        region: context.region.clone(),
        owner: Owner::Tenant(owner.clone()),
        name: create.name.clone(),
        class: ImageClass::Private,
        disk: create.disk,
        source,
        os: create.os.clone(),
        min_disk_gb: create.min_disk_gb,
        size_bytes: None,
        checksum_sha256: None,
        encryption: create.encryption.clone(),
        tags: create.tags.clone(),
        description: create.description.clone(),
        protected: create.protected,
        status: ImageStatus::Queued,
        at_ms: context.now_ms,
    }));
    Ok(with_family(
        created,
        context.new_image_id,
        create.family.clone(),
        create.exclude_from_latest,
        context,
    ))
}

/// A new image's events: its creation, then its family if it has one (an event of its own, so
/// that `image_created` keeps the shape of the first release).
fn with_family(
    created: Event,
    image_id: ImageId,
    family: Option<String>,
    exclude_from_latest: bool,
    context: &Context,
) -> Vec<Event> {
    let mut events = vec![created];
    if family.is_some() || exclude_from_latest {
        events.push(Event::FamilySet {
            image_id,
            family,
            exclude_from_latest,
            at_ms: context.now_ms,
        });
    }
    events
}

/// The source of a new image, each of its fields within its limit.
fn checked_source(create: &CreateImage) -> Result<Source, DomainError> {
    Ok(match &create.source {
        CreateSource::Ecs {
            instance_id,
            data_disk_ids,
        } => {
            check_ascii_id("source.ecs.instance_id", instance_id, INSTANCE_ID_CHARS_MAX)?;
            if data_disk_ids.len() > DATA_DISKS_MAX {
                return Err(DomainError::invalid_argument(format!(
                    "source.ecs.data_disk_ids names {} disks; at most {DATA_DISKS_MAX} are accepted",
                    data_disk_ids.len()
                )));
            }
            for id in data_disk_ids {
                check_ascii_id("source.ecs.data_disk_ids[]", id, DATA_DISK_ID_CHARS_MAX)?;
            }
            Source::Ecs {
                instance_id: instance_id.clone(),
                data_disk_ids: data_disk_ids.clone(),
            }
        }
        CreateSource::Upload { format } => {
            if create.disk == DiskKind::FullEcs {
                return Err(DomainError::invalid_argument(
                    "a full_ecs image is made from an ECS (source.ecs), not from an upload; use \
                     disk \"system\" or \"data\" for an image file",
                ));
            }
            Source::Upload { format: *format }
        }
        CreateSource::File { url, format } => {
            if create.disk == DiskKind::FullEcs {
                return Err(DomainError::invalid_argument(
                    "a full_ecs image is made from an ECS (source.ecs), not from a file; use disk \
                     \"system\" or \"data\" for an image file",
                ));
            }
            check_ascii_id("source.file.url", url, URL_CHARS_MAX)?;
            Source::File {
                url: url.clone(),
                format: *format,
            }
        }
    })
}

pub(super) fn update_image(
    state: &State,
    update: &UpdateImage,
    context: &Context,
) -> Result<Vec<Event>, DomainError> {
    let image = owned_image(state, update.image_id, context)?;
    let policy = context.policy;
    if let Some(name) = &update.name {
        check_name(name, policy)?;
    }
    if let Some(description) = &update.description {
        check_description(description, policy)?;
    }
    if let Some(tags) = &update.tags {
        check_tags(tags, policy)?;
    }
    if let Some(min_disk_gb) = update.min_disk_gb {
        check_min_disk(min_disk_gb, policy)?;
    }
    if let Some(family) = update.family.as_deref().filter(|f| !f.is_empty()) {
        check_family(family)?;
    }
    let updated = update.name.is_some()
        || update.description.is_some()
        || update.tags.is_some()
        || update.min_disk_gb.is_some()
        || update.protected.is_some();
    let regrouped = update.family.is_some() || update.exclude_from_latest.is_some();
    if !updated && !regrouped {
        return Err(DomainError::invalid_argument(
            "update-image changes nothing; give at least one of name, description, tags, \
             min_disk_gb, protected, family, exclude_from_latest",
        ));
    }
    let mut events = Vec::with_capacity(2);
    if regrouped {
        events.push(Event::FamilySet {
            image_id: image.id,
            family: match update.family.as_deref() {
                None => image.family.clone(),
                Some("") => None,
                Some(family) => Some(family.to_owned()),
            },
            exclude_from_latest: update
                .exclude_from_latest
                .unwrap_or(image.exclude_from_latest),
            at_ms: context.now_ms,
        });
    }
    if !updated {
        return Ok(events);
    }
    events.insert(
        0,
        Event::ImageUpdated(Box::new(ImageUpdated {
            image_id: update.image_id,
            name: update.name.clone(),
            description: update.description.clone(),
            tags: update.tags.clone(),
            min_disk_gb: update.min_disk_gb,
            protected: update.protected,
            at_ms: context.now_ms,
        })),
    );
    Ok(events)
}

pub(super) fn publish_public_image(
    publish: &PublishPublicImage,
    context: &Context,
) -> Result<Vec<Event>, DomainError> {
    let policy = context.policy;
    check_name(&publish.name, policy)?;
    check_os(publish.disk, publish.os.as_ref())?;
    check_min_disk(publish.min_disk_gb, policy)?;
    check_tags(&publish.tags, policy)?;
    check_description(&publish.description, policy)?;
    check_checksum(&publish.checksum_sha256)?;
    if publish.disk == DiskKind::FullEcs {
        return Err(DomainError::invalid_argument(
            "public images are system or data disk images; disk \"full_ecs\" is not published",
        ));
    }
    if let Some(family) = &publish.family {
        check_family(family)?;
    }
    let created = Event::ImageCreated(Box::new(NewImage {
        id: context.new_image_id,
        region: context.region.clone(),
        owner: Owner::Platform,
        name: publish.name.clone(),
        class: ImageClass::Public,
        disk: publish.disk,
        source: Source::Published,
        os: publish.os.clone(),
        min_disk_gb: publish.min_disk_gb,
        size_bytes: Some(publish.size_bytes),
        checksum_sha256: Some(publish.checksum_sha256.clone()),
        encryption: None,
        tags: publish.tags.clone(),
        description: publish.description.clone(),
        protected: false,
        status: ImageStatus::Active,
        at_ms: context.now_ms,
    }));
    Ok(with_family(
        created,
        context.new_image_id,
        publish.family.clone(),
        false,
        context,
    ))
}

/// What a build report says besides its outcome.
pub(super) struct BuildFacts<'a> {
    pub(super) checksum_sha256: Option<&'a str>,
    pub(super) file: Option<&'a FileFacts>,
    pub(super) reason: Option<&'a str>,
}

/// File facts come with a succeeded build only, a reason with a failed one only.
fn check_facts_fit(outcome: BuildOutcome, facts: &BuildFacts) -> Result<(), DomainError> {
    if let (Some(_), false) = (
        facts.file,
        matches!(outcome, BuildOutcome::Succeeded { .. }),
    ) {
        return Err(DomainError::invalid_argument(
            "file facts (os_hash_value, detected_format) come with a succeeded build only",
        ));
    }
    if let (Some(_), false) = (facts.reason, outcome == BuildOutcome::Failed) {
        return Err(DomainError::invalid_argument(
            "a reason comes with a failed build only",
        ));
    }
    Ok(())
}

pub(super) fn report_build(
    state: &State,
    image_id: ImageId,
    outcome: BuildOutcome,
    facts: BuildFacts,
    context: &Context,
) -> Result<Vec<Event>, DomainError> {
    let checksum_sha256 = facts.checksum_sha256;
    let image = live_image(state, image_id, context)?;
    let at_ms = context.now_ms;
    let allowed_from: &[ImageStatus] = match outcome {
        BuildOutcome::Started => &[ImageStatus::Queued],
        BuildOutcome::Succeeded { .. } | BuildOutcome::Failed => {
            &[ImageStatus::Queued, ImageStatus::Saving]
        }
    };
    // A build goes on while its image is in the recycle bin: a restore gives back its outcome.
    let status = image
        .recycled
        .map_or(image.status, |recycled| recycled.restores_to);
    if !allowed_from.contains(&status) {
        return Err(DomainError::invalid_state(format!(
            "image {image_id} is {}; a build can be reported only for a queued or saving image",
            status.as_str()
        )));
    }
    check_facts_fit(outcome, &facts)?;
    let mut events = Vec::with_capacity(2);
    if let Some(file) = facts.file {
        check_sha512(&file.sha512)?;
        events.push(Event::FileVerified {
            image_id,
            file: FileFacts {
                sha512: file.sha512.to_ascii_lowercase(),
                ..file.clone()
            },
            at_ms,
        });
    }
    events.push(match outcome {
        BuildOutcome::Started => Event::BuildStarted { image_id, at_ms },
        BuildOutcome::Failed => match facts.reason {
            None => Event::BuildFailed { image_id, at_ms },
            Some(reason) => {
                check_text("reason", reason, FAILURE_REASON_CHARS_MAX)?;
                Event::BuildFailedBecause {
                    image_id,
                    reason: reason.to_owned(),
                    at_ms,
                }
            }
        },
        BuildOutcome::Succeeded { size_bytes } => {
            let checksum = checksum_sha256.ok_or_else(|| {
                DomainError::invalid_argument(
                    "checksum_sha256 is missing; a succeeded build reports the image's SHA-256 \
                     as 64 hex digits",
                )
            })?;
            check_checksum(checksum)?;
            if size_bytes == 0 {
                return Err(DomainError::invalid_argument(
                    "size_bytes is 0; a succeeded build reports the image's size in bytes",
                ));
            }
            Event::BuildSucceeded {
                image_id,
                size_bytes,
                checksum_sha256: checksum.to_ascii_lowercase(),
                at_ms,
            }
        }
    });
    Ok(events)
}

pub(super) fn check_sha512(digest: &str) -> Result<(), DomainError> {
    if digest.len() != 128 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(DomainError::invalid_argument(format!(
            "os_hash_value {} is not a SHA-512 digest; expected 128 hex digits",
            preview(digest)
        )));
    }
    Ok(())
}

/// A tenant's launches of an image move its `last_launched_at` at most once per this long, so
/// that an image started a thousand times an hour does not grow its stream a thousand events
/// (AWS likewise keeps `lastLaunchedTime` to within a day).
pub const LAUNCH_RECORDED_EVERY_MS: u64 = 60 * 60 * 1000;

/// The compute service reports that `tenant` launched an instance or a disk from the image: the
/// tenant must be able to use it for that, as `usable` would have said.
pub(super) fn record_launch(
    state: &State,
    image_id: ImageId,
    tenant: &crate::TenantId,
    context: &Context,
) -> Result<Vec<Event>, DomainError> {
    let launcher = registered(state, tenant, context)?;
    let image = live_image(state, image_id, context)?;
    let purpose = match image.disk {
        DiskKind::Data => crate::Purpose::CreateEvs,
        DiskKind::System | DiskKind::FullEcs => crate::Purpose::CreateEcs,
    };
    let usability = crate::usable(
        &context.region,
        crate::Viewer::of(launcher),
        image_id,
        Some(image),
        purpose,
    );
    if !usability.allowed {
        return Err(DomainError::new(
            ErrorCode::Forbidden,
            format!(
                "tenant {tenant} cannot have launched from image {image_id}: {}",
                usability.reason
            ),
        ));
    }
    if image
        .last_launched_at
        .is_some_and(|at| context.now_ms.saturating_sub(at) < LAUNCH_RECORDED_EVERY_MS)
    {
        return Ok(Vec::new());
    }
    Ok(vec![Event::ImageLaunched {
        image_id,
        tenant: tenant.clone(),
        at_ms: context.now_ms,
    }])
}
