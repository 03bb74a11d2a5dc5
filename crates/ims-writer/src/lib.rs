//! The command side of a region: its single writer (`writer`: decide, group commit, answer) and
//! its NATS endpoints (`endpoints`: tenant and operator commands, `log.read`, and the publisher
//! of durable events).

mod endpoints;
mod writer;

pub use endpoints::*;
pub use writer::*;
