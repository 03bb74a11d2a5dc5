//! JSON commands (DESIGN.md section 4): their typed bodies ([`requests`]), the values inside
//! them ([`values`]), and parsing a payload into a domain command and its meta fields.

mod lifecycle;
mod requests;
mod values;

use serde::{de::DeserializeOwned, Serialize};
use uuid::Uuid;

use ims_domain::{Command, ImageId, OrganizationId, RegionId, TenantId};

pub use lifecycle::*;
pub use requests::*;
pub use values::*;

use crate::{WireError, WireErrorCode};

/// Commands a tenant sends on `ims.v1.<region>.cmd.<tenant>.<command>`.
pub const TENANT_COMMANDS: [&str; 12] = [
    CreateImageRequest::NAME,
    UpdateImageRequest::NAME,
    DeleteImageRequest::NAME,
    ShareImageRequest::NAME,
    UnshareImageRequest::NAME,
    AcceptShareRequest::NAME,
    RejectShareRequest::NAME,
    CopyImageRequest::NAME,
    ListOnMarketplaceRequest::NAME,
    DelistFromMarketplaceRequest::NAME,
    DeprecateImageRequest::NAME,
    RestoreImageRequest::NAME,
];

/// Commands the operator sends on `ims.v1.<region>.op.<command>` (`record-launch` by the compute
/// service, acting as the operator). The last two are sent by the copy saga between regions.
pub const OPERATOR_COMMANDS: [&str; 11] = [
    RegisterTenantRequest::NAME,
    SetQuotaRequest::NAME,
    SetRetentionRequest::NAME,
    PublishPublicImageRequest::NAME,
    DeprecateImageRequest::NAME,
    DeleteImageRequest::NAME,
    ReportBuildRequest::NAME,
    RecordUsageRequest::NAME,
    RecordLaunchRequest::NAME,
    ReceiveCopyRequest::NAME,
    RecordCopyOutcomeRequest::NAME,
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

pub(crate) fn invalid(message: impl Into<String>) -> WireError {
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

fn organizations(values: &[String]) -> Result<Vec<OrganizationId>, WireError> {
    values
        .iter()
        .map(|o| OrganizationId::parse(o).map_err(WireError::from))
        .collect()
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
        return Err(unknown_command(name));
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

/// The JSON payload of `body` with its meta fields, as a client sends it.
pub fn command_payload<T: CommandBody>(
    body: &T,
    command_id: Option<Uuid>,
    expected_version: Option<u64>,
) -> Vec<u8> {
    #[derive(Serialize)]
    struct WithMeta<'a, T> {
        #[serde(skip_serializing_if = "Option::is_none")]
        command_id: Option<Uuid>,
        #[serde(skip_serializing_if = "Option::is_none")]
        expected_version: Option<u64>,
        #[serde(flatten)]
        body: &'a T,
    }
    serde_json::to_vec(&WithMeta {
        command_id,
        expected_version,
        body,
    })
    .expect("a command body always serialises")
}

fn parsed<T: CommandBody>(value: serde_json::Value) -> Result<Command, WireError> {
    Ok(from_json::<T>(T::NAME, value)?.into_command()?.into())
}

/// The domain command of the body `value` of command `name`, one of the two lists above.
fn to_command(name: &str, value: serde_json::Value) -> Result<Command, WireError> {
    match name {
        CreateImageRequest::NAME => parsed::<CreateImageRequest>(value),
        UpdateImageRequest::NAME => parsed::<UpdateImageRequest>(value),
        DeleteImageRequest::NAME => parsed::<DeleteImageRequest>(value),
        ShareImageRequest::NAME => parsed::<ShareImageRequest>(value),
        UnshareImageRequest::NAME => parsed::<UnshareImageRequest>(value),
        AcceptShareRequest::NAME => parsed::<AcceptShareRequest>(value),
        RejectShareRequest::NAME => parsed::<RejectShareRequest>(value),
        CopyImageRequest::NAME => parsed::<CopyImageRequest>(value),
        ListOnMarketplaceRequest::NAME => parsed::<ListOnMarketplaceRequest>(value),
        DelistFromMarketplaceRequest::NAME => parsed::<DelistFromMarketplaceRequest>(value),
        RegisterTenantRequest::NAME => parsed::<RegisterTenantRequest>(value),
        SetQuotaRequest::NAME => parsed::<SetQuotaRequest>(value),
        PublishPublicImageRequest::NAME => parsed::<PublishPublicImageRequest>(value),
        DeprecateImageRequest::NAME => parsed::<DeprecateImageRequest>(value),
        RestoreImageRequest::NAME => parsed::<RestoreImageRequest>(value),
        SetRetentionRequest::NAME => parsed::<SetRetentionRequest>(value),
        ReportBuildRequest::NAME => parsed::<ReportBuildRequest>(value),
        RecordUsageRequest::NAME => parsed::<RecordUsageRequest>(value),
        RecordLaunchRequest::NAME => parsed::<RecordLaunchRequest>(value),
        ReceiveCopyRequest::NAME => parsed::<ReceiveCopyRequest>(value),
        RecordCopyOutcomeRequest::NAME => parsed::<RecordCopyOutcomeRequest>(value),
        _ => Err(unknown_command(name)),
    }
}

fn unknown_command(name: &str) -> WireError {
    WireError::new(
        WireErrorCode::UnknownCommand,
        format!(
            "unknown command {name:?}; tenant commands are {}; operator commands are {}",
            TENANT_COMMANDS.join(", "),
            OPERATOR_COMMANDS.join(", ")
        ),
    )
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
        assert!(matches!(
            parsed.command,
            Command::Tenant(ims_domain::TenantCommand::CreateImage(_))
        ));
    }

    #[test]
    fn a_typed_body_with_its_meta_parses_back_to_the_same_command() {
        let body = ShareImageRequest {
            image_id: "0192f0c1-7a3e-7c2b-9d4e-1a2b3c4d5e6f".into(),
            tenants: vec!["t2".into()],
            organizations: Vec::new(),
        };
        let id = Uuid::now_v7();
        let parsed = parse_command(
            ShareImageRequest::NAME,
            &command_payload(&body, Some(id), Some(3)),
        )
        .unwrap();
        assert_eq!(parsed.meta.command_id, Some(id));
        assert_eq!(parsed.meta.expected_version, Some(3));
        assert_eq!(parsed.command, body.into_command().unwrap().into());
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
