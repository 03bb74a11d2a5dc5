//! Events: what happened, in the past tense. They are a stored format: each has a stable type tag
//! ([`Event::type_tag`]) and the schema version of its payload ([`EVENT_SCHEMA_VERSION`]). A change
//! to any of these types adds a schema version and an upcaster in `ims-log`; history is never
//! edited.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    CopyStatus, Deprecation, DiskKind, Encryption, FileFacts, ImageClass, ImageId, ImageStatus,
    Listing, OrganizationId, Os, Owner, RegionId, Source, TenantId,
};

/// The schema version of every payload type below, as written by this release.
pub const EVENT_SCHEMA_VERSION: u16 = 1;

/// Everything an image is born with; shared by created, published and copied images.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewImage {
    pub id: ImageId,
    pub region: RegionId,
    pub owner: Owner,
    pub name: String,
    pub class: ImageClass,
    pub disk: DiskKind,
    pub source: Source,
    pub os: Option<Os>,
    pub min_disk_gb: u32,
    pub size_bytes: Option<u64>,
    pub checksum_sha256: Option<String>,
    pub encryption: Option<Encryption>,
    pub tags: BTreeMap<String, String>,
    pub description: String,
    pub protected: bool,
    pub status: ImageStatus,
    pub at_ms: u64,
}

/// What a copy is made of: the source's metadata at the time of the request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopySpec {
    pub owner: TenantId,
    /// The copy's name: the one asked for, or the source's.
    pub name: String,
    pub disk: DiskKind,
    pub os: Option<Os>,
    pub min_disk_gb: u32,
    pub tags: BTreeMap<String, String>,
    pub description: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageUpdated {
    pub image_id: ImageId,
    pub name: Option<String>,
    pub description: Option<String>,
    pub tags: Option<BTreeMap<String, String>>,
    pub min_disk_gb: Option<u32>,
    pub protected: Option<bool>,
    pub at_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    TenantRegistered {
        tenant: TenantId,
        quota: u32,
    },
    QuotaSet {
        tenant: TenantId,
        quota: u32,
    },
    /// Created by a tenant, published by the operator, or received as a copy (see `source`).
    ImageCreated(Box<NewImage>),
    ImageUpdated(Box<ImageUpdated>),
    BuildStarted {
        image_id: ImageId,
        at_ms: u64,
    },
    BuildSucceeded {
        image_id: ImageId,
        size_bytes: u64,
        checksum_sha256: String,
        at_ms: u64,
    },
    BuildFailed {
        image_id: ImageId,
        at_ms: u64,
    },
    ImageDeleted {
        image_id: ImageId,
        at_ms: u64,
    },
    ImageDeprecated {
        image_id: ImageId,
        deprecated: bool,
        at_ms: u64,
    },
    ImageShared {
        image_id: ImageId,
        tenants: Vec<TenantId>,
        at_ms: u64,
    },
    ImageUnshared {
        image_id: ImageId,
        tenants: Vec<TenantId>,
        at_ms: u64,
    },
    ShareAccepted {
        image_id: ImageId,
        tenant: TenantId,
        at_ms: u64,
    },
    ShareRejected {
        image_id: ImageId,
        tenant: TenantId,
        at_ms: u64,
    },
    ListedOnMarketplace {
        image_id: ImageId,
        listing: Listing,
        at_ms: u64,
    },
    DelistedFromMarketplace {
        image_id: ImageId,
        at_ms: u64,
    },
    /// The source side of a copy (rule 9): everything the target region needs to create the copy,
    /// as the source was when the copy was asked for, so the copy saga is driven by the log alone.
    CopyRequested {
        image_id: ImageId,
        copy_image_id: ImageId,
        target_region: RegionId,
        copy: Box<CopySpec>,
        at_ms: u64,
    },
    CopyFinished {
        image_id: ImageId,
        copy_image_id: ImageId,
        status: CopyStatus,
        at_ms: u64,
    },
    /// A paid or free Marketplace image used by `tenant`; `charge_minor` is in `currency`.
    UsageRecorded {
        tenant: TenantId,
        image_id: ImageId,
        hours: u32,
        charge_minor: u64,
        currency: Option<String>,
        at_ms: u64,
    },
    // Added after the first release; new variants go last so stored variant indexes never move.
    /// The import worker's findings about the image file (before its `BuildSucceeded`).
    FileVerified {
        image_id: ImageId,
        file: FileFacts,
        at_ms: u64,
    },
    /// A build or import that failed for a reason the owner is told.
    BuildFailedBecause {
        image_id: ImageId,
        reason: String,
        at_ms: u64,
    },
    /// `tenant` launched an instance or a disk from the image (reported by the compute service).
    ImageLaunched {
        image_id: ImageId,
        tenant: TenantId,
        at_ms: u64,
    },
    /// The image's deprecation as it now stands, set by its owner, the operator or the scheduler.
    DeprecationSet {
        image_id: ImageId,
        deprecation: Deprecation,
        at_ms: u64,
    },
    /// Its owner deleted it: into the recycle bin until `purge_at_ms`.
    ImageRecycled {
        image_id: ImageId,
        purge_at_ms: u64,
        at_ms: u64,
    },
    /// Out of the recycle bin, with its status and members as they were.
    ImageRestored {
        image_id: ImageId,
        at_ms: u64,
    },
    RetentionSet {
        tenant: TenantId,
        days: u32,
    },
    /// The image's family and whether `latest` may answer it, as they now stand.
    FamilySet {
        image_id: ImageId,
        family: Option<String>,
        exclude_from_latest: bool,
        at_ms: u64,
    },
    /// Registered with an organization (right after its registration).
    TenantJoinedOrganization {
        tenant: TenantId,
        organization: OrganizationId,
    },
    /// Shared with every tenant of these organizations, present and future, accepted at once.
    ImageSharedWithOrganizations {
        image_id: ImageId,
        organizations: Vec<OrganizationId>,
        at_ms: u64,
    },
    ImageUnsharedFromOrganizations {
        image_id: ImageId,
        organizations: Vec<OrganizationId>,
        at_ms: u64,
    },
}

/// The stream an event belongs to: its entity.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StreamId {
    Image(ImageId),
    Tenant(TenantId),
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamId::Image(id) => write!(f, "image/{id}"),
            StreamId::Tenant(id) => write!(f, "tenant/{id}"),
        }
    }
}

impl Event {
    pub fn stream(&self) -> StreamId {
        match self {
            Event::TenantRegistered { tenant, .. }
            | Event::QuotaSet { tenant, .. }
            | Event::UsageRecorded { tenant, .. }
            | Event::RetentionSet { tenant, .. }
            | Event::TenantJoinedOrganization { tenant, .. } => StreamId::Tenant(tenant.clone()),
            Event::ImageCreated(new) => StreamId::Image(new.id),
            Event::ImageUpdated(update) => StreamId::Image(update.image_id),
            Event::BuildStarted { image_id, .. }
            | Event::BuildSucceeded { image_id, .. }
            | Event::BuildFailed { image_id, .. }
            | Event::ImageDeleted { image_id, .. }
            | Event::ImageDeprecated { image_id, .. }
            | Event::ImageShared { image_id, .. }
            | Event::ImageUnshared { image_id, .. }
            | Event::ShareAccepted { image_id, .. }
            | Event::ShareRejected { image_id, .. }
            | Event::ListedOnMarketplace { image_id, .. }
            | Event::DelistedFromMarketplace { image_id, .. }
            | Event::CopyRequested { image_id, .. }
            | Event::CopyFinished { image_id, .. }
            | Event::FileVerified { image_id, .. }
            | Event::BuildFailedBecause { image_id, .. }
            | Event::ImageLaunched { image_id, .. }
            | Event::DeprecationSet { image_id, .. }
            | Event::ImageRecycled { image_id, .. }
            | Event::ImageRestored { image_id, .. }
            | Event::FamilySet { image_id, .. }
            | Event::ImageSharedWithOrganizations { image_id, .. }
            | Event::ImageUnsharedFromOrganizations { image_id, .. } => StreamId::Image(*image_id),
        }
    }

    /// The stable type tag stored with the event. Never rename one.
    pub fn type_tag(&self) -> &'static str {
        match self {
            Event::TenantRegistered { .. } => "tenant_registered",
            Event::QuotaSet { .. } => "quota_set",
            Event::ImageCreated(_) => "image_created",
            Event::ImageUpdated(_) => "image_updated",
            Event::BuildStarted { .. } => "build_started",
            Event::BuildSucceeded { .. } => "build_succeeded",
            Event::BuildFailed { .. } => "build_failed",
            Event::ImageDeleted { .. } => "image_deleted",
            Event::ImageDeprecated { .. } => "image_deprecated",
            Event::ImageShared { .. } => "image_shared",
            Event::ImageUnshared { .. } => "image_unshared",
            Event::ShareAccepted { .. } => "share_accepted",
            Event::ShareRejected { .. } => "share_rejected",
            Event::ListedOnMarketplace { .. } => "listed_on_marketplace",
            Event::DelistedFromMarketplace { .. } => "delisted_from_marketplace",
            Event::CopyRequested { .. } => "copy_requested",
            Event::CopyFinished { .. } => "copy_finished",
            Event::UsageRecorded { .. } => "usage_recorded",
            Event::FileVerified { .. } => "file_verified",
            Event::BuildFailedBecause { .. } => "build_failed_because",
            Event::ImageLaunched { .. } => "image_launched",
            Event::DeprecationSet { .. } => "deprecation_set",
            Event::ImageRecycled { .. } => "image_recycled",
            Event::ImageRestored { .. } => "image_restored",
            Event::RetentionSet { .. } => "retention_set",
            Event::FamilySet { .. } => "family_set",
            Event::TenantJoinedOrganization { .. } => "tenant_joined_organization",
            Event::ImageSharedWithOrganizations { .. } => "image_shared_with_organizations",
            Event::ImageUnsharedFromOrganizations { .. } => "image_unshared_from_organizations",
        }
    }

    /// The image an event is about, if any (usage events name one too).
    pub fn image_id(&self) -> Option<ImageId> {
        match self.stream() {
            StreamId::Image(id) => Some(id),
            StreamId::Tenant(_) => match self {
                Event::UsageRecorded { image_id, .. } => Some(*image_id),
                _ => None,
            },
        }
    }
}
