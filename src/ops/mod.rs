//! Operating the gateway: logs, metrics, the management API, chaos hooks and the registries'
//! services.

pub mod archive;
pub mod chaos;
pub mod config_api;
pub mod http;
pub mod logging;
pub mod management;
pub mod metrics;
pub mod registries;
