//! The values imsctl's options take: parsers of the free-form ones (tags, operating systems,
//! prices, command ids) and the fixed choices as clap `ValueEnum`s.

use ims_wire::commands::{
    BuildOutcomeDto, DeprecateImageRequest, DeprecationStateDto, DiskDto, OsDto, PriceDto,
};

use super::args::DeprecateArgs;

pub(crate) fn parse_tag(value: &str) -> Result<(String, String), String> {
    value
        .split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("tag {value:?} is not key=value"))
}

pub(crate) fn parse_os(value: &str) -> Result<OsDto, String> {
    let parts: Vec<&str> = value.split('/').collect();
    match parts.as_slice() {
        [platform, version, arch] => Ok(OsDto {
            platform: (*platform).to_owned(),
            version: (*version).to_owned(),
            arch: (*arch).to_owned(),
        }),
        _ => Err(format!(
            "os {value:?} is not platform/version/arch, such as ubuntu/22.04/x86_64"
        )),
    }
}

pub(crate) fn parse_price(value: &str) -> Result<PriceDto, String> {
    if value == "free" {
        return Ok(PriceDto::Free);
    }
    match value.split(':').collect::<Vec<_>>().as_slice() {
        ["per_hour", amount, currency] => {
            let amount: u64 = amount
                .parse()
                .map_err(|_| format!("amount {amount:?} is not a whole number of minor units"))?;
            Ok(PriceDto::PerHour {
                amount_minor: amount,
                currency: (*currency).to_owned(),
            })
        }
        _ => Err(format!(
            "price {value:?} is not `free` or `per_hour:AMOUNT_MINOR:CURRENCY`"
        )),
    }
}

pub(crate) fn parse_command_id(value: &str) -> Result<uuid::Uuid, String> {
    uuid::Uuid::parse_str(value).map_err(|_| {
        format!(
            "{value:?} is not a UUID; give one such as 01890a5d-ac96-774b-bcce-b302099a8057 (the \
             same id again makes a retry), or leave --command-id out to have one generated"
        )
    })
}

/// What an image becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Disk {
    /// A system disk: creates or re-images ECSs.
    System,
    /// A data disk: creates EVS disks.
    Data,
    /// A whole ECS, system and data disks.
    #[value(name = "full_ecs")]
    FullEcs,
}

impl From<Disk> for DiskDto {
    fn from(disk: Disk) -> Self {
        match disk {
            Disk::System => DiskDto::System,
            Disk::Data => DiskDto::Data,
            Disk::FullEcs => DiskDto::FullEcs,
        }
    }
}

/// Where an image stands on its way out.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(crate) enum DeprecationStateArg {
    Active,
    Deprecated,
    Obsolete,
}

impl DeprecateArgs {
    pub(crate) fn request(self, image_id: String) -> DeprecateImageRequest {
        DeprecateImageRequest {
            image_id,
            state: Some(match self.state {
                DeprecationStateArg::Active => DeprecationStateDto::Active,
                DeprecationStateArg::Deprecated => DeprecationStateDto::Deprecated,
                DeprecationStateArg::Obsolete => DeprecationStateDto::Obsolete,
            }),
            deprecated: None,
            replacement: self.replacement,
            obsolete_at: self.obsolete_at,
            delete_at: self.delete_at,
        }
    }
}

/// The format of an image file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    Qcow2,
    Vmdk,
    Vhd,
    Vhdx,
    Vdi,
    Iso,
    Raw,
    Qed,
    Zvhd,
    Zvhd2,
}

impl Format {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
            Format::Vhd => "vhd",
            Format::Vhdx => "vhdx",
            Format::Vdi => "vdi",
            Format::Iso => "iso",
            Format::Raw => "raw",
            Format::Qed => "qed",
            Format::Zvhd => "zvhd",
            Format::Zvhd2 => "zvhd2",
        }
    }
}

/// How a build ended, as the builder reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Outcome {
    Started,
    Succeeded,
    Failed,
}

impl From<Outcome> for BuildOutcomeDto {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Started => BuildOutcomeDto::Started,
            Outcome::Succeeded => BuildOutcomeDto::Succeeded,
            Outcome::Failed => BuildOutcomeDto::Failed,
        }
    }
}

/// The queries `audit as-of` answers from a replay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum AsOfQuery {
    VisibleImages,
    SharedWithMe,
    Members,
    ShareCounts,
    Image,
    Usable,
}

impl From<AsOfQuery> for ims_wire::Query {
    fn from(query: AsOfQuery) -> Self {
        match query {
            AsOfQuery::VisibleImages => ims_wire::Query::VisibleImages,
            AsOfQuery::SharedWithMe => ims_wire::Query::SharedWithMe,
            AsOfQuery::Members => ims_wire::Query::Members,
            AsOfQuery::ShareCounts => ims_wire::Query::ShareCounts,
            AsOfQuery::Image => ims_wire::Query::Image,
            AsOfQuery::Usable => ims_wire::Query::Usable,
        }
    }
}

/// What a credential's holder may do (DESIGN.md section 10).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Role {
    /// Acts as one tenant.
    Tenant,
    /// Runs the catalog: operator commands, every tenant's reads.
    Operator,
    /// Reads history and audits, changes nothing.
    Auditor,
}

impl Role {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::Tenant => "tenant",
            Role::Operator => "operator",
            Role::Auditor => "auditor",
        }
    }
}
