//! fedid's measurements against real `fedid-server` processes: the servers
//! (`process`), a client of the user API (`client`), and the attacks of
//! docs/security.md (`attack`, `make attack`), which the server's tests also
//! run.

#![forbid(unsafe_code)]

pub mod attack;
pub mod client;
pub mod keylog;
pub mod process;
