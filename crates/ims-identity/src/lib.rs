//! Identity and access for ims (DESIGN.md section 10): who a caller is, and what it may reach.
//!
//! Modules: `token` (credentials `ims_<key_id>_<secret>` and the digest that is all we keep of a
//! secret), `principal` (roles and the NATS permissions each one gets), `directory` (the identity
//! log, `<data-dir>/iam/log`, and the credentials folded from it), `callout` (the JWTs of
//! nats-server's auth callout, signed with nkeys), `setup` (the keys and bootstrap operator token
//! a data dir holds, and the nats-server configuration that goes with them).
//!
//! Nothing here talks to NATS or HTTP: the service wires these parts to the network.

pub mod callout;
pub mod directory;
pub mod principal;
pub mod setup;
pub mod token;

pub use directory::{Credential, Directory, IdentityError};
pub use principal::{Permissions, Principal, Role};
pub use token::{KeyId, Token};
