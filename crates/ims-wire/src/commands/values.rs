//! The values inside commands and views: disks, operating systems, sources, encryption and
//! prices, with their conversions to and from the domain.

use ims_domain::{Currency, DiskKind, Os, Price};
use serde::{Deserialize, Serialize};

use super::invalid;
use crate::WireError;

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
    pub(super) fn into_domain(self) -> Result<Price, WireError> {
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
