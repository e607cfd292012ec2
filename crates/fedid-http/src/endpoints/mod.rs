//! One file per group of endpoints; all routes are registered in
//! `crate::configure`.

pub mod federation;
pub mod identity;
pub mod messages;
pub mod operations;
pub mod revocations;
