//! Readable sentences about events.

use ims_domain::{
    CopyStatus, DiskKind, Event, ImageClass, OrganizationId, Price, Source, TenantId,
};
use ims_log::{decode_event, Envelope};

/// A readable line about an event.
pub fn summary(envelope: &Envelope) -> String {
    match decode_event(envelope) {
        Ok(event) => describe(&event),
        Err(error) => format!("undecodable event: {error}"),
    }
}

/// Names separated by commas.
fn list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.collect::<Vec<_>>().join(", ")
}

/// A sentence about an event for people reading history.
pub fn describe(event: &Event) -> String {
    match event {
        Event::TenantRegistered { tenant, quota } => {
            format!("tenant {tenant} registered with quota {quota}")
        }
        Event::QuotaSet { tenant, quota } => format!("quota of tenant {tenant} set to {quota}"),
        Event::TenantJoinedOrganization {
            tenant,
            organization,
        } => format!("tenant {tenant} belongs to organization {organization}"),
        Event::ImageCreated(new) => describe_created(new),
        Event::ImageUpdated(update) => format!("image {} updated", update.image_id),
        Event::BuildStarted { image_id, .. } => format!("build of image {image_id} started"),
        Event::BuildSucceeded {
            image_id,
            size_bytes,
            ..
        } => format!("build of image {image_id} succeeded ({size_bytes} bytes)"),
        Event::BuildFailed { image_id, .. } => format!("build of image {image_id} failed"),
        Event::BuildFailedBecause {
            image_id, reason, ..
        } => format!("build of image {image_id} failed: {reason}"),
        Event::ImageLaunched {
            image_id, tenant, ..
        } => format!("tenant {tenant} launched from image {image_id}"),
        Event::FileVerified { image_id, file, .. } => format!(
            "file of image {image_id} verified: {}, sha512 {}",
            file.detected_format.as_str(),
            file.sha512
        ),
        Event::ImageDeleted { image_id, .. } => format!("image {image_id} deleted"),
        Event::ImageRecycled { .. }
        | Event::ImageRestored { .. }
        | Event::RetentionSet { .. }
        | Event::FamilySet { .. }
        | Event::DeprecationSet { .. }
        | Event::ImageDeprecated { .. } => describe_lifecycle(event),
        Event::ImageShared { .. }
        | Event::ImageUnshared { .. }
        | Event::ShareAccepted { .. }
        | Event::ShareRejected { .. }
        | Event::ListedOnMarketplace { .. }
        | Event::DelistedFromMarketplace { .. }
        | Event::CopyRequested { .. }
        | Event::CopyFinished { .. }
        | Event::ImageSharedWithOrganizations { .. }
        | Event::ImageUnsharedFromOrganizations { .. }
        | Event::UsageRecorded { .. } => describe_use(event),
    }
}

/// A sentence about an event of deprecation and the recycle bin.
fn describe_lifecycle(event: &Event) -> String {
    match event {
        Event::ImageRecycled {
            image_id,
            purge_at_ms,
            ..
        } => format!(
            "image {image_id} moved to the recycle bin, purged at {}",
            ims_wire::time::rfc3339(*purge_at_ms)
        ),
        Event::ImageRestored { image_id, .. } => {
            format!("image {image_id} restored from the recycle bin")
        }
        Event::FamilySet {
            image_id,
            family,
            exclude_from_latest,
            ..
        } => match (family, exclude_from_latest) {
            (None, _) => format!("image {image_id} in no family"),
            (Some(family), false) => format!("image {image_id} in family {family}"),
            (Some(family), true) => {
                format!("image {image_id} in family {family}, never its latest")
            }
        },
        Event::RetentionSet { tenant, days } => {
            format!("tenant {tenant}'s recycle bin keeps deleted images {days} days")
        }
        Event::DeprecationSet {
            image_id,
            deprecation,
            ..
        } => {
            let mut text = format!("image {image_id} {}", deprecation.state.as_str());
            if let Some(replacement) = deprecation.replacement {
                text.push_str(&format!(", replaced by {replacement}"));
            }
            for (what, at) in [
                ("obsolete", deprecation.obsolete_at_ms),
                ("deleted", deprecation.delete_at_ms),
            ] {
                if let Some(at) = at {
                    text.push_str(&format!(", {what} at {}", ims_wire::time::rfc3339(at)));
                }
            }
            text
        }
        Event::ImageDeprecated {
            image_id,
            deprecated,
            ..
        } => format!(
            "image {image_id} {}",
            if *deprecated {
                "deprecated"
            } else {
                "no longer deprecated"
            }
        ),
        // Routed here by `describe` only for the events above.
        other => format!("{other:?}"),
    }
}

/// A sentence about an event of shares, listings, copies and use.
fn describe_use(event: &Event) -> String {
    match event {
        Event::ImageShared {
            image_id, tenants, ..
        } => format!(
            "image {image_id} shared with {}",
            list(tenants.iter().map(TenantId::as_str))
        ),
        Event::ImageUnshared {
            image_id, tenants, ..
        } => format!(
            "image {image_id} no longer shared with {}",
            list(tenants.iter().map(TenantId::as_str))
        ),
        Event::ShareAccepted {
            image_id, tenant, ..
        } => format!("tenant {tenant} accepted image {image_id}"),
        Event::ImageSharedWithOrganizations {
            image_id,
            organizations,
            ..
        } => format!(
            "image {image_id} shared with the tenants of organization {}",
            list(organizations.iter().map(OrganizationId::as_str))
        ),
        Event::ImageUnsharedFromOrganizations {
            image_id,
            organizations,
            ..
        } => format!(
            "image {image_id} no longer shared with organization {}",
            list(organizations.iter().map(OrganizationId::as_str))
        ),
        Event::ShareRejected {
            image_id, tenant, ..
        } => format!("tenant {tenant} rejected image {image_id}"),
        Event::ListedOnMarketplace {
            image_id, listing, ..
        } => format!(
            "image {image_id} listed on the Marketplace by {} at {}",
            listing.publisher,
            describe_price(&listing.price)
        ),
        Event::DelistedFromMarketplace { image_id, .. } => {
            format!("image {image_id} delisted from the Marketplace")
        }
        Event::CopyRequested {
            image_id,
            copy_image_id,
            target_region,
            ..
        } => format!(
            "copy of image {image_id} to region {target_region} requested as {copy_image_id}"
        ),
        Event::CopyFinished {
            image_id,
            copy_image_id,
            status,
            ..
        } => match status {
            CopyStatus::Requested => format!("copy {copy_image_id} of image {image_id}: requested"),
            CopyStatus::Delivered => format!("copy {copy_image_id} of image {image_id}: delivered"),
            CopyStatus::Failed { reason } => {
                format!("copy {copy_image_id} of image {image_id}: failed: {reason}")
            }
        },
        Event::UsageRecorded {
            tenant,
            image_id,
            hours,
            charge_minor,
            currency,
            ..
        } => {
            format!(
                "tenant {tenant} used image {image_id} for {hours} h, charged {charge_minor} {}",
                currency.as_deref().unwrap_or("")
            )
        }
        // Routed here by `describe` only for the events above.
        other => format!("{other:?}"),
    }
}

/// Where an image's bytes come from, in words.
fn describe_created(new: &ims_domain::NewImage) -> String {
    let class = match new.class {
        ImageClass::Public => "public",
        ImageClass::Private => "private",
        ImageClass::Marketplace => "marketplace",
    };
    let disk = match new.disk {
        DiskKind::System => "system disk",
        DiskKind::Data => "data disk",
        DiskKind::FullEcs => "full-ECS",
    };
    format!(
        "image {} ({}) created, {class} {disk} image from {}, status {}",
        new.id,
        new.name,
        describe_source(&new.source),
        new.status.as_str()
    )
}

fn describe_price(price: &Price) -> String {
    match price {
        Price::Free => "no charge".to_owned(),
        Price::PerHour {
            amount_minor,
            currency,
        } => format!(
            "{amount_minor} minor units of {} per hour",
            currency.as_str()
        ),
    }
}

fn describe_source(source: &Source) -> String {
    match source {
        Source::Ecs {
            instance_id,
            data_disk_ids,
        } if data_disk_ids.is_empty() => format!("ECS {instance_id}"),
        Source::Ecs {
            instance_id,
            data_disk_ids,
        } => format!(
            "ECS {instance_id} with data disks {}",
            data_disk_ids.join(", ")
        ),
        Source::File { url, format } => format!("{} file {url}", format.as_str()),
        Source::Upload { format } => format!("an uploaded {} file", format.as_str()),
        Source::Copy { region, image_id } => format!("image {image_id} of region {region}"),
        Source::Published => "the operator's publication".to_owned(),
    }
}
