//! The lifecycle commands beyond the seed (DESIGN.md section 13): deprecation, with its
//! scheduled transitions, the recycle bin, and the compute service's launches.

use ims_domain::{DeprecateImage, DeprecationState, OperatorCommand, TenantCommand};
use serde::{Deserialize, Serialize};

use super::requests::CommandBody;
use super::{image_id, invalid, tenant};
use crate::WireError;

/// Sets an image's deprecation as a whole, by its owner or, for a public image, the operator.
/// What is left out is cleared: `{"image_id": …, "state": "active"}` takes a deprecation back.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeprecateImageRequest {
    pub image_id: String,
    /// `active`, `deprecated` (when neither this nor `deprecated` is given) or `obsolete`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<DeprecationStateDto>,
    /// The first release's form: `true` is state `deprecated`, `false` state `active`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecated: Option<bool>,
    /// The image to use instead; every tenant who can see this one must see it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
    /// When the scheduler makes it obsolete (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub obsolete_at: Option<String>,
    /// When the scheduler deletes it (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_at: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeprecationStateDto {
    Active,
    Deprecated,
    Obsolete,
}

impl From<DeprecationStateDto> for DeprecationState {
    fn from(state: DeprecationStateDto) -> Self {
        match state {
            DeprecationStateDto::Active => DeprecationState::Active,
            DeprecationStateDto::Deprecated => DeprecationState::Deprecated,
            DeprecationStateDto::Obsolete => DeprecationState::Obsolete,
        }
    }
}

fn scheduled_at(field: &str, value: Option<&str>) -> Result<Option<u64>, WireError> {
    value
        .map(|text| crate::time::parse_rfc3339(text).map_err(|e| invalid(format!("{field}: {e}"))))
        .transpose()
}

impl CommandBody for DeprecateImageRequest {
    const NAME: &'static str = "deprecate-image";

    type Kind = TenantCommand;

    fn into_command(self) -> Result<TenantCommand, WireError> {
        let state = match (self.state, self.deprecated) {
            (Some(_), Some(deprecated)) => {
                return Err(invalid(format!(
                    "give state or deprecated ({deprecated}), not both; state is \"active\", \
                     \"deprecated\" or \"obsolete\""
                )))
            }
            (Some(state), None) => state.into(),
            (None, Some(false)) => DeprecationState::Active,
            (None, Some(true) | None) => DeprecationState::Deprecated,
        };
        Ok(TenantCommand::DeprecateImage(Box::new(DeprecateImage {
            image_id: image_id(&self.image_id)?,
            state,
            replacement: self.replacement.as_deref().map(image_id).transpose()?,
            obsolete_at_ms: scheduled_at("obsolete_at", self.obsolete_at.as_deref())?,
            delete_at_ms: scheduled_at("delete_at", self.delete_at.as_deref())?,
        })))
    }
}

/// A launch reported by the compute service: `tenant` started an instance or a disk from the
/// image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordLaunchRequest {
    pub image_id: String,
    pub tenant: String,
}

impl CommandBody for RecordLaunchRequest {
    const NAME: &'static str = "record-launch";

    type Kind = OperatorCommand;

    fn into_command(self) -> Result<OperatorCommand, WireError> {
        Ok(OperatorCommand::RecordLaunch {
            image_id: image_id(&self.image_id)?,
            tenant: tenant(&self.tenant)?,
        })
    }
}

/// By the image's owner: takes it out of the recycle bin before its purge, with its members.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreImageRequest {
    pub image_id: String,
}

impl CommandBody for RestoreImageRequest {
    const NAME: &'static str = "restore-image";

    type Kind = TenantCommand;

    fn into_command(self) -> Result<TenantCommand, WireError> {
        Ok(TenantCommand::RestoreImage {
            image_id: image_id(&self.image_id)?,
        })
    }
}

/// By the operator: how many days (1 to 365) the tenant's deleted images stay in its recycle
/// bin; images already there keep their purge time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetRetentionRequest {
    pub tenant: String,
    pub days: u32,
}

impl CommandBody for SetRetentionRequest {
    const NAME: &'static str = "set-retention";

    type Kind = OperatorCommand;

    fn into_command(self) -> Result<OperatorCommand, WireError> {
        Ok(OperatorCommand::SetRetention {
            tenant: tenant(&self.tenant)?,
            days: self.days,
        })
    }
}
