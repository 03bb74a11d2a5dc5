//! Sharing: share, unshare, accept and reject (the seed's sharing rules).

use crate::{
    DiskKind, DomainError, ErrorCode, Event, Image, ImageClass, ImageId, MemberStatus, State,
    TenantId,
};
use std::collections::BTreeSet;

use super::guards::*;
use super::validation::*;
use super::Context;

pub(super) fn share_image(
    state: &State,
    image_id: ImageId,
    tenants: &[TenantId],
    context: &Context,
) -> Result<Vec<Event>, DomainError> {
    let image = owned_image(state, image_id, context)?;
    if tenants.is_empty() {
        return Err(DomainError::invalid_argument(
            "tenants is empty; name at least one tenant id of this region to share with",
        ));
    }
    check_share_targets(tenants)?;
    if image.class != ImageClass::Private {
        let class = if image.class == ImageClass::Marketplace {
            "listed on the Marketplace"
        } else {
            "public"
        };
        return Err(DomainError::new(
            ErrorCode::NotShareable,
            format!("image {image_id} is {class}; only private images can be shared"),
        ));
    }
    check_shareable_kind(image)?;
    if let Some(owner) = image.owner.tenant().filter(|owner| tenants.contains(owner)) {
        return Err(DomainError::invalid_argument(format!(
            "tenant {owner} owns image {image_id}; an image is shared with other tenants only"
        )));
    }
    let unknown: Vec<&str> = tenants
        .iter()
        .filter(|t| !state.tenants.contains_key(*t))
        .map(TenantId::as_str)
        .collect();
    if !unknown.is_empty() {
        return Err(DomainError::new(
            ErrorCode::UnknownTenant,
            format!(
                "tenants not registered in region {}: {}; images can be shared within a region \
                 only, with tenants registered there",
                context.region,
                unknown.join(", ")
            ),
        ));
    }
    let mut new_members: Vec<TenantId> = Vec::new();
    for tenant in tenants {
        if !image.members.contains_key(tenant) && !new_members.contains(tenant) {
            new_members.push(tenant.clone());
        }
    }
    let limit = context.policy.members_per_image_max;
    if image.members.len() + new_members.len() > limit {
        return Err(DomainError::new(
            ErrorCode::ShareLimitExceeded,
            format!(
                "image {image_id} has {} members and this would add {}; an image can have at most \
                 {limit} members (pending, accepted and rejected); unshare some first",
                image.members.len(),
                new_members.len()
            ),
        ));
    }
    if new_members.is_empty() {
        return Ok(vec![]); // Every target is already a member: reported back, nothing to record.
    }
    Ok(vec![Event::ImageShared {
        image_id,
        tenants: new_members,
        at_ms: context.now_ms,
    }])
}

/// `unshare-image`: ends the shares with `tenants`, or with every member.
pub(super) fn unshare_image(
    state: &State,
    image_id: ImageId,
    tenants: Option<&[TenantId]>,
    context: &Context,
) -> Result<Vec<Event>, DomainError> {
    let image = owned_image(state, image_id, context)?;
    if let Some(tenants) = tenants {
        check_share_targets(tenants)?;
    }
    let ending: Vec<TenantId> = match tenants {
        None => image.members.keys().cloned().collect(),
        Some(tenants) => {
            let unique: BTreeSet<&TenantId> = tenants.iter().collect();
            unique
                .into_iter()
                .filter(|t| image.members.contains_key(*t))
                .cloned()
                .collect()
        }
    };
    if ending.is_empty() {
        return Ok(vec![]);
    }
    Ok(vec![Event::ImageUnshared {
        image_id,
        tenants: ending,
        at_ms: context.now_ms,
    }])
}

/// An active image that is neither encrypted nor a full-ECS image (the seed's sharing rules).
fn check_shareable_kind(image: &Image) -> Result<(), DomainError> {
    let image_id = image.id;
    require_active(image, "shared")?;
    if let Some(encryption) = &image.encryption {
        return Err(DomainError::new(
            ErrorCode::EncryptedNotShareable,
            format!(
                "image {image_id} is encrypted with KMS key {:?}, and encrypted images cannot be \
                 shared; share an unencrypted image",
                encryption.kms_key_id
            ),
        ));
    }
    if image.disk == DiskKind::FullEcs {
        return Err(DomainError::new(
            ErrorCode::FullEcsNotShareable,
            format!(
                "image {image_id} is a full-ECS image, and full-ECS images cannot be shared; share \
                 a system or data disk image"
            ),
        ));
    }
    Ok(())
}

pub(super) fn answer_share(
    state: &State,
    image_id: ImageId,
    accept: bool,
    context: &Context,
) -> Result<Vec<Event>, DomainError> {
    let tenant = sending_tenant(context, "accept-share or reject-share")?;
    let image = live_image(state, image_id, context)?;
    let Some(status) = image.members.get(tenant) else {
        return Err(DomainError::new(
            ErrorCode::NotAMember,
            format!(
                "tenant {tenant} is not a member of image {image_id}; only tenants it is shared \
                 with can accept or reject it"
            ),
        ));
    };
    check_expected_version(image, context)?;
    let at_ms = context.now_ms;
    let tenant = tenant.clone();
    Ok(match (accept, status) {
        (true, MemberStatus::Accepted) | (false, MemberStatus::Rejected) => vec![],
        (true, _) => vec![Event::ShareAccepted {
            image_id,
            tenant,
            at_ms,
        }],
        (false, _) => vec![Event::ShareRejected {
            image_id,
            tenant,
            at_ms,
        }],
    })
}
