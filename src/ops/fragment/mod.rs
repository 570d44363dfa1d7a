//! `fragment`: one model over several hosts.
//!
//! [`plan`] places layers on the hosts' devices and prints the commands.

pub mod plan;
