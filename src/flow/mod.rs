//! Flows: the catalogue of plugins, validation, templates, the KV store and the executor.

pub mod catalogue;
pub mod exec;
pub mod kv;
pub mod step;
pub mod template;
pub mod validate;
