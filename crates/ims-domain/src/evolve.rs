//! `evolve`: folds one event into the state. Infallible: events are facts that `decide` already
//! checked, so evolve only records them. An event about an entity the state does not hold (a
//! writer that loaded only part of the region) changes nothing.

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    CopyRecord, CopyStatus, Deprecation, DeprecationState, Event, Image, ImageClass, ImageStatus,
    MemberStatus, NewImage, Owner, Recycled, State, Tenant,
};

/// Applies `event` to `state`. Each event adds one to the version of its stream's entity.
pub fn evolve(state: &mut State, event: &Event) {
    match event {
        Event::TenantRegistered { tenant, quota } => {
            state.tenants.insert(
                tenant.clone(),
                Tenant {
                    id: tenant.clone(),
                    quota: *quota,
                    owned_private_images: 0,
                    charges_minor: BTreeMap::new(),
                    version: 1,
                    retention_days: None,
                    organization: None,
                },
            );
        }
        Event::QuotaSet { tenant, quota } => {
            if let Some(tenant) = state.tenants.get_mut(tenant) {
                tenant.quota = *quota;
                tenant.version += 1;
            }
        }
        Event::RetentionSet { tenant, days } => {
            if let Some(tenant) = state.tenants.get_mut(tenant) {
                tenant.retention_days = Some(*days);
                tenant.version += 1;
            }
        }
        Event::TenantJoinedOrganization {
            tenant,
            organization,
        } => {
            if let Some(tenant) = state.tenants.get_mut(tenant) {
                tenant.organization = Some(organization.clone());
                tenant.version += 1;
            }
        }
        Event::UsageRecorded {
            tenant,
            charge_minor,
            currency,
            ..
        } => {
            if let Some(tenant) = state.tenants.get_mut(tenant) {
                if let Some(currency) = currency {
                    // `decide` refuses a charge that would not fit, so this never saturates;
                    // evolve is infallible, and a wrapped total would be worse than none.
                    let total = tenant.charges_minor.entry(currency.clone()).or_default();
                    *total = total.saturating_add(*charge_minor);
                }
                tenant.version += 1;
            }
        }
        Event::ImageCreated(new) => {
            if let Some(owner) = counted_owner(&new.owner, new.class) {
                if let Some(tenant) = state.tenants.get_mut(owner) {
                    tenant.owned_private_images += 1;
                }
            }
            state.images.insert(new.id, new_image(new));
        }
        Event::ImageDeleted { image_id, .. } => {
            let Some(image) = state.images.get_mut(image_id) else {
                return;
            };
            if let Some(owner) = counted_owner(&image.owner, image.class) {
                if let Some(tenant) = state.tenants.get_mut(owner) {
                    tenant.owned_private_images = tenant.owned_private_images.saturating_sub(1);
                }
            }
            evolve_image(image, event);
        }
        other => {
            if let Some(image) = other.image_id().and_then(|id| state.images.get_mut(&id)) {
                evolve_image(image, other);
            }
        }
    }
}

/// The image an `ImageCreated` event creates.
pub fn new_image(new: &NewImage) -> Image {
    Image {
        id: new.id,
        region: new.region.clone(),
        owner: new.owner.clone(),
        name: new.name.clone(),
        class: new.class,
        disk: new.disk,
        source: new.source.clone(),
        os: new.os.clone(),
        min_disk_gb: new.min_disk_gb,
        size_bytes: new.size_bytes,
        checksum_sha256: new.checksum_sha256.clone(),
        encryption: new.encryption.clone(),
        tags: new.tags.clone(),
        description: new.description.clone(),
        protected: new.protected,
        deprecation: Deprecation::default(),
        status: new.status,
        listing: None,
        members: BTreeMap::new(),
        copies: Vec::new(),
        created_at_ms: new.at_ms,
        updated_at_ms: new.at_ms,
        version: 1,
        file: None,
        failure_reason: None,
        last_launched_at: None,
        recycled: None,
        organizations: BTreeSet::new(),
        family: None,
        exclude_from_latest: false,
    }
}

/// The tenant whose quota an image counts against: private and Marketplace images of a tenant.
fn counted_owner(owner: &Owner, class: ImageClass) -> Option<&crate::TenantId> {
    if class == ImageClass::Public {
        return None;
    }
    owner.tenant()
}

fn touch(image: &mut Image, at_ms: u64) {
    image.updated_at_ms = at_ms;
    image.version += 1;
}

/// Applies an event about an existing image to it; events about other things change nothing.
pub fn evolve_image(image: &mut Image, event: &Event) {
    // Every event is named here, so a new one must be given its place.
    let at_ms = match event {
        Event::ImageDeleted { .. }
        | Event::ImageUpdated(_)
        | Event::BuildStarted { .. }
        | Event::BuildSucceeded { .. }
        | Event::BuildFailed { .. }
        | Event::FileVerified { .. }
        | Event::BuildFailedBecause { .. } => evolve_content(image, event),
        Event::ImageDeprecated { .. }
        | Event::DeprecationSet { .. }
        | Event::ImageRecycled { .. }
        | Event::ImageRestored { .. }
        | Event::FamilySet { .. } => evolve_lifecycle(image, event),
        Event::ImageShared { .. }
        | Event::ImageUnshared { .. }
        | Event::ShareAccepted { .. }
        | Event::ShareRejected { .. }
        | Event::ListedOnMarketplace { .. }
        | Event::DelistedFromMarketplace { .. }
        | Event::ImageSharedWithOrganizations { .. }
        | Event::ImageUnsharedFromOrganizations { .. } => evolve_access(image, event),
        Event::CopyRequested { .. } | Event::CopyFinished { .. } => evolve_copies(image, event),
        Event::ImageLaunched { at_ms, .. } => {
            // A launch is not a change of the image: its version moves, its update time not.
            image.last_launched_at = Some(*at_ms);
            image.version += 1;
            None
        }
        // Tenant events and creation are handled by `evolve` itself.
        Event::TenantRegistered { .. }
        | Event::QuotaSet { .. }
        | Event::UsageRecorded { .. }
        | Event::RetentionSet { .. }
        | Event::TenantJoinedOrganization { .. }
        | Event::ImageCreated(_) => None,
    };
    if let Some(at_ms) = at_ms {
        touch(image, at_ms);
    }
}

/// Deletion, updates, builds and file facts: the image itself.
fn evolve_content(image: &mut Image, event: &Event) -> Option<u64> {
    match event {
        Event::ImageDeleted { at_ms, .. } => {
            delete(image);
            Some(*at_ms)
        }
        Event::ImageUpdated(update) => {
            apply_update(image, update);
            Some(update.at_ms)
        }
        Event::BuildStarted { at_ms, .. } => {
            set_build_status(image, ImageStatus::Saving);
            Some(*at_ms)
        }
        Event::BuildSucceeded {
            size_bytes,
            checksum_sha256,
            at_ms,
            ..
        } => {
            set_build_status(image, ImageStatus::Active);
            image.size_bytes = Some(*size_bytes);
            image.checksum_sha256 = Some(checksum_sha256.clone());
            Some(*at_ms)
        }
        Event::BuildFailed { at_ms, .. } => {
            set_build_status(image, ImageStatus::Killed);
            Some(*at_ms)
        }
        Event::FileVerified { file, at_ms, .. } => {
            image.file = Some(file.clone());
            Some(*at_ms)
        }
        Event::BuildFailedBecause { reason, at_ms, .. } => {
            set_build_status(image, ImageStatus::Killed);
            image.failure_reason = Some(reason.clone());
            Some(*at_ms)
        }
        // Routed here by `evolve_image` only for the events above.
        _ => None,
    }
}

/// Shares and listings: who may use the image.
fn evolve_access(image: &mut Image, event: &Event) -> Option<u64> {
    match event {
        Event::ImageShared { tenants, at_ms, .. } => {
            for tenant in tenants {
                image.members.insert(tenant.clone(), MemberStatus::Pending);
            }
            Some(*at_ms)
        }
        Event::ImageUnshared { tenants, at_ms, .. } => {
            for tenant in tenants {
                image.members.remove(tenant);
            }
            Some(*at_ms)
        }
        Event::ShareAccepted { tenant, at_ms, .. } => {
            image.members.insert(tenant.clone(), MemberStatus::Accepted);
            Some(*at_ms)
        }
        Event::ShareRejected { tenant, at_ms, .. } => {
            image.members.insert(tenant.clone(), MemberStatus::Rejected);
            Some(*at_ms)
        }
        Event::ListedOnMarketplace { listing, at_ms, .. } => {
            image.class = ImageClass::Marketplace;
            image.listing = Some(listing.clone());
            Some(*at_ms)
        }
        Event::DelistedFromMarketplace { at_ms, .. } => {
            image.class = ImageClass::Private;
            image.listing = None;
            Some(*at_ms)
        }
        Event::ImageSharedWithOrganizations {
            organizations,
            at_ms,
            ..
        } => {
            image.organizations.extend(organizations.iter().cloned());
            Some(*at_ms)
        }
        Event::ImageUnsharedFromOrganizations {
            organizations,
            at_ms,
            ..
        } => {
            for organization in organizations {
                image.organizations.remove(organization);
            }
            Some(*at_ms)
        }
        // Routed here by `evolve_image` only for the events above.
        _ => None,
    }
}

/// Copies of the image to other regions.
fn evolve_copies(image: &mut Image, event: &Event) -> Option<u64> {
    match event {
        Event::CopyRequested {
            copy_image_id,
            target_region,
            at_ms,
            ..
        } => {
            image.copies.push(CopyRecord {
                copy_image_id: *copy_image_id,
                target_region: target_region.clone(),
                status: CopyStatus::Requested,
            });
            Some(*at_ms)
        }
        Event::CopyFinished {
            copy_image_id,
            status,
            at_ms,
            ..
        } => {
            finish_copy(image, *copy_image_id, status);
            Some(*at_ms)
        }
        // Routed here by `evolve_image` only for the events above.
        _ => None,
    }
}

/// Deleting ends every share and every listing (rule 4); recipients are not asked.
/// The status a build leaves: the image's own, or, in the recycle bin, the one a restore gives.
fn set_build_status(image: &mut Image, status: ImageStatus) {
    match &mut image.recycled {
        Some(recycled) => recycled.restores_to = status,
        None => image.status = status,
    }
}

fn delete(image: &mut Image) {
    image.members.clear();
    image.organizations.clear();
    image.listing = None;
    if image.class == ImageClass::Marketplace {
        image.class = ImageClass::Private;
    }
    image.status = ImageStatus::Deleted;
    image.recycled = None;
}

fn apply_update(image: &mut Image, update: &crate::event::ImageUpdated) {
    if let Some(name) = &update.name {
        image.name = name.clone();
    }
    if let Some(description) = &update.description {
        image.description = description.clone();
    }
    if let Some(tags) = &update.tags {
        image.tags = tags.clone();
    }
    if let Some(min_disk_gb) = update.min_disk_gb {
        image.min_disk_gb = min_disk_gb;
    }
    if let Some(protected) = update.protected {
        image.protected = protected;
    }
}

fn finish_copy(image: &mut Image, copy_image_id: crate::ImageId, status: &CopyStatus) {
    if let Some(record) = image
        .copies
        .iter_mut()
        .find(|c| c.copy_image_id == copy_image_id)
    {
        record.status = status.clone();
    }
}

/// Deprecation, the recycle bin and families: the image's lifecycle (DESIGN.md section 13).
fn evolve_lifecycle(image: &mut Image, event: &Event) -> Option<u64> {
    match event {
        // The operator's flag of the first release: a state without replacement or schedule.
        Event::ImageDeprecated {
            deprecated, at_ms, ..
        } => {
            image.deprecation = Deprecation {
                state: if *deprecated {
                    DeprecationState::Deprecated
                } else {
                    DeprecationState::Active
                },
                ..Deprecation::default()
            };
            Some(*at_ms)
        }
        Event::DeprecationSet {
            deprecation, at_ms, ..
        } => {
            image.deprecation = deprecation.clone();
            Some(*at_ms)
        }
        Event::ImageRecycled {
            purge_at_ms, at_ms, ..
        } => {
            image.recycled = Some(Recycled {
                purge_at_ms: *purge_at_ms,
                restores_to: image.status,
            });
            image.status = ImageStatus::Recycled;
            Some(*at_ms)
        }
        Event::FamilySet {
            family,
            exclude_from_latest,
            at_ms,
            ..
        } => {
            image.family.clone_from(family);
            image.exclude_from_latest = *exclude_from_latest;
            Some(*at_ms)
        }
        Event::ImageRestored { at_ms, .. } => {
            if let Some(recycled) = image.recycled.take() {
                image.status = recycled.restores_to;
            }
            Some(*at_ms)
        }
        // Routed here by `evolve_image` only for the events above.
        _ => None,
    }
}
