//! Deprecation (DESIGN.md section 13): an owner, or the operator for a public image, sets the
//! image's state and replacement and schedules its transitions; the scheduler carries each out
//! when its time comes, if it is still scheduled.

use crate::limits::SCHEDULE_AHEAD_MS_MAX;
use crate::{
    access, DeprecateImage, Deprecation, DeprecationState, DomainError, ErrorCode, Event, Image,
    ImageClass, ImageStatus, MemberStatus, ScheduledTransition, State, Transition,
};

use super::guards::*;
use super::Context;

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
    match owner
        .chain(members)
        .find(|tenant| access(replacement, tenant).is_none())
    {
        None => Ok(()),
        Some(blind) => Err(DomainError::invalid_argument(format!(
            "tenant {blind} can see image {} but not replacement {replacement_id}; share the \
             replacement with it first, or name an image it can see",
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
    let deprecation = &image.deprecation;
    let scheduled_at = match scheduled.transition {
        Transition::Obsolete => deprecation.obsolete_at_ms,
        Transition::Delete => deprecation.delete_at_ms,
    };
    if scheduled_at != Some(scheduled.due_ms) {
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
                ..deprecation.clone()
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
        Transition::Delete => Ok(vec![Event::ImageDeleted {
            image_id: image.id,
            at_ms: context.now_ms,
        }]),
    }
}

/// Unix milliseconds as RFC 3339 UTC, for messages (the domain reads no clock and has no time
/// library; the civil date is Howard Hinnant's `civil_from_days`).
pub(crate) fn utc(unix_ms: u64) -> String {
    let days = (unix_ms / 86_400_000) as i64;
    let of_day = unix_ms % 86_400_000;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3_600_000,
        of_day / 60_000 % 60,
        of_day / 1000 % 60,
        of_day % 1000
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_prints_the_civil_time() {
        assert_eq!(super::utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::utc(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(super::utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
