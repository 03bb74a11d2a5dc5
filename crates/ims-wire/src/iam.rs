//! The identity subjects' payloads (DESIGN.md section 10): `ims.v1.iam.issue-credential`,
//! `revoke-credential`, `list-credentials`, and `authenticate` (the service's own HTTP role asks
//! it when the identity role runs in another process).

use serde::{Deserialize, Serialize};

use crate::WireError;

/// `issue-credential`: `{"role":"tenant","tenant":"acme"}`, or `operator` / `auditor`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueCredential {
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// `revoke-credential`: `{"key_id":"…"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeCredential {
    pub key_id: String,
}

/// `authenticate`: `{"token":"ims_…"}` (service only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authenticate {
    pub token: String,
}

/// One credential as listed: never its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialView {
    pub key_id: String,
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub issued_by: String,
    /// RFC 3339.
    pub issued_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

/// The reply of every identity subject.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IamReply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The whole token: in the reply to `issue-credential` only, and never again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The identity log's position of the grant or revocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<CredentialView>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<CredentialView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<WireError>,
}

impl IamReply {
    pub fn error(error: WireError) -> Self {
        Self {
            ok: false,
            error: Some(error),
            ..Self::default()
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a reply always serialises")
    }
}
