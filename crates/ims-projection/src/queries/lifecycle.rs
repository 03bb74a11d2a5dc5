//! The queries of the image lifecycle (DESIGN.md section 13): images nobody launched, the
//! recycle bin, and the newest image of a family.

use ims_domain::{access, ImageStatus, TenantId, Viewer};
use ims_wire::views::ImageView;
use ims_wire::{QueryParams, WireError, WireErrorCode};

use super::{entries_after, invalid, limit, load_image, marker, Answer, ImagePage, Models};
use crate::catalog::{family_prefix, organization_key, tenant_key, OWNED};

/// The newest image of a family that `tenant` may use: active, neither deprecated nor excluded
/// from `latest` (GCP's image families, Azure's "latest").
pub(super) fn latest(
    models: &Models,
    viewer: Viewer,
    params: &QueryParams,
) -> Result<Answer, WireError> {
    let tenant = viewer.tenant;
    let family = params.family.as_deref().ok_or_else(|| {
        invalid("latest needs family: the image family whose newest image to answer".into())
    })?;
    ims_domain::check_family(family).map_err(WireError::from)?;
    // Ids in id order, which for UUID v7 ids is creation order: the newest is the last.
    let mut ids = Vec::new();
    let mut prefixes = vec![
        family_prefix(Some(tenant), family),
        family_prefix(None, family),
    ];
    if let Some(organization) = viewer.organization {
        let mut suffix = family.as_bytes().to_vec();
        suffix.push(0);
        prefixes.push(organization_key(b'N', organization, &suffix));
    }
    for prefix in &prefixes {
        for entry in entries_after(models.catalog, prefix, None) {
            ids.push(entry?.0);
        }
    }
    ids.sort_unstable();
    ids.dedup();
    for id in ids.iter().rev() {
        let Some(image) = load_image(models.catalog, id)? else {
            continue;
        };
        if image.status == ImageStatus::Active
            && !image.is_deprecated()
            && !image.exclude_from_latest
            && access(&image, viewer).is_some()
        {
            return Ok(Answer::Image(Box::new(ImageView::new(
                &image,
                Some(tenant),
            ))));
        }
    }
    Err(WireError::new(
        WireErrorCode::NotFound,
        format!(
            "family {family} has no image that tenant {tenant} may use: none of its {} images \
             it sees is active, not deprecated and not excluded from latest",
            ids.len()
        ),
    ))
}

/// The tenant's images in its recycle bin, each with its `purge_at`.
pub(super) fn recycle_bin(
    models: &Models,
    tenant: &TenantId,
    params: &QueryParams,
) -> Result<Answer, WireError> {
    let mut page = ImagePage::new(limit(params)?, models.reply_bytes_max);
    for entry in entries_after(
        models.catalog,
        &tenant_key(b'b', tenant, &[]),
        marker(params)?.as_ref(),
    ) {
        let (id, _) = entry?;
        let Some(image) = load_image(models.catalog, &id)? else {
            continue;
        };
        if !page.add(&image, tenant) {
            break;
        }
    }
    Ok(page.answer(models.position))
}

/// The most days `unused-images` looks back: ten years.
const UNUSED_DAYS_MAX: u32 = 3650;

/// The tenant's own images not launched in `days` days (never launched included), for clean-up.
pub(super) fn unused_images(
    models: &Models,
    tenant: &TenantId,
    params: &QueryParams,
) -> Result<Answer, WireError> {
    let days = params.days.ok_or_else(|| {
        invalid(format!(
            "unused-images needs days: images not launched in that many days (1 to {UNUSED_DAYS_MAX})"
        ))
    })?;
    if !(1..=UNUSED_DAYS_MAX).contains(&days) {
        return Err(invalid(format!(
            "days {days} is out of range; expected 1 to {UNUSED_DAYS_MAX}"
        )));
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let since_ms = now_ms.saturating_sub(u64::from(days) * 24 * 60 * 60 * 1000);
    let limit = limit(params)?;
    let marker = marker(params)?;
    let mut page = ImagePage::new(limit, models.reply_bytes_max);
    for entry in entries_after(
        models.catalog,
        &tenant_key(b'v', tenant, &[]),
        marker.as_ref(),
    ) {
        let (id, value) = entry?;
        if value != OWNED {
            continue; // an accepted share: not the tenant's to clean up
        }
        let Some(image) = load_image(models.catalog, &id)? else {
            continue;
        };
        if image.last_launched_at.is_some_and(|at| at >= since_ms) {
            continue;
        }
        if !page.add(&image, tenant) {
            break;
        }
    }
    Ok(page.answer(models.position))
}
