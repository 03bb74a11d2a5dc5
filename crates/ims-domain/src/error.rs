//! Rejections. Every refusal of `decide` carries a stable [`ErrorCode`] (DESIGN.md section 4) and
//! a message that names the bad value and says what would have been accepted.

use std::fmt;

/// The stable codes a command can be refused with. The wire layer adds the transport codes
/// (`invalid_json`, `unknown_command`, ...) on top of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidArgument,
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
}

impl ErrorCode {
    /// Every code, for exhaustive tests and documentation.
    pub const ALL: [ErrorCode; 14] = [
        ErrorCode::InvalidArgument,
        ErrorCode::NotFound,
        ErrorCode::Forbidden,
        ErrorCode::InvalidState,
        ErrorCode::NotShareable,
        ErrorCode::EncryptedNotShareable,
        ErrorCode::FullEcsNotShareable,
        ErrorCode::UnknownTenant,
        ErrorCode::ShareLimitExceeded,
        ErrorCode::NotAMember,
        ErrorCode::Protected,
        ErrorCode::QuotaExceeded,
        ErrorCode::Conflict,
        ErrorCode::EncryptedNotCopyable,
    ];

    /// The snake_case code used on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::InvalidState => "invalid_state",
            ErrorCode::NotShareable => "not_shareable",
            ErrorCode::EncryptedNotShareable => "encrypted_not_shareable",
            ErrorCode::FullEcsNotShareable => "full_ecs_not_shareable",
            ErrorCode::UnknownTenant => "unknown_tenant",
            ErrorCode::ShareLimitExceeded => "share_limit_exceeded",
            ErrorCode::NotAMember => "not_a_member",
            ErrorCode::Protected => "protected",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::Conflict => "conflict",
            ErrorCode::EncryptedNotCopyable => "encrypted_not_copyable",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused command: which rule it broke, and a message for the person who sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainError {
    pub code: ErrorCode,
    pub message: String,
}

impl DomainError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }

    pub fn invalid_state(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidState, message)
    }
}

impl fmt::Display for DomainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for DomainError {}
