//! Operating the gateway: logs, metrics, the management API (with its chaos routes) and the registries'
//! services.

pub mod acme;
pub mod archive;
pub mod config_api;
pub mod families;
pub mod http;
pub mod lazycert;
pub mod logging;
pub mod management;
pub mod metrics;
pub mod registries;
pub mod routes;
#[cfg(target_os = "linux")]
pub mod systemd;
pub mod ui;
#[cfg(unix)]
pub mod upgrade;
