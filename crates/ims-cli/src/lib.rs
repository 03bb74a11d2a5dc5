//! The ims binaries as libraries: `imsd` (runs the service) and `imsctl` (talks to it). The files
//! in `bin/` only call these entry points; `runtime` starts and stops imsd's roles; `files` moves
//! image files over HTTP for imsctl.

mod files;
pub mod imsctl;
pub mod imsd;
mod replicated;
pub mod runtime;
