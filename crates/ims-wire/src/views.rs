//! What queries answer (DESIGN.md section 5), as JSON views built by hand from domain state.

use std::collections::BTreeMap;

use ims_domain::{
    access, Access, CopyStatus, Deprecation, Image, ImageClass, MemberStatus, OrganizationId,
    Owner, Source, TenantId, Usability, Viewer,
};
use serde::{Deserialize, Serialize};

use crate::commands::{DiskDto, OsDto, PriceDto};
use crate::time::rfc3339;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListingView {
    pub publisher: String,
    pub price: PriceDto,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyView {
    pub copy_image_id: String,
    pub target_region: String,
    /// `requested`, `delivered` or `failed`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One image as a tenant (or an auditor, `viewer: None`) sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageView {
    pub id: String,
    pub region: String,
    pub name: String,
    /// How the viewer sees it: `public`, `private` (its own), `shared` (an accepted or offered
    /// share) or `marketplace`.
    #[serde(rename = "type")]
    pub image_type: String,
    pub owner: String,
    pub disk: DiskDto,
    pub source: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<OsDto>,
    pub min_disk_gb: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum_sha256: Option<String>,
    /// `sha512` once the import worker hashed the file (Glance's `os_hash_algo`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_hash_algo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_hash_value: Option<String>,
    /// The format the inspector found in the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected_format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_size: Option<u64>,
    /// Why the build or import failed (the owner's view).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// When a tenant last launched from it, to the hour (the owner's view), RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_launched_at: Option<String>,
    /// In the recycle bin: when it is purged unless restored (the owner's view), RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purge_at: Option<String>,
    pub encrypted: bool,
    pub tags: BTreeMap<String, String>,
    pub description: String,
    pub protected: bool,
    /// The image family it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// Never the answer of `latest`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exclude_from_latest: bool,
    /// Deprecated or obsolete (see `deprecation`).
    pub deprecated: bool,
    /// The deprecation state, replacement and scheduled transitions, unless active with none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecation: Option<DeprecationView>,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listing: Option<ListingView>,
    /// For a shared image: the viewer's member status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_status: Option<String>,
    /// For the owner: where copies of this image went.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copies: Vec<CopyView>,
    pub created_at: String,
    pub updated_at: String,
    pub version: u64,
}

/// An image's deprecation (DESIGN.md section 13); times in RFC 3339.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeprecationView {
    /// `active`, `deprecated` or `obsolete`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub obsolete_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_at: Option<String>,
}

/// The view type of `image` for `viewer`.
pub fn image_type(image: &Image, viewer: Option<&TenantId>) -> &'static str {
    // Shares with the viewer's organization show as `shared` through the last arm.
    match (
        viewer.and_then(|v| access(image, Viewer::alone(v))),
        image.class,
    ) {
        (Some(Access::Owner), ImageClass::Marketplace) => "marketplace",
        (Some(Access::Owner), _) => "private",
        (Some(Access::SharedAccepted), _) => "shared",
        (_, ImageClass::Public) => "public",
        (_, ImageClass::Marketplace) => "marketplace",
        (None, ImageClass::Private) if viewer.is_some() => "shared",
        (_, ImageClass::Private) => "private",
    }
}

/// The source as its owner (or the operator) sees it; others see only its kind, never an ECS
/// instance id, a file URL or the image a copy was made from.
fn source_json(source: &Source, owner_view: bool) -> serde_json::Value {
    if !owner_view {
        return match source {
            Source::Ecs { .. } => serde_json::json!({"ecs": {}}),
            Source::File { format, .. } => serde_json::json!({"file": {"format": format.as_str()}}),
            Source::Copy { region, .. } => serde_json::json!({"copy": {"region": region.as_str()}}),
            Source::Published => serde_json::json!("published"),
            Source::Upload { format } => serde_json::json!({"upload": {"format": format.as_str()}}),
        };
    }
    match source {
        Source::Ecs {
            instance_id,
            data_disk_ids,
        } => {
            serde_json::json!({"ecs": {"instance_id": instance_id, "data_disk_ids": data_disk_ids}})
        }
        Source::File { url, format } => {
            serde_json::json!({"file": {"url": url, "format": format.as_str()}})
        }
        Source::Copy { region, image_id } => {
            serde_json::json!({"copy": {"region": region.as_str(), "image_id": image_id.to_string()}})
        }
        Source::Published => serde_json::json!("published"),
        Source::Upload { format } => serde_json::json!({"upload": {"format": format.as_str()}}),
    }
}

impl ImageView {
    pub fn new(image: &Image, viewer: Option<&TenantId>) -> Self {
        let owner_view = viewer.is_none() || viewer.is_some_and(|v| image.is_owned_by(v));
        Self {
            id: image.id.to_string(),
            region: image.region.to_string(),
            name: image.name.clone(),
            image_type: image_type(image, viewer).to_owned(),
            owner: match &image.owner {
                Owner::Platform => "platform".to_owned(),
                Owner::Tenant(t) => t.to_string(),
            },
            disk: image.disk.into(),
            source: source_json(&image.source, owner_view),
            os: image.os.as_ref().map(OsDto::from),
            min_disk_gb: image.min_disk_gb,
            size_bytes: image.size_bytes,
            checksum_sha256: image.checksum_sha256.clone(),
            os_hash_algo: image.file.as_ref().map(|_| "sha512".to_owned()),
            os_hash_value: image.file.as_ref().map(|f| f.sha512.clone()),
            detected_format: image
                .file
                .as_ref()
                .map(|f| f.detected_format.as_str().to_owned()),
            virtual_size: image.file.as_ref().and_then(|f| f.virtual_size),
            failure_reason: image.failure_reason.clone().filter(|_| owner_view),
            last_launched_at: image
                .last_launched_at
                .filter(|_| owner_view)
                .map(crate::time::rfc3339),
            purge_at: image
                .recycled
                .filter(|_| owner_view)
                .map(|recycled| crate::time::rfc3339(recycled.purge_at_ms)),
            encrypted: image.encryption.is_some(),
            tags: image.tags.clone(),
            description: image.description.clone(),
            protected: image.protected,
            family: image.family.clone(),
            exclude_from_latest: image.exclude_from_latest,
            deprecated: image.is_deprecated(),
            deprecation: (image.deprecation != Deprecation::default()).then(|| DeprecationView {
                state: image.deprecation.state.as_str().to_owned(),
                replacement: image.deprecation.replacement.map(|id| id.to_string()),
                obsolete_at: image.deprecation.obsolete_at_ms.map(crate::time::rfc3339),
                delete_at: image.deprecation.delete_at_ms.map(crate::time::rfc3339),
            }),
            status: image.status.as_str().to_owned(),
            listing: image.listing.as_ref().map(|l| ListingView {
                publisher: l.publisher.clone(),
                price: PriceDto::from_domain(&l.price),
            }),
            member_status: viewer
                .and_then(|v| image.members.get(v))
                .map(|s| s.as_str().to_owned()),
            copies: if owner_view {
                image
                    .copies
                    .iter()
                    .map(|c| {
                        let (status, reason) = match &c.status {
                            CopyStatus::Requested => ("requested", None),
                            CopyStatus::Delivered => ("delivered", None),
                            CopyStatus::Failed { reason } => ("failed", Some(reason.clone())),
                        };
                        CopyView {
                            copy_image_id: c.copy_image_id.to_string(),
                            target_region: c.target_region.to_string(),
                            status: status.to_owned(),
                            reason,
                        }
                    })
                    .collect()
            } else {
                Vec::new()
            },
            created_at: rfc3339(image.created_at_ms),
            updated_at: rfc3339(image.updated_at_ms),
            version: image.version,
        }
    }
}

/// One member of an image, as its owner sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    /// A tenant member; or
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// an organization, whose tenants are members without accepting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    pub status: String,
}

impl MemberView {
    pub fn new(tenant: &TenantId, status: MemberStatus) -> Self {
        Self {
            tenant: Some(tenant.to_string()),
            organization: None,
            status: status.as_str().to_owned(),
        }
    }

    pub fn organization(organization: &OrganizationId) -> Self {
        Self {
            tenant: None,
            organization: Some(organization.to_string()),
            status: MemberStatus::Accepted.as_str().to_owned(),
        }
    }
}

/// Per owned image: how many members in each status, and the limit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareCountView {
    pub image_id: String,
    pub name: String,
    pub pending: u32,
    pub accepted: u32,
    pub rejected: u32,
    /// Organizations shared with, one member each toward the limit.
    pub organizations: u32,
    pub total: u32,
    pub limit: u32,
}

/// The answer of `usable` (rule 10).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsableView {
    pub image_id: String,
    pub purpose: String,
    pub allowed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<String>,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<PriceDto>,
    /// Allowed but deprecated: what to use instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

impl UsableView {
    pub fn new(image_id: String, purpose: &str, answer: &Usability) -> Self {
        Self {
            image_id,
            purpose: purpose.to_owned(),
            allowed: answer.allowed,
            access: answer.access.map(|a| a.as_str().to_owned()),
            reason: answer.reason.clone(),
            price: answer.price.as_ref().map(PriceDto::from_domain),
            warning: answer.warning.clone(),
        }
    }
}

/// One notification in a tenant's feed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedItem {
    pub position: u64,
    pub at: String,
    /// `share_offered`, `share_revoked`, `shared_image_deleted`, `image_deprecated`,
    /// `copy_failed`.
    pub kind: String,
    pub image_id: String,
    pub message: String,
}

/// A page of results; `next_marker` is set when more follow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
    /// The projection position the answer reflects.
    pub position: u64,
}

/// One entry of a tenant's Marketplace usage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageItem {
    pub position: u64,
    pub image_id: String,
    pub hours: u32,
    pub charge_minor: u64,
    /// `None` for a free image.
    pub currency: Option<String>,
    pub at: String,
}

/// A page of usage with the totals of the page per currency (a sum of u64 charges: u128).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageView {
    pub items: Vec<UsageItem>,
    pub totals_minor: std::collections::BTreeMap<String, u128>,
    pub position: u64,
}

/// What a query answers, one shape per query (DESIGN.md section 5).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Answer {
    /// `visible-images`, `shared-with-me`.
    Images(Page<ImageView>),
    /// `image`.
    Image(Box<ImageView>),
    /// `members`.
    Members(Page<MemberView>),
    /// `share-counts`.
    ShareCounts(Page<ShareCountView>),
    /// `usable`.
    Usable(UsableView),
    /// `feed`.
    Feed(Page<FeedItem>),
    /// `usage`.
    Usage(UsageView),
}

impl Answer {
    /// The answer as a JSON value (keys in order, as every answer was sent before it was typed).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("query answers serialise")
    }
}

/// A failed query answer has the same shape as a failed command reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryError {
    pub ok: bool,
    pub error: crate::WireError,
}
