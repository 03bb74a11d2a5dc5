//! The NATS side every role of ims shares: the connection (`connect`), what every endpoint
//! takes and answers (`endpoint`), and `log.read`, the one way to read a region's history
//! (`log_read`, with [`LogSource`]), and how long a replicated leader may still answer
//! ([`LeaseDeadline`]).

mod connect;
mod endpoint;
mod lease_deadline;
mod log_read;

pub use connect::{connect, options, server_list, BusAuth, ConnectFailed};
pub use endpoint::*;
pub use lease_deadline::LeaseDeadline;
pub use log_read::*;

/// A role that could not start or stopped with an error: its NATS service, its socket, or state
/// it cannot go on from.
#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    #[error("{doing}: {error}")]
    Nats {
        doing: String,
        error: async_nats::Error,
    },
    #[error("{doing}: {error}")]
    Io {
        doing: String,
        error: std::io::Error,
    },
    #[error("{0}")]
    Broken(String),
}

impl RoleError {
    /// A failed NATS call while `doing` something.
    pub fn nats(doing: impl Into<String>, error: impl Into<async_nats::Error>) -> Self {
        RoleError::Nats {
            doing: doing.into(),
            error: error.into(),
        }
    }
}
