//! JSON commands (DESIGN.md section 4) and their hand-written conversion to domain commands.
//! Unknown fields are refused rather than ignored, so a typo never silently does nothing.

use std::collections::BTreeMap;

use ims_domain::{
    parse_file_format, BuildOutcome, Command, CopyOutcome, CreateImage, CreateSource, Currency,
    DiskKind, Encryption, FileFacts, ImageId, Os, Price, PublishPublicImage, ReceiveCopy, RegionId,
    TenantId, UpdateImage,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use uuid::Uuid;

use crate::{WireError, WireErrorCode};

/// Commands a tenant sends on `ims.v1.<region>.cmd.<tenant>.<command>`.
pub const TENANT_COMMANDS: [&str; 10] = [
    "create-image",
    "update-image",
    "delete-image",
    "share-image",
    "unshare-image",
    "accept-share",
    "reject-share",
    "copy-image",
    "list-on-marketplace",
    "delist-from-marketplace",
];

/// Commands the operator sends on `ims.v1.<region>.op.<command>`. The last two are sent by the
/// copy saga between regions.
pub const OPERATOR_COMMANDS: [&str; 9] = [
    "register-tenant",
    "set-quota",
    "publish-public-image",
    "deprecate-image",
    "delete-image",
    "report-build",
    "record-usage",
    "receive-copy",
    "record-copy-outcome",
];

/// What every command may carry besides its own fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommandMeta {
    /// A repeat with the same id returns the first reply and appends nothing.
    pub command_id: Option<Uuid>,
    /// The version the image must be at, or `conflict`.
    pub expected_version: Option<u64>,
    /// SHA-256 of what the command asks (its name, `expected_version` and canonical JSON body
    /// without `command_id`): a retry has the same digest, another command reusing the id does
    /// not, whatever the key order or spacing of either.
    pub digest: [u8; 32],
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedCommand {
    pub meta: CommandMeta,
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskDto {
    System,
    Data,
    FullEcs,
}

impl From<DiskDto> for DiskKind {
    fn from(disk: DiskDto) -> Self {
        match disk {
            DiskDto::System => DiskKind::System,
            DiskDto::Data => DiskKind::Data,
            DiskDto::FullEcs => DiskKind::FullEcs,
        }
    }
}

impl From<DiskKind> for DiskDto {
    fn from(disk: DiskKind) -> Self {
        match disk {
            DiskKind::System => DiskDto::System,
            DiskKind::Data => DiskDto::Data,
            DiskKind::FullEcs => DiskDto::FullEcs,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OsDto {
    pub platform: String,
    pub version: String,
    pub arch: String,
}

impl From<OsDto> for Os {
    fn from(os: OsDto) -> Self {
        Os {
            platform: os.platform,
            version: os.version,
            arch: os.arch,
        }
    }
}

impl From<&Os> for OsDto {
    fn from(os: &Os) -> Self {
        OsDto {
            platform: os.platform.clone(),
            version: os.version.clone(),
            arch: os.arch.clone(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceDto {
    Ecs {
        instance_id: String,
        #[serde(default)]
        data_disk_ids: Vec<String>,
    },
    File {
        url: String,
        format: String,
    },
    /// The bytes follow on `PUT /v1/{region}/tenants/{tenant}/images/{id}/file`.
    Upload {
        format: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionDto {
    pub kms_key_id: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "model", rename_all = "snake_case", deny_unknown_fields)]
pub enum PriceDto {
    Free,
    PerHour { amount_minor: u64, currency: String },
}

impl PriceDto {
    fn into_domain(self) -> Result<Price, WireError> {
        match self {
            PriceDto::Free => Ok(Price::Free),
            PriceDto::PerHour {
                amount_minor,
                currency,
            } => {
                let bytes: [u8; 3] = currency.as_bytes().try_into().map_err(|_| {
                    invalid(format!(
                        "price.currency {currency:?} is not an ISO 4217 code; expected three \
                         upper-case letters such as \"USD\""
                    ))
                })?;
                Ok(Price::PerHour {
                    amount_minor,
                    currency: Currency(bytes),
                })
            }
        }
    }

    pub fn from_domain(price: &Price) -> Self {
        match price {
            Price::Free => PriceDto::Free,
            Price::PerHour {
                amount_minor,
                currency,
            } => PriceDto::PerHour {
                amount_minor: *amount_minor,
                currency: currency.as_str().to_owned(),
            },
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateImageDto {
    name: String,
    disk: DiskDto,
    source: SourceDto,
    os: Option<OsDto>,
    min_disk_gb: u32,
    encryption: Option<EncryptionDto>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    protected: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateImageDto {
    image_id: String,
    name: Option<String>,
    description: Option<String>,
    tags: Option<BTreeMap<String, String>>,
    min_disk_gb: Option<u32>,
    protected: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImageIdDto {
    image_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShareDto {
    image_id: String,
    tenants: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnshareDto {
    image_id: String,
    tenants: Option<Vec<String>>,
    #[serde(default)]
    all: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CopyDto {
    image_id: String,
    target_region: String,
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListDto {
    image_id: String,
    publisher: String,
    price: PriceDto,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterTenantDto {
    tenant: String,
    quota: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetQuotaDto {
    tenant: String,
    quota: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishDto {
    name: String,
    disk: DiskDto,
    os: Option<OsDto>,
    min_disk_gb: u32,
    size_bytes: u64,
    checksum_sha256: String,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeprecateDto {
    image_id: String,
    #[serde(default = "yes")]
    deprecated: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum BuildOutcomeDto {
    Started,
    Succeeded,
    Failed,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportBuildDto {
    image_id: String,
    outcome: BuildOutcomeDto,
    size_bytes: Option<u64>,
    checksum_sha256: Option<String>,
    /// Glance's name for the second digest's algorithm: only `sha512`.
    os_hash_algo: Option<String>,
    os_hash_value: Option<String>,
    detected_format: Option<String>,
    virtual_size: Option<u64>,
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordUsageDto {
    image_id: String,
    tenant: String,
    hours: u32,
}

/// The target side of a copy, as the copy saga sends it (also usable by hand for repairs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiveCopyDto {
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

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordCopyOutcomeDto {
    pub image_id: String,
    pub copy_image_id: String,
    /// `delivered` or `failed`.
    pub outcome: String,
    #[serde(default)]
    pub reason: String,
}

fn invalid(message: impl Into<String>) -> WireError {
    WireError::new(WireErrorCode::InvalidArgument, message)
}

fn image_id(value: &str) -> Result<ImageId, WireError> {
    ImageId::parse(value).map_err(WireError::from)
}

fn tenant(value: &str) -> Result<TenantId, WireError> {
    TenantId::parse(value).map_err(WireError::from)
}

fn tenants(values: &[String]) -> Result<Vec<TenantId>, WireError> {
    values.iter().map(|t| tenant(t)).collect()
}

fn region(value: &str) -> Result<RegionId, WireError> {
    RegionId::parse(value).map_err(WireError::from)
}

/// Decodes `payload` as JSON into `T`, telling broken JSON (`invalid_json`) apart from valid
/// JSON with wrong or unknown fields (`invalid_argument`).
fn from_json<T: DeserializeOwned>(name: &str, value: serde_json::Value) -> Result<T, WireError> {
    serde_json::from_value(value).map_err(|e| invalid(format!("{name}: {e}")))
}

/// Parses the JSON payload of command `name` into a domain command and its meta fields.
pub fn parse_command(name: &str, payload: &[u8]) -> Result<ParsedCommand, WireError> {
    if !TENANT_COMMANDS.contains(&name) && !OPERATOR_COMMANDS.contains(&name) {
        return Err(WireError::new(
            WireErrorCode::UnknownCommand,
            format!(
                "unknown command {name:?}; tenant commands are {}; operator commands are {}",
                TENANT_COMMANDS.join(", "),
                OPERATOR_COMMANDS.join(", ")
            ),
        ));
    }
    let mut value: serde_json::Value = serde_json::from_slice(payload).map_err(|e| {
        WireError::new(
            WireErrorCode::InvalidJson,
            format!("the payload is not valid JSON: {e}"),
        )
    })?;
    let Some(object) = value.as_object_mut() else {
        return Err(invalid(format!(
            "{name}: the payload must be a JSON object, got {value}"
        )));
    };
    let mut meta = CommandMeta {
        command_id: match object.remove("command_id") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(id)) => Some(Uuid::parse_str(&id).map_err(|_| {
                invalid(format!("command_id {id:?} is not a UUID; expected for example \"0192f0c1-7a3e-7c2b-9d4e-1a2b3c4d5e6f\""))
            })?),
            Some(other) => return Err(invalid(format!("command_id {other} is not a UUID string"))),
        },
        expected_version: match object.remove("expected_version") {
            None | Some(serde_json::Value::Null) => None,
            Some(version) => Some(version.as_u64().ok_or_else(|| {
                invalid(format!("expected_version {version} is not a version; expected a whole number >= 1"))
            })?),
        },
        digest: [0; 32],
    };
    meta.digest = command_digest(name, meta.expected_version, &value);
    let command = to_command(name, value)?;
    Ok(ParsedCommand { meta, command })
}

/// See [`CommandMeta::digest`]. serde_json's maps are sorted by key, so the body serialises the
/// same way whatever order the client sent.
fn command_digest(name: &str, expected_version: Option<u64>, body: &serde_json::Value) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update([0]);
    hasher.update(expected_version.unwrap_or(0).to_be_bytes());
    hasher.update(serde_json::to_vec(body).unwrap_or_default());
    hasher.finalize().into()
}

fn to_command(name: &str, value: serde_json::Value) -> Result<Command, WireError> {
    Ok(match name {
        "create-image" => {
            let dto: CreateImageDto = from_json(name, value)?;
            let source = match dto.source {
                SourceDto::Ecs {
                    instance_id,
                    data_disk_ids,
                } => CreateSource::Ecs {
                    instance_id,
                    data_disk_ids,
                },
                SourceDto::File { url, format } => CreateSource::File {
                    url,
                    format: parse_file_format(&format).map_err(WireError::from)?,
                },
                SourceDto::Upload { format } => CreateSource::Upload {
                    format: parse_file_format(&format).map_err(WireError::from)?,
                },
            };
            Command::CreateImage(Box::new(CreateImage {
                name: dto.name,
                disk: dto.disk.into(),
                source,
                os: dto.os.map(Os::from),
                min_disk_gb: dto.min_disk_gb,
                encryption: dto.encryption.map(|e| Encryption {
                    kms_key_id: e.kms_key_id,
                }),
                tags: dto.tags,
                description: dto.description,
                protected: dto.protected,
            }))
        }
        "update-image" => {
            let dto: UpdateImageDto = from_json(name, value)?;
            Command::UpdateImage(Box::new(UpdateImage {
                image_id: image_id(&dto.image_id)?,
                name: dto.name,
                description: dto.description,
                tags: dto.tags,
                min_disk_gb: dto.min_disk_gb,
                protected: dto.protected,
            }))
        }
        "delete-image" => Command::DeleteImage {
            image_id: image_id(&from_json::<ImageIdDto>(name, value)?.image_id)?,
        },
        "accept-share" => Command::AcceptShare {
            image_id: image_id(&from_json::<ImageIdDto>(name, value)?.image_id)?,
        },
        "reject-share" => Command::RejectShare {
            image_id: image_id(&from_json::<ImageIdDto>(name, value)?.image_id)?,
        },
        "delist-from-marketplace" => Command::DelistFromMarketplace {
            image_id: image_id(&from_json::<ImageIdDto>(name, value)?.image_id)?,
        },
        "share-image" => {
            let dto: ShareDto = from_json(name, value)?;
            Command::ShareImage {
                image_id: image_id(&dto.image_id)?,
                tenants: tenants(&dto.tenants)?,
            }
        }
        "unshare-image" => {
            let dto: UnshareDto = from_json(name, value)?;
            let tenants = match (dto.tenants, dto.all) {
                (Some(list), false) => Some(tenants(&list)?),
                (None, true) => None,
                _ => {
                    return Err(invalid(
                        "unshare-image: give either \"tenants\": [...] or \"all\": true, not both or neither",
                    ))
                }
            };
            Command::UnshareImage {
                image_id: image_id(&dto.image_id)?,
                tenants,
            }
        }
        "copy-image" => {
            let dto: CopyDto = from_json(name, value)?;
            Command::CopyImage {
                image_id: image_id(&dto.image_id)?,
                target_region: region(&dto.target_region)?,
                name: dto.name,
            }
        }
        "list-on-marketplace" => {
            let dto: ListDto = from_json(name, value)?;
            Command::ListOnMarketplace {
                image_id: image_id(&dto.image_id)?,
                publisher: dto.publisher,
                price: dto.price.into_domain()?,
            }
        }
        "register-tenant" => {
            let dto: RegisterTenantDto = from_json(name, value)?;
            Command::RegisterTenant {
                tenant: tenant(&dto.tenant)?,
                quota: dto.quota,
            }
        }
        "set-quota" => {
            let dto: SetQuotaDto = from_json(name, value)?;
            Command::SetQuota {
                tenant: tenant(&dto.tenant)?,
                quota: dto.quota,
            }
        }
        "publish-public-image" => {
            let dto: PublishDto = from_json(name, value)?;
            Command::PublishPublicImage(Box::new(PublishPublicImage {
                name: dto.name,
                disk: dto.disk.into(),
                os: dto.os.map(Os::from),
                min_disk_gb: dto.min_disk_gb,
                size_bytes: dto.size_bytes,
                checksum_sha256: dto.checksum_sha256,
                tags: dto.tags,
                description: dto.description,
            }))
        }
        "deprecate-image" => {
            let dto: DeprecateDto = from_json(name, value)?;
            Command::DeprecateImage {
                image_id: image_id(&dto.image_id)?,
                deprecated: dto.deprecated,
            }
        }
        "report-build" => {
            let dto: ReportBuildDto = from_json(name, value)?;
            let outcome = match dto.outcome {
                BuildOutcomeDto::Started => BuildOutcome::Started,
                BuildOutcomeDto::Failed => BuildOutcome::Failed,
                BuildOutcomeDto::Succeeded => BuildOutcome::Succeeded {
                    size_bytes: dto.size_bytes.ok_or_else(|| {
                        invalid("report-build: size_bytes is missing; a succeeded build reports the image's size in bytes")
                    })?,
                },
            };
            let file = match (
                dto.os_hash_algo.as_deref(),
                dto.os_hash_value,
                dto.detected_format,
            ) {
                (None, None, None) => None,
                (Some("sha512"), Some(sha512), Some(format)) => Some(FileFacts {
                    sha512,
                    detected_format: parse_file_format(&format).map_err(WireError::from)?,
                    virtual_size: dto.virtual_size,
                }),
                _ => {
                    return Err(invalid(
                        "report-build: file facts need os_hash_algo \"sha512\", os_hash_value \
                         (128 hex digits) and detected_format together",
                    ))
                }
            };
            Command::ReportBuild {
                image_id: image_id(&dto.image_id)?,
                outcome,
                checksum_sha256: dto.checksum_sha256,
                file,
                reason: dto.reason,
            }
        }
        "record-usage" => {
            let dto: RecordUsageDto = from_json(name, value)?;
            Command::RecordUsage {
                image_id: image_id(&dto.image_id)?,
                tenant: tenant(&dto.tenant)?,
                hours: dto.hours,
            }
        }
        "receive-copy" => {
            let dto: ReceiveCopyDto = from_json(name, value)?;
            Command::ReceiveCopy(Box::new(ReceiveCopy {
                copy_image_id: image_id(&dto.copy_image_id)?,
                owner: tenant(&dto.owner)?,
                source_region: region(&dto.source_region)?,
                source_image_id: image_id(&dto.source_image_id)?,
                name: dto.name,
                disk: dto.disk.into(),
                os: dto.os.map(Os::from),
                min_disk_gb: dto.min_disk_gb,
                tags: dto.tags,
                description: dto.description,
            }))
        }
        "record-copy-outcome" => {
            let dto: RecordCopyOutcomeDto = from_json(name, value)?;
            let outcome = match dto.outcome.as_str() {
                "delivered" => CopyOutcome::Delivered,
                "failed" => CopyOutcome::Failed { reason: dto.reason },
                other => {
                    return Err(invalid(format!(
                        "record-copy-outcome: outcome {other:?} is not known; expected \"delivered\" or \"failed\""
                    )))
                }
            };
            Command::RecordCopyOutcome {
                image_id: image_id(&dto.image_id)?,
                copy_image_id: image_id(&dto.copy_image_id)?,
                outcome,
            }
        }
        _ => unreachable!("checked against the command lists above"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_designs_create_image_example_parses() {
        let payload = br#"{"command_id":"0192f0c1-7a3e-7c2b-9d4e-1a2b3c4d5e6f","name":"web-2026","disk":"system",
            "source":{"ecs":{"instance_id":"ecs-42","data_disk_ids":[]}},
            "os":{"platform":"ubuntu","version":"22.04","arch":"x86_64"},
            "min_disk_gb":40,"tags":{"env":"prod"}}"#;
        let parsed = parse_command("create-image", payload).unwrap();
        assert!(parsed.meta.command_id.is_some());
        assert!(matches!(parsed.command, Command::CreateImage(_)));
    }

    #[test]
    fn broken_json_wrong_types_unknown_fields_and_commands_get_distinct_codes() {
        assert_eq!(
            parse_command("share-image", b"{not json").unwrap_err().code,
            WireErrorCode::InvalidJson
        );
        let wrong_type =
            parse_command("set-quota", br#"{"tenant":"t1","quota":"many"}"#).unwrap_err();
        assert_eq!(wrong_type.code, WireErrorCode::InvalidArgument);
        assert!(
            wrong_type.message.contains("many"),
            "{}",
            wrong_type.message
        );
        let unknown_field =
            parse_command("delete-image", br#"{"image_id":"x","force":true}"#).unwrap_err();
        assert!(
            unknown_field.message.contains("force"),
            "{}",
            unknown_field.message
        );
        assert_eq!(
            parse_command("format-disk", b"{}").unwrap_err().code,
            WireErrorCode::UnknownCommand
        );
        let bad_tenant = parse_command(
            "share-image",
            br#"{"image_id":"0192f0c1-7a3e-7c2b-9d4e-1a2b3c4d5e6f","tenants":["a.b"]}"#,
        )
        .unwrap_err();
        assert!(bad_tenant.message.contains("a.b"));
    }
}
