//! Finding what a command names, and the guards every rule shares: who owns it, is it live,
//! active, at the expected version, is there room in the quota.

use crate::{
    DomainError, ErrorCode, Image, ImageId, ImageStatus, Owner, SharingPolicy, State, Tenant,
    TenantId,
};

use super::{Actor, Context};

pub(super) fn not_found(image_id: ImageId, context: &Context) -> DomainError {
    DomainError::new(
        ErrorCode::NotFound,
        format!(
            "image {image_id} does not exist in region {}",
            context.region
        ),
    )
}

/// The image, if it exists and is not deleted. In a recycle bin, it is deleted for every
/// tenant but its owner.
pub(super) fn live_image<'s>(
    state: &'s State,
    image_id: ImageId,
    context: &Context,
) -> Result<&'s Image, DomainError> {
    let image = state
        .images
        .get(&image_id)
        .ok_or_else(|| not_found(image_id, context))?;
    let deleted = match (&context.actor, image.status) {
        (_, ImageStatus::Deleted) => true,
        (Actor::Tenant(tenant), ImageStatus::Recycled) => !image.is_owned_by(tenant),
        _ => false,
    };
    if deleted {
        return Err(DomainError::new(
            ErrorCode::NotFound,
            format!("image {image_id} was deleted in region {}", context.region),
        ));
    }
    Ok(image)
}

/// The image, if the actor may change it (rule 1) and it is not in the recycle bin.
pub(super) fn owned_image<'s>(
    state: &'s State,
    image_id: ImageId,
    context: &Context,
) -> Result<&'s Image, DomainError> {
    let image = owned_image_even_recycled(state, image_id, context)?;
    if let Some(recycled) = &image.recycled {
        return Err(DomainError::invalid_state(format!(
            "image {image_id} is in the recycle bin until {}; restore it first (restore-image)",
            crate::time::utc(recycled.purge_at_ms)
        )));
    }
    Ok(image)
}

/// The image, if the actor may change it (rule 1): a tenant its own, the operator public ones;
/// in the recycle bin or not.
pub(super) fn owned_image_even_recycled<'s>(
    state: &'s State,
    image_id: ImageId,
    context: &Context,
) -> Result<&'s Image, DomainError> {
    let image = live_image(state, image_id, context)?;
    let may_change = match (&context.actor, &image.owner) {
        (Actor::Tenant(tenant), _) => image.is_owned_by(tenant),
        (Actor::Operator, owner) => *owner == Owner::Platform,
        // It sends only its own transitions, which check the image's schedule instead.
        (Actor::Scheduler, _) => false,
    };
    if !may_change {
        return Err(DomainError::new(
            ErrorCode::Forbidden,
            format!(
                "{} does not own image {image_id}; only its owner can change, delete, share, \
                 copy or list it",
                context.actor
            ),
        ));
    }
    check_expected_version(image, context)?;
    Ok(image)
}

pub(super) fn check_expected_version(image: &Image, context: &Context) -> Result<(), DomainError> {
    match context.expected_version {
        Some(expected) if expected != image.version => Err(DomainError::new(
            ErrorCode::Conflict,
            format!(
                "image {} is at version {}, not the expected_version {expected}; read it again \
                 and retry with version {}",
                image.id, image.version, image.version
            ),
        )),
        _ => Ok(()),
    }
}

pub(super) fn require_active(image: &Image, verb: &str) -> Result<(), DomainError> {
    if image.status != ImageStatus::Active {
        return Err(DomainError::invalid_state(format!(
            "image {} is {}; only an active image can be {verb}",
            image.id,
            image.status.as_str()
        )));
    }
    Ok(())
}

pub(super) fn registered<'s>(
    state: &'s State,
    tenant: &TenantId,
    context: &Context,
) -> Result<&'s Tenant, DomainError> {
    state.tenants.get(tenant).ok_or_else(|| {
        DomainError::new(
            ErrorCode::UnknownTenant,
            format!(
                "tenant {tenant} is not registered in region {}; an operator registers tenants \
                 with register-tenant",
                context.region
            ),
        )
    })
}

pub(super) fn check_quota_room(tenant: &Tenant, context: &Context) -> Result<(), DomainError> {
    if tenant.owned_private_images >= tenant.quota {
        return Err(DomainError::new(
            ErrorCode::QuotaExceeded,
            format!(
                "tenant {} owns {} private images in region {} and its quota is {}; delete an \
                 image or ask the operator to raise the quota",
                tenant.id, tenant.owned_private_images, context.region, tenant.quota
            ),
        ));
    }
    Ok(())
}

pub(super) fn check_quota(quota: u32, policy: &SharingPolicy) -> Result<(), DomainError> {
    if quota > policy.quota_max {
        return Err(DomainError::invalid_argument(format!(
            "quota {quota} is too large; expected 0 to {}",
            policy.quota_max
        )));
    }
    Ok(())
}

/// The tenant sending a tenant command. `decide` lets only tenants send them, so the refusal is
/// a second line of defence rather than a panic on outside input.
pub(super) fn sending_tenant<'c>(
    context: &'c Context,
    command: &str,
) -> Result<&'c TenantId, DomainError> {
    match &context.actor {
        Actor::Tenant(tenant) => Ok(tenant),
        Actor::Operator | Actor::Scheduler => Err(DomainError::new(
            ErrorCode::Forbidden,
            format!("{command} is a tenant command; send it on a tenant's subject"),
        )),
    }
}
