//! The JSON wire contract of ims (DESIGN.md sections 4 and 5): subject names, command and query
//! payloads, replies, and the error codes a client can get.
//!
//! Wire types are separate from the domain types and converted by hand, so the domain can change
//! without breaking clients and the wire can change without touching the rules. Modules:
//! `subjects` (names of NATS subjects), `error` (codes and error bodies), `commands` (JSON
//! commands to domain commands), `reply` (command replies), `iam` (credentials), `queries` (query names and parameters), `views` (what queries answer),
//! `time` (RFC 3339).

pub mod commands;
pub mod error;
pub mod iam;
pub mod queries;
pub mod reply;
pub mod subjects;
pub mod time;
pub mod views;

pub use commands::{parse_command, CommandMeta, ParsedCommand, OPERATOR_COMMANDS, TENANT_COMMANDS};
pub use error::{WireError, WireErrorCode};
pub use queries::{Query, QueryParams};
pub use reply::CommandReply;
pub use subjects::Subjects;
