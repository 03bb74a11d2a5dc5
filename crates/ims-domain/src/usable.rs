//! Rule 10: may this tenant use this image for this purpose? The seed's checklist, as a pure
//! function that explains every refusal.

use crate::{
    DeprecationState, DiskKind, Image, ImageClass, ImageId, ImageStatus, MemberStatus,
    OrganizationId, Price, RegionId, Source, Tenant, TenantId,
};

/// What a tenant wants to do with an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Create an ECS (a virtual machine).
    CreateEcs,
    /// Re-image an existing ECS with another OS.
    ChangeOs,
    /// Create an EVS disk from a data disk image.
    CreateEvs,
}

impl Purpose {
    pub const fn as_str(self) -> &'static str {
        match self {
            Purpose::CreateEcs => "create_ecs",
            Purpose::ChangeOs => "change_os",
            Purpose::CreateEvs => "create_evs",
        }
    }
}

/// How the tenant gets to use an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Owner,
    Public,
    SharedAccepted,
    Marketplace,
    /// Shared with the tenant's organization.
    OrganizationShare,
}

/// Who looks at an image: a tenant, and the organization it belongs to, through which shares
/// with the organization reach it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Viewer<'a> {
    pub tenant: &'a TenantId,
    pub organization: Option<&'a OrganizationId>,
}

impl<'a> Viewer<'a> {
    /// A registered tenant, with its organization.
    pub fn of(tenant: &'a Tenant) -> Self {
        Self {
            tenant: &tenant.id,
            organization: tenant.organization.as_ref(),
        }
    }

    /// A tenant in no organization (or whose organization does not matter to the caller).
    pub fn alone(tenant: &'a TenantId) -> Self {
        Self {
            tenant,
            organization: None,
        }
    }
}

impl Access {
    pub const fn as_str(self) -> &'static str {
        match self {
            Access::Owner => "owner",
            Access::Public => "public",
            Access::SharedAccepted => "accepted_share",
            Access::Marketplace => "marketplace",
            Access::OrganizationShare => "organization_share",
        }
    }
}

/// The answer of `usable`: allowed or not, why, and the price of a Marketplace image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Usability {
    pub allowed: bool,
    pub access: Option<Access>,
    pub reason: String,
    pub price: Option<Price>,
    /// Allowed, but deprecated: what to use instead.
    pub warning: Option<String>,
}

impl Usability {
    fn refused(reason: String) -> Self {
        Self {
            allowed: false,
            access: None,
            reason,
            price: None,
            warning: None,
        }
    }
}

/// How `viewer` may see `image` right now, if at all: the visibility rules of sections 2 and 5,
/// and shares with the viewer's organization.
pub fn access(image: &Image, viewer: Viewer) -> Option<Access> {
    let tenant = viewer.tenant;
    if image.status == ImageStatus::Deleted {
        return None;
    }
    if image.is_owned_by(tenant) {
        return Some(Access::Owner);
    }
    // In the recycle bin, its members and Marketplace viewers lose it until it is restored.
    if image.status == ImageStatus::Recycled {
        return None;
    }
    match image.class {
        ImageClass::Public => Some(Access::Public),
        ImageClass::Marketplace => Some(Access::Marketplace),
        ImageClass::Private => match image.members.get(tenant) {
            Some(MemberStatus::Accepted) => Some(Access::SharedAccepted),
            _ => viewer
                .organization
                .filter(|organization| image.organizations.contains(*organization))
                .map(|_| Access::OrganizationShare),
        },
    }
}

/// Decides whether `tenant` in `region` may use image `image_id` (found as `image`, or not found
/// in this region) for `purpose`.
pub fn usable(
    region: &RegionId,
    viewer: Viewer,
    image_id: ImageId,
    image: Option<&Image>,
    purpose: Purpose,
) -> Usability {
    let tenant = viewer.tenant;
    // An image in the recycle bin is deleted for everyone but its owner.
    let Some(image) = image.filter(|image| {
        image.status != ImageStatus::Deleted
            && (image.status != ImageStatus::Recycled || image.is_owned_by(tenant))
    }) else {
        return Usability::refused(format!(
            "image {image_id} does not exist in region {region}: an image of another region must \
             be copied to {region} first (copy-image), and one of another tenant must be shared \
             with you"
        ));
    };
    if image.region != *region {
        return Usability::refused(format!(
            "image {image_id} is in region {}; copy it to {region} first (copy-image)",
            image.region
        ));
    }
    let Some(access) = access(image, viewer) else {
        return Usability::refused(why_not_visible(image, tenant, image_id));
    };
    if image.deprecation.state == DeprecationState::Obsolete {
        return Usability::refused(format!("image {image_id} is obsolete{}", instead(image)));
    }
    if image.status != ImageStatus::Active {
        return Usability::refused(why_not_active(image, image_id));
    }
    let fits = match image.disk {
        DiskKind::Data => purpose == Purpose::CreateEvs,
        DiskKind::System | DiskKind::FullEcs => purpose != Purpose::CreateEvs,
    };
    if !fits {
        return Usability::refused(why_not_for(image, image_id, purpose));
    }
    allowed(image, access)
}

fn why_not_visible(image: &Image, tenant: &TenantId, image_id: ImageId) -> String {
    match image.members.get(tenant) {
        Some(MemberStatus::Pending) => format!(
            "image {image_id} is shared with tenant {tenant} but not yet accepted; accept it \
             first (accept-share)"
        ),
        Some(MemberStatus::Rejected) => format!(
            "tenant {tenant} rejected the share of image {image_id}; accept it to use it \
             (accept-share)"
        ),
        _ => format!(
            "image {image_id} belongs to another tenant; it must be shared with tenant \
             {tenant} and accepted first"
        ),
    }
}

fn why_not_active(image: &Image, image_id: ImageId) -> String {
    match (&image.source, image.status) {
        (
            Source::File { .. } | Source::Upload { .. },
            ImageStatus::Queued | ImageStatus::Saving,
        ) => {
            format!(
                "image {image_id} is still being imported from its file (status {}); wait until \
                 it is active",
                image.status.as_str()
            )
        }
        (Source::Copy { region, .. }, ImageStatus::Queued | ImageStatus::Saving) => format!(
            "image {image_id} is still being copied from region {region} (status {}); wait \
             until it is active",
            image.status.as_str()
        ),
        (_, ImageStatus::Recycled) => format!(
            "image {image_id} is in the recycle bin{}; restore it first (restore-image)",
            image.recycled.map_or(String::new(), |recycled| format!(
                " until {}",
                crate::time::utc(recycled.purge_at_ms)
            ))
        ),
        _ => format!(
            "image {image_id} is {}; only an active image can be used",
            image.status.as_str()
        ),
    }
}

fn why_not_for(image: &Image, image_id: ImageId, purpose: Purpose) -> String {
    match image.disk {
        DiskKind::Data => format!(
            "image {image_id} is a data disk image: it creates EVS disks (purpose create_evs), \
             not {}",
            purpose.as_str()
        ),
        _ => format!(
            "image {image_id} is a system or full-ECS image: it creates or re-images ECSs \
             (purpose create_ecs or change_os), not EVS disks"
        ),
    }
}

/// What to use instead of a deprecated or obsolete image, as the end of a sentence.
fn instead(image: &Image) -> String {
    match image.deprecation.replacement {
        Some(replacement) => format!("; use its replacement {replacement} instead"),
        None => "; its owner named no replacement".to_owned(),
    }
}

fn allowed(image: &Image, access: Access) -> Usability {
    let price = image.listing.as_ref().map(|listing| listing.price.clone());
    let reason = match &price {
        Some(Price::PerHour {
            amount_minor,
            currency,
        }) => format!(
            "usable as a paid Marketplace image: {amount_minor} minor units of {} per hour, \
             charged besides the ECS",
            currency.as_str()
        ),
        Some(Price::Free) | None => format!("usable through {}", access.as_str()),
    };
    let warning = (image.deprecation.state == DeprecationState::Deprecated)
        .then(|| format!("image {} is deprecated{}", image.id, instead(image)));
    Usability {
        allowed: true,
        access: Some(access),
        reason,
        price,
        warning,
    }
}
