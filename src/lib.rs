//! Vane's data plane: config model and validation, flows, plugins, the L4 layer, upstreams,
//! and the operator surfaces. The control plane (actors) lives in `vane-actors`.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod acme;
pub mod boot;
pub mod boxed;
pub mod certs;
pub mod cli;
pub mod config;
pub mod conn;
pub mod flow;
pub mod fuzzing;
pub mod l4;
pub mod l4p;
pub mod l7;
pub mod labels;
pub mod ops;
pub mod plugins;
pub mod runtime;
pub mod settings;
pub mod spans;
pub mod spare;
pub mod ticks;
pub mod upstream;
