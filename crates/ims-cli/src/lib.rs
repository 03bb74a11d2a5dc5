//! The ims binaries as libraries: `imsd` (runs the service) and `imsctl` (talks to it). The files
//! in `bin/` only call these entry points.

pub mod imsctl;
pub mod imsd;
