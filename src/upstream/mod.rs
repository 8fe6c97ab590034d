//! Upstreams: name resolution, health, the choice among several addresses, and connecting.
//! Every layer that opens a connection to an upstream goes through one [`Upstreams`] handle,
//! so "which address" and "is it healthy" have one answer.

pub mod balance;
pub mod dns;
pub mod error;
pub mod health;
mod pick;

pub use error::UpstreamError;
pub use pick::{Target, Upstreams};
