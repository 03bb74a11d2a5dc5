//! The running parts of ims, each a library that `imsd` wires together.
//!
//! Modules: `bus` (the NATS connection), `nats_server` (a nats-server child on loopback),
//! `writer` (the single writer of a region, group commit), `command_service` (command, operator
//! and log.read endpoints over NATS), `projector` (read models kept up to date from NATS),
//! `query_service` (queries over NATS), `http` (the HTTP API and metrics), `identity` (the auth callout and credentials), `audit` (readable
//! history), `copy_saga` (cross-region copies), `store` (image files) and `import` (the import worker), `runtime` (starting and stopping the roles).

pub mod audit;
pub mod bus;
pub mod command_service;
pub mod copy_saga;
pub mod http;
pub mod http_client;
pub mod identity;
pub mod import;
pub mod nats_server;
pub mod projector;
pub mod query_service;
pub mod runtime;
#[cfg(feature = "s3")]
pub mod s3;
pub mod store;
pub mod web_download;
pub mod writer;
