//! The body of each command, typed: what imsctl, the copy saga and the tests send, and what the
//! service parses. Ids stay strings here so that a bad one is refused by the service with a
//! message naming it, not by the client's type system. Unknown fields are refused rather than
//! ignored, so a typo never silently does nothing.

use std::collections::BTreeMap;

use ims_domain::{
    parse_file_format, BuildOutcome, Command, CopyOutcome, CreateImage, CreateSource, Encryption,
    FileFacts, OperatorCommand, OrganizationId, Os, PublishPublicImage, ReceiveCopy, TenantCommand,
    UpdateImage,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::values::{DiskDto, EncryptionDto, OsDto, PriceDto, SourceDto};
use super::{image_id, invalid, organizations, region, tenant, tenants};
use crate::WireError;

/// A command's JSON body: its name on the subject, and how it becomes a domain command.
pub trait CommandBody: Serialize + DeserializeOwned {
    /// The command's name, the last token of its subject.
    const NAME: &'static str;

    /// Which kind of command it is: a tenant's or the operator's.
    type Kind: Into<Command>;

    /// The domain command, once every id and value in the body is checked.
    fn into_command(self) -> Result<Self::Kind, WireError>;
}

fn is_false(value: &bool) -> bool {
    !*value
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateImageRequest {
    pub name: String,
    pub disk: DiskDto,
    pub source: SourceDto,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os: Option<OsDto>,
    pub min_disk_gb: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionDto>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub protected: bool,
    /// The image family it joins: `latest` answers the family's newest usable image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// Never the answer of `latest`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub exclude_from_latest: bool,
}

impl CommandBody for CreateImageRequest {
    const NAME: &'static str = "create-image";

    type Kind = TenantCommand;

    fn into_command(self) -> Result<TenantCommand, WireError> {
        let source = match self.source {
            SourceDto::Ecs {
                instance_id,
                data_disk_ids,
            } => CreateSource::Ecs {
                instance_id,
                data_disk_ids,
            },
            SourceDto::File { url, format } => CreateSource::File {
                url,
                format: parse_file_format(&format)?,
            },
            SourceDto::Upload { format } => CreateSource::Upload {
                format: parse_file_format(&format)?,
            },
        };
        Ok(TenantCommand::CreateImage(Box::new(CreateImage {
            name: self.name,
            disk: self.disk.into(),
            source,
            os: self.os.map(Os::from),
            min_disk_gb: self.min_disk_gb,
            encryption: self.encryption.map(|e| Encryption {
                kms_key_id: e.kms_key_id,
            }),
            tags: self.tags,
            description: self.description,
            protected: self.protected,
            family: self.family,
            exclude_from_latest: self.exclude_from_latest,
        })))
    }
}

/// Changes the fields given; the others stay.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateImageRequest {
    pub image_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_disk_gb: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protected: Option<bool>,
    /// The family to join; `""` leaves the family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_from_latest: Option<bool>,
}

impl CommandBody for UpdateImageRequest {
    const NAME: &'static str = "update-image";

    type Kind = TenantCommand;

    fn into_command(self) -> Result<TenantCommand, WireError> {
        Ok(TenantCommand::UpdateImage(Box::new(UpdateImage {
            image_id: image_id(&self.image_id)?,
            name: self.name,
            description: self.description,
            tags: self.tags,
            min_disk_gb: self.min_disk_gb,
            protected: self.protected,
            family: self.family,
            exclude_from_latest: self.exclude_from_latest,
        })))
    }
}

/// Commands whose body is only the image they are about.
macro_rules! image_only_command {
    ($(#[$doc:meta])* $request:ident, $name:literal, $command:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $request {
            pub image_id: String,
        }

        impl CommandBody for $request {
            const NAME: &'static str = $name;

            type Kind = TenantCommand;

            fn into_command(self) -> Result<TenantCommand, WireError> {
                Ok(TenantCommand::$command {
                    image_id: image_id(&self.image_id)?,
                })
            }
        }
    };
}

image_only_command!(
    /// By the image's owner, or by the operator for any image; ends every share and listing.
    DeleteImageRequest,
    "delete-image",
    DeleteImage
);
image_only_command!(AcceptShareRequest, "accept-share", AcceptShare);
image_only_command!(RejectShareRequest, "reject-share", RejectShare);
image_only_command!(
    DelistFromMarketplaceRequest,
    "delist-from-marketplace",
    DelistFromMarketplace
);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareImageRequest {
    pub image_id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tenants: Vec<String>,
    /// Every tenant of these organizations, present and future, may use the image without
    /// accepting; each organization counts as one member.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub organizations: Vec<String>,
}

impl CommandBody for ShareImageRequest {
    const NAME: &'static str = "share-image";

    type Kind = TenantCommand;

    fn into_command(self) -> Result<TenantCommand, WireError> {
        Ok(TenantCommand::ShareImage {
            image_id: image_id(&self.image_id)?,
            tenants: tenants(&self.tenants)?,
            organizations: organizations(&self.organizations)?,
        })
    }
}

/// `tenants` and/or `organizations`, or `all: true`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnshareImageRequest {
    pub image_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenants: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub organizations: Vec<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub all: bool,
}

impl CommandBody for UnshareImageRequest {
    const NAME: &'static str = "unshare-image";

    type Kind = TenantCommand;

    fn into_command(self) -> Result<TenantCommand, WireError> {
        let tenants = match (self.tenants, self.organizations.is_empty(), self.all) {
            (Some(list), _, false) => Some(tenants(&list)?),
            (None, false, false) => Some(Vec::new()),
            (None, true, true) => None,
            _ => {
                return Err(invalid(
                    "unshare-image: give \"tenants\": [...] and/or \"organizations\": [...], \
                     or \"all\": true, not both or neither",
                ))
            }
        };
        Ok(TenantCommand::UnshareImage {
            image_id: image_id(&self.image_id)?,
            tenants,
            organizations: organizations(&self.organizations)?,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyImageRequest {
    pub image_id: String,
    pub target_region: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl CommandBody for CopyImageRequest {
    const NAME: &'static str = "copy-image";

    type Kind = TenantCommand;

    fn into_command(self) -> Result<TenantCommand, WireError> {
        Ok(TenantCommand::CopyImage {
            image_id: image_id(&self.image_id)?,
            target_region: region(&self.target_region)?,
            name: self.name,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListOnMarketplaceRequest {
    pub image_id: String,
    pub publisher: String,
    pub price: PriceDto,
}

impl CommandBody for ListOnMarketplaceRequest {
    const NAME: &'static str = "list-on-marketplace";

    type Kind = TenantCommand;

    fn into_command(self) -> Result<TenantCommand, WireError> {
        Ok(TenantCommand::ListOnMarketplace {
            image_id: image_id(&self.image_id)?,
            publisher: self.publisher,
            price: self.price.into_domain()?,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterTenantRequest {
    pub tenant: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<u32>,
    /// The organization it belongs to: images shared with the organization reach it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
}

impl CommandBody for RegisterTenantRequest {
    const NAME: &'static str = "register-tenant";

    type Kind = OperatorCommand;

    fn into_command(self) -> Result<OperatorCommand, WireError> {
        Ok(OperatorCommand::RegisterTenant {
            tenant: tenant(&self.tenant)?,
            quota: self.quota,
            organization: self
                .organization
                .as_deref()
                .map(OrganizationId::parse)
                .transpose()
                .map_err(WireError::from)?,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetQuotaRequest {
    pub tenant: String,
    pub quota: u32,
}

impl CommandBody for SetQuotaRequest {
    const NAME: &'static str = "set-quota";

    type Kind = OperatorCommand;

    fn into_command(self) -> Result<OperatorCommand, WireError> {
        Ok(OperatorCommand::SetQuota {
            tenant: tenant(&self.tenant)?,
            quota: self.quota,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishPublicImageRequest {
    pub name: String,
    pub disk: DiskDto,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os: Option<OsDto>,
    pub min_disk_gb: u32,
    pub size_bytes: u64,
    pub checksum_sha256: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
}

impl CommandBody for PublishPublicImageRequest {
    const NAME: &'static str = "publish-public-image";

    type Kind = OperatorCommand;

    fn into_command(self) -> Result<OperatorCommand, WireError> {
        Ok(OperatorCommand::PublishPublicImage(Box::new(
            PublishPublicImage {
                name: self.name,
                disk: self.disk.into(),
                os: self.os.map(Os::from),
                min_disk_gb: self.min_disk_gb,
                size_bytes: self.size_bytes,
                checksum_sha256: self.checksum_sha256,
                tags: self.tags,
                description: self.description,
                family: self.family,
            },
        )))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuildOutcomeDto {
    Started,
    Succeeded,
    Failed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportBuildRequest {
    pub image_id: String,
    pub outcome: BuildOutcomeDto,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum_sha256: Option<String>,
    /// Glance's name for the second digest's algorithm: only `sha512`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_hash_algo: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_hash_value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detected_format: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub virtual_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl CommandBody for ReportBuildRequest {
    const NAME: &'static str = "report-build";

    type Kind = OperatorCommand;

    fn into_command(self) -> Result<OperatorCommand, WireError> {
        let outcome = match self.outcome {
            BuildOutcomeDto::Started => BuildOutcome::Started,
            BuildOutcomeDto::Failed => BuildOutcome::Failed,
            BuildOutcomeDto::Succeeded => BuildOutcome::Succeeded {
                size_bytes: self.size_bytes.ok_or_else(|| {
                    invalid(
                        "report-build: size_bytes is missing; a succeeded build reports the \
                         image's size in bytes",
                    )
                })?,
            },
        };
        let file = match (
            self.os_hash_algo.as_deref(),
            self.os_hash_value,
            self.detected_format,
        ) {
            (None, None, None) => None,
            (Some("sha512"), Some(sha512), Some(format)) => Some(FileFacts {
                sha512,
                detected_format: parse_file_format(&format)?,
                virtual_size: self.virtual_size,
            }),
            _ => {
                return Err(invalid(
                    "report-build: file facts need os_hash_algo \"sha512\", os_hash_value \
                     (128 hex digits) and detected_format together",
                ))
            }
        };
        Ok(OperatorCommand::ReportBuild {
            image_id: image_id(&self.image_id)?,
            outcome,
            checksum_sha256: self.checksum_sha256,
            file,
            reason: self.reason,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordUsageRequest {
    pub image_id: String,
    pub tenant: String,
    pub hours: u32,
}

impl CommandBody for RecordUsageRequest {
    const NAME: &'static str = "record-usage";

    type Kind = OperatorCommand;

    fn into_command(self) -> Result<OperatorCommand, WireError> {
        Ok(OperatorCommand::RecordUsage {
            image_id: image_id(&self.image_id)?,
            tenant: tenant(&self.tenant)?,
            hours: self.hours,
        })
    }
}

/// The target side of a copy, as the copy saga sends it (also usable by hand for repairs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiveCopyRequest {
    pub copy_image_id: String,
    pub owner: String,
    pub source_region: String,
    pub source_image_id: String,
    pub name: String,
    pub disk: DiskDto,
    pub os: Option<OsDto>,
    pub min_disk_gb: u32,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub description: String,
}

impl CommandBody for ReceiveCopyRequest {
    const NAME: &'static str = "receive-copy";

    type Kind = OperatorCommand;

    fn into_command(self) -> Result<OperatorCommand, WireError> {
        Ok(OperatorCommand::ReceiveCopy(Box::new(ReceiveCopy {
            copy_image_id: image_id(&self.copy_image_id)?,
            owner: tenant(&self.owner)?,
            source_region: region(&self.source_region)?,
            source_image_id: image_id(&self.source_image_id)?,
            name: self.name,
            disk: self.disk.into(),
            os: self.os.map(Os::from),
            min_disk_gb: self.min_disk_gb,
            tags: self.tags,
            description: self.description,
        })))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordCopyOutcomeRequest {
    pub image_id: String,
    pub copy_image_id: String,
    /// `delivered` or `failed`.
    pub outcome: String,
    #[serde(default)]
    pub reason: String,
}

impl CommandBody for RecordCopyOutcomeRequest {
    const NAME: &'static str = "record-copy-outcome";

    type Kind = OperatorCommand;

    fn into_command(self) -> Result<OperatorCommand, WireError> {
        let outcome = match self.outcome.as_str() {
            "delivered" => CopyOutcome::Delivered,
            "failed" => CopyOutcome::Failed {
                reason: self.reason,
            },
            other => {
                return Err(invalid(format!(
                    "record-copy-outcome: outcome {other:?} is not known; expected \"delivered\" \
                     or \"failed\""
                )))
            }
        };
        Ok(OperatorCommand::RecordCopyOutcome {
            image_id: image_id(&self.image_id)?,
            copy_image_id: image_id(&self.copy_image_id)?,
            outcome,
        })
    }
}
