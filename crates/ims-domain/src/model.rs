//! The state that events fold into: tenants with their quota, images with everything the rules
//! look at, and the region-wide [`State`] that holds them.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::{ImageId, OrganizationId, RegionId, TenantId};

/// Who owns an image: public images belong to the platform, all others to one tenant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Owner {
    Platform,
    Tenant(TenantId),
}

impl Owner {
    pub fn tenant(&self) -> Option<&TenantId> {
        match self {
            Owner::Platform => None,
            Owner::Tenant(tenant) => Some(tenant),
        }
    }
}

/// How an image is offered. "Shared" is not a class: it is how a member sees a private image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImageClass {
    Public,
    Private,
    /// A private image listed on the Marketplace: visible to every tenant of the region.
    Marketplace,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DiskKind {
    System,
    Data,
    FullEcs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileFormat {
    Qcow2,
    Vhd,
    Vhdx,
    Vmdk,
    Raw,
    Qed,
    Vdi,
    Iso,
    Zvhd,
    Zvhd2,
}

impl FileFormat {
    pub const ALL: [FileFormat; 10] = [
        FileFormat::Qcow2,
        FileFormat::Vhd,
        FileFormat::Vhdx,
        FileFormat::Vmdk,
        FileFormat::Raw,
        FileFormat::Qed,
        FileFormat::Vdi,
        FileFormat::Iso,
        FileFormat::Zvhd,
        FileFormat::Zvhd2,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            FileFormat::Qcow2 => "qcow2",
            FileFormat::Vhd => "vhd",
            FileFormat::Vhdx => "vhdx",
            FileFormat::Vmdk => "vmdk",
            FileFormat::Raw => "raw",
            FileFormat::Qed => "qed",
            FileFormat::Vdi => "vdi",
            FileFormat::Iso => "iso",
            FileFormat::Zvhd => "zvhd",
            FileFormat::Zvhd2 => "zvhd2",
        }
    }
}

/// Where an image's bits come from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Source {
    Ecs {
        instance_id: String,
        data_disk_ids: Vec<String>,
    },
    File {
        url: String,
        format: FileFormat,
    },
    /// A copy of `image_id` in `region` (rule 9): its lineage.
    Copy {
        region: RegionId,
        image_id: ImageId,
    },
    /// Published by the operator as a public image.
    Published,
    // Added after the first release: variants go last so stored indexes never move.
    /// Bytes uploaded by the owner (`PUT …/images/{id}/file`), declared as `format`.
    Upload {
        format: FileFormat,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Os {
    pub platform: String,
    pub version: String,
    pub arch: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encryption {
    pub kms_key_id: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImageStatus {
    Queued,
    Saving,
    Active,
    Killed,
    Deleted,
    /// In its owner's recycle bin until purged or restored (see [`Image::recycled`]).
    Recycled,
}

impl ImageStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            ImageStatus::Queued => "queued",
            ImageStatus::Saving => "saving",
            ImageStatus::Active => "active",
            ImageStatus::Killed => "killed",
            ImageStatus::Deleted => "deleted",
            ImageStatus::Recycled => "recycled",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum MemberStatus {
    Pending,
    Accepted,
    Rejected,
}

impl MemberStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Pending => "pending",
            MemberStatus::Accepted => "accepted",
            MemberStatus::Rejected => "rejected",
        }
    }
}

/// An ISO 4217 currency code: three upper-case letters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Currency(pub [u8; 3]);

impl Currency {
    pub fn as_str(&self) -> &str {
        // Only ever built from three ASCII upper-case letters (see `decide`).
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Price {
    Free,
    PerHour {
        amount_minor: u64,
        currency: Currency,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    pub publisher: String,
    pub price: Price,
}

/// Where a copy of this image went, and how that went (rule 9, source side).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyRecord {
    pub copy_image_id: ImageId,
    pub target_region: RegionId,
    pub status: CopyStatus,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CopyStatus {
    Requested,
    Delivered,
    Failed { reason: String },
}

/// Where an image stands on its way out (GCP's deprecation states).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeprecationState {
    #[default]
    Active,
    /// Hidden from lists, still usable; `usable` warns and names the replacement.
    Deprecated,
    /// Refused by `usable`, which names the replacement.
    Obsolete,
}

impl DeprecationState {
    pub const fn as_str(self) -> &'static str {
        match self {
            DeprecationState::Active => "active",
            DeprecationState::Deprecated => "deprecated",
            DeprecationState::Obsolete => "obsolete",
        }
    }
}

/// An image's deprecation: its state, the image that replaces it, and the transitions the
/// scheduler carries out at their time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deprecation {
    pub state: DeprecationState,
    pub replacement: Option<ImageId>,
    /// When it becomes obsolete; cleared once it is.
    pub obsolete_at_ms: Option<u64>,
    /// When it is deleted.
    pub delete_at_ms: Option<u64>,
}

/// One image and everything the rules look at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
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
    pub deprecation: Deprecation,
    pub status: ImageStatus,
    pub listing: Option<Listing>,
    pub members: BTreeMap<TenantId, MemberStatus>,
    pub copies: Vec<CopyRecord>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    /// The image's stream version: how many events its stream holds.
    pub version: u64,
    /// What the import worker found in the image file, once it was imported.
    pub file: Option<FileFacts>,
    /// Why the build or import failed, when the reporter said.
    pub failure_reason: Option<String>,
    /// When a tenant last launched an instance or a disk from it (to the hour: see
    /// `record-launch`), as the compute service reported.
    pub last_launched_at: Option<u64>,
    /// While in the recycle bin: when it is purged, and the status a restore gives back.
    pub recycled: Option<Recycled>,
    /// Organizations it is shared with: each of their tenants, present and future, may use it
    /// without accepting; each counts as one member toward the limit.
    pub organizations: BTreeSet<OrganizationId>,
    /// The image family it belongs to (GCP's image families): `latest` answers its newest.
    pub family: Option<String>,
    /// Never the answer of `latest`, though in a family (a release candidate, say).
    pub exclude_from_latest: bool,
}

/// An image in its owner's recycle bin (AWS's Recycle Bin).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recycled {
    pub purge_at_ms: u64,
    pub restores_to: ImageStatus,
}

/// What the import worker found in an image file besides its size and SHA-256.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileFacts {
    /// SHA-512 of the file, 128 lower-case hex digits (Glance's `os_hash_value`).
    pub sha512: String,
    /// The format the inspector detected (equal to the declared one, or the import failed).
    pub detected_format: FileFormat,
    /// The size of the disk the image describes, when its header says.
    pub virtual_size: Option<u64>,
}

impl Image {
    pub fn is_owned_by(&self, tenant: &TenantId) -> bool {
        self.owner.tenant() == Some(tenant)
    }

    /// Deprecated or obsolete: hidden from lists unless asked for.
    pub fn is_deprecated(&self) -> bool {
        self.deprecation.state != DeprecationState::Active
    }

    /// The timed transitions the image has scheduled, as (due ms, transition): its purge while
    /// in the recycle bin, else its deprecation's. The scheduler carries out exactly these.
    pub fn scheduled(&self) -> Vec<(u64, crate::Transition)> {
        use crate::Transition;
        match (self.status, &self.recycled) {
            (ImageStatus::Deleted, _) => Vec::new(),
            (_, Some(recycled)) => vec![(recycled.purge_at_ms, Transition::Purge)],
            (_, None) => {
                let obsolete = self
                    .deprecation
                    .obsolete_at_ms
                    .map(|at| (at, Transition::Obsolete));
                let delete = self
                    .deprecation
                    .delete_at_ms
                    .map(|at| (at, Transition::Delete));
                obsolete.into_iter().chain(delete).collect()
            }
        }
    }
}

/// A tenant registered in one region.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: TenantId,
    pub quota: u32,
    /// Private (and Marketplace-listed) images it owns that are not deleted; rule 6 counts these.
    pub owned_private_images: u32,
    /// Sum of its Marketplace usage charges per currency, in minor units.
    pub charges_minor: BTreeMap<String, u64>,
    pub version: u64,
    /// Days a deleted image stays in its recycle bin (none: the policy's default).
    pub retention_days: Option<u32>,
    /// The organization it belongs to, if any: images shared with it reach this tenant.
    pub organization: Option<OrganizationId>,
}

/// The state of one region, or the part of it that a command needs: `decide` only reads the
/// image and tenants a command names, so a writer may hold just those (see `Command::touches`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub tenants: BTreeMap<TenantId, Tenant>,
    pub images: BTreeMap<ImageId, Image>,
}
