//! Sharing: share, unshare, accept and reject (the seed's sharing rules).

use crate::limits::SHARE_TARGETS_MAX;
use crate::{
    DiskKind, DomainError, ErrorCode, Event, Image, ImageClass, ImageId, MemberStatus,
    OrganizationId, State, TenantId,
};
use std::collections::BTreeSet;

use super::guards::*;
use super::validation::*;
use super::Context;

pub(super) fn share_image(
    state: &State,
    image_id: ImageId,
    tenants: &[TenantId],
    organizations: &[OrganizationId],
    context: &Context,
) -> Result<Vec<Event>, DomainError> {
    let image = owned_image(state, image_id, context)?;
    if tenants.is_empty() && organizations.is_empty() {
        return Err(DomainError::invalid_argument(
            "tenants and organizations are empty; name at least one tenant id of this region \
             or one organization to share with",
        ));
    }
    check_share_targets(tenants)?;
    check_organization_targets(organizations)?;
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
    let new_members = new_members(state, image, tenants, context)?;
    let new_organizations = distinct(organizations, |o| !image.organizations.contains(o));
    // An organization counts as one member, however many tenants it has.
    let limit = context.policy.members_per_image_max;
    let members = image.members.len() + image.organizations.len();
    let adding = new_members.len() + new_organizations.len();
    if members + adding > limit {
        return Err(DomainError::new(
            ErrorCode::ShareLimitExceeded,
            format!(
                "image {image_id} has {members} members and this would add {adding}; an image can \
                 have at most {limit} members (tenants pending, accepted and rejected, and \
                 organizations, one each); unshare some first"
            ),
        ));
    }
    // Targets that are members already are reported back; nothing is recorded for them.
    let mut events = Vec::new();
    if !new_members.is_empty() {
        events.push(Event::ImageShared {
            image_id,
            tenants: new_members,
            at_ms: context.now_ms,
        });
    }
    if !new_organizations.is_empty() {
        events.push(Event::ImageSharedWithOrganizations {
            image_id,
            organizations: new_organizations,
            at_ms: context.now_ms,
        });
    }
    Ok(events)
}

/// The tenants a share adds: registered tenants of the region other than the owner, not members
/// already.
fn new_members(
    state: &State,
    image: &Image,
    tenants: &[TenantId],
    context: &Context,
) -> Result<Vec<TenantId>, DomainError> {
    let image_id = image.id;
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
    Ok(new_members)
}

/// The organizations of `named` that `keep` keeps, each once, in order.
fn distinct(
    named: &[OrganizationId],
    keep: impl Fn(&OrganizationId) -> bool,
) -> Vec<OrganizationId> {
    let kept: BTreeSet<&OrganizationId> = named.iter().filter(|o| keep(o)).collect();
    kept.into_iter().cloned().collect()
}

fn check_organization_targets(organizations: &[OrganizationId]) -> Result<(), DomainError> {
    if organizations.len() > SHARE_TARGETS_MAX {
        return Err(DomainError::invalid_argument(format!(
            "{} organizations named; one command names at most {SHARE_TARGETS_MAX}",
            organizations.len()
        )));
    }
    Ok(())
}

/// `unshare-image`: ends the shares with `tenants` and `organizations`, or with every member
/// and organization.
pub(super) fn unshare_image(
    state: &State,
    image_id: ImageId,
    tenants: Option<&[TenantId]>,
    organizations: &[OrganizationId],
    context: &Context,
) -> Result<Vec<Event>, DomainError> {
    let image = owned_image(state, image_id, context)?;
    if let Some(tenants) = tenants {
        check_share_targets(tenants)?;
    }
    check_organization_targets(organizations)?;
    let ending_organizations: Vec<OrganizationId> = match tenants {
        None => image.organizations.iter().cloned().collect(),
        Some(_) => distinct(organizations, |o| image.organizations.contains(o)),
    };
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
    let mut events = Vec::new();
    if !ending.is_empty() {
        events.push(Event::ImageUnshared {
            image_id,
            tenants: ending,
            at_ms: context.now_ms,
        });
    }
    if !ending_organizations.is_empty() {
        events.push(Event::ImageUnsharedFromOrganizations {
            image_id,
            organizations: ending_organizations,
            at_ms: context.now_ms,
        });
    }
    Ok(events)
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
