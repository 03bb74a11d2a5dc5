//! Error codes and the error body of every failed reply.

use ims_domain::{DomainError, ErrorCode};
use serde::{Deserialize, Serialize};

/// Every code a reply can carry: the domain's and the transport's.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum WireErrorCode {
    InvalidJson,
    InvalidArgument,
    UnknownCommand,
    PayloadTooLarge,
    NotFound,
    Forbidden,
    InvalidState,
    NotShareable,
    EncryptedNotShareable,
    FullEcsNotShareable,
    UnknownTenant,
    ShareLimitExceeded,
    NotAMember,
    Protected,
    QuotaExceeded,
    Conflict,
    EncryptedNotCopyable,
    Stale,
    Unavailable,
    Internal,
    /// No live credential (HTTP 401).
    Unauthenticated,
}

impl WireErrorCode {
    /// The code as it is written in replies and headers.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The HTTP status that fits the code.
    pub fn http_status(self) -> u16 {
        match self {
            WireErrorCode::InvalidJson
            | WireErrorCode::InvalidArgument
            | WireErrorCode::UnknownCommand => 400,
            WireErrorCode::Unauthenticated => 401,
            WireErrorCode::Forbidden => 403,
            WireErrorCode::NotFound | WireErrorCode::NotAMember => 404,
            WireErrorCode::PayloadTooLarge => 413,
            WireErrorCode::Stale | WireErrorCode::Unavailable => 503,
            WireErrorCode::Internal => 500,
            _ => 409,
        }
    }
}

impl From<ErrorCode> for WireErrorCode {
    fn from(code: ErrorCode) -> Self {
        match code {
            ErrorCode::InvalidArgument => WireErrorCode::InvalidArgument,
            ErrorCode::NotFound => WireErrorCode::NotFound,
            ErrorCode::Forbidden => WireErrorCode::Forbidden,
            ErrorCode::InvalidState => WireErrorCode::InvalidState,
            ErrorCode::NotShareable => WireErrorCode::NotShareable,
            ErrorCode::EncryptedNotShareable => WireErrorCode::EncryptedNotShareable,
            ErrorCode::FullEcsNotShareable => WireErrorCode::FullEcsNotShareable,
            ErrorCode::UnknownTenant => WireErrorCode::UnknownTenant,
            ErrorCode::ShareLimitExceeded => WireErrorCode::ShareLimitExceeded,
            ErrorCode::NotAMember => WireErrorCode::NotAMember,
            ErrorCode::Protected => WireErrorCode::Protected,
            ErrorCode::QuotaExceeded => WireErrorCode::QuotaExceeded,
            ErrorCode::Conflict => WireErrorCode::Conflict,
            ErrorCode::EncryptedNotCopyable => WireErrorCode::EncryptedNotCopyable,
        }
    }
}

/// The `error` object of a failed reply: a stable code and a message for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    pub code: WireErrorCode,
    pub message: String,
}

impl WireError {
    pub fn new(code: WireErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<DomainError> for WireError {
    fn from(error: DomainError) -> Self {
        Self {
            code: error.code.into(),
            message: error.message,
        }
    }
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for WireError {}

#[cfg(test)]
mod tests {
    use super::*;
    use strum::VariantArray as _;

    #[test]
    fn every_code_is_written_the_same_in_json_and_in_headers() {
        for code in WireErrorCode::VARIANTS {
            let json = serde_json::to_value(code).unwrap();
            assert_eq!(json, code.as_str(), "{code:?}");
        }
        assert_eq!(
            WireErrorCode::EncryptedNotShareable.as_str(),
            "encrypted_not_shareable"
        );
    }
}
