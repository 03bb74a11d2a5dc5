//! Commands: what tenants and the operator ask for. Imperative names; fields are raw user input
//! except ids, which are already validated. `decide` validates the rest.

use std::collections::BTreeMap;

use crate::{
    DeprecationState, DiskKind, Encryption, FileFacts, FileFormat, ImageId, OrganizationId, Os,
    Price, RegionId, TenantId,
};

/// The source a tenant may create an image from (copies and published images come from other
/// commands).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CreateSource {
    Ecs {
        instance_id: String,
        data_disk_ids: Vec<String>,
    },
    File {
        url: String,
        format: FileFormat,
    },
    /// The owner uploads the bytes after creating the image.
    Upload {
        format: FileFormat,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateImage {
    pub name: String,
    pub disk: DiskKind,
    pub source: CreateSource,
    pub os: Option<Os>,
    pub min_disk_gb: u32,
    pub encryption: Option<Encryption>,
    pub tags: BTreeMap<String, String>,
    pub description: String,
    pub protected: bool,
    pub family: Option<String>,
    pub exclude_from_latest: bool,
}

/// A partial update: `None` leaves a field as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateImage {
    pub image_id: ImageId,
    pub name: Option<String>,
    pub description: Option<String>,
    pub tags: Option<BTreeMap<String, String>>,
    pub min_disk_gb: Option<u32>,
    pub protected: Option<bool>,
    /// The family to join; `""` leaves the family it is in.
    pub family: Option<String>,
    pub exclude_from_latest: Option<bool>,
}

/// Sets an image's deprecation as a whole: what it omits is cleared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeprecateImage {
    pub image_id: ImageId,
    pub state: DeprecationState,
    pub replacement: Option<ImageId>,
    pub obsolete_at_ms: Option<u64>,
    pub delete_at_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishPublicImage {
    pub name: String,
    pub disk: DiskKind,
    pub os: Option<Os>,
    pub min_disk_gb: u32,
    pub size_bytes: u64,
    pub checksum_sha256: String,
    pub tags: BTreeMap<String, String>,
    pub description: String,
    pub family: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildOutcome {
    /// The builder picked the image up: queued -> saving.
    Started,
    Succeeded {
        size_bytes: u64,
    },
    Failed,
}

/// The target side of a cross-region copy (rule 9), sent by the copy saga of the source region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiveCopy {
    pub copy_image_id: ImageId,
    pub owner: TenantId,
    pub source_region: RegionId,
    pub source_image_id: ImageId,
    pub name: String,
    pub disk: DiskKind,
    pub os: Option<Os>,
    pub min_disk_gb: u32,
    pub tags: BTreeMap<String, String>,
    pub description: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CopyOutcome {
    Delivered,
    Failed { reason: String },
}

/// What a tenant may ask, about its own images and the shares offered to it; the actor is the
/// tenant of the subject. The operator may send `DeleteImage` and `DeprecateImage` too, for a
/// public image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TenantCommand {
    CreateImage(Box<CreateImage>),
    UpdateImage(Box<UpdateImage>),
    DeleteImage {
        image_id: ImageId,
    },
    ShareImage {
        image_id: ImageId,
        tenants: Vec<TenantId>,
        organizations: Vec<OrganizationId>,
    },
    /// `tenants: None` stops sharing with everyone, organizations included.
    UnshareImage {
        image_id: ImageId,
        tenants: Option<Vec<TenantId>>,
        organizations: Vec<OrganizationId>,
    },
    AcceptShare {
        image_id: ImageId,
    },
    RejectShare {
        image_id: ImageId,
    },
    CopyImage {
        image_id: ImageId,
        target_region: RegionId,
        name: Option<String>,
    },
    ListOnMarketplace {
        image_id: ImageId,
        publisher: String,
        price: Price,
    },
    DelistFromMarketplace {
        image_id: ImageId,
    },
    DeprecateImage(Box<DeprecateImage>),
    /// Takes an image out of the recycle bin, with its members as they were.
    RestoreImage {
        image_id: ImageId,
    },
}

/// What only the operator may ask (and the service's own sagas, which act as the operator).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OperatorCommand {
    RegisterTenant {
        tenant: TenantId,
        quota: Option<u32>,
        organization: Option<OrganizationId>,
    },
    SetQuota {
        tenant: TenantId,
        quota: u32,
    },
    /// How many days the tenant's deleted images stay in its recycle bin.
    SetRetention {
        tenant: TenantId,
        days: u32,
    },
    PublishPublicImage(Box<PublishPublicImage>),
    ReportBuild {
        image_id: ImageId,
        outcome: BuildOutcome,
        checksum_sha256: Option<String>,
        /// The import worker's findings, with a succeeded import.
        file: Option<FileFacts>,
        /// Why it failed, with a failed build; the owner sees it.
        reason: Option<String>,
    },
    RecordUsage {
        image_id: ImageId,
        tenant: TenantId,
        hours: u32,
    },
    ReceiveCopy(Box<ReceiveCopy>),
    /// The compute service reports that `tenant` launched from the image.
    RecordLaunch {
        image_id: ImageId,
        tenant: TenantId,
    },
    RecordCopyOutcome {
        image_id: ImageId,
        copy_image_id: ImageId,
        outcome: CopyOutcome,
    },
}

/// A timed transition of an image's deprecation (DESIGN.md section 13).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Transition {
    Obsolete,
    Delete,
    /// The end of an image's time in the recycle bin.
    Purge,
}

impl Transition {
    pub const fn as_str(self) -> &'static str {
        match self {
            Transition::Obsolete => "obsolete",
            Transition::Delete => "delete",
            Transition::Purge => "purge",
        }
    }
}

/// What the scheduler sends when a transition's time has come: it is carried out only if the
/// image still has it scheduled at `due_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScheduledTransition {
    pub image_id: ImageId,
    pub transition: Transition,
    pub due_ms: u64,
}

/// A command of any kind: the kind says who may send it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Tenant(TenantCommand),
    Operator(OperatorCommand),
    /// Only the region's scheduler sends these; no subject carries them.
    Scheduled(ScheduledTransition),
}

impl From<TenantCommand> for Command {
    fn from(command: TenantCommand) -> Self {
        Command::Tenant(command)
    }
}

impl From<OperatorCommand> for Command {
    fn from(command: OperatorCommand) -> Self {
        Command::Operator(command)
    }
}

/// What a command reads: a writer that holds only part of the region's state loads these first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Touches {
    pub images: Vec<ImageId>,
    pub tenants: Vec<TenantId>,
}

impl Command {
    /// The images and tenants `decide` may read for this command, besides the actor, and the
    /// owners of the named images (which a writer finds once the images are loaded).
    pub fn touches(&self) -> Touches {
        match self {
            Command::Tenant(command) => command.touches(),
            Command::Operator(command) => command.touches(),
            Command::Scheduled(scheduled) => Touches {
                images: vec![scheduled.image_id],
                tenants: Vec::new(),
            },
        }
    }

    /// The command's name on the wire, as in DESIGN.md section 4.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Tenant(command) => command.name(),
            Command::Operator(command) => command.name(),
            Command::Scheduled(scheduled) => match scheduled.transition {
                Transition::Obsolete => "scheduled-obsolete",
                Transition::Delete => "scheduled-delete",
                Transition::Purge => "scheduled-purge",
            },
        }
    }
}

impl TenantCommand {
    fn touches(&self) -> Touches {
        let mut touches = Touches::default();
        match self {
            TenantCommand::CreateImage(_) => {}
            TenantCommand::UpdateImage(update) => touches.images.push(update.image_id),
            TenantCommand::DeleteImage { image_id }
            | TenantCommand::AcceptShare { image_id }
            | TenantCommand::RejectShare { image_id }
            | TenantCommand::CopyImage { image_id, .. }
            | TenantCommand::ListOnMarketplace { image_id, .. }
            | TenantCommand::DelistFromMarketplace { image_id }
            | TenantCommand::UnshareImage { image_id, .. } => touches.images.push(*image_id),
            TenantCommand::ShareImage {
                image_id, tenants, ..
            } => {
                touches.images.push(*image_id);
                touches.tenants.extend(tenants.iter().cloned());
            }
            TenantCommand::RestoreImage { image_id } => touches.images.push(*image_id),
            TenantCommand::DeprecateImage(deprecate) => {
                touches.images.push(deprecate.image_id);
                touches.images.extend(deprecate.replacement);
            }
        }
        touches
    }

    fn name(&self) -> &'static str {
        match self {
            TenantCommand::CreateImage(_) => "create-image",
            TenantCommand::UpdateImage(_) => "update-image",
            TenantCommand::DeleteImage { .. } => "delete-image",
            TenantCommand::ShareImage { .. } => "share-image",
            TenantCommand::UnshareImage { .. } => "unshare-image",
            TenantCommand::AcceptShare { .. } => "accept-share",
            TenantCommand::RejectShare { .. } => "reject-share",
            TenantCommand::CopyImage { .. } => "copy-image",
            TenantCommand::ListOnMarketplace { .. } => "list-on-marketplace",
            TenantCommand::DelistFromMarketplace { .. } => "delist-from-marketplace",
            TenantCommand::DeprecateImage(_) => "deprecate-image",
            TenantCommand::RestoreImage { .. } => "restore-image",
        }
    }
}

impl OperatorCommand {
    fn touches(&self) -> Touches {
        let mut touches = Touches::default();
        match self {
            OperatorCommand::PublishPublicImage(_) => {}
            OperatorCommand::ReportBuild { image_id, .. }
            | OperatorCommand::RecordCopyOutcome { image_id, .. } => touches.images.push(*image_id),
            OperatorCommand::RegisterTenant { tenant, .. }
            | OperatorCommand::SetQuota { tenant, .. }
            | OperatorCommand::SetRetention { tenant, .. } => touches.tenants.push(tenant.clone()),
            OperatorCommand::RecordUsage {
                image_id, tenant, ..
            }
            | OperatorCommand::RecordLaunch { image_id, tenant } => {
                touches.images.push(*image_id);
                touches.tenants.push(tenant.clone());
            }
            OperatorCommand::ReceiveCopy(copy) => {
                touches.images.push(copy.copy_image_id);
                touches.tenants.push(copy.owner.clone());
            }
        }
        touches
    }

    fn name(&self) -> &'static str {
        match self {
            OperatorCommand::RegisterTenant { .. } => "register-tenant",
            OperatorCommand::SetQuota { .. } => "set-quota",
            OperatorCommand::SetRetention { .. } => "set-retention",
            OperatorCommand::PublishPublicImage(_) => "publish-public-image",
            OperatorCommand::ReportBuild { .. } => "report-build",
            OperatorCommand::RecordUsage { .. } => "record-usage",
            OperatorCommand::ReceiveCopy(_) => "receive-copy",
            OperatorCommand::RecordCopyOutcome { .. } => "record-copy-outcome",
            OperatorCommand::RecordLaunch { .. } => "record-launch",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(id: &str) -> TenantId {
        TenantId::parse(id).unwrap()
    }

    fn image(n: u8) -> ImageId {
        ImageId::from_bytes([n; 16])
    }

    #[test]
    fn a_command_touches_the_images_and_tenants_it_names() {
        let share = Command::from(TenantCommand::ShareImage {
            image_id: image(1),
            tenants: vec![tenant("t2"), tenant("t3")],
            organizations: Vec::new(),
        });
        assert_eq!(
            share.touches(),
            Touches {
                images: vec![image(1)],
                tenants: vec![tenant("t2"), tenant("t3")],
            }
        );
        let usage = Command::from(OperatorCommand::RecordUsage {
            image_id: image(2),
            tenant: tenant("t4"),
            hours: 1,
        });
        assert_eq!(
            usage.touches(),
            Touches {
                images: vec![image(2)],
                tenants: vec![tenant("t4")],
            }
        );
        let copy = Command::from(OperatorCommand::ReceiveCopy(Box::new(ReceiveCopy {
            copy_image_id: image(3),
            owner: tenant("t5"),
            source_region: RegionId::parse("eu-west-0").unwrap(),
            source_image_id: image(4),
            name: "web".into(),
            disk: DiskKind::System,
            os: None,
            min_disk_gb: 10,
            tags: BTreeMap::new(),
            description: String::new(),
        })));
        assert_eq!(
            copy.touches(),
            Touches {
                images: vec![image(3)],
                tenants: vec![tenant("t5")],
            }
        );
        let accept = Command::from(TenantCommand::AcceptShare { image_id: image(6) });
        assert_eq!(accept.touches().images, vec![image(6)]);
        let register = Command::from(OperatorCommand::RegisterTenant {
            tenant: tenant("t6"),
            quota: None,
            organization: None,
        });
        assert_eq!(register.touches().tenants, vec![tenant("t6")]);
    }
}
