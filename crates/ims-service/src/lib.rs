//! The running parts of ims, each a library that `imsd` wires together.
//!
//! Modules: `bus` (the NATS connection), `nats_server` (a nats-server child on loopback),
//! `writer` (the single writer of a region, group commit), `command_service` (command, operator
//! and log.read endpoints over NATS).

pub mod bus;
pub mod command_service;
pub mod nats_server;
pub mod runtime;
pub mod writer;
