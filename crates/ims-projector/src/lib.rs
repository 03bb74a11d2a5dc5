//! The read side of a region: its projector (`projector`: read models kept up to date from the
//! live events and `log.read`) and its query endpoints over NATS (`endpoints`).

mod endpoints;
mod projector;

pub use endpoints::*;
pub use projector::*;
