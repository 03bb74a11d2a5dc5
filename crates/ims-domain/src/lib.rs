//! The pure domain of ims: what images, tenants and shares are, and the rules that govern them.
//!
//! Nothing here does IO, reads a clock or draws a random number: [`decide`] turns a state and a
//! command into events (or a [`DomainError`] naming the broken rule), [`evolve`] folds events into
//! the state, and [`usable`] answers rule 10. Time and new ids come in through [`Context`], so a
//! replay of the same events always gives the same state.
//!
//! Modules: `ids` (validated ids), `model` (the state), `command` and `event` (the vocabulary),
//! `decide` and `evolve` (the decider), `usable` (rule 10), `policy` (the seed's limits), `limits` (the other maximums), `error` (codes).

mod command;
mod decide;
mod error;
mod event;
mod evolve;
mod ids;
pub mod limits;
mod model;
mod policy;
mod time;
mod usable;

pub use command::*;
pub use decide::{check_family, decide, parse_file_format, Actor, Context};
pub use error::{DomainError, ErrorCode};
pub use event::*;
pub use evolve::{evolve, evolve_image, new_image};
pub use ids::{ImageId, OrganizationId, RegionId, TenantId};
pub use model::*;
pub use policy::SharingPolicy;
pub use usable::{access, usable, Access, Purpose, Usability, Viewer};
