//! The pieces of the `fedid-server` binary that tests and embedders reuse.

#![forbid(unsafe_code)]

pub mod application;
pub mod configuration;
pub mod telemetry;
