//! The Marketplace: listing, delisting and the usage it charges.

use crate::limits::*;
use crate::{DomainError, ErrorCode, Event, ImageClass, ImageId, Listing, Price, State, TenantId};

use super::guards::*;
use super::validation::*;
use super::Context;

pub(super) fn list_on_marketplace(
    state: &State,
    image_id: ImageId,
    publisher: &str,
    price: &Price,
    context: &Context,
) -> Result<Vec<Event>, DomainError> {
    let image = owned_image(state, image_id, context)?;
    if image.class == ImageClass::Public {
        return Err(DomainError::new(
            ErrorCode::NotShareable,
            format!("image {image_id} is public; only private images are listed"),
        ));
    }
    require_active(image, "listed on the Marketplace")?;
    if image.encryption.is_some() {
        return Err(DomainError::new(
            ErrorCode::EncryptedNotShareable,
            format!(
                "image {image_id} is encrypted; encrypted images cannot be listed on the \
                 Marketplace"
            ),
        ));
    }
    if !image.members.is_empty() {
        return Err(DomainError::invalid_state(format!(
            "image {image_id} is shared with {} tenants; a Marketplace image has no members, so \
             stop sharing it (unshare-image all) before listing it",
            image.members.len()
        )));
    }
    check_text("publisher", publisher, PUBLISHER_CHARS_MAX)?;
    if publisher.trim().is_empty() {
        return Err(DomainError::invalid_argument(
            "publisher is blank; give the name the Marketplace shows, 1 to 64 characters",
        ));
    }
    if let Price::PerHour {
        amount_minor,
        currency,
    } = price
    {
        if *amount_minor == 0 || *amount_minor > PRICE_MINOR_PER_HOUR_MAX {
            return Err(DomainError::invalid_argument(format!(
                "price.amount_minor {amount_minor} is out of range; a per_hour price is 1 to \
                 {PRICE_MINOR_PER_HOUR_MAX} minor units, or use model \"free\""
            )));
        }
        if !currency.0.iter().all(u8::is_ascii_uppercase) {
            return Err(DomainError::invalid_argument(format!(
                "price.currency {:?} is not an ISO 4217 code; expected three upper-case letters \
                 such as \"USD\"",
                String::from_utf8_lossy(&currency.0)
            )));
        }
    }
    let listing = Listing {
        publisher: publisher.to_owned(),
        price: price.clone(),
    };
    Ok(vec![Event::ListedOnMarketplace {
        image_id,
        listing,
        at_ms: context.now_ms,
    }])
}

/// `delist-from-marketplace`: the owner takes a listed image off the Marketplace.
pub(super) fn delist_from_marketplace(
    state: &State,
    image_id: ImageId,
    context: &Context,
) -> Result<Vec<Event>, DomainError> {
    let image = owned_image(state, image_id, context)?;
    if image.class != ImageClass::Marketplace {
        return Err(DomainError::invalid_state(format!(
            "image {image_id} is not listed on the Marketplace; only a listed image can \
             be delisted"
        )));
    }
    Ok(vec![Event::DelistedFromMarketplace {
        image_id,
        at_ms: context.now_ms,
    }])
}

pub(super) fn record_usage(
    state: &State,
    image_id: ImageId,
    tenant: &TenantId,
    hours: u32,
    context: &Context,
) -> Result<Vec<Event>, DomainError> {
    registered(state, tenant, context)?;
    let image = live_image(state, image_id, context)?;
    let Some(listing) = image
        .listing
        .as_ref()
        .filter(|_| image.class == ImageClass::Marketplace)
    else {
        return Err(DomainError::invalid_state(format!(
            "image {image_id} is not listed on the Marketplace; usage is recorded for \
             Marketplace images only"
        )));
    };
    if hours == 0 || hours > USAGE_HOURS_MAX {
        return Err(DomainError::invalid_argument(format!(
            "hours {hours} is out of range; one usage record holds 1 to {USAGE_HOURS_MAX} hours"
        )));
    }
    let (charge_minor, currency) = match &listing.price {
        Price::Free => (0, None),
        Price::PerHour {
            amount_minor,
            currency,
        } => {
            let charge = amount_minor.checked_mul(u64::from(hours)).ok_or_else(|| {
                DomainError::invalid_argument(format!(
                    "{hours} hours at {amount_minor} minor units an hour is more than a charge \
                     can hold"
                ))
            })?;
            let total = state
                .tenants
                .get(tenant)
                .and_then(|t| t.charges_minor.get(currency.as_str()))
                .copied()
                .unwrap_or(0);
            if total.checked_add(charge).is_none() {
                return Err(DomainError::invalid_argument(format!(
                    "tenant {tenant}'s {} total is {total} minor units; {charge} more would \
                     exceed what a total can hold ({}); settle the ledger first",
                    currency.as_str(),
                    u64::MAX
                )));
            }
            (charge, Some(currency.as_str().to_owned()))
        }
    };
    Ok(vec![Event::UsageRecorded {
        tenant: tenant.clone(),
        image_id,
        hours,
        charge_minor,
        currency,
        at_ms: context.now_ms,
    }])
}
