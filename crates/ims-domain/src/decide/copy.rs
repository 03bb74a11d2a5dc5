//! Copies across regions: the request in the source, the copy in the target, the outcome.

use crate::limits::*;
use crate::{
    CopyOutcome, CopySpec, CopyStatus, DomainError, ErrorCode, Event, ImageClass, ImageId,
    ImageStatus, NewImage, Owner, ReceiveCopy, RegionId, Source, State,
};

use super::guards::*;
use super::validation::*;
use super::Context;

/// `copy-image`: the owner asks for a copy of an active, unencrypted image in another region.
pub(super) fn copy_image(
    state: &State,
    image_id: ImageId,
    target_region: &RegionId,
    name: Option<&str>,
    context: &Context,
) -> Result<Vec<Event>, DomainError> {
    let image = owned_image(state, image_id, context)?;
    require_active(image, "copied")?;
    if let Some(encryption) = &image.encryption {
        return Err(DomainError::new(
            ErrorCode::EncryptedNotCopyable,
            format!(
                "image {image_id} is encrypted with KMS key {:?}, and encrypted images \
                 cannot be copied across regions; copy an unencrypted image",
                encryption.kms_key_id
            ),
        ));
    }
    if *target_region == context.region {
        return Err(DomainError::invalid_argument(format!(
            "target_region {target_region:?} is the image's own region; name another \
             region to copy to"
        )));
    }
    if let Some(name) = name {
        check_name(name, context.policy)?;
    }
    // `owned_image` gives a tenant its own images only, so the owner is that tenant.
    let Owner::Tenant(owner) = image.owner.clone() else {
        return Err(DomainError::new(
            ErrorCode::Forbidden,
            format!("image {image_id} belongs to no tenant; only a tenant's image is copied"),
        ));
    };
    Ok(vec![Event::CopyRequested {
        image_id,
        copy_image_id: context.new_image_id,
        target_region: target_region.clone(),
        copy: Box::new(CopySpec {
            owner,
            name: name.map_or_else(|| image.name.clone(), str::to_owned),
            disk: image.disk,
            os: image.os.clone(),
            min_disk_gb: image.min_disk_gb,
            tags: image.tags.clone(),
            description: image.description.clone(),
        }),
        at_ms: context.now_ms,
    }])
}

pub(super) fn receive_copy(
    state: &State,
    copy: &ReceiveCopy,
    context: &Context,
) -> Result<Vec<Event>, DomainError> {
    if state.images.contains_key(&copy.copy_image_id) {
        return Err(DomainError::invalid_state(format!(
            "image {} already exists in region {}; a copy is received once",
            copy.copy_image_id, context.region
        )));
    }
    if copy.source_region == context.region {
        return Err(DomainError::invalid_argument(format!(
            "source_region {} is this region; a copy comes from another region",
            copy.source_region
        )));
    }
    let tenant = state.tenants.get(&copy.owner).ok_or_else(|| {
        DomainError::new(
            ErrorCode::UnknownTenant,
            format!(
                "tenant {} is not registered in region {}; register it there before copying \
                 images to it",
                copy.owner, context.region
            ),
        )
    })?;
    check_name(&copy.name, context.policy)?;
    check_quota_room(tenant, context)?;
    Ok(vec![Event::ImageCreated(Box::new(NewImage {
        id: copy.copy_image_id,
        region: context.region.clone(),
        owner: Owner::Tenant(copy.owner.clone()),
        name: copy.name.clone(),
        class: ImageClass::Private,
        disk: copy.disk,
        source: Source::Copy {
            region: copy.source_region.clone(),
            image_id: copy.source_image_id,
        },
        os: copy.os.clone(),
        min_disk_gb: copy.min_disk_gb,
        size_bytes: None,
        checksum_sha256: None,
        encryption: None,
        tags: copy.tags.clone(),
        description: copy.description.clone(),
        protected: false,
        // The bits are in transfer: the copy is usable once the transfer reports success.
        status: ImageStatus::Saving,
        at_ms: context.now_ms,
    }))])
}

// --- shared checks ---------------------------------------------------------------------------

/// `record-copy-outcome`: the copy saga records how a copy ended, once.
pub(super) fn record_copy_outcome(
    state: &State,
    image_id: ImageId,
    copy_image_id: ImageId,
    outcome: &CopyOutcome,
    context: &Context,
) -> Result<Vec<Event>, DomainError> {
    let image = state
        .images
        .get(&image_id)
        .ok_or_else(|| not_found(image_id, context))?;
    let Some(record) = image
        .copies
        .iter()
        .find(|c| c.copy_image_id == copy_image_id)
    else {
        return Err(DomainError::new(
            ErrorCode::NotFound,
            format!("image {image_id} has no copy request for copy {copy_image_id}"),
        ));
    };
    if record.status != CopyStatus::Requested {
        return Ok(vec![]); // Already recorded: a saga redelivery, nothing to add.
    }
    let status = match outcome {
        CopyOutcome::Delivered => CopyStatus::Delivered,
        CopyOutcome::Failed { reason } => {
            check_text("outcome.reason", reason, FAILURE_REASON_CHARS_MAX)?;
            CopyStatus::Failed {
                reason: reason.clone(),
            }
        }
    };
    Ok(vec![Event::CopyFinished {
        image_id,
        copy_image_id,
        status,
        at_ms: context.now_ms,
    }])
}
