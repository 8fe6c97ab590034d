//! Built-in ACME (RFC 8555): what `acme.<ext>` orders are turned into. This layer holds the
//! protocol side (the CA client, one order from account to chain, renewal timing, the files)
//! and the challenge answers the data plane serves; the `registries/acme` actor
//! (`ops/acme.rs`) runs the orders.

pub mod challenges;
pub mod client;
pub mod files;
pub mod order;
pub mod plan;

use std::sync::Arc;
use std::time::SystemTime;

use dashmap::DashMap;

pub use challenges::Challenges;

/// What the data plane and the management API read of ACME.
#[derive(Default)]
pub struct Acme {
    /// Answers published while the CA validates an order.
    pub challenges: Arc<Challenges>,
    /// Per certificate id (each name of each order): its renewal state.
    pub renewals: DashMap<String, Renewal>,
}

/// The renewal state of one name.
#[derive(Debug, Clone)]
pub struct Renewal {
    /// When the worker next orders (now or past: under way or waiting to retry).
    pub next: SystemTime,
    /// Failed attempts in a row.
    pub failures: u32,
    pub last_error: Option<String>,
}
