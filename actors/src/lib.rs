//! Vane's control plane: the supervision tree and every long-lived actor.
//!
//! This crate knows nothing about flows or protocols. Where an actor needs data-plane work
//! (bind a port, load a config dir, probe upstreams) it calls a trait that the `vane` crate
//! implements, so the dependency arrow runs from the data plane to here and never back.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod catch;
pub mod config;
pub mod control;
pub mod memory;
pub mod names;
pub mod policy;
pub mod quic;
pub mod service;
pub mod status;
pub mod supervisor;
pub mod tree;

pub use control::Control;
pub use names::Name;
pub use status::{ActorInfo, ActorState, ActorTable};
