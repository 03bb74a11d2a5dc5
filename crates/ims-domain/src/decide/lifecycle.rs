//! The image lifecycle of DESIGN.md section 13: deprecation (an owner, or the operator for a
//! public image, sets the image's state and replacement and schedules its transitions), the
//! recycle bin (a tenant's delete recycles, restore brings the image back), and the scheduler's
//! transitions, each carried out when its time comes if the image still has it scheduled.

use crate::limits::SCHEDULE_AHEAD_MS_MAX;
use crate::time::utc;
use crate::{
    access, DeprecateImage, Deprecation, DeprecationState, DomainError, ErrorCode, Event, Image,
    ImageClass, ImageId, ImageStatus, MemberStatus, Owner, ScheduledTransition, State, Transition,
    Viewer,
};

use super::guards::*;
use super::{Actor, Context};

/// `delete-image`: by the owner, unless the image is protected. A tenant's image goes to its
/// recycle bin for the tenant's retention; one already there, and a public image, are deleted
/// for good.
pub(super) fn delete_image(
    state: &State,
    image_id: ImageId,
    context: &Context,
) -> Result<Vec<Event>, DomainError> {
    let image = owned_image_even_recycled(state, image_id, context)?;
    if image.protected {
        return Err(DomainError::new(
            ErrorCode::Protected,
            format!(
                "image {image_id} is protected and cannot be deleted; update it with \
                 protected=false first"
            ),
        ));
    }
    if image.status == ImageStatus::Recycled || !matches!(context.actor, Actor::Tenant(_)) {
        return Ok(vec![Event::ImageDeleted {
            image_id,
            at_ms: context.now_ms,
        }]);
    }
    Ok(vec![recycle(state, image, context)])
}

/// The image into its owner's recycle bin, for the owner's retention.
fn recycle(state: &State, image: &Image, context: &Context) -> Event {
    let policy = context.policy;
    let days = match &image.owner {
        Owner::Tenant(owner) => state.tenants.get(owner).and_then(|t| t.retention_days),
        Owner::Platform => None,
    }
    .unwrap_or(policy.retention_days_default);
    Event::ImageRecycled {
        image_id: image.id,
        purge_at_ms: context
            .now_ms
            .saturating_add(u64::from(days).saturating_mul(policy.retention_day_ms)),
        at_ms: context.now_ms,
    }
}

/// `restore-image`: the owner takes an image out of its recycle bin before it is purged.
pub(super) fn restore_image(
    state: &State,
    image_id: ImageId,
    context: &Context,
) -> Result<Vec<Event>, DomainError> {
    let image = owned_image_even_recycled(state, image_id, context)?;
    let Some(recycled) = &image.recycled else {
        return Err(DomainError::invalid_state(format!(
            "image {image_id} is not in the recycle bin (status {}); only a deleted image is \
             restored",
            image.status.as_str()
        )));
    };
    if context.now_ms >= recycled.purge_at_ms {
        return Err(DomainError::invalid_state(format!(
            "image {image_id} was due to be purged at {}; it can no longer be restored",
            utc(recycled.purge_at_ms)
        )));
    }
    Ok(vec![Event::ImageRestored {
        image_id,
        at_ms: context.now_ms,
    }])
}

pub(super) fn deprecate_image(
    state: &State,
    deprecate: &DeprecateImage,
    context: &Context,
) -> Result<Vec<Event>, DomainError> {
    let image = owned_image(state, deprecate.image_id, context)?;
    check_replacement(state, image, deprecate)?;
    check_schedule(image, deprecate, context)?;
    let deprecation = Deprecation {
        state: deprecate.state,
        replacement: deprecate.replacement,
        obsolete_at_ms: deprecate.obsolete_at_ms,
        delete_at_ms: deprecate.delete_at_ms,
    };
    if deprecation == image.deprecation {
        return Ok(Vec::new());
    }
    Ok(vec![Event::DeprecationSet {
        image_id: image.id,
        deprecation,
        at_ms: context.now_ms,
    }])
}

/// The replacement must be another live image, not obsolete, that every tenant who can see the
/// deprecated image can see too: otherwise `usable` would point them at an image they cannot use.
fn check_replacement(
    state: &State,
    image: &Image,
    deprecate: &DeprecateImage,
) -> Result<(), DomainError> {
    let Some(replacement_id) = deprecate.replacement else {
        return Ok(());
    };
    if deprecate.state == DeprecationState::Active {
        return Err(DomainError::invalid_argument(format!(
            "an active image has no replacement; give state \"deprecated\" or \"obsolete\" with \
             replacement {replacement_id}, or leave replacement out"
        )));
    }
    if replacement_id == image.id {
        return Err(DomainError::invalid_argument(format!(
            "image {replacement_id} cannot replace itself; name another image"
        )));
    }
    let Some(replacement) = state
        .images
        .get(&replacement_id)
        .filter(|r| r.status != ImageStatus::Deleted)
    else {
        return Err(DomainError::new(
            ErrorCode::NotFound,
            format!(
                "replacement {replacement_id} does not exist in region {}; name a live image",
                image.region
            ),
        ));
    };
    if replacement.deprecation.state == DeprecationState::Obsolete {
        return Err(DomainError::new(
            ErrorCode::InvalidState,
            format!("replacement {replacement_id} is obsolete itself; name an image in use"),
        ));
    }
    let seen_by_everyone =
        |i: &Image| matches!(i.class, ImageClass::Public | ImageClass::Marketplace);
    if seen_by_everyone(image) {
        if seen_by_everyone(replacement) {
            return Ok(());
        }
        return Err(DomainError::invalid_argument(format!(
            "replacement {replacement_id} is private, but every tenant can see image {}; name a \
             public or Marketplace image",
            image.id
        )));
    }
    let owner = image.owner.tenant().into_iter();
    let members = image
        .members
        .iter()
        .filter(|(_, status)| **status == MemberStatus::Accepted)
        .map(|(tenant, _)| tenant);
    if let Some(blind) = owner
        .chain(members)
        .find(|tenant| access(replacement, Viewer::alone(tenant)).is_none())
    {
        return Err(DomainError::invalid_argument(format!(
            "tenant {blind} can see image {} but not replacement {replacement_id}; share the \
             replacement with it first, or name an image it can see",
            image.id
        )));
    }
    match image
        .organizations
        .iter()
        .find(|organization| !replacement.organizations.contains(*organization))
    {
        None => Ok(()),
        Some(blind) => Err(DomainError::invalid_argument(format!(
            "organization {blind} can see image {} but not replacement {replacement_id}; \
             share the replacement with it first, or name an image it can see",
            image.id
        ))),
    }
}

/// Scheduled times lie in the future (at most ten years ahead), the deletion not before the
/// obsolescence, and a protected image is not scheduled for a deletion that would be refused.
fn check_schedule(
    image: &Image,
    deprecate: &DeprecateImage,
    context: &Context,
) -> Result<(), DomainError> {
    let latest = context.now_ms.saturating_add(SCHEDULE_AHEAD_MS_MAX);
    for (field, at) in [
        ("obsolete_at", deprecate.obsolete_at_ms),
        ("delete_at", deprecate.delete_at_ms),
    ] {
        let Some(at) = at else { continue };
        if at <= context.now_ms || at > latest {
            return Err(DomainError::invalid_argument(format!(
                "{field} {} is not between now ({}) and ten years from now ({})",
                utc(at),
                utc(context.now_ms),
                utc(latest)
            )));
        }
    }
    if let (DeprecationState::Obsolete, Some(at)) = (deprecate.state, deprecate.obsolete_at_ms) {
        return Err(DomainError::invalid_argument(format!(
            "obsolete_at {} schedules what state \"obsolete\" already is; leave one out",
            utc(at)
        )));
    }
    if let (Some(obsolete), Some(delete)) = (deprecate.obsolete_at_ms, deprecate.delete_at_ms) {
        if delete < obsolete {
            return Err(DomainError::invalid_argument(format!(
                "delete_at {} comes before obsolete_at {}; an image is deleted at or after it \
                 becomes obsolete",
                utc(delete),
                utc(obsolete)
            )));
        }
    }
    if deprecate.delete_at_ms.is_some() && image.protected {
        return Err(DomainError::new(
            ErrorCode::Protected,
            format!(
                "image {} is protected, so its scheduled deletion would be refused; update it \
                 with protected=false first",
                image.id
            ),
        ));
    }
    Ok(())
}

/// A transition whose time has come, if the image still has it scheduled for then.
pub(super) fn carry_out(
    state: &State,
    scheduled: &ScheduledTransition,
    context: &Context,
) -> Result<Vec<Event>, DomainError> {
    let image = live_image(state, scheduled.image_id, context)?;
    if !image
        .scheduled()
        .contains(&(scheduled.due_ms, scheduled.transition))
    {
        return Err(DomainError::new(
            ErrorCode::InvalidState,
            format!(
                "image {} has no {} scheduled at {}; its schedule changed since",
                image.id,
                scheduled.transition.as_str(),
                utc(scheduled.due_ms)
            ),
        ));
    }
    if context.now_ms < scheduled.due_ms {
        return Err(DomainError::new(
            ErrorCode::InvalidState,
            format!(
                "the {} of image {} is not due until {} (now {})",
                scheduled.transition.as_str(),
                image.id,
                utc(scheduled.due_ms),
                utc(context.now_ms)
            ),
        ));
    }
    match scheduled.transition {
        Transition::Obsolete => Ok(vec![Event::DeprecationSet {
            image_id: image.id,
            deprecation: Deprecation {
                state: DeprecationState::Obsolete,
                obsolete_at_ms: None,
                ..image.deprecation.clone()
            },
            at_ms: context.now_ms,
        }]),
        Transition::Delete if image.protected => Err(DomainError::new(
            ErrorCode::Protected,
            format!(
                "image {} is protected; its scheduled deletion is not carried out",
                image.id
            ),
        )),
        // As its owner's delete-image: a tenant's image goes to the recycle bin first.
        Transition::Delete if image.owner != Owner::Platform => {
            Ok(vec![recycle(state, image, context)])
        }
        Transition::Delete | Transition::Purge => Ok(vec![Event::ImageDeleted {
            image_id: image.id,
            at_ms: context.now_ms,
        }]),
    }
}
