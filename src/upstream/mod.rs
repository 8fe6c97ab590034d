//! Upstreams: name resolution, health, and the choice among several addresses.

pub mod balance;
pub mod dns;
pub mod health;
pub mod resolve;
