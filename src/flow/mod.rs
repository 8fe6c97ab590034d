//! Flows: the catalogue of plugins, validation, templates, the KV store and the executor.

pub use env::Env;

pub mod catalogue;
pub mod env;
pub mod exec;
pub mod kv;
pub mod step;
pub mod template;
pub mod validate;

#[cfg(test)]
mod tests;
